"""The units a prompt's context is selected in: tokens, sentence pieces, or whole documents."""

from __future__ import annotations

from dataclasses import dataclass

from .prompt import FilterPrompt
from .selection import MAX_SENTENCE_TOKENS, Unit, token_units
from .sentences import sentence_spans


@dataclass(frozen=True)
class PromptUnits:
    """Units over the context tokens (documents concatenated), grouped by document, in order."""

    per_document: list[list[Unit]]
    """For each document, its units as ``[start, end)`` context-token indices."""

    @property
    def units(self) -> list[Unit]:
        """Every unit, document by document."""
        return [u for units in self.per_document for u in units]

    @property
    def documents(self) -> list[int]:
        """The document index of every unit of ``units``."""
        return [d for d, units in enumerate(self.per_document) for _ in units]


def prompt_units(prompt: FilterPrompt, granularity: str, budget: int) -> PromptUnits:
    """Cut the context of ``prompt`` into units of ``granularity``.

    Sentences longer than ``MAX_SENTENCE_TOKENS`` (or than ``budget``) are cut into pieces, so that a
    piece always fits the budget.
    """
    per_doc: list[list[Unit]] = []
    start = 0
    for doc in prompt.documents:
        n = len(doc.ids)
        if granularity == "document":
            per_doc.append([(start, start + n)] if n else [])
        elif granularity == "token":
            per_doc.append([(t, t + 1) for t in range(start, start + n)])
        else:
            piece = min(MAX_SENTENCE_TOKENS, budget)  # a sentence piece always fits the budget
            per_doc.append(token_units(doc.ends, sentence_spans(doc.text), start, piece))
        start += n
    return PromptUnits(per_doc)


def unit_text(prompt: FilterPrompt, document: int, unit: Unit, offset: int) -> str:
    """The exact text of ``unit`` (context-token indices; ``offset`` is its document's first index)."""
    doc = prompt.documents[document]
    a, b = unit[0] - offset, unit[1] - offset
    return doc.text[doc.starts[a] : doc.ends[b - 1]] if b > a else ""
