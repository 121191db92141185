"""Checks of what callers pass: each error names the argument and says what to pass instead."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DEFAULT_BATCH_SIZE = 8


def check_documents(documents: Any) -> list[str]:
    """``documents`` as a list of str, or a TypeError naming the document at fault."""
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(
            f"documents: expected a sequence of str, got {type(documents).__name__}; "
            "wrap a single text in a list: [text]."
        )
    for i, doc in enumerate(documents):
        if not isinstance(doc, str):
            raise TypeError(
                f"documents[{i}]: expected str, got {type(doc).__name__}; pass the text "
                "(for a LangChain Document, its page_content)."
            )
    return list(documents)


def check_query(query: Any) -> None:
    """Raise unless ``query`` is a non-empty str."""
    if not isinstance(query, str):
        raise TypeError(f"query: expected a non-empty str, got {type(query).__name__}.")
    if not query.strip():
        raise ValueError("query: is empty; pass the question the context must answer.")


def check_items(items: Any) -> list[tuple[list[str], str]]:
    """Validate ``items`` as a sequence of (documents, query) pairs and return them as lists."""
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
        check_query(query)
        out.append((check_documents(docs), query))
    return out


def check_batch_size(batch_size: Any) -> int:
    """A positive int, or a ValueError that names the argument."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}; use e.g. {DEFAULT_BATCH_SIZE}.")
    return batch_size
