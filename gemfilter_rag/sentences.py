"""Sentence boundaries as character spans that partition a text."""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

_LOCAL = threading.local()


def _segmenter() -> Any:
    """One pysbd segmenter per thread: ``Segmenter.segment`` keeps the text being split on the
    instance, so a shared one mixes up the spans of texts split at once by different threads."""
    seg = getattr(_LOCAL, "segmenter", None)
    if seg is None:
        import pysbd

        seg = _LOCAL.segmenter = pysbd.Segmenter(language="en", clean=False, char_span=True)
    return seg


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Split ``text`` into sentences: contiguous ``(start, end)`` spans covering it exactly.

    pysbd handles abbreviations ("Dr.", "e.g."), decimals, list items and newlines; its spans are
    re-joined so that they touch and cover the whole text even where it skips characters. The spans of
    the last 4096 texts are kept (RAG retrieves the same chunks again and again; pysbd takes about
    0.1 s for 2K tokens of text on a CPU core).
    """
    return list(_cached_spans(text))


@lru_cache(maxsize=4096)
def _cached_spans(text: str) -> tuple[tuple[int, int], ...]:
    return tuple(_split(text))


def _split(text: str) -> list[tuple[int, int]]:
    if not text:
        return []
    starts = sorted({s.start for s in _segmenter().segment(text) if 0 < s.start < len(text)})
    bounds = [0, *starts, len(text)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
