"""The rerank routes: Cohere's ``/v1/rerank`` and ``/v2/rerank`` and text-embeddings-inference's ``/rerank``.

Each is an ``Endpoint``: its request shape becomes one ``Call`` of the shared service (the same batcher,
limits and metrics as ``/v1/compress``) at the rerank budget, and the ``CompressionResult`` becomes the
shape its clients parse, relevance from ``gemfilter_rag.rerank.relevance``. Clients of these APIs read
indices and scores only; compressed text stays on ``/v1/compress``.

Fields the clients send that have no meaning here (``model``, ``max_chunks_per_doc``, ``priority``) are
accepted and ignored, and so are unknown ones, so that a newer client version keeps working.
"""

from __future__ import annotations

import typing
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError
from starlette.responses import JSONResponse

from ..rerank import DEFAULT_MEASURE, ranking, raw_scores, relevance
from ..result import CompressionResult
from ..validation import check_query
from .endpoint import Call, Endpoint, ServiceError, validate

MEASURE = DEFAULT_MEASURE
"""The relevance measure the routes answer with (see ``benchmarks.rerank`` for why)."""
COHERE_MAX_TOKENS_PER_DOC = 4096
"""Cohere v2's documented default: longer documents are cut to their first 4,096 tokens."""


def _bad(message: str, exception: str = "ValueError") -> PydanticCustomError:
    return PydanticCustomError("library_error", "{message}", {"message": message, "exception": exception})


def _query(value: Any) -> str:
    try:
        check_query(value)
    except (TypeError, ValueError) as err:
        raise _bad(str(err), type(err).__name__) from None
    return typing.cast(str, value)


