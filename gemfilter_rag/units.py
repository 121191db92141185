"""The units a prompt's context is selected in: tokens, sentence pieces, or whole documents."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .headers import unit_contexts
from .pieces import cut_units
from .prompt import FilterPrompt
from .selection import MAX_SENTENCE_TOKENS, Unit, output_tokens, token_units
from .structure import structure


@dataclass(frozen=True)
class PromptUnits:
    """Units over the context tokens (documents concatenated), grouped by document, in order."""

    per_document: list[list[Unit]]
    """For each document, its units as ``[start, end)`` context-token indices."""

    kinds: list[str] = field(default_factory=list)
    """For each document, its kind (``structure.KINDS``) when its units follow its structure
    (granularity "sentence"); empty for the other granularities."""

    join: int = 0
    """Tokens of the separator that joins two kept documents in the output text."""

    @property
    def doc_ends(self) -> list[int]:
        """Each document's end in context-token indices (the units partition the documents)."""
        ends, end = [], 0
        for units in self.per_document:
            end = units[-1][1] if units else end
            ends.append(end)
        return ends

    def output_tokens(self, keep: torch.Tensor) -> int:
        """Tokens of the output text of keeping ``keep`` (K,): kept tokens plus a separator between documents."""
        return output_tokens(keep, self.doc_ends, self.join)

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

    "sentence" units follow each document's structure (``structure.structure``): pysbd sentences in
    prose; in other documents one structural unit each (a JSON pair or record, a table or CSV row, a
    YAML key, a log line, a block of code; markdown by line block). Units longer than
    ``MAX_SENTENCE_TOKENS`` (or than ``budget``) are cut into pieces: prose sentences every that many
    tokens, as before; other units at their strongest boundaries and never inside a word, number or
    identifier (``pieces.cut_units``), so that such a piece may hold more tokens, but never more than
    ``budget``. A piece always fits the budget, and the units of a document partition its tokens.
    """
    per_doc: list[list[Unit]] = []
    kinds: list[str] = []
    start = 0
    for doc in prompt.documents:
        n = len(doc.ids)
        if granularity == "document":
            per_doc.append([(start, start + n)] if n else [])
        elif granularity == "token":
            per_doc.append([(t, t + 1) for t in range(start, start + n)])
        else:
            piece = min(MAX_SENTENCE_TOKENS, budget)  # a sentence piece always fits the budget
            found = structure(doc.text)
            kinds.append(found.kind)
            if found.kind == "prose":  # exactly the units of before structure was detected
                per_doc.append(token_units(doc.ends, found.spans, start, piece))
            else:
                per_doc.append(cut_units(doc.ends, doc.text, found.spans, found.roles, start, piece, budget))
        start += n
    return PromptUnits(per_doc, kinds, prompt.join_tokens)


def unit_text(prompt: FilterPrompt, document: int, unit: Unit, offset: int) -> str:
    """The exact text of ``unit`` (context-token indices; ``offset`` is its document's first index)."""
    doc = prompt.documents[document]
    a, b = unit[0] - offset, unit[1] - offset
    return doc.text[doc.starts[a] : doc.ends[b - 1]] if b > a else ""


def prompt_unit_contexts(prompt: FilterPrompt, units: PromptUnits) -> list[list[str | None]]:
    """Per document, per unit, the header line or key path it sits under (``headers.unit_context``),
    or None: context for a scorer, never part of the output. ``units`` of granularity "sentence"."""
    if len(units.kinds) != len(prompt.documents):
        raise ValueError("units: contexts need the units of granularity 'sentence' (they carry each document's kind)")
    out: list[list[str | None]] = []
    start = 0
    for doc, kind, mine in zip(prompt.documents, units.kinds, units.per_document, strict=True):
        spans = [(doc.starts[a - start], doc.ends[b - 1 - start]) for a, b in mine]
        out.append(unit_contexts(kind, doc.text, spans))
        start += len(doc.ids)
    return out
