"""One filter pass per training example, reduced to what fitting needs, cached on disk.

For each example: the raw blocks of every unit at layers ``0..max_layer`` (``features.raw_blocks``:
attention mass, mean and maximum per head, hidden-state similarity per layer, the mass under the attention
of the question's rare-term tokens per head, and the unit text's lexical matches), the units' documents,
labels (the unit overlaps a positive span),
texts (to check which answers a selection keeps) and, with an embedding model, the similarities of
units and documents to the question. A cache entry is keyed by the model's architecture, the
layer, the prompt settings and the example, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import cached_pass
from ..chunk_cache import ChunkCache
from ..embeddings import Embedder
from ..features import raw_blocks
from ..lexical import match_features, overlap_features
from ..pipeline import build_prompts, key_rows
from ..profiles import attention_heads, fingerprint
from ..scoring import query_positions
from ..units import prompt_units, unit_text
from .examples import Example

if TYPE_CHECKING:
    from ..compressor import GemFilterCompressor

FEATURE_VERSION = 3
"""Bumped whenever what a cache entry holds changes (3: the ``key_mass`` and ``lexical`` raw blocks). Entries of
version 2 are still read: the blocks read from the text (``lexical``, ``overlap``) are computed from their unit
texts, and they lack ``key_mass`` (a readout that reads it needs version 3 entries)."""
READABLE_VERSIONS = (3, 2)
UNIT_BUDGET = 256
"""Units are cut as for a 256-token budget (sentence pieces of at most 64 tokens)."""
MODES = ("joint", "cached")
"""How an example's pass runs: "joint", one pass over the whole prompt (``FilterModel.run``); "cached", the
chunk cache's path (``cached_pass.cached_record``: every document encoded alone after the prefix, only the
prompt's last tokens through the model), which records no hidden states (no ``features.LAYER_BLOCKS``)."""
TRAINING_CACHE_BYTES = 256 << 20
"""Memory bound of the chunk cache a "cached" extraction fills (entries of repeated chunks are reused)."""


@dataclass(frozen=True)
class ExampleFeatures:
    """What fitting and evaluating a readout needs of one example (no model, no text processing)."""

    id: str
    source: str
    raw: dict[str, torch.Tensor]  # features.raw_blocks at layers 0..max_layer, unstandardised
    units: list[tuple[int, int]]  # context-token units
    unit_docs: torch.Tensor  # (U,) long
    labels: torch.Tensor  # (U,) bool: overlaps a positive span
    texts: list[str]  # (U,) unit texts
    answers: list[str]
    n_context: int
    heads: int
    max_layer: int
    sim_unit: torch.Tensor | None  # (U,) float64
    sim_doc: torch.Tensor | None  # (D,) float64
    meta: dict[str, Any]


