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

from .features import ATTENTION_BLOCKS, EMBEDDING, RETRIEVER, SHAPE


@dataclass(frozen=True)
class Readout:
    """One linear readout: ``logit = features @ weights + bias`` over units.

    ``weights`` cover the attention and document blocks of layers ``0..layer`` (``3 * (layer + 1) *
    heads`` columns, ``features.unit_features``) followed by ``extras``, in that order.
    """

    layer: int
    heads: int
    extras: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float

    def __post_init__(self) -> None:
        expected = ATTENTION_BLOCKS * (self.layer + 1) * self.heads + len(self.extras)
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
    """The trained readouts of one model: one per combination of optional inputs, all at one layer."""

    layer: int
    heads: int
    variants: dict[str, Readout]
    provenance: dict[str, Any] = field(default_factory=dict)

    def choose(self, retriever: bool, embeddings: bool) -> Readout:
        """The richest variant whose inputs are all available."""
        for r, e in ((retriever, embeddings), (False, embeddings), (retriever, False), (False, False)):
            name = variant_name(r, e)
            if name in self.variants:
                return self.variants[name]
        raise ValueError("readout: has no 'attention' variant; train it with `gemfilter train-readout`.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in a profile."""
        return {
            "layer": self.layer,
            "heads": self.heads,
            "variants": {
                k: {"extras": list(v.extras), "weights": [round(x, 6) for x in v.weights], "bias": round(v.bias, 6)}
                for k, v in self.variants.items()
            },
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReadoutSet:
        """Inverse of ``to_dict``."""
        layer, heads = int(data["layer"]), int(data["heads"])
        variants = {
            k: Readout(layer, heads, tuple(v["extras"]), tuple(float(x) for x in v["weights"]), float(v["bias"]))
            for k, v in data["variants"].items()
        }
        for k, v in variants.items():
            if tuple(v.extras) != variant_extras(k):
                raise ValueError(f"readout variant {k!r}: extras {list(v.extras)} do not match its name.")
        return cls(layer, heads, variants, dict(data.get("provenance", {})))
