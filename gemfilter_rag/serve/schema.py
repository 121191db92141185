"""The JSON API of ``gemfilter serve``: request, response and error models (pydantic), in the OpenAPI document.

The request is validated by the library's own checks, so that a bad request gets the message (and the
exception type) that ``GemFilterCompressor.compress`` would raise. The response model is generated from
the ``CompressionResult``/``DocumentResult`` dataclass fields, so a field added to the result is served
and documented without a change here.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
import typing
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..config import check_top_k
from ..prior import check_document_scores
from ..result import CompressionResult, DocumentResult
from ..validation import check_documents as _check_documents
from ..validation import check_query as _check_query

EXAMPLE: dict[str, Any] = {
    "documents": [
        "The Eiffel Tower was completed in 1889 for the World's Fair.",
        "Paris is the capital of France. It has many museums.",
    ],
    "query": "When was the Eiffel Tower completed?",
    "top_k": 256,
}


def _library(check: Any, *args: Any) -> Any:
    """Run a library check; its TypeError/ValueError becomes a validation error with the same message."""
    try:
        return check(*args)
    except (TypeError, ValueError) as err:
        raise PydanticCustomError(
            "library_error", "{message}", {"message": str(err), "exception": type(err).__name__}
        ) from None


def _check_options(value: Any) -> dict[str, Any]:
    """``options`` must be an object (its fields are checked by ``with_options``)."""
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "library_error",
            "{message}",
            {
                "message": f"options: expected an object of GemFilterConfig fields such as "
                f'{{"granularity": "sentence"}}, got {_json_type(value)}.',
                "exception": "TypeError",
            },
        )
    return value


class _DocumentsRequest(BaseModel):
    """The checks of the fields every request with documents shares: ``documents`` and ``options``."""

    @field_validator("documents", mode="before", check_fields=False)
    @classmethod
    def _documents(cls, value: Any) -> list[str]:
        return typing.cast(list[str], _library(_check_documents, value))

    @field_validator("options", mode="before", check_fields=False)
    @classmethod
    def _options(cls, value: Any) -> dict[str, Any]:
        return _check_options(value)


class CompressRequest(_DocumentsRequest):
    """``POST /v1/compress``: what ``GemFilterCompressor.compress(documents, query, ...)`` takes."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [dict(EXAMPLE)]})

    documents: list[str] = Field(description="The context, in order (e.g. the retriever's chunks), one string each.")
    query: str = Field(description="The question the context must answer; not empty.")
    top_k: int | None = Field(
        default=None,
        gt=0,
        description="Token budget of the text handed on, across all documents (separators between kept "
        "documents count); null: the server's profile (config.top_k).",
    )
    document_scores: list[float] | None = Field(
        default=None,
        description="The retriever's score of each document (higher = more relevant), one per document; "
        "they share out the budget (GemFilterConfig.prior).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description='GemFilterConfig or ScoringConfig fields for this request, e.g. {"granularity": "token"}; '
        "applied with GemFilterCompressor.with_options.",
    )

    @field_validator("query", mode="before")
    @classmethod
    def _query(cls, value: Any) -> str:
        _library(_check_query, value)
        return typing.cast(str, value)

    @field_validator("top_k", mode="before")
    @classmethod
    def _top_k(cls, value: Any) -> int | None:
        return None if value is None else typing.cast(int, _library(check_top_k, value))

    @field_validator("document_scores", mode="before")
    @classmethod
    def _scores(cls, value: Any) -> list[float] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            raise PydanticCustomError(
                "library_error",
                "{message}",
                {
                    "message": "document_scores: expected an array of numbers, one per document, "
                    f"got {_json_type(value)}.",
                    "exception": "TypeError",
                },
            )
        return typing.cast("list[float] | None", _library(check_document_scores, value, len(value)))

    @model_validator(mode="after")
    def _one_score_per_document(self) -> CompressRequest:
        _library(check_document_scores, self.document_scores, len(self.documents))
        return self


