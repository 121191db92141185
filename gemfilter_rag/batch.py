"""Compress several (documents, query) pairs with batched filter passes.

The filter pass pads on the right: a causal model never lets a real token see a padding token
that comes after it, and every real token keeps the position it has in an unpadded run, so each
item's query/key (and so its scores) are those of a one-by-one call. Keys are sliced back to the
item's own length before scoring, so padded keys never enter a softmax.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from . import early_exit, memory
from .config import check_top_k
from .prompt import FilterPrompt, build_prompt
from .result import CompressionResult
from .scoring import token_scores

if TYPE_CHECKING:
    from .compressor import GemFilterCompressor

DEFAULT_BATCH_SIZE = 8


def check_items(items: Any) -> list[tuple[list[str], str]]:
    """Validate ``items`` as a sequence of (documents, query) pairs and return them as lists."""
    from .compressor import _check_documents, _check_query

    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError(
            f"items: expected a sequence of (documents, query) pairs, got {type(items).__name__}; "
            "for one pair call compress(documents, query)."
        )
    out: list[tuple[list[str], str]] = []
    for i, item in enumerate(items):
        if not isinstance(item, Sequence) or isinstance(item, (str, bytes)) or len(item) != 2:
            raise TypeError(f"items[{i}]: expected a (documents, query) pair, got {type(item).__name__}.")
        docs, query = item
        _check_query(query)
        out.append((_check_documents(docs), query))
    return out


def check_batch_size(batch_size: Any) -> int:
    """A positive int, or a ValueError that names the argument."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}; use e.g. {DEFAULT_BATCH_SIZE}.")
    return batch_size


def build_prompts(compressor: GemFilterCompressor, items: Sequence[tuple[Sequence[str], str]]) -> list[FilterPrompt]:
    """The filter prompt of every item, with the compressor's template settings."""
    cfg = compressor.config
    return [
        build_prompt(
            compressor.tokenizer,
            docs,
            query,
            separator=cfg.separator,
            template=cfg.template,
            use_chat_template=cfg.use_chat_template,
        )
        for docs, query in items
    ]


def score_prompts(compressor: GemFilterCompressor, prompts: Sequence[FilterPrompt]) -> list[torch.Tensor]:
    """Score the context tokens of several prompts in one right-padded filter pass. Returns [(N_i,)].

    Prompts longer than the model accepts fall back to ``score_prompt`` (which scores in windows).
    """
    limit = compressor.max_positions
    if len(prompts) == 1 or any(limit is not None and p.length > limit for p in prompts):
        # one prompt, or prompts longer than the model (scored in windows): one by one
        return [compressor.score_prompt(p) for p in prompts]
    from .compressor import _device_of

    device = _device_of(compressor.model)
    longest = max(p.length for p in prompts)
    pad = _pad_id(compressor.tokenizer)
    ids = torch.full((len(prompts), longest), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)  # (B, T)
    for i, p in enumerate(prompts):
        ids[i, : p.length] = p.input_ids
        mask[i, : p.length] = 1
    rows_most = max(len(compressor._query_rows(p)) for p in prompts)
    memory.check_pass(compressor.model, longest, rows_most, batch=len(prompts), device=device)
    capture = early_exit.capture_layer(
        compressor.model, ids.to(device), compressor.filter_layer, attention_mask=mask.to(device)
    )
    out: list[torch.Tensor] = []
    for i, p in enumerate(prompts):
        rows = compressor._query_rows(p).to(device)  # (Q,)
        query = capture.query[i : i + 1, :, rows]  # (1, H, Q, D)
        key = capture.key[i : i + 1, :, : p.length]  # (1, KV, T_i, D): padded keys dropped
        scores = token_scores(
            query, key, rows, compressor.config.scoring, capture.scaling, capture.sliding_window
        )  # (1, T_i)
        out.append(scores[0, p.context_positions().to(device)].float().cpu())  # (N_i,)
    return out


