"""What a compression returns: the kept text, per-document provenance and statistics."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

_T = TypeVar("_T")


@dataclass(frozen=True)
class DocumentResult:
    """What was kept of one input document.

    ``spans`` are ``(start, end)`` character offsets into the original document; ``text`` is
    their concatenation, so every piece of it is an exact substring of the document.
    """

    index: int
    """Position of the document in the input."""
    text: str
    """The kept text (empty when nothing of the document was kept)."""
    spans: list[tuple[int, int]]
    """Kept character spans, sorted and non-overlapping."""
    kept_tokens: int
    original_tokens: int
    score_share: float
    """This document's share of the context's total score (0..1): how much the filter layer
    attended to it."""
    best_unit_score: float = 0.0
    """The score of the document's best unit (sentence pieces of at most 64 tokens, tokens or the
    whole document, per ``granularity``): its summed token scores; with the readout, exp(logit - the
    context's best logit), in (0, 1]. 0 for an empty document. A rerank orders documents by it."""

    @property
    def kept(self) -> bool:
        """Whether any text of the document survived."""
        return bool(self.spans)

    def stats(self, filter_layer: int | None) -> dict[str, Any]:
        """JSON-ready provenance of this document, as the framework adapters put it in metadata."""
        return {
            "index": self.index,
            "kept_tokens": self.kept_tokens,
            "original_tokens": self.original_tokens,
            "ratio": self.ratio,
            "score_share": self.score_share,
            "spans": [[a, b] for a, b in self.spans],
            "filter_layer": filter_layer,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DocumentResult:
        """The inverse of ``dataclasses.asdict``: spans become tuples again; unknown keys are ignored."""
        return _from_dict(cls, data)

    @property
    def ratio(self) -> float:
        """Original tokens per kept token (inf when nothing was kept, 1.0 for an empty document)."""
        if self.original_tokens == 0:
            return 1.0
        return self.original_tokens / self.kept_tokens if self.kept_tokens else float("inf")


@dataclass(frozen=True)
class CompressionResult:
    """The outcome of ``GemFilterCompressor.compress``."""

    text: str
    """The compressed context: kept text of each document that kept any, joined by the separator."""
    documents: list[DocumentResult]
    """One entry per input document, in input order, kept or not."""
    query: str
    kept_token_indices: list[int]
    """Indices of the kept tokens among all context tokens (documents concatenated)."""
    original_tokens: int
    compressed_tokens: int
    """Kept context tokens (``len(kept_token_indices)``)."""
    filter_layer: int | None
    """Layer whose attention chose the tokens; None when no filter pass ran (nothing to cut)."""
    granularity: str
    separator_tokens: int = 0
    """Tokens of the separators in ``text`` (one between every two documents that kept any): the budget
    ``top_k`` holds ``compressed_tokens + separator_tokens`` (``output_tokens``)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage: tokenize, filter, select, total."""
    details: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    """For the explain view (``to_html``): ``documents`` (original texts), ``token_ends`` (per document,
    the end offset of each token) and ``scores`` (one per context token); None when not recorded."""

    @property
    def output_tokens(self) -> int:
        """Tokens of ``text`` as the budget counts them: kept context tokens plus separators."""
        return self.compressed_tokens + self.separator_tokens

    @property
    def ratio(self) -> float:
        """Compression ratio, original / compressed context tokens (1.0 when nothing was cut)."""
        if self.compressed_tokens == 0:
            return 1.0 if self.original_tokens == 0 else float("inf")
        return self.original_tokens / self.compressed_tokens

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the result, ``ratio`` included."""
        out = asdict(self)
        out.pop("details", None)
        out["ratio"] = self.ratio
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressionResult:
        """The inverse of ``to_dict`` (a result sent as JSON, e.g. by ``gemfilter serve``).

        Every dataclass field is read back with its declared type (``documents`` as
        ``DocumentResult``, spans as tuples), so ``CompressionResult.from_dict(r.to_dict()) == r``.
        Keys that are not fields (``ratio``, fields of a newer version) are ignored; a missing field
        takes its default, and a missing field without one is a ``ValueError`` that names it.
        """
        return _from_dict(cls, data)

    def to_html(self) -> str:
        """One self-contained HTML page: the full context with kept spans highlighted by score."""
        from .explain import render_html

        return render_html(self)


def _from_dict(cls: type[_T], data: Any) -> _T:
    """Build the dataclass ``cls`` from a JSON-like dict, converting each field to its declared type."""
    if not isinstance(data, dict):
        raise TypeError(f"data: expected a dict of {cls.__name__} fields, got {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            values[f.name] = _convert(hints[f.name], data[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{f.name}: missing from the {cls.__name__} data; pass a dict made by to_dict().")
    return cls(**values)


def _convert(tp: Any, value: Any) -> Any:
    """``value`` (parsed JSON) as the type ``tp``: dataclasses, list, tuple, dict and optional types."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return _from_dict(tp, value)  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value) if len(inner) == 1 else value
    if origin is list:
        return [_convert(args[0], v) for v in value] if args else list(value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v) for v in value)
        return tuple(_convert(a, v) for a, v in zip(args, value, strict=True)) if args else tuple(value)
    if origin is dict:
        return {k: _convert(args[1], v) for k, v in value.items()} if args else dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # JSON writes 0.0 as 0 in some encoders
    return value
