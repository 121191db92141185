"""``create_app``: the FastAPI app of ``gemfilter serve`` around one loaded ``GemFilterCompressor``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .. import __version__
from ..compressor import GemFilterCompressor
from . import rerank
from .schema import CompressRequest, ErrorResponse, HealthResponse, WarmRequest, WarmResponse, response_model
from .service import CompressionService
from .settings import ServeSettings

log = logging.getLogger("gemfilter_rag.serve")

DESCRIPTION = """\
GemFilter context compression as a service: POST documents and a query, get back the kept text with
exact character spans per document. Concurrent requests share batched filter passes; a full queue
answers 429 with Retry-After; every error names the field at fault and the fix."""


def create_app(compressor: GemFilterCompressor, settings: ServeSettings | None = None) -> FastAPI:
    """The ASGI app: ``POST /v1/compress``, the rerank routes (Cohere's ``/v1/rerank`` and ``/v2/rerank``,
    TEI's ``/rerank``), ``GET /health``, ``GET /metrics``, OpenAPI at ``/openapi.json``.

    ``app.state.service`` is the ``CompressionService`` (batcher, metrics, drain). Its batcher starts
    with the first request and stops in the app's lifespan shutdown, after the requests it holds.
    """
    if not isinstance(compressor, GemFilterCompressor):
        raise TypeError(
            f"compressor: expected a GemFilterCompressor, got {type(compressor).__name__}; "
            "load one with GemFilterCompressor.from_pretrained()."
        )
    service = CompressionService(compressor, settings or ServeSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await service.close()

    app = FastAPI(title="gemfilter-rag", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.service = service
    errors: dict[int | str, dict[str, Any]] = {
        413: {"model": ErrorResponse, "description": "A limit was exceeded: body bytes, documents or context tokens."},
        422: {"model": ErrorResponse, "description": "Bad JSON, a wrong type, an empty query or a bad option."},
        429: {"model": ErrorResponse, "description": "The queue is full; retry after the Retry-After header."},
        503: {"model": ErrorResponse, "description": "The server is shutting down."},
    }

    @app.post(
        "/v1/compress",
        response_model=response_model(),
        responses=errors,
        summary="Compress documents for a query",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": CompressRequest.model_json_schema()}},
            }
        },
    )
    async def compress(request: Request) -> Response:
        """``GemFilterCompressor.compress(documents, query, top_k=..., document_scores=...)`` with
        ``options`` applied; the answer is ``CompressionResult.to_dict()``."""
        return await service.handle(request)

    def body(model: type[Any]) -> dict[str, Any]:
        return {
            "requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}
        }

    @app.post(
        "/v1/rerank",
        response_model=rerank.CohereRerankResponse,
        responses=errors,
        summary="Rerank documents for a query (Cohere v1 shape)",
        openapi_extra=body(rerank.CohereV1RerankRequest),
    )
    async def rerank_v1(request: Request) -> Response:
        """Cohere's ``/v1/rerank``: the same filter pass as ``/v1/compress``; relevance of each document's
        best sentence, best first. Point ``cohere.Client(base_url=...)`` here."""
        return await service.handle(request, rerank.COHERE_V1)

    @app.post(
        "/v2/rerank",
        response_model=rerank.CohereRerankResponse,
        responses=errors,
        summary="Rerank documents for a query (Cohere v2 shape)",
        openapi_extra=body(rerank.CohereV2RerankRequest),
    )
    async def rerank_v2(request: Request) -> Response:
        """Cohere's ``/v2/rerank`` (``cohere.ClientV2``, LlamaIndex's ``CohereRerank``)."""
        return await service.handle(request, rerank.COHERE_V2)

    @app.post(
        "/rerank",
        response_model=list[rerank.TEIRank],
        responses=errors,
        summary="Rerank texts for a query (text-embeddings-inference shape)",
        openapi_extra=body(rerank.TEIRerankRequest),
    )
    async def rerank_tei(request: Request) -> Response:
        """text-embeddings-inference's ``/rerank``: a list of ``{index, score}``, best first."""
        return await service.handle(request, rerank.TEI)

    @app.post(
        "/v1/warm",
        response_model=WarmResponse,
        responses={**errors, 409: {"model": ErrorResponse, "description": "The server has no chunk cache."}},
        summary="Encode chunks into the chunk cache (indexing)",
        openapi_extra=body(WarmRequest),
    )
    async def warm(request: Request) -> Response:
        """``GemFilterCompressor.warm(documents)`` with ``options`` applied: each chunk the server's cache lacks
        is encoded once, so that later compress requests over it run only the question's tokens. Call it as
        the vector store is filled (``RemoteGemFilterCompressor.warm``)."""
        return await service.warm(request)

    @app.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def health() -> JSONResponse:
        """Model loaded, queue depth; 503 while draining, so that a load balancer stops sending."""
        return JSONResponse(service.health(), status_code=503 if service.draining else 200)

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        """Prometheus text: requests, errors by kind, batch sizes, queue wait, compute seconds, tokens."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
