"""Compress several (documents, query) pairs with batched filter passes (``pipeline.compress_prompts``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .pipeline import build_prompts, compress_prompts
from .result import CompressionResult
from .validation import DEFAULT_BATCH_SIZE, check_items

if TYPE_CHECKING:
    from .compressor import GemFilterCompressor


def compress_batch(
    compressor: GemFilterCompressor,
    items: Sequence[tuple[Sequence[str], str]],
    *,
    top_k: int | None | Sequence[int | None] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    document_scores: Sequence[Sequence[float] | None] | None = None,
) -> list[CompressionResult]:
    """``compress`` over several (documents, query) pairs with batched filter passes, in input order.

    ``top_k``: one budget for every item, or one per item (None: ``config.top_k``).
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
