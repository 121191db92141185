"""What ``POST /v1/compress`` does: read within limits, validate, batch, answer; and the graceful drain.

Every route (``endpoint.Endpoint``: ``/v1/compress`` and the rerank shapes of ``rerank``) goes the same way.
A request goes through: the door (503 while draining), the body read (413 past ``max_request_bytes``),
JSON and the library's checks (422), the documents limit (413), its options (a sibling compressor
sharing the model; 422 for a bad option), a cheap queue check (429), tokenization in a thread and the
context-token limit (413), then the batcher (429 if the queue filled meanwhile). Requests with the same
options share a batched filter pass (``gemfilter_rag.pipeline.compress_prompts``, per-request budgets and
retriever scores). A client that disconnects while waiting leaves the queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ..compressor import GemFilterCompressor
from ..pipeline import build_prompts, compress_prompts
from ..prompt import FilterPrompt
from ..rerank import rerank_budget
from ..result import CompressionResult
from .batcher import Batcher, BatchStats, ClosedError, QueueFullError
from .endpoint import Call, Endpoint, ServiceError, cut_documents, fit_cap, validate
from .metrics import ServeMetrics
from .schema import CompressRequest, WarmRequest, field_of
from .settings import ServeSettings

log = logging.getLogger("gemfilter_rag.serve")
MAX_SIBLINGS = 64


@dataclass
class _Item:
    """One admitted request, as the model thread needs it."""

    compressor: GemFilterCompressor
    prompt: FilterPrompt
    query: str
    top_k: int | None
    scores: list[float] | None
    tokenize_s: float
    truncated: list[int]
    submitted: float = 0.0


class CompressEndpoint(Endpoint):
    """``POST /v1/compress``: ``CompressRequest`` in, ``CompressionResult.to_dict()`` out."""

    route = "/v1/compress"

    def parse(self, data: Any) -> tuple[Call, Any]:
        req = validate(CompressRequest, data)
        return Call(req.documents, req.query, req.top_k, req.document_scores, req.options), None

    def respond(self, state: Any, result: CompressionResult, truncated: list[int]) -> Any:
        return result_json(result)


COMPRESS = CompressEndpoint()

WARM_ROUTE = "/v1/warm"


class WarmEndpoint(Endpoint):
    """``POST /v1/warm``: its route and errors (``CompressionService.warm`` reads and answers it)."""

    route = WARM_ROUTE


WARM = WarmEndpoint()


class CompressionService:
    """The state behind the app: one compressor, its batcher, the metrics and the drain flag."""

    def __init__(self, compressor: GemFilterCompressor, settings: ServeSettings) -> None:
        self.compressor = compressor
        self.settings = settings
        self.batcher = Batcher(
            self._run,
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue=settings.max_queue,
            on_batch=self._observe,
        )
        cache = compressor.cache
        self.metrics = ServeMetrics(
            lambda: self.batcher.depth, lambda: self.in_flight, cache.stats if cache is not None else None
        )
        self.in_flight = 0
        self.draining = False
        self._idle: asyncio.Event | None = None
        self._siblings: OrderedDict[str, GemFilterCompressor] = OrderedDict()

    # ------------------------------------------------------------------ requests

    async def handle(self, request: Request, endpoint: Endpoint = COMPRESS) -> Response:
        """Answer one request of ``endpoint``'s route (default ``POST /v1/compress``)."""

        async def work() -> tuple[Any, CompressionResult | None] | None:
            done = await self._compress(request, endpoint)
            if done is None:
                return None
            state, item, result = done
            return endpoint.respond(state, result, item.truncated), result

        return await self._answer(endpoint, work)

    async def warm(self, request: Request) -> Response:
        """``POST /v1/warm``: encode the chunks the server's cache lacks (``GemFilterCompressor.warm``), in a
        worker thread beside the batches; 409 when the server has no cache."""
        return await self._answer(WARM, lambda: self._warm(request))

    async def _answer(
        self, endpoint: Endpoint, work: Callable[[], Awaitable[tuple[Any, CompressionResult | None] | None]]
    ) -> Response:
        """The door, the in-flight count, the error answers and the metrics around one request's ``work``:
        (JSON answer, the result to count tokens of, or None), or None when the client went away."""
        started = time.monotonic()
        route = endpoint.route
        if self.draining:
            return self._fail(endpoint, ServiceError(503, "shutting_down", _DRAINING, retry_after=1))
        with self._in_flight():
            try:
                done = await work()
            except ServiceError as err:
                return self._fail(endpoint, err)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # nothing a client sends may take the worker down
                log.exception("internal error in %s", route)
                return self._fail(
                    endpoint,
                    ServiceError(500, "internal", f"internal: {type(err).__name__}: {err}; the server keeps running."),
                )
        if done is None:  # the client went away
            self.metrics.errors.labels(route, "client_disconnected").inc()
            self.metrics.requests.labels(route, "499").inc()
            return Response(status_code=499)
        answer, result = done
        self.metrics.requests.labels(route, "200").inc()
        self.metrics.latency.labels(route).observe(time.monotonic() - started)
        if result is not None:
            self.metrics.tokens_in.inc(result.original_tokens)
            self.metrics.tokens_out.inc(result.compressed_tokens)
        return JSONResponse(answer)

    @contextmanager
    def _in_flight(self) -> Iterator[None]:
        """Count a request in flight while the block runs; the drain waits for the count to reach 0."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0 and self._idle is not None:
                self._idle.set()

    async def _compress(self, request: Request, endpoint: Endpoint) -> tuple[Any, _Item, CompressionResult] | None:
        try:
            body = await self._read_body(request)
        except ClientDisconnect:  # the client went away while sending
            return None
        call, state = endpoint.parse(_json(body))
        self._check_documents(len(call.documents), "documents", "send fewer, or split the request")
        key, compressor = self._sibling(call.options)
        self._check_room()
        item = await asyncio.to_thread(self._admit, compressor, call)
        result = await self._submit(request, key, item)
        return None if result is None else (state, item, result)

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.max_request_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large_body(int(declared), limit)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large_body(size, limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def _sibling(self, options: dict[str, Any]) -> tuple[str, GemFilterCompressor]:
        """The compressor for these options (cached: siblings share the model), or a 422."""
        key = json.dumps(options, sort_keys=True)
        found = self._siblings.get(key)
        if found is None:
            try:
                found = self.compressor.with_options(**options)
            except (TypeError, ValueError) as err:
                named = field_of(str(err))
                field = f"options.{named}" if named else "options"
                raise ServiceError(422, "validation", str(err), field=field, exception=type(err).__name__) from None
            self._siblings[key] = found
            if len(self._siblings) > MAX_SIBLINGS:
                self._siblings.popitem(last=False)
        else:
            self._siblings.move_to_end(key)
        return key, found

    def _check_documents(self, n: int, what: str, fix: str) -> None:
        """413 when a request holds more than ``--max-documents`` documents."""
        limit = self.settings.max_documents
        if n > limit:
            raise ServiceError(
                413,
                "too_large",
                f"documents: {n} {what} exceed this server's limit of {limit} (--max-documents); {fix}.",
                field="documents",
                exception="ValueError",
                limit=limit,
            )

    def _check_room(self) -> None:
        try:
            self.batcher.check_room()
        except QueueFullError as err:
            raise _queue_full(err, self.settings.max_queue) from None
        except ClosedError:
            raise ServiceError(503, "shutting_down", _DRAINING, retry_after=1) from None

    def _admit(self, compressor: GemFilterCompressor, call: Call) -> _Item:
        """Tokenize (in a worker thread), cut documents as the call asks, and check the context-token limit."""
        t0 = time.perf_counter()
        truncated: list[int] = []
        try:
            (prompt,) = build_prompts(compressor.plan, [(call.documents, call.query)])
            if call.max_tokens_per_doc is not None:
                prompt, truncated = _cut(compressor, prompt, call, call.max_tokens_per_doc, "right")
            limit = self.settings.max_context_tokens
            if prompt.context_tokens > limit and call.truncate is not None:
                cap = fit_cap([len(d.ids) for d in prompt.documents], limit)
                prompt, more = _cut(compressor, prompt, call, cap, call.truncate)
                truncated = sorted(set(truncated) | set(more))
        except (TypeError, ValueError) as err:
            raise _library_error(err) from None
        if prompt.context_tokens > limit:
            raise ServiceError(
                413,
                "too_large",
                f"documents: {prompt.context_tokens} context tokens exceed this server's limit of {limit} "
                "(--max-context-tokens); send fewer or shorter documents, or split the request.",
                field="documents",
                exception="ValueError",
                limit=limit,
            )
        top_k = rerank_budget(prompt.context_tokens, compressor.config.top_k) if call.rerank else call.top_k
        return _Item(compressor, prompt, call.query, top_k, call.document_scores, time.perf_counter() - t0, truncated)

    async def _submit(self, request: Request, key: str, item: _Item) -> CompressionResult | None:
        item.submitted = time.monotonic()
        job = asyncio.ensure_future(self.batcher.submit(key, item))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not job.done():  # the client disconnected first: leave the queue
            job.cancel()
            return None
        try:
            return job.result()
        except QueueFullError as err:
            raise _queue_full(err, self.settings.max_queue) from None
        except ClosedError:
            raise ServiceError(503, "shutting_down", _DRAINING, retry_after=1) from None
        except (TypeError, ValueError, MemoryError) as err:
            raise _library_error(err) from None

    def _run(self, key: Hashable, items: list[_Item]) -> list[CompressionResult]:
        """One batch, in the model thread: one padded filter pass for requests with the same options."""
        started = time.monotonic()
        results = compress_prompts(
            items[0].compressor.plan,
            [i.prompt for i in items],
            [i.query for i in items],
            top_k=[i.top_k for i in items],
            batch_size=len(items),
            document_scores=[i.scores for i in items],
        )
        for r, i in zip(results, items, strict=True):
            r.timings["tokenize"] = i.tokenize_s
            r.timings["total"] += i.tokenize_s
            r.timings["queue"] = started - i.submitted
        return results

    async def _warm(self, request: Request) -> tuple[Any, None] | None:
        try:
            body = await self._read_body(request)
        except ClientDisconnect:
            return None
        req = validate(WarmRequest, _json(body))
        self._check_documents(len(req.documents), "chunks", "warm them in smaller requests")
        _, compressor = self._sibling(req.options)
        cache = compressor.cache
        if cache is None:
            raise ServiceError(
                409,
                "no_cache",
                "cache: this server has no chunk cache to warm; start it with gemfilter serve --cache-mib N "
                "(and/or --cache-file PATH).",
                field="documents",
            )
        try:
            encoded = await asyncio.to_thread(compressor.warm, req.documents)
        except (TypeError, ValueError, MemoryError) as err:
            raise _library_error(err) from None
        return {"documents": len(req.documents), "encoded": encoded, "cache": cache.stats()}, None

    def _observe(self, stats: BatchStats) -> None:
        self.metrics.batch_size.observe(stats.size)
        self.metrics.compute.observe(stats.compute_s)
        for wait in stats.queue_waits:
            self.metrics.queue_wait.observe(wait)

    def _fail(self, endpoint: Endpoint, err: ServiceError) -> JSONResponse:
        self.metrics.requests.labels(endpoint.route, str(err.status)).inc()
        self.metrics.errors.labels(endpoint.route, err.kind).inc()
        return endpoint.error(err)

    # ------------------------------------------------------------------ lifecycle

    async def drain(self, timeout: float) -> bool:
        """Answer new requests with 503 and wait up to ``timeout`` s for those in flight; True if all finished."""
        self.draining = True
        if self._idle is None:
            self._idle = asyncio.Event()
        if self.in_flight == 0:
            return True
        self._idle.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop the batcher (after the requests it holds)."""
        self.draining = True
        await self.batcher.close()

    def health(self) -> dict[str, Any]:
        """The body of ``GET /health``."""
        return {
            "status": "draining" if self.draining else "ok",
            "model_loaded": self.compressor is not None,
            "model": type(self.compressor.model).__name__,
            "filter_layer": self.compressor.filter_layer,
            "queue_depth": self.batcher.depth,
            "running": self.batcher.running,
            "in_flight": self.in_flight,
            "max_queue": self.settings.max_queue,
            "max_batch": self.settings.max_batch,
            "cache": self.compressor.cache.stats() if self.compressor.cache is not None else None,
        }


