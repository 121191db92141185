"""What a route of ``gemfilter serve`` plugs into the service: its request shape in, its answer shape out.

Every route (``/v1/compress``, the Cohere-shaped ``/v1/rerank`` and ``/v2/rerank``, the TEI-shaped
``/rerank``) turns its JSON into one ``Call`` and writes its answer from the ``CompressionResult``; the
service does the rest the same way for all of them (limits, batching, back-pressure, drain, metrics).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse

from ..prompt import FilterPrompt
from ..result import CompressionResult


class ServiceError(Exception):
    """An answer other than 200: status, error kind and a message that names the field and the fix."""

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        *,
        field: str | None = None,
        exception: str | None = None,
        limit: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.field = field
        self.exception = exception
        self.limit = limit
        self.retry_after = retry_after

    def detail(self) -> dict[str, Any]:
        """The ``ErrorDetail`` object: kind, message, field, exception, limit."""
        return {
            "kind": self.kind,
            "message": self.message,
            "field": self.field,
            "exception": self.exception,
            "limit": self.limit,
        }

    def response(self, body: Any = None) -> JSONResponse:
        """The JSON answer (default ``ErrorResponse``), with Retry-After when the client should come back."""
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return JSONResponse(
            {"error": self.detail()} if body is None else body, status_code=self.status, headers=headers
        )


@dataclass
class Call:
    """What one request asks of the filter pass, whatever the shape of its route."""

    documents: list[str]
    query: str
    top_k: int | None = None
    """Token budget; None: the profile's ``config.top_k``."""
    document_scores: list[float] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    rerank: bool = False
    """Compress at ``gemfilter_rag.rerank.rerank_budget`` (below the context, so a filter pass always runs)."""
    max_tokens_per_doc: int | None = None
    """Cut every document to at most this many tokens before scoring."""
    truncate: str | None = None
    """"right" or "left": cut the longest documents (their end or start) until the context fits the
    server's context-token limit, instead of answering 413; None: 413."""


class Endpoint:
    """One route's shapes: ``parse`` a JSON body into a ``Call`` (and state for the answer), ``respond``
    with the route's JSON, ``error`` in the route's error shape. ``route`` labels its metrics."""

    route = ""

    def parse(self, data: Any) -> tuple[Call, Any]:
        """The ``Call`` of a parsed JSON body and whatever ``respond`` needs; a ``ServiceError`` (422) if bad."""
        raise NotImplementedError

    def respond(self, state: Any, result: CompressionResult, truncated: list[int]) -> Any:
        """The JSON answer; ``truncated`` are the indices of documents cut to fit."""
        raise NotImplementedError

    def error(self, err: ServiceError) -> JSONResponse:
        """The error answer (the service's ``ErrorResponse`` unless the route's clients expect another shape)."""
        return err.response()


def validate(model: type[BaseModel], data: Any) -> Any:
    """``model.model_validate(data)``, or a 422 ``ServiceError`` whose message names the field and the fix."""
    from .schema import validation_message

    try:
        return model.model_validate(data)
    except ValidationError as err:
        message, field, exception = validation_message(err.errors()[0], model)
        raise ServiceError(422, "validation", message, field=field, exception=exception) from None


def fit_cap(lengths: list[int], limit: int) -> int:
    """The largest per-document token cap c with ``sum(min(n, c) for n in lengths) <= limit``."""
    lo, hi = 0, max(lengths, default=0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(n, mid) for n in lengths) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


def cut_documents(prompt: FilterPrompt, cap: int, direction: str = "right") -> tuple[list[str], list[int]]:
    """Each document of ``prompt`` cut to its first (``"right"``) or last (``"left"``) ``cap`` tokens, on
    token boundaries; and the indices of those that were cut."""
    texts, cut = [], []
    for i, doc in enumerate(prompt.documents):
        if len(doc.ids) <= cap:
            texts.append(doc.text)
            continue
        cut.append(i)
        if cap == 0:
            texts.append("")
        elif direction == "left":
            texts.append(doc.text[doc.starts[len(doc.ids) - cap] :])
        else:
            texts.append(doc.text[: doc.ends[cap - 1]])
    return texts, cut