def compress_prompts(
    compressor: GemFilterCompressor,
    prompts: Sequence[FilterPrompt],
    queries: Sequence[str],
    *,
    top_k: int | None | Sequence[int | None] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    document_scores: Sequence[Sequence[float] | None] | None = None,
) -> list[CompressionResult]:
    """Compress built prompts; the items that need a filter pass share batched passes.

    ``top_k`` is one budget for every item or one per item (None: ``config.top_k``);
    ``document_scores`` is None or, per item, its retriever scores (or None), as in ``compress``.
    Items are grouped by length (longest first) to waste little padding; results come back in
    input order. ``timings["filter"]`` of an item is the time of the pass it shared.
    """
    from .compressor import _assemble

    n = len(prompts)
    budgets = _budgets(compressor, top_k, n)
    priors = _priors(document_scores, prompts)
    check_batch_size(batch_size)
    scores: list[torch.Tensor | None] = [None] * n
    filter_time = [0.0] * n
    todo = sorted((i for i in range(n) if budgets[i] < prompts[i].context_tokens), key=lambda i: -prompts[i].length)
    for s in range(0, len(todo), batch_size):
        group = todo[s : s + batch_size]
        t0 = time.perf_counter()
        for i, sc in zip(group, score_prompts(compressor, [prompts[i] for i in group]), strict=True):
            scores[i] = sc
        elapsed = time.perf_counter() - t0
        for i in group:
            filter_time[i] = elapsed
    results: list[CompressionResult] = []
    for i, (prompt, query) in enumerate(zip(prompts, queries, strict=True)):
        t0 = time.perf_counter()
        found = scores[i]
        if found is None:
            keep = torch.arange(prompt.context_tokens)
            sc = torch.ones(prompt.context_tokens)
            layer = None
        else:
            sc = found
            keep = compressor._select(prompt, sc, budgets[i], priors[i])
            layer = compressor.filter_layer
        select = time.perf_counter() - t0
        result = _assemble(
            prompt,
            query,
            keep,
            sc,
            layer,
            compressor.config,
            {"tokenize": 0.0, "filter": filter_time[i], "select": select},
        )
        result.timings["total"] = filter_time[i] + select
        results.append(result)
    return results


def compress_batch(
    compressor: GemFilterCompressor,
    items: Sequence[tuple[Sequence[str], str]],
    *,
    top_k: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    document_scores: Sequence[Sequence[float] | None] | None = None,
) -> list[CompressionResult]:
    """``compress`` over several (documents, query) pairs with batched filter passes, in input order.

    ``document_scores``: None, or one entry per item: that item's retriever scores, or None.
    """
    checked = check_items(items)
    t0 = time.perf_counter()
    prompts = build_prompts(compressor, checked)
    tokenize = (time.perf_counter() - t0) / max(1, len(checked))
    results = compress_prompts(
        compressor,
        prompts,
        [q for _, q in checked],
        top_k=top_k,
        batch_size=batch_size,
        document_scores=document_scores,
    )
    for r in results:
        r.timings["tokenize"] = tokenize
        r.timings["total"] += tokenize
    return results


def _budgets(compressor: GemFilterCompressor, top_k: Any, n: int) -> list[int]:
    """One checked budget per item from ``top_k``: None, one int, or one int (or None) per item."""
    default = compressor.config.top_k
    if top_k is None or isinstance(top_k, (str, bytes)) or not isinstance(top_k, Sequence):
        return [check_top_k(default if top_k is None else top_k)] * n
    if len(top_k) != n:
        raise ValueError(f"top_k: has {len(top_k)} budgets for {n} items; pass one int, or one per item.")
    return [check_top_k(default if k is None else k) for k in top_k]


def _priors(document_scores: Any, prompts: Sequence[FilterPrompt]) -> list[list[float] | None]:
    """One checked list of retriever scores (or None) per item."""
    from .prior import check_document_scores

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


def _pad_id(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0
