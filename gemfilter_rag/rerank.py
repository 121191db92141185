"""Relevance of each document from one compression: pure functions of a ``CompressionResult``.

The rerank endpoints of ``gemfilter serve`` answer with the same filter pass as ``/v1/compress``; these
functions turn its result into one relevance per document and an order. Three measures:

- ``"best_unit"``: the value of the document's best unit (``DocumentResult.best_unit_score``),
  divided by the best document's, so the top document scores 1 and every score lies in [0, 1];
- ``"kept_mass"`` (the default, best of the three in ``benchmarks.rerank``): the summed token scores of
  the document's kept tokens at the request's budget,
  divided by the largest (documents that kept nothing score 0);
- ``"score_share"``: the document's share of the whole context's score (``DocumentResult.score_share``).

``benchmarks.rerank`` compares them against MiniLM ranking; the README's Results say which ships and why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .result import CompressionResult

MEASURES = ("best_unit", "kept_mass", "score_share")
DEFAULT_MEASURE = "kept_mass"


def relevance(result: CompressionResult, measure: str = DEFAULT_MEASURE) -> list[float]:
    """One relevance in [0, 1] per input document (in input order); higher = more relevant.

    A result without a filter pass (``filter_layer`` None: the budget held the whole context) carries
    no evidence, so every document gets 1.0 and the order stays the input order.
    """
    if result.filter_layer is None:
        check_measure(measure)
        return [1.0] * len(result.documents)
    return _normalise(raw_scores(result, measure))


def raw_scores(result: CompressionResult, measure: str = DEFAULT_MEASURE) -> list[float]:
    """The measure's values before scaling (what ``relevance`` divides by the largest), in input order."""
    check_measure(measure)
    docs = result.documents
    if measure == "best_unit":
        return [d.best_unit_score for d in docs]
    if measure == "score_share":
        return [d.score_share for d in docs]
    return kept_mass(result)


def check_measure(measure: str) -> str:
    """``measure`` if it is one of ``MEASURES``, else a ValueError naming it."""
    if measure not in MEASURES:
        raise ValueError(f"measure: {measure!r} is not valid; use one of {', '.join(MEASURES)}.")
    return measure


def kept_mass(result: CompressionResult) -> list[float]:
    """Per document, the summed token scores of its kept tokens (its kept token count without ``details``)."""
    details = result.details or {}
    scores = details.get("scores")
    if scores is None:
        return [float(d.kept_tokens) for d in result.documents]
    ends, total = [], 0
    for d in result.documents:
        total += d.original_tokens
        ends.append(total)
    low = min(scores) if scores else 0.0
    out = [0.0] * len(result.documents)
    doc = 0
    for t in result.kept_token_indices:  # ascending
        while t >= ends[doc]:
            doc += 1
        out[doc] += scores[t] - low
    return out


def rerank_budget(context_tokens: int, top_k: int) -> int:
    """The token budget of a rerank's compression: ``top_k`` (the profile's), but below the context so
    that a filter pass always runs (1 for a context of at most one token)."""
    return max(1, min(top_k, context_tokens - 1))


def ranking(scores: Sequence[float]) -> list[int]:
    """Document indices by descending score; ties keep the input order."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def _normalise(raw: Sequence[float]) -> list[float]:
    """Scores divided by the largest (clipped to [0, 1]); all zero (or none finite) gives all 0."""
    finite = [v if math.isfinite(v) else 0.0 for v in raw]
    top = max(finite, default=0.0)
    if top <= 0:
        return [0.0] * len(finite)
    return [min(1.0, max(0.0, v / top)) for v in finite]
