"""The learned readout: a linear map from a unit's features to how likely it holds what the question needs.

A ``Readout`` is trained per model (``gemfilter train-readout``, ``gemfilter_rag.training``) and
ships inside the model's profile. It reads every head of every layer ``0..layer`` of the one
early-exit pass (``gemfilter_rag.features``) plus a few extras; several variants share the layer
and differ only in which optional extras they use, so the compressor picks the one whose inputs
it has: retriever scores (``document_scores=``) and/or an embedding model (``embeddings=``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .features import (
    ALL_BLOCKS,
    BLOCKS_V1,
    EMBEDDING,
    KEY_BLOCKS,
    LAYER_BLOCKS,
    RETRIEVER,
    SHAPE,
    TERM_BLOCKS,
    TEXT_BLOCKS,
    block_columns,
)


@dataclass(frozen=True)
class Readout:
    """One linear readout: ``logit = features @ weights + bias`` over units.

    ``weights`` cover the ``blocks`` of layers ``0..layer`` (``features.block_columns``: ``(layer + 1) *
    heads`` columns for a block of ``features.CHANNEL_BLOCKS`` or ``KEY_BLOCKS``, ``layer + 1`` for one of
    ``features.LAYER_BLOCKS``, ``len(features.LEXICAL)`` for ``features.TEXT_BLOCKS``;
    ``features.unit_features``) followed by ``extras``, in that order.
    """

    layer: int
    heads: int
    extras: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    blocks: tuple[str, ...] = BLOCKS_V1

    def __post_init__(self) -> None:
        unknown = [b for b in self.blocks if b not in ALL_BLOCKS]
        if unknown or len(set(self.blocks)) != len(self.blocks):
            raise ValueError(f"blocks: {list(self.blocks)} must be distinct names of {ALL_BLOCKS}.")
        expected = block_columns(self.blocks, self.layer + 1, self.heads) + len(self.extras)
        if len(self.weights) != expected:
            raise ValueError(
                f"weights: {len(self.weights)} values for layer {self.layer}, {self.heads} heads and extras "
                f"{list(self.extras)}; expected {expected}. The readout does not belong to this model."
            )

    @property
    def uses_retriever(self) -> bool:
        """Whether it needs the retriever's document scores."""
        return RETRIEVER[0] in self.extras

    @property
    def uses_embeddings(self) -> bool:
        """Whether it needs an embedding model."""
        return EMBEDDING[0] in self.extras

    @property
    def uses_hidden(self) -> bool:
        """Whether it reads the filter model's hidden-state similarities (``features.LAYER_BLOCKS``)."""
        return any(b in LAYER_BLOCKS for b in self.blocks)

    @property
    def uses_key_attention(self) -> bool:
        """Whether it reads the rare-term rows' attention (``key_mass``, ``capture.PassRecord.key_attention``)."""
        return any(b in KEY_BLOCKS for b in self.blocks)

    @property
    def uses_lexical(self) -> bool:
        """Whether it reads the units' texts against the question (``features.TEXT_BLOCKS``)."""
        return any(b in TEXT_BLOCKS for b in self.blocks)

    @property
    def uses_overlap(self) -> bool:
        """Whether it reads the question's content words in the units' texts (``features.TERM_BLOCKS``)."""
        return any(b in TERM_BLOCKS for b in self.blocks)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(U, F) features, columns as in ``features.unit_features`` -> (U,) logits."""
        w = torch.tensor(self.weights, dtype=torch.float64)  # (F,)
        if features.shape[1] != w.shape[0]:
            raise ValueError(f"features: {features.shape[1]} columns, the readout has {w.shape[0]} weights.")
        return features.double() @ w + self.bias  # (U,)


def variant_name(retriever: bool, embeddings: bool) -> str:
    """Key of the variant that uses exactly these optional inputs."""
    parts = ["attention"] + (["embedding"] if embeddings else []) + (["retriever"] if retriever else [])
    return "+".join(parts)


def variant_extras(name: str) -> tuple[str, ...]:
    """The extra feature names of a variant key (``SHAPE`` always, then the optional ones)."""
    parts = name.split("+")
    if parts[0] != "attention" or not set(parts[1:]) <= {"embedding", "retriever"}:
        raise ValueError(f"readout variant: {name!r} is not valid; e.g. 'attention' or 'attention+retriever'.")
    return SHAPE + (RETRIEVER if "retriever" in parts else ()) + (EMBEDDING if "embedding" in parts else ())


@dataclass(frozen=True)
class ReadoutSet:
    """The trained readouts of one model: one per combination of optional inputs, all at one layer.

    ``cached``: the readouts of the cached path (``GemFilterCompressor(cache=...)``), trained on what that
    path records (no hidden-state similarities; chunks encoded apart), stored beside these in the profile
    (under "cached" in the readout's JSON); None until one is trained.
    """

    layer: int
    heads: int
    variants: dict[str, Readout]
    provenance: dict[str, Any] = field(default_factory=dict)
    cached: ReadoutSet | None = None

    def __post_init__(self) -> None:
        if self.cached is None:
            return
        if self.cached.cached is not None:
            raise ValueError("cached: a cache-mode readout holds no cache-mode readout of its own.")
        if self.cached.uses_hidden:
            raise ValueError(
                f"cached: reads hidden-state similarities (blocks {list(self.cached.blocks)}); the cached path has "
                "no hidden states of the context. Train it on the cached path's records."
            )
        if self.cached.heads != self.heads:
            raise ValueError(f"cached: is for {self.cached.heads} heads, the readout for {self.heads}.")

    @property
    def blocks(self) -> tuple[str, ...]:
        """The feature blocks its variants read (they share them)."""
        first = next(iter(self.variants.values()), None)
        return first.blocks if first is not None else BLOCKS_V1

    @property
    def uses_hidden(self) -> bool:
        """Whether a pass for it records hidden-state similarities."""
        return any(v.uses_hidden for v in self.variants.values())

    @property
    def uses_embeddings(self) -> bool:
        """Whether any variant reads embedding similarities (else an embedding model changes none of its scores)."""
        return any(v.uses_embeddings for v in self.variants.values())

    @property
    def uses_key_attention(self) -> bool:
        """Whether a pass for it records the rare-term rows' attention (``capture.PassRecord.key_attention``)."""
        return any(v.uses_key_attention for v in self.variants.values())

    def choose(self, retriever: bool, embeddings: bool) -> Readout:
        """The richest variant whose inputs are all available."""
        for r, e in ((retriever, embeddings), (False, embeddings), (retriever, False), (False, False)):
            name = variant_name(r, e)
            if name in self.variants:
                return self.variants[name]
        raise ValueError("readout: has no 'attention' variant; train it with `gemfilter train-readout`.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in a profile."""
        blocks = {} if self.blocks == BLOCKS_V1 else {"blocks": list(self.blocks)}
        return {
            "layer": self.layer,
            "heads": self.heads,
            **blocks,
            "variants": {
                k: {"extras": list(v.extras), "weights": [round(x, 6) for x in v.weights], "bias": round(v.bias, 6)}
                for k, v in self.variants.items()
            },
            "provenance": self.provenance,
            **({"cached": self.cached.to_dict()} if self.cached is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReadoutSet:
        """Inverse of ``to_dict``."""
        layer, heads = int(data["layer"]), int(data["heads"])
        blocks = tuple(str(b) for b in data.get("blocks", BLOCKS_V1))
        variants = {
            k: Readout(
                layer, heads, tuple(v["extras"]), tuple(float(x) for x in v["weights"]), float(v["bias"]), blocks
            )
            for k, v in data["variants"].items()
        }
        for k, v in variants.items():
            if tuple(v.extras) != variant_extras(k):
                raise ValueError(f"readout variant {k!r}: extras {list(v.extras)} do not match its name.")
        cached = cls.from_dict(data["cached"]) if data.get("cached") else None
        return cls(layer, heads, variants, dict(data.get("provenance", {})), cached)