class WarmRequest(_DocumentsRequest):
    """``POST /v1/warm``: chunks to encode into the server's chunk cache (``GemFilterCompressor.warm``)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"documents": list(EXAMPLE["documents"])}]}
    )

    documents: list[str] = Field(description="The chunks, exactly as they will come as documents later.")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="The options the later compress requests will carry (the prompt's template shapes the "
        "entries); applied with GemFilterCompressor.with_options.",
    )


class WarmResponse(BaseModel):
    """The answer of ``POST /v1/warm``."""

    documents: int = Field(description="Chunks received.")
    encoded: int = Field(description="Entries encoded now (chunks, the prefix and the separator the cache lacked).")
    cache: dict[str, Any] = Field(description="The cache's counters after warming (ChunkCache.stats()).")


class ErrorDetail(BaseModel):
    """What went wrong, for a program and for a person."""

    kind: str = Field(
        description="bad_json, validation, too_large, queue_full, shutting_down, client_disconnected, no_cache "
        "or internal."
    )
    message: str = Field(description="Starts with the field at fault and says what to do instead.")
    field: str | None = Field(default=None, description="The request field at fault, e.g. 'query' or 'documents[2]'.")
    exception: str | None = Field(
        default=None, description="The Python exception the library raises for this input (TypeError, ValueError)."
    )
    limit: int | None = Field(default=None, description="The server's limit that was exceeded (413 and 429).")


class ErrorResponse(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: ErrorDetail


class HealthResponse(BaseModel):
    """``GET /health``."""

    status: str = Field(description="'ok', or 'draining' during a graceful shutdown (then HTTP 503).")
    model_loaded: bool
    model: str = Field(description="Class of the filter model.")
    filter_layer: int
    queue_depth: int = Field(description="Requests waiting for the model.")
    running: int = Field(description="Requests in the batch that runs now.")
    in_flight: int = Field(description="Requests received and not yet answered.")
    max_queue: int
    max_batch: int
    cache: dict[str, Any] | None = Field(
        default=None, description="The chunk cache's counters (ChunkCache.stats()); null without a cache."
    )


def validation_message(error: Any, model: type[BaseModel] | None = None) -> tuple[str, str | None, str]:
    """(message, field, exception type) of one pydantic error of ``model`` (default ``CompressRequest``)."""
    model = model or CompressRequest
    loc = ".".join(str(p) for p in error.get("loc", ()))
    ctx = error.get("ctx") or {}
    if error.get("type") == "library_error":
        message = str(ctx["message"])
        return message, field_of(message) or loc or None, str(ctx.get("exception", "ValueError"))
    name = loc or "body"
    kind = error.get("type")
    if kind == "missing":
        field = model.model_fields.get(name)
        hint = f" ({field.description})" if field is not None and field.description else ""
        return f"{name}: is required; pass it{hint}.", name, "TypeError"
    if kind == "extra_forbidden":
        valid = ", ".join(model.model_fields)
        return f"{name}: is not a field of the request; valid fields: {valid}.", name, "TypeError"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        got = _json_type(error.get("input"))
        required = [n for n, f in model.model_fields.items() if f.is_required()]
        example = ", ".join(f'"{n}": ...' for n in required)
        return (
            f"body: expected a JSON object with {' and '.join(repr(n) for n in required)}, got {got}; send e.g. "
            f"{{{example}}}.",
            "body",
            "TypeError",
        )
    return f"{name}: {error.get('msg', 'is not valid')}.", name, "ValueError"


def field_of(message: str) -> str | None:
    """The field a library message starts with (``top_k: ...`` -> ``top_k``), if any."""
    found = re.match(r"^([A-Za-z_][\w.]*(?:\[\d+\])*):", message)
    return found.group(1) if found else None


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


@cache
def response_model() -> type[BaseModel]:
    """``CompressResponse``: a pydantic model of ``CompressionResult.to_dict()`` made from the dataclass fields."""
    return _model_of(
        CompressionResult,
        "CompressResponse",
        skip=frozenset({"details"}),
        extra={
            "ratio": (
                float | None,
                Field(
                    description="Original / compressed context tokens; null when nothing of a non-empty context is kept"
                ),
            )
        },
    )


def _model_of(
    cls: type,
    name: str,
    *,
    skip: frozenset[str] = frozenset(),
    extra: dict[str, Any] | None = None,
) -> type[BaseModel]:
    hints = typing.get_type_hints(cls)
    docs = _attribute_docs(cls)
    spec: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = hints[f.name]
        if typing.get_origin(tp) is list and typing.get_args(tp) == (DocumentResult,):
            tp = list[_model_of(DocumentResult, "DocumentResult")]  # type: ignore[misc]
        spec[f.name] = (tp, Field(description=docs.get(f.name)))
    spec.update(extra or {})
    doc = (inspect.getdoc(cls) or "").split("\n")[0]
    return create_model(name, __doc__=doc, **spec)


def _attribute_docs(cls: type) -> dict[str, str]:
    """The docstrings written under a dataclass's fields (``x: int`` then ``\"\"\"...\"\"\"``)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for prev, node in zip(body, body[1:], strict=False):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = " ".join(node.value.value.split())
    return docs
