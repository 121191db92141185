"""Per-unit features of the learned readout: pure functions of tensors.

A unit is a run of context tokens ``[start, end)`` (a sentence piece, a document, or one token).
Shapes: L layers (0..r), H heads, N context tokens, U units, D documents, C = L * H channels.

The attention block (``attention_features``) is what the filter pass measured: for every layer and
head, the question's attention mass on the unit and its mean attention per token, in logs; the
document block (``document_mass``) adds, for every layer and head, the mass on the unit's whole
document. Both are standardised within the prompt, so that a readout trained on one context length
and one number of documents applies to another. The optional extras are raw, never standardised where near-equal
inputs must stay near-equal (the retriever's scores, see ``relative_scores``).

The text block (``TEXT_BLOCKS``: ``lexical.match_features`` of the question and the unit's text) is raw as
well: its columns are 0/1 exact matches and shares in [0, 1] whose meaning does not depend on the prompt. A
z-score would make "holds the key" worth more in a long prompt than in a short one (one matching unit of U
gets about sqrt(U)), and a question without rare terms, whose columns are all zero, gets no lexical term at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .lexical import FEATURES as LEXICAL
from .lexical import OVERLAP
from .selection import Unit

EPS = 1e-8
"""Added before taking logs of attention (probabilities of one token can be ~1e-7)."""

ATTENTION_BLOCKS = 3
"""Attention columns per layer and head of the first readouts: the unit's log mass and log mean, and its
document's log mass (``BLOCKS_V1``)."""
CHANNEL_BLOCKS = ("mass", "mean", "doc_mass", "max", "doc_best", "prev_mass", "next_mass")
"""Blocks of C = L * H columns (one per layer and head): the unit's log attention mass, log mean and log
maximum; its document's log mass and the log mass of the document's best unit; the log mass of the
unit before and after it in its document (the prompt's lowest value at a document's edge)."""
KEY_BLOCKS = ("key_mass",)
"""Blocks of C columns from the attention of the question's rare-term tokens only
(``capture.PassRecord.key_attention``: the rows that name what the question looks up, ``lexical.term_spans``):
the unit's log mass under it. Without rare terms it is the rows' own attention, so the block equals ``mass``."""
LAYER_BLOCKS = ("sim_mean", "sim_max", "sim_doc")
"""Blocks of L columns (one per layer): the filter model's own hidden-state similarity of the unit's tokens
to the question's (``scoring.token_similarity``), their mean and maximum, and the mean over its document."""
TEXT_BLOCKS = ("lexical",)
"""Blocks read from the text, not the pass: ``lexical``, the ``lexical.FEATURES`` columns (``LEXICAL``) of how
the unit's text holds the question's rare terms, raw (not standardised: see the module's docstring)."""
TERM_BLOCKS = ("overlap",)
"""Blocks read from the text and standardised within the prompt: ``overlap``, the ``lexical.overlap_features``
of the unit and its document (the idf-weighted share of the question's content words each mentions), as
z-scores over the prompt's units followed by the raw shares (4 columns): the z-scores rank the units of one
prompt, the raw shares say whether any unit mentions the question's words at all."""
BLOCKS_V1 = ("mass", "mean", "doc_mass")
"""The blocks of readouts trained before the hidden-state and context blocks existed."""
ALL_BLOCKS = CHANNEL_BLOCKS + LAYER_BLOCKS + KEY_BLOCKS + TEXT_BLOCKS + TERM_BLOCKS
"""Every block name a readout may read."""
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


def attention_max(attention: torch.Tensor, units: Sequence[Unit]) -> torch.Tensor:
    """Log of the largest attention any token of each unit gets, per layer and head.

    attention: (L, H, N). Returns (U, C) float32, columns layer-major as in ``attention_features``.
    """
    layers, heads, n = attention.shape
    per_token = attention.reshape(layers * heads, n).T  # (N, C)
    return torch.log(segment_max(per_token, units) + EPS).float()  # (U, C)


