"""Choose which context tokens to keep under a token budget: pure functions of scores."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .scoring import top_k_sorted

Unit = tuple[int, int]  # [start, end) in context-token indices

MAX_SENTENCE_TOKENS = 64
"""Longer sentences are cut into pieces of at most this many tokens (and never more than the budget),
so that one run-on "sentence" can neither eat a budget whole nor never fit in it."""


def select_tokens(scores: torch.Tensor, budget: int) -> torch.Tensor:
    """The paper's selection: the ``budget`` best tokens, in original order. scores: (N,)."""
    return top_k_sorted(scores, budget)


def unit_scores(scores: torch.Tensor, units: Sequence[Unit]) -> torch.Tensor:
    """Sum of token scores inside each unit. scores: (N,) -> (U,)."""
    if not units:
        return torch.empty(0, dtype=scores.dtype)
    csum = torch.cat([scores.new_zeros(1), torch.cumsum(scores.double(), 0)])  # (N+1,)
    starts = torch.tensor([u[0] for u in units])
    ends = torch.tensor([u[1] for u in units])
    return (csum[ends] - csum[starts]).to(scores.dtype)


def select_units(scores: torch.Tensor, units: Sequence[Unit], budget: int) -> torch.Tensor:
    """Keep whole units (sentences, documents) by their summed token ``scores`` (N,), within ``budget``."""
    return select_ranked(unit_scores(scores, units), units, budget)


def select_ranked(values: torch.Tensor, units: Sequence[Unit], budget: int) -> torch.Tensor:
    """Keep whole units by ``values`` (U,), greedily, within ``budget`` tokens.

    Units are taken best first (ties: the earlier unit); one that no longer fits is skipped and
    smaller ones may still fill the rest. Returns the kept token indices in ascending order.
    """
    if not units:
        return torch.empty(0, dtype=torch.long)
    order = torch.argsort(values, descending=True, stable=True).tolist()
    left = budget
    kept: list[int] = []
    for u in order:
        size = units[u][1] - units[u][0]
        if 0 < size <= left:
            kept.append(u)
            left -= size
        if left == 0:
            break
    kept.sort()
    if not kept:
        return torch.empty(0, dtype=torch.long)
    return torch.cat([torch.arange(units[u][0], units[u][1]) for u in kept])


def output_tokens(keep: torch.Tensor, doc_ends: Sequence[int], join: int) -> int:
    """Tokens of the text that keeping ``keep`` (K,) gives: the kept tokens, plus ``join`` tokens (the
    separator) between every two documents that keep any. ``doc_ends``: each document's end, in
    context-token indices (ascending)."""
    if keep.numel() == 0:
        return 0
    if join == 0:
        return int(keep.numel())
    docs = torch.bucketize(keep, torch.tensor(list(doc_ends), dtype=keep.dtype), right=True)  # (K,)
    return int(keep.numel()) + join * (int(torch.unique(docs).numel()) - 1)


def fit_joins(pick: Callable[[int], torch.Tensor], budget: int, doc_ends: Sequence[int], join: int) -> torch.Tensor:
    """``pick(b)`` (kept token indices within ``b`` tokens) for a ``b`` whose output, separators between
    documents included (``output_tokens``), fits ``budget``, so the text handed on never exceeds it.

    ``b`` drops by each overshoot until the output fits, then grows back by bisection to the largest ``b``
    that fits: exact where the output grows with ``b`` (the best ``b`` tokens), close for greedy units.
    """
    keep = pick(budget)
    over = output_tokens(keep, doc_ends, join) - budget
    if over <= 0:
        return keep
    fits, b = budget, budget  # fits: the smallest b known not to fit, then b: one that fits
    while over > 0 and b > 0:
        fits, b = b, max(0, b - over)
        keep = pick(b)
        over = output_tokens(keep, doc_ends, join) - budget
    while fits - b > 1:  # the largest b that fits, between one that fits and one that does not
        mid = (b + fits) // 2
        found = pick(mid)
        if output_tokens(found, doc_ends, join) <= budget:
            b, keep = mid, found
        else:
            fits = mid
    return keep


def normalise(scores: torch.Tensor) -> torch.Tensor:
    """Shift (N,) scores to a minimum of 0 and scale them to a mean of 1 (all ones if constant). (N,) float64"""
    shifted = scores.double() - scores.double().min() if scores.numel() else scores.double()
    mean = shifted.mean() if scores.numel() else shifted.new_zeros(())
    return shifted / mean if mean > 0 else torch.ones_like(shifted)


def spread(values: torch.Tensor, units: Sequence[Unit], n: int) -> torch.Tensor:
    """Token scores (n,) that give each unit's tokens an equal part of its value (U,), so that
    ``unit_scores`` of the result gives ``values`` back; tokens outside every unit get 0."""
    out = torch.zeros(n, dtype=torch.float64)
    for (a, b), v in zip(units, values.double().tolist(), strict=True):
        if b > a:
            out[a:b] = v / (b - a)
    return out.float()


def token_units(
    token_ends: Sequence[int], spans: Sequence[tuple[int, int]], offset: int, max_tokens: int
) -> list[Unit]:
    """Group one document's tokens into units that follow character ``spans`` (e.g. sentences).

    A token belongs to the span holding its last character; a unit longer than ``max_tokens`` is
    cut into pieces of at most that many. ``offset`` shifts indices into the global context.
    """
    units: list[Unit] = []
    t = 0
    n = len(token_ends)
    for _, span_end in spans:
        start = t
        while t < n and token_ends[t] <= span_end:
            t += 1
        if t > start:
            for a in range(start, t, max_tokens):
                units.append((offset + a, offset + min(a + max_tokens, t)))
    if t < n:  # tokens past the last span (cannot happen for partitioning spans)
        units.append((offset + t, offset + n))
    return units
