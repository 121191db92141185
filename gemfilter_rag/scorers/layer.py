"""The single-layer scorer: the question's attention at the exit layer, one score per token.

``ScoringConfig`` over the exit layer's query rows and keys (``scoring.token_scores``); a unit's value
is the sum of its tokens' scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..capture import PassRecord
from ..config import QueryRows, ScoringConfig
from ..evidence import Evidence
from ..scoring import token_scores
from .base import Scores, Target, unit_sums


@dataclass(frozen=True)
class LayerScorer:
    """Token scores from the exit layer alone (``ScoringConfig``: softmax or raw, head reduction, pooling)."""

    layer: int
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    attention: bool = False
    fuses_retriever: bool = False

    @property
    def rows(self) -> QueryRows | int:
        """Which query rows score: ``scoring.query``."""
        return self.scoring.query

    def score(self, record: PassRecord, target: Target, evidence: Evidence) -> Scores:
        """Every position's score at the exit layer, restricted to the target; units sum their tokens."""
        every = token_scores(
            record.query, record.key, record.rows, self.scoring, record.scaling, record.sliding_window
        )  # (1, T)
        tokens = every[0].float().cpu()[target.positions]  # (N,)
        return Scores(tokens, unit_sums(tokens, target.units))