def segment_max(values: torch.Tensor, units: Sequence[Unit]) -> torch.Tensor:
    """Maximum of ``values`` (N, C) over the tokens of each unit (every unit non-empty). Returns (U, C)."""
    if not units:
        return values.new_zeros((0, values.shape[1]))
    index = torch.cat([torch.arange(a, b) for a, b in units])  # (sum of lengths,)
    lengths = torch.tensor([b - a for a, b in units])  # (U,)
    return torch.segment_reduce(values[index], "max", lengths=lengths, axis=0)  # (U, C)


def similarity_features(similarity: torch.Tensor, units: Sequence[Unit]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and maximum hidden-state similarity of each unit's tokens to the question, per layer.

    similarity: (L, N) from ``scoring.token_similarity`` at each layer. Returns ((U, L), (U, L)) float32.
    """
    per_token = similarity.T.double()  # (N, L)
    mean = unit_sums(per_token, units) / unit_lengths(units).clamp_min(1.0)[:, None]  # (U, L)
    return mean.float(), segment_max(per_token, units).float()


def raw_blocks(
    attention: torch.Tensor,
    similarity: torch.Tensor | None,
    units: Sequence[Unit],
    hidden: bool,
    *,
    key_attention: torch.Tensor | None = None,
    lexical: torch.Tensor | None = None,
    overlap: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """What the readout's blocks are derived from, per unit, before any standardising (``overlap``: (U, 2)
    ``lexical.overlap_features``, kept as ``"overlap"``).

    attention: (L, H, N); similarity: (L, N) (needed when ``hidden``); key_attention: (L, H, N), the rare-term
    rows' attention; lexical: (U, F) ``lexical.match_features`` of the units' texts. Returns ``"mass"``,
    ``"mean"`` and ``"max"`` (U, C), with ``hidden`` ``"sim_mean"`` and ``"sim_max"`` (U, L), with
    ``key_attention`` ``"key_mass"`` (U, C) and with ``lexical`` ``"lexical"`` (U, F). Training caches these
    for many layers and slices them (``slice_layers``) to try fewer.
    """
    both = attention_features(attention, units)  # (U, 2C)
    channels = both.shape[1] // 2
    out = {"mass": both[:, :channels], "mean": both[:, channels:], "max": attention_max(attention, units)}
    if hidden:
        if similarity is None:
            raise ValueError("similarity: the readout reads hidden states but the pass did not record them.")
        out["sim_mean"], out["sim_max"] = similarity_features(similarity, units)
    if key_attention is not None:
        out["key_mass"] = key_mass(key_attention, units)
    if lexical is not None:
        if lexical.shape != (len(units), len(LEXICAL)):
            raise ValueError(f"lexical: shape {tuple(lexical.shape)}; expected ({len(units)}, {len(LEXICAL)}).")
        out["lexical"] = lexical.float()
    if overlap is not None:
        if overlap.shape != (len(units), len(OVERLAP)):
            raise ValueError(f"overlap: shape {tuple(overlap.shape)}; expected ({len(units)}, {len(OVERLAP)}).")
        out["overlap"] = overlap.float()
    return out


def key_mass(key_attention: torch.Tensor, units: Sequence[Unit]) -> torch.Tensor:
    """Log attention mass of each unit under the rare-term rows' attention, per layer and head.

    key_attention: (L, H, N). Returns (U, C) float32, columns layer-major as in ``attention_features``.
    """
    layers, heads, n = key_attention.shape
    per_token = key_attention.reshape(layers * heads, n).T  # (N, C)
    return torch.log(unit_sums(per_token, units).clamp_min(0.0) + EPS).float()  # (U, C)


def slice_layers(raw: dict[str, torch.Tensor], heads: int, layers: int) -> dict[str, torch.Tensor]:
    """``raw_blocks`` of layers ``0..layers-1`` out of blocks built from more layers."""
    out = {}
    for name, x in raw.items():
        if name in TEXT_BLOCKS + TERM_BLOCKS:  # no layers
            out[name] = x
            continue
        keep = layers * heads if name in CHANNEL_BLOCKS + KEY_BLOCKS else layers
        if keep > x.shape[1]:
            raise ValueError(
                f"layers: {layers} layers need {keep} columns of {name!r} but the features hold {x.shape[1]}."
            )
        out[name] = x[:, :keep]
    return out


def document_best(log_mass: torch.Tensor, unit_docs: torch.Tensor) -> torch.Tensor:
    """(U, C) log masses -> (U, C): the largest log mass among the units of each unit's document."""
    out = torch.empty_like(log_mass)
    for d in unit_docs.unique().tolist():
        mine = unit_docs == d
        out[mine] = log_mass[mine].amax(dim=0)
    return out


