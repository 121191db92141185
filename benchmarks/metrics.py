"""Pure metric functions: answer normalisation, answer survival, answer accuracy, aggregation."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from statistics import mean
from typing import Any

from gemfilter_rag.answers import contains_answer, normalize_answer

normalize = normalize_answer
"""The SQuAD normalisation (``gemfilter_rag.answers.normalize_answer``)."""


_LABEL = re.compile(r"^\s*(?:the\s+)?answer\s*(?:is)?\s*[:\-]\s*", re.IGNORECASE)


def answer_line(prediction: str) -> str:
    """The reader's answer proper: its first non-empty line, after a leading "Answer:" label.

    A base model (Gemma 3 270M) may go on after its answer by echoing the prompt, context included;
    only the first line counts, so an echoed context cannot make an answer right.
    """
    text = _LABEL.sub("", prediction.strip(), count=1)
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def answer_correct(prediction: str, answers: Sequence[str]) -> bool:
    """Whether the reader's answer line contains an accepted answer (normalised), as in lost-in-the-middle."""
    return contains_answer(answer_line(prediction), answers)


def ratio(original_tokens: int, sent_tokens: int) -> float:
    """Compression ratio: context tokens in / tokens sent downstream (inf-safe: 0 sent -> original)."""
    return original_tokens / max(1, sent_tokens)


def summarize(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Mean of each metric over rows of one (data set, method, budget) cell; None where missing."""
    rows = list(rows)
    ok = [r for r in rows if not r.get("error")]  # a failed method sent nothing: no tokens, ratio or latency

    def avg(key: str) -> float | None:
        vals = [float(r[key]) for r in ok if r.get(key) is not None]
        return mean(vals) if vals else None

    return {
        "n": len(rows),
        "recall": avg("recall"),
        "accuracy": avg("correct"),
        "latency_s": avg("latency_s"),
        "tokens_sent": avg("tokens_sent"),
        "original_tokens": avg("original_tokens"),
        "ratio": avg("ratio"),
        "errors": sum(1 for r in rows if r.get("error")),
    }
