"""Benchmark configuration: one dataclass, three presets (``quick``: a smoke run; ``standard``: the
measurement that fits about two hours on 2 CPU cores; ``full``: issue 13's minimum sizes)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


PEERS: tuple[str, ...] = (
    "rag",
    "embeddings-filter",
    "sentence-embedding-optimizer",
    "bm25-sentences",
    "longllmlingua",
    "gemfilter-token",
    "gemfilter-sentence",
    "gemfilter-prior",
)
"""Every compressing method of issue 13, the shipped default (``gemfilter-sentence``) among them."""

DEFAULT_METHOD = "gemfilter-sentence"
"""The shipped default, compared in pairs against plain RAG and every other method."""


@dataclass
class BenchConfig:
    """What one benchmark run measures.

    Args:
        name: preset name; results go to ``<output_dir>/<name>.json``.
        datasets: registered data set names (see ``benchmarks.datasets.DATASETS``).
        methods: registered method names (see ``benchmarks.methods.METHODS``); ``full`` is the
            uncompressed context (answered by the readers where it fits, never budgeted).
        dataset_methods: per data set, the methods to run there instead of ``methods``.
        budgets: token budgets (default model's tokens) every compressing method is held to.
        n: items per data set (per gold position for NQ), drawn with ``seed``; ``sizes`` overrides it
            per data set.
        sizes: items per data set by name (NQ: questions, each at every position).
        seed: seed of every sample and every bootstrap.
        positions: 1-based gold-passage positions of the NQ 20-document contexts.
        n_docs: documents per NQ context.
        max_context_tokens: cap on SQuAD long-document contexts (whole paragraphs around the answer).
        needle_grid: (context length, needles, depths) rows of the needle items; needles come from
            ``gemfilter_rag.needles.NEEDLES``; lengths beyond the filter model's positions are scored
            in windows.
        readers: registered readers (``benchmarks.readers.READERS``) that answer for accuracy.
        answer: answer with the readers at all (recall needs no model).
        answer_budgets: budgets whose outputs the readers answer (None: the middle budget); the full
            context is answered too, where it fits the reader and ``answer_full_max_tokens``.
        answer_items: per data set, how many items (the same for every method and reader, evenly
            spread over the sample) get answers; None: all.
        answer_full_max_tokens: answer the full context only up to this many tokens (cost).
        max_new_tokens: greedy answer length.
        model: filter model directory (None: the packaged SmolLM2-135M-Instruct, converted once).
        nq_path: NQ-open oracle JSONL(.gz); None: ``shared/data/nq_open_oracle_dev.jsonl.gz``.
        output_dir: where JSON, JSONL and PNG results go.
        lingua_timeout_s: wall-clock limit of the LongLLMLingua subprocess, per data set.
        lingua_items: LongLLMLingua runs on this many items per data set (evenly spread over the items the
            readers answer, so its accuracy is measured on all of them; None: all): its cost per item is
            many times GemFilter's.
        lingua_budgets: the budgets LongLLMLingua runs at (None: all).
        gemfilter_calls: "shared" (one real ``compress`` per item and scoring, the other budgets
            re-selected from its scores and spot-checked against ``compress``; see
            ``benchmarks.methods.GemFilterRunner``) or "per-budget" (a ``compress`` call for each).
    """

    name: str = "custom"
    datasets: tuple[str, ...] = ("hotpotqa", "squad", "nq", "needle")
    methods: tuple[str, ...] = ("full", *PEERS)
    dataset_methods: dict[str, tuple[str, ...]] = field(default_factory=dict)
    budgets: tuple[int, ...] = (128, 256, 512)
    n: int = 10
    sizes: dict[str, int] = field(default_factory=dict)
    seed: int = 0
    positions: tuple[int, ...] = (1, 10, 20)
    n_docs: int = 20
    max_context_tokens: int = 2000
    needle_grid: tuple[tuple[int, int, int], ...] = ((2048, 2, 3), (4096, 2, 3))
    readers: tuple[str, ...] = ("smollm2", "gemma3-270m")
    answer: bool = True
    answer_budgets: tuple[int, ...] | None = None
    answer_items: int | None = None
    answer_full_max_tokens: int = 4096
    max_new_tokens: int = 16
    model: str | None = None
    nq_path: str | None = None
    output_dir: str = str(RESULTS_DIR)
    lingua_timeout_s: float = 900.0
    lingua_items: int | None = None
    lingua_budgets: tuple[int, ...] | None = None
    gemfilter_calls: str = "shared"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n < 1 or any(v < 1 for v in self.sizes.values()):
            raise ValueError(f"n, sizes: {self.n}, {self.sizes} items per data set are too few; use >= 1.")
        if not self.budgets or any(b < 1 for b in self.budgets):
            raise ValueError(f"budgets: {self.budgets} must be positive token counts, e.g. (128, 256, 512).")
        if any(not 1 <= p <= self.n_docs for p in self.positions):
            raise ValueError(f"positions: {self.positions} must lie in 1..n_docs={self.n_docs}.")
        for row in self.needle_grid:
            if len(row) != 3 or any(not isinstance(v, int) or v < 1 for v in row):
                raise ValueError(f"needle_grid: {row!r} must be (length, needles, depths), positive ints.")
        if self.max_context_tokens < max(self.budgets):
            raise ValueError(
                f"max_context_tokens: {self.max_context_tokens} is below the largest budget "
                f"{max(self.budgets)}; raise it."
            )
        if self.answer_budgets is None:
            self.answer_budgets = (sorted(self.budgets)[len(self.budgets) // 2],)
        if any(b not in self.budgets for b in self.answer_budgets):
            raise ValueError(f"answer_budgets: {self.answer_budgets} must be among budgets {self.budgets}.")
        if self.lingua_budgets is not None and any(b not in self.budgets for b in self.lingua_budgets):
            raise ValueError(f"lingua_budgets: {self.lingua_budgets} must be among budgets {self.budgets}.")
        if self.gemfilter_calls not in ("shared", "per-budget"):
            raise ValueError(f"gemfilter_calls: {self.gemfilter_calls!r} is not valid; use 'shared' or 'per-budget'.")
        unknown = set(self.sizes) - set(self.datasets) - {"nq", "hotpotqa", "squad", "needle"}
        if unknown:
            raise ValueError(f"sizes: unknown data set(s) {sorted(unknown)}.")
        self.datasets, self.methods = tuple(self.datasets), tuple(self.methods)
        self.budgets, self.positions = tuple(sorted(self.budgets)), tuple(self.positions)
        self.needle_grid = tuple(tuple(r) for r in self.needle_grid)  # type: ignore[misc]
        self.dataset_methods = {k: tuple(v) for k, v in self.dataset_methods.items()}

    def n_for(self, dataset: str) -> int:
        """Items to draw for ``dataset`` (NQ: questions, each placed at every gold position)."""
        return self.sizes.get(dataset, self.n)

    def methods_for(self, dataset: str) -> tuple[str, ...]:
        """The methods run on ``dataset``."""
        return self.dataset_methods.get(dataset, self.methods)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain JSON-able data (recorded with the results)."""
        return dataclasses.asdict(self)


_STANDARD = BenchConfig(
    # what fits about two hours on the 2-core machine of this repository with every peer and both
    # readers (issue 13's time limit); its sizes are below the issue's minimums, which "full" holds
    name="standard",
    datasets=("hotpotqa", "nq", "needle", "squad"),
    sizes={"hotpotqa": 300, "squad": 100, "nq": 60},
    budgets=(128, 256, 512),
    max_context_tokens=1500,
    needle_grid=((2048, 5, 4), (4096, 5, 4), (8192, 5, 4), (32768, 2, 3)),
    dataset_methods={"needle": ("full", *(m for m in PEERS if m not in ("longllmlingua", "gemfilter-token")))},
    answer_items=8,
    lingua_items=6,
    lingua_budgets=(256,),
    lingua_timeout_s=3600.0,
)

_ONEPASS = BenchConfig(
    # issue 19: the one-pass default against the previous default and plain RAG, recall only
    name="onepass",
    datasets=("hotpotqa", "nq", "squad", "needle"),
    methods=("rag", "bm25-sentences", "gemfilter-previous", "gemfilter-sentence"),
    dataset_methods={
        "needle": ("rag", "gemfilter-sentence"),
        "hotpotqa": ("rag", "bm25-sentences", "gemfilter-previous", "gemfilter-sentence", "gemfilter-float"),
    },
    sizes={"hotpotqa": 300, "squad": 100, "nq": 200},
    budgets=(128, 256, 512),
    max_context_tokens=1500,
    needle_grid=((2048, 5, 4), (4096, 5, 4), (8192, 5, 4), (32768, 2, 3)),
    readers=(),
    answer=False,
)

_CACHE = dataclasses.replace(
    # issue 21 (and 20's prose check): the default's joint pass against its chunk-cache path on the onepass
    # items at 256 tokens; the peers' and earlier defaults' rows are those of the onepass run (same items)
    _ONEPASS,
    name="cache",
    methods=("gemfilter-sentence", "gemfilter-cached"),
    dataset_methods={},
    budgets=(256,),
)

PRESETS: dict[str, BenchConfig] = {
    "onepass": _ONEPASS,
    "cache": _CACHE,
    # sizes and per-item costs: see benchmarks/README.md, "Presets and what they cost"
    "quick": BenchConfig(
        name="quick",
        sizes={"hotpotqa": 12, "squad": 10, "nq": 6},
        budgets=(128, 256, 512),
        max_context_tokens=1500,
        needle_grid=((2048, 3, 3), (4096, 2, 3)),
        dataset_methods={"needle": ("full", "rag", "embeddings-filter", "bm25-sentences", "gemfilter-sentence")},
        answer_items=4,
        lingua_items=2,
        lingua_budgets=(256,),
        lingua_timeout_s=420.0,
    ),
    "standard": _STANDARD,
    # issue 13's minimum sizes (5-6 h on the 2-core machine, from the standard run's per-item times)
    "full": dataclasses.replace(
        _STANDARD,
        name="full",
        sizes={"hotpotqa": 300, "squad": 200, "nq": 200},
        needle_grid=((2048, 5, 10), (4096, 5, 10), (8192, 5, 10), (32768, 2, 5)),
        answer_items=30,
        lingua_items=12,
    ),
}


def preset(preset_name: str, **overrides: Any) -> BenchConfig:
    """A copy of preset ``name`` with ``overrides`` applied (validated again)."""
    if preset_name not in PRESETS:
        raise ValueError(f"preset: unknown {preset_name!r}; choose one of {sorted(PRESETS)}.")
    return dataclasses.replace(PRESETS[preset_name], **overrides)