def _list(value: Any, name: str, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise _bad(
            f"{name}: expected an array of {what}, got {type(value).__name__}; wrap one text in a list.", "TypeError"
        )
    if not value:
        raise _bad(f"{name}: is empty; pass at least one document to rank.")
    return value


def _strings(value: Any, name: str) -> list[str]:
    for i, doc in enumerate(_list(value, name, "strings")):
        if not isinstance(doc, str):
            raise _bad(
                f"{name}[{i}]: expected a string, got {type(doc).__name__}; send the document's text.", "TypeError"
            )
    return typing.cast(list[str], value)


def _positive(value: Any, name: str, hint: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{name}: expected a whole number >= 1, got {value!r}; {hint}", "TypeError")
    if value < 1:
        raise _bad(f"{name}: {value} must be >= 1; {hint}")
    return value


TOP_N_HINT = "pass how many of the best documents to return, or leave it out for all."
MAX_TOKENS_HINT = "pass the most tokens of each document to score, e.g. 4096."


class _Lenient(BaseModel):
    """Unknown fields are ignored; the shared fields are checked with messages that name them."""

    model_config = ConfigDict(extra="ignore")

    @field_validator("query", mode="before", check_fields=False)
    @classmethod
    def _check_query(cls, value: Any) -> str:
        return _query(value)

    @field_validator("top_n", mode="before", check_fields=False)
    @classmethod
    def _check_top_n(cls, value: Any) -> int | None:
        return _positive(value, "top_n", TOP_N_HINT)

    @field_validator("max_tokens_per_doc", mode="before", check_fields=False)
    @classmethod
    def _check_max_tokens(cls, value: Any) -> int | None:
        return _positive(value, "max_tokens_per_doc", MAX_TOKENS_HINT)


class CohereV1RerankRequest(_Lenient):
    """``POST /v1/rerank``, as the Cohere SDK's ``Client.rerank`` sends it."""

    query: str = Field(description="The search query; not empty.")
    documents: list[str | dict[str, Any]] = Field(
        description='Texts, or objects with a "text" field (or the fields named in rank_fields); not empty.'
    )
    top_n: int | None = Field(default=None, description="How many of the best documents to return; default all.")
    rank_fields: list[str] | None = Field(
        default=None, description='Object fields to rank on, in order (joined as "field: value" lines); default text.'
    )
    return_documents: bool = Field(default=False, description="Return each document (as sent) with its result.")
    max_tokens_per_doc: int | None = Field(default=None, description="Cut each document to its first N tokens.")
    model: str | None = Field(default=None, description="Ignored: the server ranks with its filter model.")

    @field_validator("documents", mode="before")
    @classmethod
    def _documents(cls, value: Any) -> list[Any]:
        for i, doc in enumerate(_list(value, "documents", 'strings or {"text": ...} objects')):
            if not isinstance(doc, (str, dict)):
                raise _bad(
                    f'documents[{i}]: expected a string or an object with a "text" string, got {type(doc).__name__}.',
                    "TypeError",
                )
        return typing.cast(list[Any], value)

    def texts(self) -> list[str]:
        """The text each document is ranked on, or a 422 naming the document and field at fault."""
        fields = self.rank_fields or ["text"]
        out = []
        for i, doc in enumerate(self.documents):
            if isinstance(doc, str):
                out.append(doc)
                continue
            for f in fields:
                if not isinstance(doc.get(f), str):
                    raise ServiceError(
                        422,
                        "validation",
                        f"documents[{i}].{f}: expected a string, got {type(doc.get(f)).__name__}; give every "
                        "document object that field, or name the fields to rank on with rank_fields.",
                        field=f"documents[{i}].{f}",
                        exception="TypeError",
                    )
            out.append(doc[fields[0]] if len(fields) == 1 else "\n".join(f"{f}: {doc[f]}" for f in fields))
        return out


class CohereV2RerankRequest(_Lenient):
    """``POST /v2/rerank``, as the Cohere SDK's ``ClientV2.rerank`` (and LlamaIndex's CohereRerank) sends it."""

    query: str = Field(description="The search query; not empty.")
    documents: list[str] = Field(description="The texts to rank; not empty.")
    top_n: int | None = Field(default=None, description="How many of the best documents to return; default all.")
    max_tokens_per_doc: int | None = Field(
        default=COHERE_MAX_TOKENS_PER_DOC, description="Cut each document to its first N tokens (default 4096)."
    )
    return_documents: bool = Field(default=False, description='Return {"text": ...} of each document with its result.')
    model: str | None = Field(default=None, description="Ignored: the server ranks with its filter model.")

    @field_validator("documents", mode="before")
    @classmethod
    def _documents(cls, value: Any) -> list[str]:
        return _strings(value, "documents")


class TEIRerankRequest(_Lenient):
    """``POST /rerank``, as text-embeddings-inference takes it."""

    query: str = Field(description="The search query; not empty.")
    texts: list[str] = Field(description="The texts to rank; not empty.")
    raw_scores: bool = Field(default=False, description="Scores before scaling to [0, 1] (the best unit's value).")
    return_text: bool = Field(default=False, description="Return each text with its rank.")
    truncate: bool | None = Field(
        default=False, description="Cut the longest texts to fit the server's context-token limit instead of 413."
    )
    truncation_direction: Literal["Left", "Right", "left", "right"] = Field(
        default="Right", description="Right: keep each cut text's start; Left: its end."
    )

    @field_validator("texts", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> list[str]:
        return _strings(value, "texts")


class CohereResult(BaseModel):
    index: int = Field(description="Position of the document in the request.")
    relevance_score: float = Field(description="In [0, 1]; the most relevant document of the request scores 1.")
    document: dict[str, Any] | None = Field(default=None, description="The document, when return_documents.")


class CohereRerankResponse(BaseModel):
    """Cohere's rerank response: results best first."""

    id: str
    results: list[CohereResult]
    meta: dict[str, Any] = Field(description="api_version, tokens.input_tokens, warnings (documents cut).")


class TEIRank(BaseModel):
    """One entry of text-embeddings-inference's rerank response (a list, best first)."""

    index: int
    score: float
    text: str | None = None


TEI_ERROR_TYPES = {
    "bad_json": "validation",
    "validation": "validation",
    "too_large": "validation",
    "queue_full": "overloaded",
    "shutting_down": "unhealthy",
    "internal": "backend",
}


class CohereEndpoint(Endpoint):
    """``/v1/rerank`` or ``/v2/rerank`` (``version`` 1 or 2)."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.route = f"/v{version}/rerank"
        self.model: type[BaseModel] = CohereV1RerankRequest if version == 1 else CohereV2RerankRequest

    def parse(self, data: Any) -> tuple[Call, Any]:
        req = validate(self.model, data)
        texts = req.texts() if isinstance(req, CohereV1RerankRequest) else list(req.documents)
        return Call(texts, req.query, rerank=True, max_tokens_per_doc=req.max_tokens_per_doc), req

    def respond(self, state: Any, result: CompressionResult, truncated: list[int]) -> Any:
        scores = relevance(result, MEASURE)
        order = ranking(scores)[: state.top_n]
        results = []
        for i in order:
            entry: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
            if state.return_documents:
                doc = state.documents[i]
                entry["document"] = doc if isinstance(doc, dict) else {"text": doc}
            results.append(entry)
        meta: dict[str, Any] = {
            "api_version": {"version": str(self.version)},
            "tokens": {"input_tokens": result.original_tokens},
        }
        if truncated:
            meta["warnings"] = [f"documents {truncated} were cut to max_tokens_per_doc or the server's limit"]
        return {"id": str(uuid.uuid4()), "results": results, "meta": meta}

    def error(self, err: ServiceError) -> JSONResponse:
        """Cohere's ``{"message": ...}`` and the service's ``error`` object."""
        return err.response({"message": err.message, "error": err.detail()})


class TEIEndpoint(Endpoint):
    """text-embeddings-inference's ``/rerank``."""

    route = "/rerank"

    def parse(self, data: Any) -> tuple[Call, Any]:
        req = validate(TEIRerankRequest, data)
        truncate = req.truncation_direction.lower() if req.truncate else None
        return Call(list(req.texts), req.query, rerank=True, truncate=truncate), req

    def respond(self, state: Any, result: CompressionResult, truncated: list[int]) -> Any:
        scores = raw_scores(result, MEASURE) if state.raw_scores else relevance(result, MEASURE)
        out = []
        for i in ranking(relevance(result, MEASURE)):
            entry: dict[str, Any] = {"index": i, "score": scores[i]}
            if state.return_text:
                entry["text"] = state.texts[i]
            out.append(entry)
        return out

    def error(self, err: ServiceError) -> JSONResponse:
        """TEI's ``{"error": message, "error_type": ...}``, with the service's kind, field and limit."""
        body = {
            "error": err.message,
            "error_type": TEI_ERROR_TYPES.get(err.kind, "backend"),
            "kind": err.kind,
            "field": err.field,
            "limit": err.limit,
        }
        return err.response(body)


COHERE_V1 = CohereEndpoint(1)
COHERE_V2 = CohereEndpoint(2)
TEI = TEIEndpoint()
