"""Train a model's readout from public data (``gemfilter train-readout``).

1. ``build_examples``: labelled questions from HotpotQA, NaturalQuestions, SQuAD, needles and synthetic
   structured lookups (training splits and seeds only, see ``gemfilter_rag.data`` and ``structured``);
2. ``extract.extract``: one pass per example up to ``max_layer``, reduced to unit features, cached;
3. ``fit.cross_validate`` at every candidate layer ``r`` (readout over layers ``0..r``): the share of
   questions whose answer survives selection at the budget, per source, cross-validated by question;
4. the earliest layer within ``tolerance`` of the best is chosen, and every variant (attention alone,
   with retriever scores, with embeddings, with both) is fitted there on all examples;
5. the readouts, the per-layer scores and the provenance are written into the model's profile.
"""

from __future__ import annotations

import datetime as _dt
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data import (
    HOTPOT_TRAIN,
    NQ_TRAIN,
    SQUAD_TRAIN_ARTICLES,
    essays_haystack,
    load_nq,
    long_context_eval_json,
)
from ..embeddings import Embedder
from ..features import BLOCKS_V1, CHANNEL_BLOCKS, KEY_BLOCKS, LAYER_BLOCKS, TERM_BLOCKS, TEXT_BLOCKS
from ..loading import cache_dir
from ..readout import ReadoutSet
from .examples import (
    Example,
    hotpot_examples,
    needle_examples,
    nq_examples,
    nq_passage,
    squad_examples,
    structured_examples,
)
from .extract import ExampleFeatures, extract
from .fit import cross_validate, fit_readout
from .structured import TRAIN_SEEDS

if TYPE_CHECKING:
    from ..compressor import GemFilterCompressor

VARIANTS = ("attention", "attention+retriever", "attention+embedding", "attention+embedding+retriever")
BLOCKS = CHANNEL_BLOCKS + LAYER_BLOCKS + KEY_BLOCKS + TEXT_BLOCKS + TERM_BLOCKS
"""The blocks a readout is trained on by default: every one the pass and the text give."""
CACHED_BLOCKS = CHANNEL_BLOCKS + KEY_BLOCKS + TEXT_BLOCKS + TERM_BLOCKS
"""The blocks of a cache-mode readout by default: all but the hidden-state ones (the cached path has none)."""
ABLATIONS: dict[str, tuple[str, ...]] = {
    "mass+mean+doc (v1)": BLOCKS_V1,
    "+max": (*BLOCKS_V1, "max"),
    "+context": (*BLOCKS_V1, "doc_best", "prev_mass", "next_mass"),
    "+hidden": (*BLOCKS_V1, *LAYER_BLOCKS),
    "+key_mass": (*BLOCKS_V1, *KEY_BLOCKS),
    "+lexical": (*BLOCKS_V1, *TEXT_BLOCKS),
    "all but hidden": CHANNEL_BLOCKS + KEY_BLOCKS + TEXT_BLOCKS,
    "+overlap": (*BLOCKS_V1, *TERM_BLOCKS),
    "all but lexical": CHANNEL_BLOCKS + LAYER_BLOCKS + KEY_BLOCKS + TERM_BLOCKS,
    "all but overlap": CHANNEL_BLOCKS + LAYER_BLOCKS + KEY_BLOCKS + TEXT_BLOCKS,
    "all but key_mass": CHANNEL_BLOCKS + LAYER_BLOCKS + TEXT_BLOCKS + TERM_BLOCKS,
    "all": BLOCKS,
}
"""Block sets cross-validated at the chosen layer, to show what each block adds."""


@dataclass(frozen=True)
class Sizes:
    """How many training questions each source gives (0 leaves a source out)."""

    hotpotqa: int = 500
    nq: int = 300
    squad: int = 170
    needles: int = 96
    needle_lengths: tuple[int, ...] = (1024, 2048, 3072, 4096)
    structured: int = 0
    """Synthetic structured lookups (``examples.structured_examples``, training seeds only)."""


