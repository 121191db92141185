"""``Evidence``: what one prompt brings beyond attention, for scorers that use it.

The retriever's scores (relative to the best, ``features.relative_scores``), an embedding model's
similarity of each unit and document to the question, and how each unit's text holds the question's
rare terms (``lexical.match_features``), computed once per unit text, on demand.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .embeddings import Embedder
from .features import relative_scores
from .lexical import FEATURES, match_features, overlap_features
from .prompt import FilterPrompt
from .selection import Unit
from .units import unit_text


class Evidence:
    """The retriever's scores and embedding similarities of one prompt (windows ask for units of their own)."""

    def __init__(
        self,
        prompt: FilterPrompt,
        query: str,
        document_scores: Sequence[float] | None,
        embedder: Embedder | None,
    ) -> None:
        self.prompt = prompt
        self.query = query
        self.retriever = relative_scores(document_scores) if document_scores is not None else None  # (D,)
        """(D,) the retriever's relative score of each document, or None when none came."""
        self.embedder = embedder
        self._sim_doc: torch.Tensor | None = None
        self._sim_unit: dict[tuple[int, int, int], float] = {}
        self._lexical: dict[tuple[int, int, int], torch.Tensor] = {}
        self.doc_starts = [0]
        """Context-token index of each document's first token (and the total at the end)."""
        for d in prompt.documents:
            self.doc_starts.append(self.doc_starts[-1] + len(d.ids))

    def sim_doc(self) -> torch.Tensor | None:
        """(D,) similarity of each document to the query, or None without an embedding model."""
        if self.embedder is None:
            return None
        if self._sim_doc is None:
            self._sim_doc = self.embedder.similarities(self.query, [d.text for d in self.prompt.documents])
        return self._sim_doc

    def overlap(self, units: Sequence[Unit], docs: Sequence[int]) -> torch.Tensor:
        """(U, 2) ``lexical.overlap_features`` of the units' texts (context-token units) and their documents,
        idf over the documents these units come from."""
        texts = [unit_text(self.prompt, d, u, self.doc_starts[d]) for u, d in zip(units, docs, strict=True)]
        return overlap_features(self.query, texts, list(docs))

    def sim_units(self, units: Sequence[Unit], docs: Sequence[int]) -> torch.Tensor | None:
        """(U,) similarity of each unit's text to the query (context-token units), or None."""
        if self.embedder is None:
            return None
        keys = [(d, a, b) for (a, b), d in zip(units, docs, strict=True)]
        todo = sorted({k for k in keys if k not in self._sim_unit})
        if todo:
            texts = [unit_text(self.prompt, d, (a, b), self.doc_starts[d]) for d, a, b in todo]
            for k, s in zip(todo, self.embedder.similarities(self.query, texts).tolist(), strict=True):
                self._sim_unit[k] = s
        return torch.tensor([self._sim_unit[k] for k in keys], dtype=torch.float64)

    def lexical(self, units: Sequence[Unit], docs: Sequence[int]) -> torch.Tensor:
        """(U, F) how each unit's text holds the query's rare terms (``lexical.match_features``, context-token
        units); zeros for a query without rare terms."""
        keys = [(d, a, b) for (a, b), d in zip(units, docs, strict=True)]
        todo = sorted({k for k in keys if k not in self._lexical})
        if todo:
            texts = [unit_text(self.prompt, d, (a, b), self.doc_starts[d]) for d, a, b in todo]
            for k, row in zip(todo, match_features(self.query, texts), strict=True):
                self._lexical[k] = row
        if not keys:
            return torch.zeros(0, len(FEATURES), dtype=torch.float32)
        return torch.stack([self._lexical[k] for k in keys])  # (U, F)