_DRAINING = "server: shutting down and not taking new requests; retry on another replica or after a restart."


def result_json(result: CompressionResult) -> dict[str, Any]:
    """``result.to_dict()`` as strict JSON: an infinite ratio becomes null."""
    data = result.to_dict()
    if not math.isfinite(data["ratio"]):
        data["ratio"] = None
    return data


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        where = f" at line {err.lineno} column {err.colno}" if isinstance(err, json.JSONDecodeError) else ""
        raise ServiceError(
            422,
            "bad_json",
            f"body: is not valid JSON ({type(err).__name__}{where}); send a JSON object such as "
            '{"documents": ["..."], "query": "..."} with Content-Type: application/json.',
            field="body",
            exception="ValueError",
        ) from None


def _cut(
    compressor: GemFilterCompressor, prompt: FilterPrompt, call: Call, cap: int, direction: str
) -> tuple[FilterPrompt, list[int]]:
    """The prompt with every document cut to ``cap`` tokens (and the indices cut); the same prompt if none is."""
    texts, cut = cut_documents(prompt, cap, direction)
    if not cut:
        return prompt, []
    (prompt,) = build_prompts(compressor.plan, [(texts, call.query)])
    return prompt, cut


def _library_error(err: Exception) -> ServiceError:
    """The answer to a library error: 413 for a ``MemoryError`` (the memory guard), else 422."""
    if isinstance(err, MemoryError):
        return ServiceError(413, "too_large", str(err), field="documents", exception=type(err).__name__)
    return ServiceError(422, "validation", str(err), exception=type(err).__name__)


def _too_large_body(size: int, limit: int) -> ServiceError:
    return ServiceError(
        413,
        "too_large",
        f"body: {size} bytes exceed this server's limit of {limit} bytes (--max-request-bytes); "
        "send fewer or shorter documents, or split the request.",
        field="body",
        exception="ValueError",
        limit=limit,
    )


def _queue_full(err: QueueFullError, limit: int) -> ServiceError:
    return ServiceError(
        429,
        "queue_full",
        f"queue: {err.depth} requests are already waiting (--max-queue {limit}); retry after "
        f"{err.retry_after} s (the Retry-After header), or add replicas.",
        limit=limit,
        retry_after=err.retry_after,
    )


async def _disconnected(request: Request) -> None:
    """Return once the client has disconnected (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