def build_examples(tokenizer: Any, embedder: Embedder | None, sizes: Sizes, seed: int = 0) -> list[Example]:
    """The training examples of every source, drawn with ``seed`` from the training splits only."""
    rng = random.Random(seed)
    out: list[Example] = []
    if sizes.hotpotqa:
        records = long_context_eval_json("hotpotqa")
        picked = sorted(rng.sample(list(HOTPOT_TRAIN), min(len(HOTPOT_TRAIN), 2 * sizes.hotpotqa)))
        out += hotpot_examples(records, picked)[: sizes.hotpotqa]
    if sizes.nq:
        if embedder is None:
            raise ValueError("embeddings: NQ examples need an embedding model to retrieve distractors.")
        records = load_nq()
        sims = nq_similarities(records, embedder)
        picked = sorted(rng.sample(list(NQ_TRAIN), min(len(NQ_TRAIN), 2 * sizes.nq)))
        out += nq_examples(records, picked, lambda i: sims[i], seed=seed)[: sizes.nq]
    if sizes.squad:
        data = long_context_eval_json("squad")
        per = max(1, -(-sizes.squad // len(SQUAD_TRAIN_ARTICLES)))

        def count(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        out += squad_examples(data, list(SQUAD_TRAIN_ARTICLES), count, per_article=per, seed=seed)[: sizes.squad]
    if sizes.needles:
        essays = essays_haystack()
        reverse = "\n\n".join(reversed(essays.split("\n\n")))  # the benchmarks read them in order
        out += needle_examples(tokenizer, reverse, sizes.needles, sizes.needle_lengths, seed=seed)
    if sizes.structured:
        out += structured_examples(sizes.structured, seed=seed)
    return out


def interleave(examples: Sequence[Example]) -> list[Example]:
    """The examples with their sources taken in turn (each source in its own order), so that any prefix,
    e.g. the features cached when an extraction stopped, holds every source in proportion."""
    by: dict[str, list[Example]] = {}
    for ex in examples:
        by.setdefault(ex.source, []).append(ex)
    total = len(examples)
    out: list[Example] = []
    taken = dict.fromkeys(by, 0)
    while len(out) < total:  # the source furthest behind its share goes next
        source = min(by, key=lambda s: (taken[s] / len(by[s]) if taken[s] < len(by[s]) else 2.0, s))
        out.append(by[source][taken[source]])
        taken[source] += 1
    return out


def nq_similarities(records: Sequence[dict[str, Any]], embedder: Embedder) -> np.ndarray:
    """(Q, C) cosine similarity of every NQ question to every gold passage, cached in the cache directory."""
    corpus = [nq_passage(r) for r in records]
    path = cache_dir() / "readout" / f"nq-sims-{embedder.name or 'embedder'}-{len(corpus)}.npy"
    if path.exists():
        return np.load(path)
    vec_c = unit_rows(embedder.embed(corpus))  # (C, E)
    vec_q = unit_rows(embedder.embed([str(r["question"]) for r in records]))  # (Q, E)
    sims = vec_q @ vec_c.T  # (Q, C)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, sims)
    return sims


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm. (N, E) float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class TrainingReport:
    """What ``train_readout`` measured and chose."""

    per_layer: dict[int, dict[str, dict[str, float]]]
    """layer -> {"answer_kept": {source: rate, "all": mean}, "positives_kept": {...}} (attention variant, CV)."""
    chosen_layer: int
    variants: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """variant -> CV rates at the chosen layer."""
    ablations: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """block set -> CV rates of the attention variant at the chosen layer."""
    examples: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def choose_layer(per_layer: dict[int, dict[str, dict[str, float]]], tolerance: float) -> int:
    """The earliest layer whose mean answer-kept rate is within ``tolerance`` of the best layer's."""
    best = max(v["answer_kept"]["all"] for v in per_layer.values())
    return min(layer for layer, v in per_layer.items() if v["answer_kept"]["all"] >= best - tolerance)


def train_readout(
    comp: GemFilterCompressor,
    examples: Sequence[Example],
    *,
    embedder: Embedder | None,
    max_layer: int,
    layers: Sequence[int] | None = None,
    budget: int = 256,
    l2: float = 1e-2,
    tolerance: float = 0.01,
    folds: int = 5,
    seed: int = 0,
    blocks: Sequence[str] = BLOCKS,
    ablations: dict[str, tuple[str, ...]] | None = None,
    cached_only: bool = False,
    cache: Path | None = None,
    mode: str = "joint",
    progress: Callable[[Any], Any] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[ReadoutSet, TrainingReport]:
    """Extract features, cross-validate the readout at each candidate layer, choose one, fit every variant.

    ``blocks``: the feature blocks the readouts read (``features.ALL_BLOCKS``; default ``BLOCKS``: all of them);
    ``ablations``: block sets cross-validated at the chosen layer beside it (default ``ABLATIONS``; {}: none);
    ``cached_only``: fit on the examples whose features are cached already (re-fitting without a pass);
    ``mode``: "joint" (one pass over each prompt) or "cached" (the chunk cache's path, ``extract.MODES``: the
    readout for ``ReadoutSet.cached``; it reads no hidden-state blocks, which that path does not record).
    """
    import time

    if mode == "cached" and any(b in LAYER_BLOCKS for b in blocks):
        raise ValueError(
            f"blocks: {[b for b in blocks if b in LAYER_BLOCKS]} read hidden states, which the cached path does not "
            f"record; leave them out (e.g. blocks=CACHED_BLOCKS)."
        )
    t0 = time.perf_counter()
    folder = cache or cache_dir() / "readout" / "features"
    feats: list[ExampleFeatures] = extract(
        comp, examples, max_layer, folder, embedder, progress, cached_only, mode=mode
    )
    t1 = time.perf_counter()
    counts: dict[str, int] = {}
    for f in feats:
        counts[f.source] = counts.get(f.source, 0) + 1
    log(f"features of {len(feats)} examples {counts} in {t1 - t0:.0f} s")
    candidates = list(layers) if layers is not None else list(range(max_layer + 1))
    per_layer = {}
    for layer in candidates:
        per_layer[layer] = cross_validate(feats, layer, "attention", l2, budget, folds, seed, blocks)
        log(f"layer {layer:2d}: answer kept {per_layer[layer]['answer_kept']}")
    chosen = choose_layer(per_layer, tolerance)
    log(f"chosen layer {chosen} (earliest within {tolerance} of the best)")
    usable = [v for v in VARIANTS if embedder is not None or v == "attention"]
    report = TrainingReport(per_layer, chosen, examples=counts)
    for name, subset in (ABLATIONS if ablations is None else ablations).items():
        if mode == "cached" and any(b in LAYER_BLOCKS for b in subset):
            continue  # the cached path records no hidden states
        lacking = sorted({b for b in subset if b in KEY_BLOCKS for f in feats if b not in f.raw})
        if lacking:  # entries cached before the block existed
            log(f"blocks {name}: skipped, cached entries lack {lacking}")
            continue
        report.ablations[name] = cross_validate(feats, chosen, "attention", l2, budget, folds, seed, subset)
        log(f"blocks {name}: {report.ablations[name]['answer_kept']}")
    readouts = {}
    for variant in usable:
        report.variants[variant] = cross_validate(feats, chosen, variant, l2, budget, folds, seed, blocks)
        log(f"{variant}: {report.variants[variant]['answer_kept']}")
        readouts[variant] = fit_readout(feats, chosen, variant, l2, blocks)
    report.seconds = {"features": t1 - t0, "fit": time.perf_counter() - t1}
    provenance = {
        "date": _dt.date.today().isoformat(),
        "examples": counts,
        "splits": {
            "hotpotqa": f"records {HOTPOT_TRAIN.start}-{HOTPOT_TRAIN.stop - 1}",
            "nq": f"lines {NQ_TRAIN.start}-{NQ_TRAIN.stop - 1} of nq_open_oracle_dev",
            "squad": f"articles {SQUAD_TRAIN_ARTICLES.start}-{SQUAD_TRAIN_ARTICLES.stop - 1} of SQuAD v2.0 dev",
            "needles": "training.examples.TRAIN_NEEDLES in the essays read in reverse",
            "structured": f"training.structured seeds {TRAIN_SEEDS.start}-{TRAIN_SEEDS.stop - 1} (TRAIN_SEEDS)",
        },
        "seed": seed,
        "cached_only": cached_only,
        "budget": budget,
        "l2": l2,
        "folds": folds,
        "tolerance": tolerance,
        "embedder": embedder.name if embedder else None,
        "cv_answer_kept_per_layer": {str(k): v["answer_kept"] for k, v in per_layer.items()},
        "cv_positives_kept_per_layer": {str(k): v["positives_kept"] for k, v in per_layer.items()},
        "cv_variants": report.variants,
        "cv_block_ablations": {k: v["answer_kept"] for k, v in report.ablations.items()},
        "blocks": list(blocks),
        "quantized": getattr(comp.model, "gemfilter_quantized", None),
        "mode": mode,
    }
    heads = feats[0].heads
    return ReadoutSet(chosen, heads, readouts, provenance), report
