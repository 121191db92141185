"""Configuration dataclasses, validated on construction."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

QueryRows = Literal["last", "question"]
Granularity = Literal["token", "sentence", "document"]

DEFAULT_TEMPLATE = "Context:\n{context}\n\nQuestion: {query}"


@dataclass(frozen=True)
class ScoringConfig:
    """How a layer's query/key become one score per context token.

    The paper's exact mode is ``ScoringConfig.paper()``: the last token's raw ``q . k`` summed
    over heads, average-pooled over 5 tokens.
    """

    query: QueryRows | int = "question"
    """Which query rows score: ``"last"`` (the final prompt token, as in the paper),
    ``"question"`` (the question's tokens and everything after them), or an int n (the last n
    prompt tokens)."""
    softmax: bool = True
    """Softmax attention probabilities (True) or raw dot products ``q . k`` (False)."""
    heads: Literal["sum", "max"] = "sum"
    """How scores of the query heads combine."""
    pool: Literal["avg", "max", "none"] = "max"
    """Smoothing along the sequence, so that neighbours of a strong token are kept too."""
    pool_width: int = 7
    """Width of the pooling window, an odd number of tokens."""

    def __post_init__(self) -> None:
        if isinstance(self.query, bool) or not (
            self.query in ("last", "question") or (isinstance(self.query, int) and self.query > 0)
        ):
            raise ValueError(f"query: {self.query!r} is not valid; use 'last', 'question' or a positive int.")
        if self.heads not in ("sum", "max"):
            raise ValueError(f"heads: {self.heads!r} is not valid; use 'sum' or 'max'.")
        if self.pool not in ("avg", "max", "none"):
            raise ValueError(f"pool: {self.pool!r} is not valid; use 'avg', 'max' or 'none'.")
        if (
            isinstance(self.pool_width, bool)
            or not isinstance(self.pool_width, int)
            or self.pool_width < 1
            or self.pool_width % 2 == 0
        ):
            raise ValueError(f"pool_width: {self.pool_width!r} is not valid; use an odd positive int such as 5 or 7.")

    @classmethod
    def paper(cls) -> ScoringConfig:
        """The scoring of the paper's reference code."""
        return cls(query="last", softmax=False, heads="sum", pool="avg", pool_width=5)


