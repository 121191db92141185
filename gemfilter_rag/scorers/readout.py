"""The readout scorer: a trained linear map over every head of layers ``0..layer`` (``gemfilter_rag.readout``).

Features per unit come from the question's recorded attention (``features.unit_features``), plus the
retriever's scores and embedding similarities when the evidence has them; the variant is the richest
one whose inputs are all there. A readout with ``key_mass`` has its pass record the attention of the
question's rare-term tokens (``key_attention``); one with the ``lexical`` block matches the question's
rare terms in the units' texts, which the evidence holds (``Evidence.lexical``). Unit values are the
readout's logits; each token gets an equal part of ``exp(logit - max)``; separators between documents
(windows) get nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..capture import PassRecord
from ..config import QueryRows
from ..evidence import Evidence
from ..features import unit_features
from ..readout import Readout, ReadoutSet
from ..selection import spread
from .base import SEPARATOR, Scores, Target


@dataclass(frozen=True)
class ReadoutScorer:
    """Unit logits of the model's trained ``ReadoutSet`` (its layer is the exit layer)."""

    readouts: ReadoutSet
    rows: QueryRows | int = "question"
    attention: bool = True
    fuses_retriever: bool = True

    @property
    def layer(self) -> int:
        """The readout's last layer: the pass exits there."""
        return self.readouts.layer

    @property
    def hidden(self) -> bool:
        """Whether the pass records hidden-state similarities (``PassRecord.similarity``) for the readout."""
        return self.readouts.uses_hidden

    @property
    def key_attention(self) -> bool:
        """Whether the pass records the rare-term rows' attention (``PassRecord.key_attention``) for the readout."""
        return self.readouts.uses_key_attention

    def choose(self, evidence: Evidence) -> Readout:
        """The variant for the inputs this prompt has (retriever scores, an embedding model)."""
        return self.readouts.choose(retriever=evidence.retriever is not None, embeddings=evidence.embedder is not None)

    def score(self, record: PassRecord, target: Target, evidence: Evidence) -> Scores:
        """Logits of the target's document units; their values spread over their tokens."""
        readout, x, keep = self.features(record, target, evidence)
        units = [target.units[i] for i in keep]
        logits = readout.logits(x)  # (U',)
        values = torch.exp(logits - logits.max()) if logits.numel() else logits  # (U',) in (0, 1]
        out = torch.full((len(target.units),), float("-inf"), dtype=torch.float64)  # (U,)
        out[keep] = logits
        return Scores(spread(values, units, int(target.positions.numel())), out)

    def features(
        self, record: PassRecord, target: Target, evidence: Evidence
    ) -> tuple[Readout, torch.Tensor, list[int]]:
        """The variant chosen, its input (U', F) and which of the target's units they are (not separators)."""
        readout = self.choose(evidence)
        assert record.attention is not None, "the pass did not record the layers' attention"
        keep = [i for i, d in enumerate(target.documents) if d != SEPARATOR]
        units = [target.units[i] for i in keep]
        docs = [target.documents[i] for i in keep]
        attention = record.attention[: readout.layer + 1, :, target.positions]  # (L, H, N)
        similarity = None
        if readout.uses_hidden:
            assert record.similarity is not None, "the pass did not record the hidden-state similarities"
            similarity = record.similarity[: readout.layer + 1, target.positions]  # (L, N)
        key_attention = None
        if readout.uses_key_attention:
            assert record.key_attention is not None, "the pass did not record the key rows' attention"
            key_attention = record.key_attention[: readout.layer + 1, :, target.positions]  # (L, H, N)
        spans = [target.spans[i] for i in keep]
        x, names = unit_features(
            attention,
            units,
            torch.tensor(docs, dtype=torch.long),  # (U',)
            similarity=similarity,
            blocks=readout.blocks,
            retriever=evidence.retriever if readout.uses_retriever else None,
            sim_unit=evidence.sim_units(spans, docs) if readout.uses_embeddings else None,
            sim_doc=evidence.sim_doc() if readout.uses_embeddings else None,
            key_attention=key_attention,
            lexical=evidence.lexical(spans, docs) if readout.uses_lexical else None,
            overlap=evidence.overlap(spans, docs) if readout.uses_overlap else None,
        )
        if names != readout.extras:
            raise ValueError(f"readout: needs extras {list(readout.extras)} but got {list(names)}.")
        return readout, x, keep
