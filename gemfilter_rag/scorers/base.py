"""The ``Scorer`` protocol: one pure ``score`` from what a pass recorded to a value per unit.

A scorer says what its pass must record (``layer``: the exit layer; ``attention``: the rows' attention
at every layer ``0..layer``; ``rows``: which query rows score) and turns a ``PassRecord`` into
``Scores`` for a ``Target``: the scored context tokens of that pass, cut into units. The pipeline
calls the same ``score`` for a whole prompt and for each window of a long one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from ..capture import PassRecord
from ..config import QueryRows
from ..evidence import Evidence
from ..selection import Unit, unit_scores

SEPARATOR = -1
"""``Target.documents`` value of a unit that is the separator between two documents (windows only)."""


@dataclass(frozen=True)
class Target:
    """What to score in one pass: N context tokens of the pass, cut into U units."""

    positions: torch.Tensor  # (N,) pass positions of the scored tokens
    units: list[Unit]  # (U,) [start, end) runs of those N tokens
    documents: list[int]  # (U,) document index of each unit (``SEPARATOR`` between documents)
    spans: list[Unit]  # (U,) the same units in the prompt's context-token indices (their texts)


@dataclass(frozen=True)
class Scores:
    """One pass's scores: per scored token (shares, explain view) and per unit (selection)."""

    tokens: torch.Tensor  # (N,) float32, >= 0 for a unit's share of the context
    units: torch.Tensor  # (U,) float64, higher = keep first


@runtime_checkable
class Scorer(Protocol):
    """A way to score units from one early-exit pass: ``score`` and four read-only attributes (plain
    attributes or dataclass fields do)."""

    @property
    def layer(self) -> int:
        """Exit layer: layers ``0..layer-1`` run in full, layer ``layer`` up to its query/key."""
        ...

    @property
    def attention(self) -> bool:
        """Whether the pass records the rows' attention at every layer ``0..layer`` (``PassRecord.attention``)."""
        ...

    @property
    def rows(self) -> QueryRows | int:
        """Which query rows score (``ScoringConfig.query``): "last", "question" or the last n."""
        ...

    @property
    def fuses_retriever(self) -> bool:
        """Whether it uses ``Evidence.retriever`` itself (``prior="auto"`` then adds no rule on top)."""
        ...

    def score(self, record: PassRecord, target: Target, evidence: Evidence) -> Scores:
        """Scores of ``target``'s tokens and units from ``record``."""
        ...


def records_hidden(scorer: Scorer) -> bool:
    """Whether the scorer's pass records hidden-state similarities (``PassRecord.similarity``): an optional
    ``hidden`` attribute a scorer may have (absent: no)."""
    return bool(getattr(scorer, "hidden", False))


def records_key_attention(scorer: Scorer) -> bool:
    """Whether the scorer's pass records the attention of the question's rare-term tokens as well
    (``PassRecord.key_attention``): an optional ``key_attention`` attribute a scorer may have (absent: no)."""
    return bool(getattr(scorer, "key_attention", False))


def unit_sums(tokens: torch.Tensor, units: Sequence[Unit]) -> torch.Tensor:
    """Summed token scores (N,) of each unit: (U,) float64 (the unit value of a token scorer)."""
    return unit_scores(tokens, units).double()
