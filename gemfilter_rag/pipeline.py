"""The one pipeline behind ``compress``, ``compress_batch``, ``generate`` and the windows of long prompts:

    prompts -> pass (FilterModel.run, capture) -> score (the Scorer) -> select -> assemble

A ``Plan`` holds what a run needs (filter model, scorer, config, embedding model); every function
here takes one, never the facade. A prompt longer than the model accepts is scored in windows
(``gemfilter_rag.windows``) that call the same scorer. A new scorer is a ``Scorer`` (``scorers.base``);
nothing here changes.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import cached_pass
from .assemble import assemble
from .capture import PassRecord
from .chunk_cache import ChunkCache
from .config import GemFilterConfig, check_top_k
from .embeddings import Embedder
from .evidence import Evidence
from .filter_model import FilterModel
from .lexical import term_spans, token_hits
from .prior import add_prior, check_document_scores, share_budget
from .prompt import FilterPrompt, build_prompt, frame_ids, query_token_spans
from .result import CompressionResult
from .scorers import SEPARATOR, Scorer, Scores, Target, records_hidden, records_key_attention, unit_sums
from .scoring import query_positions
from .selection import Unit, fit_joins, select_ranked, select_tokens, unit_scores
from .units import PromptUnits, prompt_units
from .validation import DEFAULT_BATCH_SIZE, check_batch_size, check_items
from .windows import PrefilterFn, UnitScoreFn, score_in_windows


@dataclass(frozen=True)
class CacheUse:
    """A plan's chunk cache and how it is used: ``scorer`` scores the cached path (``cached_pass``); None
    means the prompts take the joint pass, and ``reason`` (when set) is said once, as a warning."""

    store: ChunkCache
    scorer: Scorer | None
    layer: int  # the exit layer the cache's entries are made for
    mode: str = "auto"  # "auto", "force" or "off" (GemFilterCompressor's cache_mode)
    reason: str = ""
    _warned: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    def warn_once(self) -> None:
        """Warn, once per plan, why the cache is not used (nothing when there is no reason to give)."""
        if self.reason and not self._warned.is_set():
            self._warned.set()
            warnings.warn(self.reason, UserWarning, stacklevel=4)


@dataclass(frozen=True)
class Plan:
    """What one compression run needs: the filter model, its scorer, the config, an embedding model and a
    chunk cache."""

    model: FilterModel
    scorer: Scorer
    config: GemFilterConfig
    embedder: Embedder | None = None
    cache: CacheUse | None = None

    @property
    def cached_scorer(self) -> Scorer | None:
        """The scorer of the cached path when prompts take it (a cache and a scorer for it), else None."""
        return self.cache.scorer if self.cache is not None else None

    @property
    def window_size(self) -> int | None:
        """Length of the windows a prompt longer than the model accepts is scored in: ``config.window``
        capped by the model's positions. None: the model states no limit."""
        limits = [v for v in (self.config.window, self.model.max_positions) if v is not None]
        return min(limits) if limits else None


def build_prompts(plan: Plan, items: Sequence[tuple[Sequence[str], str]]) -> list[FilterPrompt]:
    """The filter prompt of every (documents, query) item, with the plan's template settings."""
    cfg = plan.config
    return [
        build_prompt(
            plan.model.tokenizer,
            docs,
            query,
            separator=cfg.separator,
            template=cfg.template,
            use_chat_template=cfg.use_chat_template,
        )
        for docs, query in items
    ]


def evidence_for(plan: Plan, prompt: FilterPrompt, query: str, document_scores: Sequence[float] | None) -> Evidence:
    """The prompt's evidence for the scorer: the retriever's scores only under ``prior="auto"``."""
    scores = document_scores if plan.config.prior == "auto" else None
    return Evidence(prompt, query, scores, plan.embedder)


def scoring_rows(plan: Plan, prompt: FilterPrompt) -> torch.Tensor:
    """(Q,) positions of the prompt whose attention scores (``Scorer.rows``)."""
    return query_positions(prompt.length, prompt.query_start, plan.scorer.rows)