def cache_key(
    comp: GemFilterCompressor,
    max_layer: int,
    example: Example,
    embedder: Embedder | None,
    version: int = FEATURE_VERSION,
    mode: str = "joint",
) -> str:
    """Key of one example's features: model architecture, layer, prompt settings, example, embedder, and
    the pass's mode when it is not the joint one (joint keys are those of earlier versions)."""
    cfg = comp.config
    parts = {
        "v": version,
        "model": fingerprint(comp.model.config),
        "quantized": getattr(comp.model, "gemfilter_quantized", None),
        "layer": max_layer,
        "template": cfg.template,
        "separator": cfg.separator,
        "chat": cfg.use_chat_template,
        "query": cfg.scoring.query,
        "example": [example.question, example.documents, example.positives, example.answers],
        "embedder": embedder.name if embedder else None,
        **({"mode": mode} if mode != "joint" else {}),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def labels_of(
    prompt: Any, units: Sequence[tuple[int, int]], docs: Sequence[int], positives: Sequence[Any]
) -> torch.Tensor:
    """(U,) whether each unit's character span overlaps a positive (document, start, end) span."""
    starts = [0]
    for d in prompt.documents:
        starts.append(starts[-1] + len(d.ids))
    out = []
    for (a, b), d in zip(units, docs, strict=True):
        doc = prompt.documents[d]
        lo, hi = doc.starts[a - starts[d]], doc.ends[b - 1 - starts[d]]
        out.append(any(pd == d and ps < hi and pe > lo for pd, ps, pe in positives))
    return torch.tensor(out, dtype=torch.bool)


def extract(
    comp: GemFilterCompressor,
    examples: Sequence[Example],
    max_layer: int,
    cache: Path,
    embedder: Embedder | None = None,
    progress: Callable[[Any], Any] | None = None,
    cached_only: bool = False,
    mode: str = "joint",
) -> list[ExampleFeatures]:
    """Features of every example that fits one pass of the model (longer ones are skipped); with
    ``cached_only``, of the examples whose features are in ``cache`` already (no pass at all); ``mode``: the
    pass, "joint" or "cached" (``MODES``)."""
    if mode not in MODES:
        raise ValueError(f"mode: {mode!r} is not a pass; use one of {list(MODES)}.")
    probe = comp.with_options(filter_layer=max_layer, scorer="layer")
    chunks = ChunkCache(TRAINING_CACHE_BYTES) if mode == "cached" else None
    who = cached_pass.identity(probe.plan.model, max_layer) if chunks is not None else None
    heads = attention_heads(comp.model.config)
    cache.mkdir(parents=True, exist_ok=True)
    out: list[ExampleFeatures] = []
    iterator = progress(examples) if progress else examples
    for ex in iterator:
        path = cache / f"{cache_key(comp, max_layer, ex, embedder, mode=mode)}.pt"
        found = next(
            (
                p
                for v in READABLE_VERSIONS
                if (p := cache / f"{cache_key(comp, max_layer, ex, embedder, v, mode)}.pt").exists()
            ),
            None,
        )
        if found is not None:
            out.append(with_text_blocks(ExampleFeatures(**torch.load(found, weights_only=False)), ex.question))
            continue
        if cached_only:
            continue
        (prompt,) = build_prompts(probe.plan, [(ex.documents, ex.question)])
        if comp.max_positions is not None and prompt.length > comp.max_positions:
            continue
        units = prompt_units(prompt, "sentence", UNIT_BUDGET)
        flat, docs = units.units, units.documents
        rows = query_positions(prompt.length, prompt.query_start, probe.config.scoring.query)
        keys = key_rows(probe.plan, prompt, ex.question)  # (K,)
        if chunks is not None and who is not None:
            item = cached_pass.cached_record(
                probe.plan.model, chunks, who, prompt, probe.config.separator, rows, True, keys
            )
        else:
            (item,) = probe.plan.model.run(
                [(prompt.input_ids, rows)], max_layer, attention=True, hidden=True, key_rows=[keys]
            )
        assert item.attention is not None and item.key_attention is not None
        positions = prompt.context_positions()
        starts = [0]
        for d in prompt.documents:
            starts.append(starts[-1] + len(d.ids))
        texts = [unit_text(prompt, d, u, starts[d]) for u, d in zip(flat, docs, strict=True)]
        raw = raw_blocks(
            item.attention[:, :, positions],
            item.similarity[:, positions] if item.similarity is not None else None,
            flat,
            hidden=item.similarity is not None,
            key_attention=item.key_attention[:, :, positions],
            lexical=match_features(ex.question, texts),
        )
        sim_unit = sim_doc = None
        if embedder is not None:
            sim_unit = embedder.similarities(ex.question, texts)
            sim_doc = embedder.similarities(ex.question, ex.documents)
        record: dict[str, Any] = {
            "id": ex.id,
            "source": ex.source,
            "raw": raw,
            "units": flat,
            "unit_docs": torch.tensor(docs, dtype=torch.long),
            "labels": labels_of(prompt, flat, docs, ex.positives),
            "texts": texts,
            "answers": list(ex.answers),
            "n_context": prompt.context_tokens,
            "heads": heads,
            "max_layer": max_layer,
            "sim_unit": sim_unit,
            "sim_doc": sim_doc,
            "meta": dict(ex.meta),
        }
        tmp = path.with_suffix(".tmp")
        torch.save(record, tmp)
        os.replace(tmp, path)
        out.append(with_text_blocks(ExampleFeatures(**record), ex.question))
    return out


def with_text_blocks(features: ExampleFeatures, question: str) -> ExampleFeatures:
    """``features`` with the raw blocks read from the text (``lexical``, ``overlap``) computed from its unit
    texts where the entry lacks them (no pass: they depend on the text alone)."""
    raw = dict(features.raw)
    if "lexical" not in raw:
        raw["lexical"] = match_features(question, features.texts).float()
    if "overlap" not in raw:
        raw["overlap"] = overlap_features(question, features.texts, features.unit_docs.tolist()).float()
    return replace(features, raw=raw)