@dataclass(frozen=True)
class GemFilterConfig:
    """Everything that decides what a ``GemFilterCompressor`` keeps."""

    filter_layer: int | None = None
    """Layer whose attention scores tokens (0-based). None: the model's profile, else the middle layer
    (``round(num_layers / 2) - 1``)."""
    top_k: int = 1024
    """Token budget of the output text across all documents of one call: the kept context tokens plus
    the separator between every two documents that keep any."""
    granularity: Granularity = "sentence"
    """Unit of selection: single tokens (the paper), whole sentences, or whole documents."""
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    """How attention becomes token scores."""
    separator: str = "\n\n"
    """Placed between documents in the prompt and in the compressed text."""
    template: str = DEFAULT_TEMPLATE
    """User message of the filter prompt; must contain ``{context}`` and ``{query}``, in that order."""
    use_chat_template: bool = True
    """Wrap the user message in the tokenizer's chat template when it has one."""
    window: int | None = None
    """Length, in tokens (prompt frame and question included), of the windows that a prompt longer than
    the filter model accepts is scored in, merged by a knockout (``gemfilter_rag.windows``). None: the
    model's maximum positions. Prompts the model accepts are always scored in one pass. A model may find
    the needle well in short windows and lose it in long ones: the SmolLM2 profile sets 4096 (see its
    profile and benchmarks/README.md)."""
    scorer: Any = "auto"
    """How units are scored (``gemfilter_rag.scorers``): "readout" (the model's trained readout over every
    head of layers ``0..filter_layer``), "layer" (``scoring`` at the filter layer alone), "paper" (the
    paper's scoring at the filter layer), "auto" (the readout when the model's profile ships one for
    ``filter_layer``, else "layer"), a name given to ``scorers.register_scorer``, or a ``Scorer`` object."""
    prior: Literal["auto", "none", "share", "add"] = "auto"
    """How retriever scores passed as ``compress(..., document_scores=...)`` are used: "auto" (a trained
    readout fuses them as a learned feature; single-layer scoring uses "add"), "add" (their relative score,
    0 for the best document, is added to the normalised token scores), "share" (they share out the budget
    across documents by a softmax of their z-scores; can starve a document), or "none" (ignored). See
    ``gemfilter_rag.prior``."""
    prior_weight: float = 2.0
    """Strength of a rule-based retriever prior: weight of the relative score ("add") or softmax sharpness
    ("share")."""

    def __post_init__(self) -> None:
        if self.filter_layer is not None and (
            isinstance(self.filter_layer, bool) or not isinstance(self.filter_layer, int) or self.filter_layer < 0
        ):
            raise ValueError(f"filter_layer: {self.filter_layer!r} is not valid; use a layer index >= 0 or None.")
        check_top_k(self.top_k)
        if self.window is not None and (
            isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 64
        ):
            raise ValueError(f"window: {self.window!r} is not valid; use None or a number of tokens >= 64, e.g. 2048.")
        if self.granularity not in ("token", "sentence", "document"):
            raise ValueError(f"granularity: {self.granularity!r} is not valid; use 'token', 'sentence' or 'document'.")
        if not isinstance(self.scoring, ScoringConfig):
            raise TypeError(f"scoring: expected a ScoringConfig, got {type(self.scoring).__name__}.")
        if not isinstance(self.separator, str):
            raise TypeError(f"separator: expected a str, got {type(self.separator).__name__}.")
        if not isinstance(self.template, str):
            raise TypeError(f"template: expected a str, got {type(self.template).__name__}.")
        if self.prior not in ("auto", "none", "share", "add"):
            raise ValueError(f"prior: {self.prior!r} is not valid; use 'auto', 'none', 'share' or 'add'.")
        if self.scorer is None or self.scorer == "" or isinstance(self.scorer, (bool, int, float)):
            raise ValueError(
                f"scorer: {self.scorer!r} is not valid; use 'auto', 'readout', 'layer', 'paper', a registered name "
                "or a Scorer object."
            )
        if (
            isinstance(self.prior_weight, bool)
            or not isinstance(self.prior_weight, (int, float))
            or not math.isfinite(self.prior_weight)
            or self.prior_weight < 0
        ):
            raise ValueError(f"prior_weight: {self.prior_weight!r} is not valid; use a finite number >= 0 such as 1.0.")
        c, q = self.template.find("{context}"), self.template.find("{query}")
        if c < 0 or q < 0 or q < c or self.template.count("{context}") != 1 or self.template.count("{query}") != 1:
            raise ValueError(
                f"template: must contain '{{context}}' once and then '{{query}}' once, e.g. {DEFAULT_TEMPLATE!r}."
            )

    def with_options(self, **options: Any) -> GemFilterConfig:
        """A copy with some fields changed; scoring fields may be given flat (``softmax=False``)."""
        names = {f.name for f in fields(self)}
        scoring_names = {f.name for f in fields(ScoringConfig)}
        unknown = set(options) - names - scoring_names
        if unknown:
            raise TypeError(f"unknown option(s) {sorted(unknown)}; valid: {sorted(names | scoring_names)}.")
        scoring_opts = {k: options.pop(k) for k in list(options) if k in scoring_names}
        scoring = options.pop("scoring", self.scoring)
        if scoring_opts:
            scoring = replace(scoring, **scoring_opts)
        return replace(self, scoring=scoring, **options)


def check_top_k(top_k: Any) -> int:
    """Validate a token budget and return it, or raise an error that names ``top_k``."""
    # numbers.Integral/Real also admit numpy scalars (np.int64 budgets are common); bool is no count
    if isinstance(top_k, bool) or not isinstance(top_k, (numbers.Integral, numbers.Real)):
        raise TypeError(f"top_k: expected a positive int, got {type(top_k).__name__}.")
    if not isinstance(top_k, numbers.Integral) and (math.isnan(top_k) or not float(top_k).is_integer()):
        raise ValueError(f"top_k: {top_k!r} is not a whole number of tokens; pass a positive int such as 256.")
    if top_k <= 0:
        raise ValueError(f"top_k: {top_k!r} must be > 0; pass the number of context tokens to keep, e.g. 256.")
    return int(top_k) if isinstance(top_k, numbers.Integral) else int(float(top_k))