def key_rows(plan: Plan, prompt: FilterPrompt, query: str) -> torch.Tensor:
    """(K,) positions of the prompt's question tokens that overlap a rare term of ``query``
    (``lexical.term_spans``): the rows whose attention ``PassRecord.key_attention`` records. Empty
    when the question has no rare terms (the pass then records the scoring rows' attention there)."""
    spans = term_spans(query)
    if not spans:
        return torch.empty(0, dtype=torch.long)
    hits = token_hits(query_token_spans(plan.model.tokenizer, query), spans)
    positions = [prompt.query_start + i for i in hits if prompt.query_start + i < prompt.length]
    return torch.tensor(positions, dtype=torch.long)


def whole_target(prompt: FilterPrompt, units: PromptUnits) -> Target:
    """The target of a prompt scored in one pass: all its context tokens and units."""
    flat = units.units
    return Target(prompt.context_positions(), flat, units.documents, flat)


def run_pass(
    plan: Plan, inputs: Sequence[tuple[torch.Tensor, torch.Tensor]], keys: Sequence[torch.Tensor] | None = None
) -> list[PassRecord]:
    """One filter pass over (ids (T_i,), rows (Q_i,)) pairs, recording what the plan's scorer reads; ``keys``
    (K_i,) per item are the key rows (``key_rows``) of a scorer that reads them (ignored for any other)."""
    scorer = plan.scorer
    keyed = keys if records_key_attention(scorer) else None
    if records_key_attention(scorer) and keyed is None:
        raise ValueError("keys: the scorer reads the key rows' attention; pass key_rows() of every item.")
    if keyed is None:  # the call as before key rows existed
        return plan.model.run(inputs, scorer.layer, scorer.attention, records_hidden(scorer))
    return plan.model.run(inputs, scorer.layer, scorer.attention, records_hidden(scorer), key_rows=keyed)


def score_prompt(plan: Plan, prompt: FilterPrompt, units: PromptUnits, evidence: Evidence) -> Scores:
    """Score one prompt: one pass (the cached path when the plan takes it), or windows when it is longer than
    the model accepts."""
    limit = plan.model.max_positions
    if limit is not None and prompt.length > limit:
        score, prefilter = window_scorer(plan, prompt, evidence)
        tokens = score_in_windows(prompt, plan.window_size or limit, plan.scorer.rows, score, prefilter=prefilter)
        return Scores(tokens, unit_scores(tokens, units.units).double())
    if plan.cache is not None and plan.cached_scorer is None:
        plan.cache.warn_once()
    if plan.cached_scorer is not None:
        return score_cached(plan, prompt, units, evidence)
    keys = [key_rows(plan, prompt, evidence.query)] if records_key_attention(plan.scorer) else None
    (record,) = run_pass(plan, [(prompt.input_ids, scoring_rows(plan, prompt))], keys)
    return plan.scorer.score(record, whole_target(prompt, units), evidence)


def score_cached(plan: Plan, prompt: FilterPrompt, units: PromptUnits, evidence: Evidence) -> Scores:
    """Score one prompt on the cached path: its context from the plan's chunk cache (missing chunks encoded and
    stored), its last tokens through the model (``cached_pass``), the cached path's scorer over the record."""
    assert plan.cache is not None and plan.cache.scorer is not None, "the plan takes no cached path"
    scorer = plan.cache.scorer
    rows = query_positions(prompt.length, prompt.query_start, scorer.rows)
    keys = key_rows(plan, prompt, evidence.query) if records_key_attention(scorer) else None
    who = cached_pass.identity(plan.model, scorer.layer)
    record = cached_pass.cached_record(
        plan.model, plan.cache.store, who, prompt, plan.config.separator, rows, scorer.attention, keys
    )
    return scorer.score(record, whole_target(prompt, units), evidence)