def neighbours(x: torch.Tensor, unit_docs: torch.Tensor, step: int) -> torch.Tensor:
    """(U, F) -> (U, F): the row of the unit ``step`` places away (-1: before, +1: after) in the same
    document; at a document's edge, the column's lowest value over the prompt."""
    n = x.shape[0]
    if n == 0:
        return x.clone()
    out = x.amin(dim=0, keepdim=True).expand_as(x).clone()  # (U, F)
    other = torch.arange(n) + step  # (U,)
    source = other.clamp(0, n - 1)  # (U,)
    same = (other >= 0) & (other < n) & (unit_docs[source] == unit_docs)  # (U,)
    out[same] = x[source[same]]
    return out


def document_mean(values: torch.Tensor, units: Sequence[Unit], unit_docs: torch.Tensor) -> torch.Tensor:
    """(U, F) per-unit means -> (U, F): the token-weighted mean over each unit's document."""
    weights = unit_lengths(units)[:, None]  # (U, 1)
    out = torch.empty_like(values)
    for d in unit_docs.unique().tolist():
        mine = unit_docs == d
        w = weights[mine]
        out[mine] = ((values[mine].double() * w).sum(0) / w.sum().clamp_min(1.0)).to(values.dtype)
    return out


def derived_block(
    name: str, raw: dict[str, torch.Tensor], units: Sequence[Unit], unit_docs: torch.Tensor
) -> torch.Tensor:
    """One named block (of ``ALL_BLOCKS``) from ``raw_blocks``, unstandardised."""
    if name in raw:
        return raw[name]
    if name in ("key_mass", "lexical", "overlap"):
        given = {"key_mass": "key_attention"}.get(name, name)
        raise ValueError(f"blocks: {name!r} is read from raw_blocks(..., {given}=...), which was not given.")
    if name == "doc_mass":
        both = torch.cat([raw["mass"], raw["mean"]], dim=1)
        return document_mass(both, unit_docs)
    if name == "doc_best":
        return document_best(raw["mass"], unit_docs)
    if name in ("prev_mass", "next_mass"):
        return neighbours(raw["mass"], unit_docs, -1 if name == "prev_mass" else 1)
    if name == "sim_doc":
        return document_mean(raw["sim_mean"], units, unit_docs)
    raise ValueError(f"blocks: unknown block {name!r}; use names from {ALL_BLOCKS}.")


def block_features(
    raw: dict[str, torch.Tensor],
    blocks: Sequence[str],
    units: Sequence[Unit],
    n_context: int,
    unit_docs: torch.Tensor,
    retriever: torch.Tensor | None = None,
    sim_unit: torch.Tensor | None = None,
    sim_doc: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[str, ...]]:
    """The readout's input: every block of ``blocks`` in order, standardised within the prompt (``TEXT_BLOCKS``
    raw), then the extras as in ``combine``. ``BLOCKS_V1`` gives exactly ``combine``'s columns."""
    cols = []
    for b in blocks:
        block = derived_block(b, raw, units, unit_docs).float()
        if b in TERM_BLOCKS:
            cols += [standardise(block), block]
        else:
            cols.append(block if b in TEXT_BLOCKS else standardise(block))
    extra, names = extra_columns(units, n_context, unit_docs, retriever, sim_unit, sim_doc)
    return torch.cat([*cols, extra], dim=1), names


