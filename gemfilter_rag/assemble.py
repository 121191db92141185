"""Turn kept token indices into a ``CompressionResult``: exact spans, per-document provenance, statistics."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .config import GemFilterConfig
from .prompt import FilterPrompt
from .result import CompressionResult, DocumentResult
from .selection import MAX_SENTENCE_TOKENS, Unit, unit_scores
from .units import prompt_units


def assemble(
    prompt: FilterPrompt,
    query: str,
    keep: torch.Tensor,
    scores: torch.Tensor,
    layer: int | None,
    cfg: GemFilterConfig,
    timings: dict[str, float],
    units: Sequence[Sequence[Unit]] | None = None,
) -> CompressionResult:
    """The ``CompressionResult`` of keeping the context tokens ``keep`` (ascending) of ``prompt``.

    scores: (N,) one score per context token (for score shares and the explain view); ``layer`` is
    None when no filter pass ran. ``units``: per document, the units the selection used (for each
    document's ``best_unit_score``); None cuts them again at ``cfg.granularity``.
    """
    kept = keep.tolist()
    shifted = scores - scores.min() if scores.numel() else scores
    total = float(shifted.sum()) if scores.numel() else 0.0
    if units is None:
        units = prompt_units(prompt, cfg.granularity, MAX_SENTENCE_TOKENS).per_document
    out: list[DocumentResult] = []
    pos = 0
    start = 0
    for i, doc in enumerate(prompt.documents):
        end = start + len(doc.ids)
        mine: list[int] = []
        while pos < len(kept) and kept[pos] < end:
            mine.append(kept[pos] - start)
            pos += 1
        spans = merge_spans([(doc.starts[t], doc.ends[t]) for t in mine])
        best = unit_scores(scores, units[i]).max().item() if units[i] else 0.0
        share = float(shifted[start:end].sum()) / total if total > 0 else (len(doc.ids) / max(1, prompt.context_tokens))
        out.append(
            DocumentResult(
                index=i,
                text="".join(doc.text[a:b] for a, b in spans),
                spans=spans,
                kept_tokens=len(mine),
                original_tokens=len(doc.ids),
                score_share=share if math.isfinite(share) else 0.0,
                best_unit_score=best if math.isfinite(best) else 0.0,
            )
        )
        start = end
    joined = [d.text for d in out if d.text]
    text = cfg.separator.join(joined)
    return CompressionResult(
        text=text,
        documents=out,
        query=query,
        kept_token_indices=kept,
        original_tokens=prompt.context_tokens,
        compressed_tokens=len(kept),
        filter_layer=layer,
        granularity=cfg.granularity,
        separator_tokens=prompt.join_tokens * max(0, len(joined) - 1),
        timings=timings,
        details={
            "documents": [d.text for d in prompt.documents],
            "token_ends": [list(d.ends) for d in prompt.documents],
            "scores": scores.float().tolist(),
        },
    )


def merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort-preserving union of touching or overlapping character spans; empty spans dropped."""
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if b <= a:
            continue
        if merged and merged[-1][1] >= a:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged
