"""Answer matching shared by training and the benchmarks: the SQuAD normalisation and answer survival."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation + "‘’“”–—"})


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and articles, squeeze whitespace (the SQuAD normalisation)."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def contains_answer(text: str, answers: Sequence[str]) -> bool:
    """Whether any accepted answer, normalised, occurs in normalised ``text`` on word boundaries."""
    hay = f" {normalize_answer(text)} "
    return any(norm and f" {norm} " in hay for norm in (normalize_answer(a) for a in answers))
