"""Per-unit features of the learned readout: pure functions of tensors.

A unit is a run of context tokens ``[start, end)`` (a sentence piece, a document, or one token).
Shapes: L layers (0..r), H heads, N context tokens, U units, D documents, C = L * H channels.

The attention block (``attention_features``) is what the filter pass measured: for every layer and
head, the question's attention mass on the unit and its mean attention per token, in logs; the
document block (``document_mass``) adds, for every layer and head, the mass on the unit's whole
document. Both are standardised within the prompt, so that a readout trained on one context length
and one number of documents applies to another. The optional extras are raw, never standardised where near-equal
inputs must stay near-equal (the retriever's scores, see ``relative_scores``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .selection import Unit

EPS = 1e-8
"""Added before taking logs of attention (probabilities of one token can be ~1e-7)."""

ATTENTION_BLOCKS = 3
"""Attention columns per layer and head: the unit's log mass and log mean, and its document's log mass."""
SHAPE = ("log_length", "position")
"""Extras every readout uses: the unit's length in tokens (log) and the relative position of its middle."""
RETRIEVER = ("retriever",)
"""Extra from the retriever's score of the unit's document (``relative_scores``)."""
EMBEDDING = ("sim_unit", "sim_doc")
"""Extras from an embedding model: similarity of the unit and of its document to the query, standardised."""


def unit_sums(values: torch.Tensor, units: Sequence[Unit]) -> torch.Tensor:
    """Sum of ``values`` (N, C) over the tokens of each unit. Returns (U, C) float64."""
    if not units:
        return values.new_zeros((0, values.shape[1]), dtype=torch.float64)
    csum = torch.cat([values.new_zeros((1, values.shape[1]), dtype=torch.float64), values.double().cumsum(0)])
    starts = torch.tensor([u[0] for u in units])  # (U,)
    ends = torch.tensor([u[1] for u in units])  # (U,)
    return csum[ends] - csum[starts]  # (U, C)


def unit_lengths(units: Sequence[Unit]) -> torch.Tensor:
    """Tokens per unit. Returns (U,) float64."""
    return torch.tensor([float(b - a) for a, b in units], dtype=torch.float64)


def attention_features(attention: torch.Tensor, units: Sequence[Unit]) -> torch.Tensor:
    """Log attention mass and log mean attention of each unit, per layer and head.

    attention: (L, H, N), the question's mean attention to each context token. Returns (U, 2C),
    columns ``[mass(l, h) for l, h] + [mean(l, h) for l, h]`` (layer-major), not yet standardised.
    """
    layers, heads, n = attention.shape
    per_token = attention.reshape(layers * heads, n).T  # (N, C)
    mass = unit_sums(per_token, units).clamp_min(0.0)  # (U, C)
    mean = mass / unit_lengths(units).clamp_min(1.0)[:, None]  # (U, C)
    return torch.cat([torch.log(mass + EPS), torch.log(mean + EPS)], dim=1).float()  # (U, 2C)


def select_layers(features: torch.Tensor, heads: int, layers: int) -> torch.Tensor:
    """The attention columns of layers ``0..layers-1`` out of a block built from more layers.

    features: (U, 2 * L * heads) from ``attention_features``. Returns (U, 2 * layers * heads).
    """
    total = features.shape[1] // 2
    keep = layers * heads
    if keep > total:
        raise ValueError(f"layers: {layers} layers need {keep} channels but the features hold {total}.")
    return torch.cat([features[:, :keep], features[:, total : total + keep]], dim=1)


