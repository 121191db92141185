"""Scorers: how one early-exit pass becomes a value per unit. One file per method, one protocol.

* ``layer.LayerScorer``: the question's attention at the exit layer (``ScoringConfig``), per token.
* ``paper.paper_scorer``: the same with the paper's scoring (last token, raw ``q . k``, avg-pool 5).
* ``readout.ReadoutScorer``: the model's trained readout over every head of layers ``0..r``.

``GemFilterConfig.scorer`` names one ("auto", "readout", "layer", "paper", or a name given to
``register_scorer``) or is a ``Scorer`` object itself; ``resolve`` builds it for a ``FilterModel``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..config import GemFilterConfig
from ..filter_model import FilterModel
from ..profiles import attention_heads
from .base import SEPARATOR, Scorer, Scores, Target, records_hidden, records_key_attention, unit_sums
from .layer import LayerScorer
from .paper import paper_scorer
from .readout import ReadoutScorer

ScorerFactory = Callable[[FilterModel, GemFilterConfig, int], Scorer]
"""``(filter model, config, filter layer) -> Scorer``: what ``register_scorer`` takes."""

BUILT_IN = ("auto", "readout", "layer", "paper")
_REGISTRY: dict[str, ScorerFactory] = {}
_LOCK = threading.Lock()


def register_scorer(name: str, factory: ScorerFactory, *, replace: bool = False) -> None:
    """Make ``scorer=name`` build a scorer with ``factory(filter_model, config, filter_layer)``."""
    if not isinstance(name, str) or not name or name in BUILT_IN:
        raise ValueError(f"name: {name!r} is not valid; use a new non-empty name (not one of {list(BUILT_IN)}).")
    if not callable(factory):
        raise TypeError(f"factory: expected a callable (model, config, layer) -> Scorer, got {type(factory).__name__}.")
    with _LOCK:
        if name in _REGISTRY and not replace:
            raise ValueError(f"name: a scorer {name!r} is already registered; pass replace=True to replace it.")
        _REGISTRY[name] = factory


def registered() -> list[str]:
    """Every scorer name ``GemFilterConfig.scorer`` accepts."""
    return [*BUILT_IN, *sorted(_REGISTRY)]


def resolve(model: FilterModel, config: GemFilterConfig) -> Scorer:
    """The scorer ``config.scorer`` stands for on ``model``, checked against it."""
    choice = config.scorer
    if not isinstance(choice, str):
        return _checked(choice, model)
    layer = model.layer(config.filter_layer)
    if choice in ("auto", "readout"):
        return _readout_or_layer(model, config, layer)
    if choice == "layer":
        return LayerScorer(layer, config.scoring)
    if choice == "paper":
        return paper_scorer(layer)
    factory = _REGISTRY.get(choice)
    if factory is None:
        raise ValueError(f"scorer: {choice!r} is not registered; use one of {registered()} or register_scorer().")
    return _checked(factory(model, config, layer), model)


def _readout_or_layer(model: FilterModel, config: GemFilterConfig, layer: int) -> Scorer:
    found = model.profile.readouts() if model.profile is not None else None
    if found is not None and found.layer != layer:
        if config.scorer == "readout":
            raise ValueError(
                f"scorer: the trained readout reads layers 0..{found.layer}, but filter_layer is "
                f"{layer}; leave filter_layer unset or use scorer='layer'."
            )
        found = None
    if found is not None and found.heads != (heads := attention_heads(model.model.config)):
        raise ValueError(f"profile: its readout is for {found.heads} heads, this model has {heads}.")
    if found is None:
        if config.scorer == "readout":
            raise ValueError(
                "scorer: 'readout' needs a trained readout for this model; train one with "
                "`gemfilter train-readout --model PATH` and pass its profile=, or use scorer='layer'."
            )
        return LayerScorer(layer, config.scoring)
    return ReadoutScorer(found, rows=config.scoring.query)


def _checked(scorer: object, model: FilterModel) -> Scorer:
    if not isinstance(scorer, Scorer):
        raise TypeError(
            f"scorer: {type(scorer).__name__} is not a Scorer; it needs a score(record, target, evidence) method "
            "and the attributes layer, attention, rows and fuses_retriever (gemfilter_rag.scorers.base)."
        )
    if isinstance(scorer.layer, bool) or not isinstance(scorer.layer, int) or not 0 <= scorer.layer < model.num_layers:
        raise ValueError(
            f"scorer: its layer {scorer.layer!r} is outside this model's layers 0..{model.num_layers - 1}."
        )
    return scorer


__all__ = [
    "SEPARATOR",
    "LayerScorer",
    "ReadoutScorer",
    "Scorer",
    "ScorerFactory",
    "Scores",
    "Target",
    "paper_scorer",
    "records_hidden",
    "records_key_attention",
    "register_scorer",
    "registered",
    "resolve",
    "unit_sums",
]
