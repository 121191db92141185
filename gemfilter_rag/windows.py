"""Score a prompt longer than one filter pass in windows, with a knockout merge.

A window is ``[prefix; some context; middle; query; suffix]``: the same frame as the full prompt,
so the question always comes last. Scores of different windows are not comparable (each softmax
shares its mass among its own tokens, and a window without the answer still spends it on its best
distractors), so windows are not merged by their scores. Instead, rounds of a knockout:

1. the context is cut into units (sentences, at most a few dozen tokens each; separators between
   documents are units of their own), packed in order into windows that overlap by a few units;
2. each window is scored in one pass (one value per unit, by the compressor's scoring: summed
   token scores, or the readout) and its best units, a quarter of its tokens, go through;
3. the survivors, concatenated in their original order, are the context of the next round, until
   they fit one window; that last pass scores every survivor against all the others at once.

With a ``prefilter`` (the compressor's embedding model, when it has one), a round 0 comes first and
costs no pass at all: every unit is valued by its similarity to the question and only the best
``prefilter_tokens`` (default: one window) go on to the passes; on a 20K-token input that is one
pass instead of about eight.

Final unit values: survivors of the last pass get ``1 + normalise(value)`` (>= 1); a unit knocked
out in round ``r`` of ``R`` gets a value in ``[0, 1)`` that grows with ``r`` and its best value
there. Each token gets an equal part of its unit's value, so summing a unit's tokens gives its
value back and selection at any granularity takes survivors first. Memory is bounded by one
window; a context of ``n`` windows costs about ``4n/3`` window passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .prompt import FilterPrompt
from .scoring import query_positions
from .selection import MAX_SENTENCE_TOKENS, Unit, normalise, select_ranked, spread, token_units
from .sentences import sentence_spans

MIN_WINDOW = 16
"""A window must hold at least this many context tokens."""

KEEP_FRACTION = 0.25
"""Share of a window's tokens that go through to the next round."""

PrefilterFn = Callable[[list[Unit]], torch.Tensor]
"""``(region_units) -> values (U,)``: a cheap value of every unit before any pass (higher = keep); ``-inf``
for units it cannot value, such as the separators between documents."""

UnitScoreFn = Callable[[torch.Tensor, torch.Tensor, int, list[Unit], list[Unit]], torch.Tensor]
"""``(input_ids (T,), query_rows (Q,), ctx_start, units, region_units) -> values (U,)``: one filter pass over
one window, whose context starts at position ``ctx_start`` and is cut into ``units`` (indices relative to
``ctx_start``; ``region_units`` are the same units in the prompt's context region, separators included)."""


def plan_windows(sizes: Sequence[int], window: int, overlap: int) -> list[tuple[int, int]]:
    """Pack consecutive units of ``sizes`` tokens into runs ``[i, j)`` of at most ``window`` tokens.

    Consecutive runs share their trailing units of at most ``overlap`` tokens (so that a unit at a
    window's edge is also seen with what came before it). A unit larger than ``window`` gets a run
    of its own.
    """
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"window/overlap: need window >= 1 and 0 <= overlap < window, got {window}/{overlap}.")
    runs: list[tuple[int, int]] = []
    i, n = 0, len(sizes)
    while i < n:
        j, used = i, 0
        while j < n and (j == i or used + sizes[j] <= window):
            used += sizes[j]
            j += 1
        runs.append((i, j))
        if j == n:
            break
        back, shared = j, 0  # step back over at most `overlap` tokens, always moving forward
        while back - 1 > i and shared + sizes[back - 1] <= overlap:
            back -= 1
            shared += sizes[back]
        i = back
    return runs


def context_units(prompt: FilterPrompt, max_tokens: int) -> list[Unit]:
    """Units covering the prompt's context region in order: sentence pieces of each document and the
    separators between documents. Indices are relative to the first document's first token."""
    c0 = prompt.doc_offsets[0]
    units: list[Unit] = []
    cursor = 0
    for offset, doc in zip(prompt.doc_offsets, prompt.documents, strict=True):
        start = offset - c0
        if start > cursor:
            units.append((cursor, start))  # the separator before this document
        units.extend(token_units(doc.ends, sentence_spans(doc.text), start, max_tokens))
        cursor = start + len(doc.ids)
    return units


