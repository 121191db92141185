"""Combine the retriever's per-document scores with GemFilter's token scores: pure functions.

With a trained readout the default (``GemFilterConfig.prior="auto"``) needs neither rule: the
retriever's score is one of the readout's learned features (``gemfilter_rag.features``). The rules:

* ``"add"`` (the default of single-layer scoring): each token's score, normalised to mean 1 over
  the context, gets its document's relative retriever score (``features.relative_scores``: 0 for
  the best document, ``(s - max) / max(|max|, |min|)`` for the others) times ``prior_weight``
  added; selection then runs as usual. Near-equal retriever scores give near-equal additions.
* ``"share"``: the retriever shares out the token budget across documents (a softmax of the
  standardised document scores, sharpened by ``prior_weight``), and GemFilter picks the units
  inside each document within its share. Budget a document cannot use goes to the next documents
  in retriever order. Z-scores stretch any spread, however small, so near-equal scores can starve
  a document: it is not a default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .features import relative_scores
from .features import standardise as features_standardise
from .selection import Unit, normalise, select_ranked

PRIOR_MODES = ("auto", "none", "share", "add")


def check_document_scores(document_scores: Any, n_documents: int) -> list[float] | None:
    """Validate retriever scores: one finite number per document (higher = more relevant)."""
    if document_scores is None:
        return None
    if isinstance(document_scores, (str, bytes)) or not isinstance(document_scores, Sequence):
        try:
            document_scores = list(document_scores)
        except TypeError:
            raise TypeError(
                f"document_scores: expected a sequence of floats, got {type(document_scores).__name__}."
            ) from None
    if len(document_scores) != n_documents:
        raise ValueError(
            f"document_scores: has {len(document_scores)} scores for {n_documents} documents; "
            "pass one score per document, in the same order."
        )
    out: list[float] = []
    for i, s in enumerate(document_scores):
        if isinstance(s, bool) or not isinstance(s, (int, float)) and not hasattr(s, "__float__"):
            raise TypeError(f"document_scores[{i}]: expected a number, got {type(s).__name__}.")
        value = float(s)
        if not math.isfinite(value):
            raise ValueError(
                f"document_scores[{i}]: {value!r} is not finite; pass finite similarities or negated ranks."
            )
        out.append(value)
    return out


def standardise(values: Sequence[float]) -> torch.Tensor:
    """Z-scores of ``values`` (all zeros when they are (near) equal): ``features.standardise`` of one column. (D,)"""
    x = torch.tensor(list(values), dtype=torch.float64)
    return features_standardise(x[:, None])[:, 0]


def budget_shares(document_scores: Sequence[float], weight: float) -> torch.Tensor:
    """Share of the budget per document: softmax of ``weight`` times the z-scored scores. (D,)"""
    z = standardise(document_scores)
    return torch.softmax(weight * z, dim=0) if z.numel() else z


def share_budget(
    document_scores: Sequence[float],
    doc_units: Sequence[Sequence[Unit]],
    doc_values: Sequence[torch.Tensor],
    budget: int,
    weight: float,
) -> torch.Tensor:
    """The ``"share"`` mode: retriever shares the budget, GemFilter picks the units inside each document.

    doc_units: for each document its units (global token indices); doc_values: for each document the
    values (U_d,) of its units, higher = keep first.
    Documents are visited in decreasing retriever score; each gets its share of the budget plus
    whatever earlier documents left unused. Returns kept token indices, ascending.
    """
    if len(doc_units) != len(document_scores):
        raise ValueError("doc_units: need one list of units per document score.")
    shares = budget_shares(document_scores, weight)  # (D,)
    order = sorted(range(len(document_scores)), key=lambda d: -document_scores[d])
    carry = 0.0
    kept: list[torch.Tensor] = []
    for d in order:
        allowance = int(math.floor(float(shares[d]) * budget + carry + 1e-9))
        chosen = (
            select_ranked(doc_values[d], doc_units[d], allowance) if allowance > 0 else torch.empty(0, dtype=torch.long)
        )
        used = int(chosen.numel())
        carry = float(shares[d]) * budget + carry - used
        kept.append(chosen)
    total = sum(int(k.numel()) for k in kept)
    if total > budget:  # pragma: no cover - floors keep the sum within the budget
        raise AssertionError("share_budget exceeded the budget")
    if not kept:
        return torch.empty(0, dtype=torch.long)
    return torch.sort(torch.cat(kept)).values


def add_prior(
    scores: torch.Tensor, doc_lengths: Sequence[int], document_scores: Sequence[float], weight: float
) -> torch.Tensor:
    """The ``"add"`` mode: token scores normalised to mean 1, plus ``weight`` x their document's relative score.

    scores: (N,) with N = sum(doc_lengths). Returns (N,) float32.
    """
    n = int(scores.numel())
    if sum(doc_lengths) != n:
        raise ValueError(f"doc_lengths: sum to {sum(doc_lengths)} but there are {n} token scores.")
    if n == 0:
        return scores.float()
    norm = normalise(scores)  # (N,)
    per_doc = relative_scores(document_scores)  # (D,)
    prior = torch.repeat_interleave(per_doc, torch.tensor(list(doc_lengths)))  # (N,)
    return (norm + weight * prior).float()