def warm(plan: Plan, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Encode and store in the plan's chunk cache every text of ``texts`` (and the prompt's prefix and
    separator) that it lacks, for the cache's exit layer; returns how many entries were encoded."""
    if plan.cache is None:
        raise ValueError("cache: this compressor has none; pass cache=ChunkCache(...) to GemFilterCompressor.")
    cfg = plan.config
    frame, sep = frame_ids(
        plan.model.tokenizer, separator=cfg.separator, template=cfg.template, use_chat_template=cfg.use_chat_template
    )
    who = cached_pass.identity(plan.model, plan.cache.layer)
    return cached_pass.warm(plan.model, plan.cache.store, who, frame, sep, cfg.separator, texts, batch_size)


def window_scorer(plan: Plan, prompt: FilterPrompt, evidence: Evidence) -> tuple[UnitScoreFn, PrefilterFn | None]:
    """The ``windows.UnitScoreFn`` of the plan (one pass per window, the plan's scorer over its units) and
    its ``windows.PrefilterFn`` (embedding similarity of each unit to the question; None without one)."""
    c0 = prompt.doc_offsets[0]
    # region index (context region, separators included) of each document's first token
    region_starts = [o - c0 for o in prompt.doc_offsets]
    ctx_starts = evidence.doc_starts
    # the question closes every window as it closes the prompt: a key row keeps its distance to the end
    keys = key_rows(plan, prompt, evidence.query) - prompt.length if records_key_attention(plan.scorer) else None

    def locate(unit: Unit) -> tuple[int, Unit] | None:
        """(document, unit in context-token indices) of a region unit, None for a separator."""
        for d, (rs, doc) in enumerate(zip(region_starts, prompt.documents, strict=True)):
            if rs <= unit[0] and unit[1] <= rs + len(doc.ids) and unit[1] > unit[0]:
                shift = ctx_starts[d] - rs
                return d, (unit[0] + shift, unit[1] + shift)
        return None

    def score(
        ids: torch.Tensor, rows: torch.Tensor, ctx_start: int, local: list[Unit], region: list[Unit]
    ) -> torch.Tensor:
        (record,) = run_pass(plan, [(ids, rows)], [keys + int(ids.numel())] if keys is not None else None)
        n = local[-1][1] if local else 0
        found = [locate(u) for u in region]
        target = Target(
            torch.arange(ctx_start, ctx_start + n),  # (M,)
            local,
            [f[0] if f is not None else SEPARATOR for f in found],
            [f[1] if f is not None else u for f, u in zip(found, region, strict=True)],
        )
        return unit_sums(plan.scorer.score(record, target, evidence).tokens, local)  # (U,)

    def prefilter(region: list[Unit]) -> torch.Tensor:
        found = [locate(u) for u in region]
        keep = [i for i, f in enumerate(found) if f is not None]
        values = torch.full((len(region),), float("-inf"), dtype=torch.float64)
        sims = evidence.sim_units([found[i][1] for i in keep], [found[i][0] for i in keep])  # type: ignore[index]
        if sims is not None and keep:
            values[keep] = sims
        return values

    return score, (prefilter if evidence.embedder is not None else None)


