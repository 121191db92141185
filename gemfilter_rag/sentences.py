"""Sentence boundaries as character spans that partition a text."""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _segmenter() -> Any:
    import pysbd

    return pysbd.Segmenter(language="en", clean=False, char_span=True)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Split ``text`` into sentences: contiguous ``(start, end)`` spans covering it exactly.

    pysbd handles abbreviations ("Dr.", "e.g."), decimals, list items and newlines; its spans are
    re-joined so that they touch and cover the whole text even where it skips characters.
    """
    if not text:
        return []
    starts = sorted({s.start for s in _segmenter().segment(text) if 0 < s.start < len(text)})
    bounds = [0, *starts, len(text)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]
