"""The paper's scorer (GemFilter, arXiv 2409.17422): the last token's raw ``q . k`` at the exit layer,
summed over heads and average-pooled over 5 tokens; meant for token granularity, as the paper selects."""

from __future__ import annotations

from ..config import ScoringConfig
from .layer import LayerScorer


def paper_scorer(layer: int) -> LayerScorer:
    """The single-layer scorer with the paper's scoring (``ScoringConfig.paper()``) at ``layer``."""
    return LayerScorer(layer, ScoringConfig.paper())