def score_in_windows(
    prompt: FilterPrompt,
    max_positions: int,
    query: str | int,
    score: UnitScoreFn,
    overlap_fraction: float = 0.125,
    prefilter: PrefilterFn | None = None,
    prefilter_tokens: int | None = None,
) -> torch.Tensor:
    """Scores (N,) of every context token of ``prompt``, passes of at most ``max_positions`` tokens.

    ``query`` is ``ScoringConfig.query`` (which rows score); ``score`` runs one filter pass and
    values its units; ``prefilter`` values units without a pass and keeps the best
    ``prefilter_tokens`` (default: one window's context) for the passes. A unit's tokens share its
    final value equally.
    """
    if not prompt.documents:
        return torch.empty(0)
    ids = prompt.input_ids  # (T,)
    c0 = prompt.doc_offsets[0]
    c1 = prompt.doc_offsets[-1] + len(prompt.documents[-1].ids)
    prefix, region, tail = ids[:c0], ids[c0:c1], ids[c1:]  # region: documents and separators
    frame = int(prefix.numel() + tail.numel())
    window = max_positions - frame
    if window < MIN_WINDOW:
        raise ValueError(
            f"query: the prompt frame and question take {frame} tokens, which leaves {max(window, 0)} "
            f"of the {max_positions} positions of a filter pass for context (need {MIN_WINDOW}); "
            "shorten the question, raise `window`, or use a filter model with a longer context."
        )
    query_offset = prompt.query_start - c1  # question start, relative to the end of the context

    def run(units: Sequence[Unit]) -> tuple[torch.Tensor, list[Unit]]:
        """One pass over the given units' tokens, concatenated: their values (U,) and local spans."""
        ctx = torch.cat([region[a:b] for a, b in units]) if units else region[:0]
        win = torch.cat([prefix, ctx, tail])  # (T_w,)
        p = int(prefix.numel())
        rows = query_positions(int(win.numel()), p + int(ctx.numel()) + query_offset, query)  # (Q,)
        local, pos = [], 0
        for a, b in units:
            local.append((pos, pos + b - a))
            pos += b - a
        return score(win, rows, p, local, list(units)).double().cpu(), local

    n = int(region.numel())
    piece = max(1, min(MAX_SENTENCE_TOKENS, window // 8))  # a window always holds 8 units or more
    alive = context_units(prompt, piece)
    knocked: list[tuple[int, list[Unit], torch.Tensor]] = []  # (round, units, best normalised values)
    rnd = 0
    keep = prefilter_tokens or window
    if prefilter is not None and sum(b - a for a, b in alive) > keep:  # round 0: no pass
        values = prefilter(alive).double()  # (U,)
        finite = torch.isfinite(values)
        floor = float(values[finite].min()) if bool(finite.any()) else 0.0
        values = torch.where(finite, values, torch.full_like(values, floor))
        kept = set(select_ranked(values, alive, keep).tolist())
        s0 = normalise(values).double()
        out = [u for u, (a, _) in enumerate(alive) if a not in kept]
        if out:
            knocked.append((0, [alive[u] for u in out], s0[out]))
        alive = [u for u in alive if u[0] in kept]
        rnd = 1
    while sum(b - a for a, b in alive) > window:
        sizes = [b - a for a, b in alive]
        runs = plan_windows(sizes, window, int(window * overlap_fraction))
        best = torch.zeros(len(alive), dtype=torch.float64)  # best normalised value seen per unit
        survivors: set[int] = set()
        for i, j in runs:
            values, local = run(alive[i:j])
            s = normalise(values).double()  # (U_w,)
            quota = max(1, int(sum(sizes[i:j]) * KEEP_FRACTION))
            kept = set(select_ranked(s, local, quota).tolist())
            for u, (la, _) in enumerate(local):
                best[i + u] = max(float(best[i + u]), float(s[u]))
                if la in kept:
                    survivors.add(i + u)
        if not survivors or len(survivors) == len(alive):  # no progress: keep the best units that fit
            order = sorted(range(len(alive)), key=lambda u: -float(best[u]))
            survivors, used = set(), 0
            for u in order:
                if used + sizes[u] <= window:
                    survivors.add(u)
                    used += sizes[u]
        out = [u for u in range(len(alive)) if u not in survivors]
        if out:
            knocked.append((rnd, [alive[u] for u in out], best[out]))
        alive = [alive[u] for u in sorted(survivors)]
        rnd += 1
    final_units: list[Unit] = []
    final_values: list[torch.Tensor] = []
    if alive:
        values, _ = run(alive)
        final_units += alive
        final_values.append(1.0 + normalise(values).double())
    # knocked-out units: band by round, inside it by value; all below every survivor
    scale = 1.0 / (rnd + 1)
    for r, units, s in knocked:
        final_units += units
        final_values.append((r + s / (1.0 + s)) * scale)
    values = torch.cat(final_values) if final_values else torch.empty(0, dtype=torch.float64)
    final = spread(values, final_units, n)  # (n,) over the region
    return final[prompt.context_positions() - c0]