def block_columns(blocks: Sequence[str], layers: int, heads: int) -> int:
    """How many columns ``blocks`` take at ``layers`` layers of ``heads`` heads."""
    widths = {
        **dict.fromkeys(CHANNEL_BLOCKS + KEY_BLOCKS, layers * heads),
        **dict.fromkeys(TEXT_BLOCKS, len(LEXICAL)),
        **dict.fromkeys(TERM_BLOCKS, 2 * len(OVERLAP)),
    }
    return sum(widths.get(b, layers) for b in blocks)


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
    similarity: torch.Tensor | None = None,
    blocks: Sequence[str] = BLOCKS_V1,
    retriever: torch.Tensor | None = None,
    sim_unit: torch.Tensor | None = None,
    sim_doc: torch.Tensor | None = None,
    key_attention: torch.Tensor | None = None,
    lexical: torch.Tensor | None = None,
    overlap: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[str, ...]]:
    """Every feature of every unit, and the names of the extra columns (overlap: (U, 2)
    ``lexical.overlap_features``, for ``TERM_BLOCKS``).

    attention: (L, H, N); similarity: (L, N) hidden-state similarities (for ``LAYER_BLOCKS``); unit_docs:
    (U,) document index of each unit; retriever: (D,) from ``relative_scores``; sim_unit: (U,) and
    sim_doc: (D,) embedding similarities to the query; key_attention: (L, H, N) the rare-term rows'
    attention (for ``key_mass``); lexical: (U, F) ``lexical.match_features`` (for ``TEXT_BLOCKS``). Returns
    ((U, F), extra names): the ``blocks`` (``BLOCKS_V1``: the attention block (2C) and document block (C)),
    then ``SHAPE``, then ``RETRIEVER`` and ``EMBEDDING`` columns for the inputs given.
    """
    n_context = int(attention.shape[-1])
    if tuple(blocks) == BLOCKS_V1:
        raw = attention_features(attention, units)  # (U, 2C)
        return combine(raw, units, n_context, unit_docs, retriever, sim_unit, sim_doc)
    hidden = any(b in LAYER_BLOCKS for b in blocks)
    found = raw_blocks(
        attention,
        similarity,
        units,
        hidden,
        key_attention=key_attention if "key_mass" in blocks else None,
        lexical=lexical if "lexical" in blocks else None,
        overlap=overlap if "overlap" in blocks else None,
    )
    return block_features(found, blocks, units, n_context, unit_docs, retriever, sim_unit, sim_doc)


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
    extra, names = extra_columns(units, n_context, unit_docs, retriever, sim_unit, sim_doc)
    return torch.cat([standardise(raw), standardise(document_mass(raw, unit_docs)), extra], dim=1), names


def extra_columns(
    units: Sequence[Unit],
    n_context: int,
    unit_docs: torch.Tensor,
    retriever: torch.Tensor | None = None,
    sim_unit: torch.Tensor | None = None,
    sim_doc: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[str, ...]]:
    """``SHAPE``, then ``RETRIEVER`` and ``EMBEDDING`` columns for the inputs given. (U, E) and their names."""
    cols = [shape_features(units, n_context)]
    names: list[str] = list(SHAPE)
    if retriever is not None:
        cols.append(retriever.double()[unit_docs][:, None].float())  # (U, 1)
        names += RETRIEVER
    if sim_unit is not None and sim_doc is not None:
        sims = torch.stack([sim_unit.double(), sim_doc.double()[unit_docs]], dim=1)  # (U, 2)
        cols.append(standardise(sims).float())
        names += EMBEDDING
    return torch.cat(cols, dim=1), tuple(names)
