"""Benchmark configuration: one dataclass, two presets (``quick`` and ``full``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class BenchConfig:
    """What one benchmark run measures.

    Args:
        name: preset name; results go to ``<output_dir>/<name>.json``.
        datasets: registered data set names (see ``benchmarks.datasets.DATASETS``).
        methods: registered method names (see ``benchmarks.methods.METHODS``).
        budgets: token budgets (default model's tokens) every compressing method is held to.
        n: items per data set (per gold position for NQ), drawn with ``seed``.
        seed: seed of every sample.
        positions: 1-based gold-passage positions of the NQ 20-document contexts.
        n_docs: documents per NQ context.
        max_context_tokens: cap on SQuAD long-document contexts (whole paragraphs around the answer).
        needle_lengths / needle_depths / needle_count: the needle grid; needles come from
            ``gemfilter_rag.needles.NEEDLES``.
        needle_methods: methods run on the needle grid (at the smallest budget).
        answer: also generate an answer with the default model (accuracy); recall needs no model.
        answer_budgets: budgets whose outputs are answered (None: all); full context is always answered.
        max_new_tokens: greedy answer length.
        model: filter/answer model (None: the packaged SmolLM2-135M-Instruct, converted once).
        nq_path: NQ-open oracle JSONL(.gz); None: ``shared/data/nq_open_oracle_dev.jsonl.gz``.
        output_dir: where JSON and PNG results go.
        lingua_timeout_s: wall-clock limit of the LongLLMLingua subprocess, per data set.
        batch_max_items: run batch methods (LongLLMLingua) on only the first items of each data set
            (None: all); its cost per item is many times GemFilter's.
    """

    name: str = "custom"
    datasets: tuple[str, ...] = ("hotpotqa", "squad", "nq", "needle")
    methods: tuple[str, ...] = (
        "full",
        "rag",
        "gemfilter-token",
        "gemfilter-sentence",
        "gemfilter-document",
        "gemfilter-prior",
        "embeddings-filter",
        "longllmlingua",
    )
    budgets: tuple[int, ...] = (256, 512)
    n: int = 10
    seed: int = 0
    positions: tuple[int, ...] = (1, 10, 20)
    n_docs: int = 20
    max_context_tokens: int = 3000
    needle_lengths: tuple[int, ...] = (1024, 2048, 4096)
    needle_depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    needle_count: int = 2
    needle_methods: tuple[str, ...] = ("rag", "gemfilter-sentence")
    answer: bool = True
    answer_budgets: tuple[int, ...] | None = None
    max_new_tokens: int = 16
    model: str | None = None
    nq_path: str | None = None
    output_dir: str = str(RESULTS_DIR)
    lingua_timeout_s: float = 900.0
    batch_max_items: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n: {self.n} items per data set is too few; use n >= 1.")
        if not self.budgets or any(b < 1 for b in self.budgets):
            raise ValueError(f"budgets: {self.budgets} must be positive token counts, e.g. (256, 512).")
        if any(not 1 <= p <= self.n_docs for p in self.positions):
            raise ValueError(f"positions: {self.positions} must lie in 1..n_docs={self.n_docs}.")
        if any(not 0.0 <= d <= 1.0 for d in self.needle_depths):
            raise ValueError(f"needle_depths: {self.needle_depths} must be fractions in [0, 1].")
        if self.max_context_tokens < max(self.budgets):
            raise ValueError(
                f"max_context_tokens: {self.max_context_tokens} is below the largest budget "
                f"{max(self.budgets)}; raise it."
            )
        self.datasets, self.methods = tuple(self.datasets), tuple(self.methods)
        self.budgets, self.positions = tuple(sorted(self.budgets)), tuple(self.positions)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain JSON-able data (recorded with the results)."""
        return dataclasses.asdict(self)


PRESETS: dict[str, BenchConfig] = {
    # sized from measured per-item costs on a 2-core CPU so that the whole run stays under 20 minutes
    "quick": BenchConfig(
        name="quick",
        n=3,
        positions=(1, 10, 20),
        budgets=(256, 512),
        max_context_tokens=2000,
        needle_lengths=(1024, 2048, 4096),
        needle_depths=(0.0, 0.5, 1.0),
        needle_count=2,
        batch_max_items=2,
        answer_budgets=(256,),
        lingua_timeout_s=420.0,
    ),
    "full": BenchConfig(
        name="full",
        n=200,
        positions=(1, 10, 20),
        budgets=(256, 512, 1024),
        max_context_tokens=6000,
        needle_lengths=(1024, 2048, 4096, 7000),
        needle_depths=(0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0),
        needle_count=10,
        lingua_timeout_s=36000.0,
    ),
}


def preset(preset_name: str, **overrides: Any) -> BenchConfig:
    """A copy of preset ``name`` with ``overrides`` applied (validated again)."""
    if preset_name not in PRESETS:
        raise ValueError(f"preset: unknown {preset_name!r}; choose one of {sorted(PRESETS)}.")
    return dataclasses.replace(PRESETS[preset_name], **overrides)