def select(
    plan: Plan,
    scores: Scores,
    units: PromptUnits,
    budget: int,
    document_scores: Sequence[float] | None,
    scorer: Scorer | None = None,
) -> torch.Tensor:
    """Kept context-token indices (ascending) within ``budget``, per ``config.granularity`` and ``config.prior``.

    The budget holds the output text: the kept tokens and the separator between every two documents
    that keep any (``selection.fit_joins``).

    ``prior="auto"``: a scorer that fuses the retriever's scores (the readout) has used them already;
    with any other they are added to the token scores (``"add"``, relative scores: near-equal retriever
    scores stay near-equal). ``"share"`` and ``"add"`` apply those rules on top of any scorer;
    ``"none"`` ignores the scores. ``scorer``: the one that gave ``scores`` (default the plan's).
    """
    cfg = plan.config
    mode = cfg.prior if document_scores is not None else "none"
    if mode == "auto":
        mode = "none" if (scorer or plan.scorer).fuses_retriever else "add"
    values = scores.units
    if mode == "add":
        lengths = [sum(b - a for a, b in doc_units) for doc_units in units.per_document]  # units partition documents
        tokens = add_prior(scores.tokens, lengths, document_scores or [], cfg.prior_weight)
        values = tokens if cfg.granularity == "token" else unit_scores(tokens, units.units)
    per_doc: list[torch.Tensor] = []
    if mode == "share":
        start = 0
        for doc_units in units.per_document:
            per_doc.append(scores.units[start : start + len(doc_units)])
            start += len(doc_units)

    def pick(b: int) -> torch.Tensor:
        if mode == "share":
            return share_budget(document_scores or [], units.per_document, per_doc, b, cfg.prior_weight)
        if cfg.granularity == "token":  # one unit per token
            return select_tokens(values, b)
        return select_ranked(values, units.units, b)

    return fit_joins(pick, budget, units.doc_ends, units.join)


def keep_tokens(
    plan: Plan,
    prompt: FilterPrompt,
    tokens: torch.Tensor,
    budget: int,
    document_scores: Sequence[float] | None = None,
) -> torch.Tensor:
    """``select`` over token scores (N,) computed elsewhere (units valued by their summed tokens).

    For tools that score a prompt once and select many ways (benchmarks, calibration).
    """
    units = prompt_units(prompt, plan.config.granularity, budget)
    return select(plan, Scores(tokens, unit_scores(tokens, units.units).double()), units, budget, document_scores)