def document_mass(raw: torch.Tensor, unit_docs: torch.Tensor) -> torch.Tensor:
    """Log attention mass of each unit's document, per layer and head: (U, 2C) block -> (U, C).

    ``raw`` is ``attention_features``'s block; its first C columns are the units' log masses, and a
    document's mass is the sum of its units' masses (a log-sum-exp of their logs).
    """
    channels = raw.shape[1] // 2
    log_mass = raw[:, :channels].double()  # (U, C)
    out = torch.empty_like(log_mass)
    for d in unit_docs.unique().tolist():
        mine = unit_docs == d
        out[mine] = torch.logsumexp(log_mass[mine], dim=0)
    return out.float()


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Z-score every column over the units of one prompt; a constant column becomes zeros. (U, F)"""
    if x.shape[0] < 2:
        return torch.zeros_like(x)
    xd = x.double()
    std = xd.std(dim=0, unbiased=False)  # (F,)
    z = (xd - xd.mean(dim=0)) / std.clamp_min(1e-12)
    return torch.where(std > 1e-6, z, torch.zeros_like(z)).to(x.dtype)


def shape_features(units: Sequence[Unit], n_context: int) -> torch.Tensor:
    """``SHAPE`` columns: log of the unit's token count and the relative position of its middle. (U, 2)"""
    lengths = unit_lengths(units)  # (U,)
    middles = torch.tensor([(a + b) / 2.0 for a, b in units], dtype=torch.float64)  # (U,)
    position = middles / max(1, n_context)
    return torch.stack([torch.log(lengths.clamp_min(1.0)), position], dim=1).float()  # (U, 2)


def relative_scores(document_scores: Sequence[float]) -> torch.Tensor:
    """Retriever scores relative to the best one, in units of the scores' own size. (D,) float64 in [-2, 0].

    ``(s - max) / max(|max|, |min|)``: invariant to the score's unit (cosine, BM25, rerank logits)
    and never amplifying: near-equal scores give near-equal values (0.99 and 1.00 differ by 0.01),
    unlike z-scores, which stretch any spread, however small, to unit variance.
    """
    s = torch.tensor(list(document_scores), dtype=torch.float64)
    if s.numel() == 0:
        return s
    scale = torch.maximum(s.max().abs(), s.min().abs()).clamp_min(1e-12)
    return (s - s.max()) / scale


def unit_features(
    attention: torch.Tensor,
    units: Sequence[Unit],
    unit_docs: torch.Tensor,
    *,
    retriever: torch.Tensor | None = None,
    sim_unit: torch.Tensor | None = None,
    sim_doc: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[str, ...]]:
    """Every feature of every unit, and the names of the extra columns.

    attention: (L, H, N); unit_docs: (U,) document index of each unit; retriever: (D,) from
    ``relative_scores``; sim_unit: (U,) and sim_doc: (D,) embedding similarities to the query.
    Returns ((U, 3C + E), extra names): the standardised attention block (2C) and document block (C),
    then ``SHAPE``, then ``RETRIEVER`` and ``EMBEDDING`` columns for the inputs given.
    """
    raw = attention_features(attention, units)  # (U, 2C)
    return combine(raw, units, int(attention.shape[-1]), unit_docs, retriever, sim_unit, sim_doc)


def combine(
    raw: torch.Tensor,
    units: Sequence[Unit],
    n_context: int,
    unit_docs: torch.Tensor,
    retriever: torch.Tensor | None = None,
    sim_unit: torch.Tensor | None = None,
    sim_doc: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[str, ...]]:
    """``unit_features`` from an attention block already reduced to units (``attention_features``, (U, 2C)),
    so that training can cache the block of many layers and try fewer."""
    cols = [standardise(raw), standardise(document_mass(raw, unit_docs)), shape_features(units, n_context)]
    names: list[str] = list(SHAPE)
    if retriever is not None:
        cols.append(retriever.double()[unit_docs][:, None].float())  # (U, 1)
        names += RETRIEVER
    if sim_unit is not None and sim_doc is not None:
        sims = torch.stack([sim_unit.double(), sim_doc.double()[unit_docs]], dim=1)  # (U, 2)
        cols.append(standardise(sims).float())
        names += EMBEDDING
    return torch.cat(cols, dim=1), tuple(names)
