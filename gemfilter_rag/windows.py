"""Score a prompt longer than the filter model's context in windows, then merge the scores.

Each window is ``[prefix; a slice of the context; middle; query; suffix]``: the same frame as
the full prompt, so the question always comes last. Scores are normalised per window (shifted to
a minimum of 0 and scaled to a mean of 1) so that windows are comparable; where windows overlap
a token keeps its highest score. Selection then runs once over the merged scores. Memory is
bounded by one window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .prompt import FilterPrompt

MIN_WINDOW = 16
"""A window must hold at least this many context tokens."""

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(input_ids (T,), query_rows (Q,)) -> scores (T,)``: one filter pass over one window."""


def plan_windows(length: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Cover ``[0, length)`` with slices of at most ``window`` tokens that overlap by ``overlap``."""
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"window/overlap: need window >= 1 and 0 <= overlap < window, got {window}/{overlap}.")
    if length <= 0:
        return []
    if length <= window:
        return [(0, length)]
    stride = window - overlap
    out = []
    start = 0
    while True:
        end = min(start + window, length)
        out.append((start, end))
        if end == length:
            return out
        start += stride


def normalise(scores: torch.Tensor) -> torch.Tensor:
    """Shift (N,) scores to a minimum of 0 and scale them to a mean of 1 (all ones if constant)."""
    shifted = scores.double() - scores.double().min()
    mean = shifted.mean()
    return (shifted / mean).float() if mean > 0 else torch.ones_like(scores, dtype=torch.float32)


def merge_window_scores(length: int, slices: Sequence[tuple[int, int]], scores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-window normalised scores merged into one (length,) tensor; overlaps keep the maximum."""
    out = torch.full((length,), float("-inf"))
    for (a, b), s in zip(slices, scores, strict=True):
        if s.shape != (b - a,):
            raise ValueError(f"scores: a window [{a}, {b}) needs {b - a} scores, got {tuple(s.shape)}.")
        out[a:b] = torch.maximum(out[a:b], normalise(s))
    if length and bool(torch.isinf(out).any()):
        raise ValueError("slices: do not cover every context token.")
    return out


def score_in_windows(
    prompt: FilterPrompt, max_positions: int, query: str | int, score: ScoreFn, overlap_fraction: float = 0.125
) -> torch.Tensor:
    """Scores (N,) of every context token of ``prompt``, scored window by window.

    ``query`` is ``ScoringConfig.query`` (which rows score); ``score`` runs one filter pass.
    """
    ids = prompt.input_ids  # (T,)
    if not prompt.documents:
        return torch.empty(0)
    c0 = prompt.doc_offsets[0]
    c1 = prompt.doc_offsets[-1] + len(prompt.documents[-1].ids)
    prefix, region, tail = ids[:c0], ids[c0:c1], ids[c1:]  # region: documents and separators
    frame = int(prefix.numel() + tail.numel())
    window = max_positions - frame
    if window < MIN_WINDOW:
        raise ValueError(
            f"query: the prompt frame and question take {frame} tokens, which leaves {max(window, 0)} "
            f"of the model's {max_positions} positions for context (need {MIN_WINDOW}); "
            "shorten the question or use a filter model with a longer context."
        )
    overlap = int(window * overlap_fraction)
    slices = plan_windows(int(region.numel()), window, overlap)
    query_offset = prompt.query_start - c1  # question start, relative to the end of the context
    parts: list[torch.Tensor] = []
    for a, b in slices:
        win = torch.cat([prefix, region[a:b], tail])  # (T_w,)
        t = int(win.numel())
        q0 = int(prefix.numel()) + (b - a) + query_offset
        if query == "last":
            rows = torch.tensor([t - 1])
        elif query == "question":
            rows = torch.arange(q0, t)
        else:
            rows = torch.arange(max(0, t - int(query)), t)
        s = score(win, rows)  # (T_w,)
        parts.append(s[prefix.numel() : prefix.numel() + (b - a)].float().cpu())
    merged = merge_window_scores(int(region.numel()), slices, parts)  # (region,)
    return merged[prompt.context_positions() - c0]  # (N,)