def compress_prompts(
    plan: Plan,
    prompts: Sequence[FilterPrompt],
    queries: Sequence[str],
    *,
    top_k: int | None | Sequence[int | None] = None,
    document_scores: Sequence[Sequence[float] | None] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[CompressionResult]:
    """Compress built prompts; the items that need a filter pass share right-padded batched passes.

    ``top_k`` is one budget for every item or one per item (None: ``config.top_k``);
    ``document_scores`` is None or, per item, its retriever scores (or None), as in ``compress``.
    Items are grouped by length (longest first) to waste little padding; results come back in input
    order and equal one-by-one calls. ``timings["filter"]`` of an item is the time of the pass it shared.
    """
    n = len(prompts)
    budgets = _budgets(plan.config.top_k, top_k, n)
    doc_scores = _document_scores(document_scores, prompts)
    check_batch_size(batch_size)
    units = [prompt_units(p, plan.config.granularity, b) for p, b in zip(prompts, budgets, strict=True)]
    evidence = [evidence_for(plan, p, q, s) for p, q, s in zip(prompts, queries, doc_scores, strict=True)]
    scores: list[Scores | None] = [None] * n
    filter_time = [0.0] * n
    limit = plan.model.max_positions
    todo = [i for i in range(n) if units[i].output_tokens(torch.arange(prompts[i].context_tokens)) > budgets[i]]
    long = [i for i in todo if limit is not None and prompts[i].length > limit]
    short = sorted((i for i in todo if i not in long), key=lambda i: -prompts[i].length)
    layers = [plan.scorer.layer] * n
    used: list[Scorer] = [plan.scorer] * n
    for i in long:  # windows: one prompt at a time, memory bounded by one window
        t0 = time.perf_counter()
        scores[i] = score_prompt(plan, prompts[i], units[i], evidence[i])
        filter_time[i] = time.perf_counter() - t0
    if plan.cache is not None and plan.cached_scorer is None and short:
        plan.cache.warn_once()
    if plan.cached_scorer is not None:  # one cached pass per prompt: only its last tokens run
        for i in short:
            t0 = time.perf_counter()
            scores[i] = score_cached(plan, prompts[i], units[i], evidence[i])
            filter_time[i] = time.perf_counter() - t0
            layers[i] = plan.cached_scorer.layer
            used[i] = plan.cached_scorer
        short = []
    for s in range(0, len(short), batch_size):
        group = short[s : s + batch_size]
        t0 = time.perf_counter()
        inputs = [(prompts[i].input_ids, scoring_rows(plan, prompts[i])) for i in group]
        keys = [key_rows(plan, prompts[i], queries[i]) for i in group] if records_key_attention(plan.scorer) else None
        records = run_pass(plan, inputs, keys)
        for i, record in zip(group, records, strict=True):
            scores[i] = plan.scorer.score(record, whole_target(prompts[i], units[i]), evidence[i])
        elapsed = time.perf_counter() - t0
        for i in group:
            filter_time[i] = elapsed
    results = []
    for i in range(n):
        t0 = time.perf_counter()
        found = scores[i]
        if found is None:  # the budget holds the whole context: no pass
            keep = torch.arange(prompts[i].context_tokens)
            tokens = torch.ones(prompts[i].context_tokens)
            layer = None
        else:
            keep = select(plan, found, units[i], budgets[i], doc_scores[i], used[i])
            tokens = found.tokens
            layer = layers[i]
        chosen = time.perf_counter() - t0
        timings = {"tokenize": 0.0, "filter": filter_time[i], "select": chosen, "total": filter_time[i] + chosen}
        results.append(
            assemble(prompts[i], queries[i], keep, tokens, layer, plan.config, timings, units[i].per_document)
        )
    return results


def compress_items(
    plan: Plan,
    items: Sequence[tuple[Sequence[str], str]],
    *,
    top_k: int | None | Sequence[int | None] = None,
    document_scores: Sequence[Sequence[float] | None] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[CompressionResult]:
    """Check and tokenize (documents, query) items, then ``compress_prompts``; the tokenize time of each
    item (an equal share of the batch's) is added to its timings."""
    checked = check_items(items)
    t0 = time.perf_counter()
    prompts = build_prompts(plan, checked)
    tokenize = (time.perf_counter() - t0) / max(1, len(checked))
    results = compress_prompts(
        plan, prompts, [q for _, q in checked], top_k=top_k, document_scores=document_scores, batch_size=batch_size
    )
    for r in results:
        r.timings["tokenize"] = tokenize
        r.timings["total"] += tokenize
    return results


def _budgets(default: int, top_k: Any, n: int) -> list[int]:
    """One checked budget per item from ``top_k``: None, one int, or one int (or None) per item."""
    if top_k is None or isinstance(top_k, (str, bytes)) or not isinstance(top_k, Sequence):
        return [check_top_k(default if top_k is None else top_k)] * n
    if len(top_k) != n:
        raise ValueError(f"top_k: has {len(top_k)} budgets for {n} items; pass one int, or one per item.")
    return [check_top_k(default if k is None else k) for k in top_k]


def _document_scores(document_scores: Any, prompts: Sequence[FilterPrompt]) -> list[list[float] | None]:
    """One checked list of retriever scores (or None) per item."""
    if document_scores is None:
        return [None] * len(prompts)
    if isinstance(document_scores, (str, bytes)) or not isinstance(document_scores, Sequence):
        raise TypeError(
            f"document_scores: expected one list of scores (or None) per item, got {type(document_scores).__name__}."
        )
    if len(document_scores) != len(prompts):
        raise ValueError(
            f"document_scores: has {len(document_scores)} entries for {len(prompts)} items; pass one per item "
            "(None for an item without scores)."
        )
    return [check_document_scores(s, len(p.documents)) for s, p in zip(document_scores, prompts, strict=True)]


__all__ = [
    "CacheUse",
    "Plan",
    "build_prompts",
    "compress_items",
    "compress_prompts",
    "evidence_for",
    "keep_tokens",
    "key_rows",
    "score_cached",
    "score_prompt",
    "scoring_rows",
    "select",
    "warm",
    "whole_target",
    "window_scorer",
]
