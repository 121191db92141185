"""``RemoteGemFilterCompressor``: ``compress``/``acompress`` against a ``gemfilter serve`` endpoint.

Returns the same ``CompressionResult`` as the local ``GemFilterCompressor`` (timings aside: they are the
server's). Inputs are checked here with the library's own checks first, so a bad call raises the same
TypeError/ValueError as a local one without a round trip; an input the server rejects (422, 413) raises
the exception type and message the server names. 429 and 503 are retried after the server's
Retry-After (bounded by ``max_retries`` and ``max_retry_wait``), as are refused connections. Needs httpx
(``pip install 'gemfilter-rag[serve]'``).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
import weakref
from collections.abc import Sequence
from typing import Any

from .config import check_top_k
from .prior import check_document_scores
from .result import CompressionResult
from .validation import check_documents as _check_documents
from .validation import check_query as _check_query

RETRY_STATUSES = (429, 503)


WARM_PER_REQUEST = 64
"""Chunks per ``POST /v1/warm`` request of ``RemoteGemFilterCompressor.warm`` (under the service's default
--max-documents)."""


class RemoteError(RuntimeError):
    """The service failed or stayed unavailable: ``status`` (HTTP, or None without an answer) and ``kind``."""

    def __init__(self, message: str, status: int | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


class RemoteGemFilterCompressor:
    """A client of ``gemfilter serve`` with the ``compress`` signature of ``GemFilterCompressor``.

    Args:
        endpoint: the service's base URL, e.g. ``"http://127.0.0.1:8000"`` (``/v1/compress`` is added).
        timeout: seconds to wait for one answer (connect, send, model time, receive).
        max_retries: retries after 429/503 or a refused connection; then ``RemoteError``.
        max_retry_wait: longest wait before one retry, whatever Retry-After says.
        options: ``GemFilterConfig``/``ScoringConfig`` fields sent with every request (as ``with_options``).
        headers: extra HTTP headers, e.g. an ``Authorization`` for a proxy in front of the service.

    One instance may be shared by threads (one pooled ``httpx.Client``) and event loops (one
    ``httpx.AsyncClient`` per loop).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        max_retry_wait: float = 30.0,
        options: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise ValueError(
                f"endpoint: {endpoint!r} is not an http(s) URL; pass the service's base URL, "
                "e.g. 'http://127.0.0.1:8000'."
            )
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout: {timeout!r} is not valid; pass seconds > 0, e.g. 60.")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries: {max_retries!r} is not valid; pass a whole number >= 0, e.g. 3.")
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"options: expected a dict of GemFilterConfig fields, got {type(options).__name__}.")
        self.endpoint = endpoint.rstrip("/")
        self.url = self.endpoint + "/v1/compress"
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.max_retry_wait = float(max_retry_wait)
        self.options = dict(options or {})
        self.headers = dict(headers or {})
        self._client: Any = None
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def with_options(self, **options: Any) -> RemoteGemFilterCompressor:
        """A client for the same endpoint that also sends these options (like ``GemFilterCompressor.with_options``)."""
        if not options:
            return self
        return RemoteGemFilterCompressor(
            self.endpoint,
            timeout=self.timeout,
            max_retries=self.max_retries,
            max_retry_wait=self.max_retry_wait,
            options={**self.options, **options},
            headers=self.headers,
        )

    def compress(
        self,
        documents: Sequence[str],
        query: str,
        *,
        top_k: int | None = None,
        document_scores: Sequence[float] | None = None,
    ) -> CompressionResult:
        """``GemFilterCompressor.compress`` on the service; see there for the arguments."""
        return _result(self._post(self.url, self._body(documents, query, top_k, document_scores)))

    def warm(self, chunks: Sequence[str], *, per_request: int = WARM_PER_REQUEST) -> int:
        """``GemFilterCompressor.warm`` on the service (``POST /v1/warm``): the service's chunk cache encodes every
        chunk it lacks, ``per_request`` chunks per request; returns how many entries were encoded. A service
        started without a cache answers 409 (``RemoteError``: start it with ``--cache-mib``)."""
        docs = _check_documents(chunks)
        if isinstance(per_request, bool) or not isinstance(per_request, int) or per_request < 1:
            raise ValueError(f"per_request: {per_request!r} is not valid; pass a whole number >= 1, e.g. 64.")
        encoded = 0
        for start in range(0, len(docs), per_request):
            body: dict[str, Any] = {"documents": docs[start : start + per_request]}
            if self.options:
                body["options"] = self.options
            encoded += int(_json_of(self._post(self.endpoint + "/v1/warm", body))["encoded"])
        return encoded

    def _post(self, url: str, body: dict[str, Any]) -> Any:
        """POST ``body`` to ``url`` with retries after 429/503 and refused connections; the final response."""
        client = self._sync_client()
        for attempt in range(self.max_retries + 1):
            try:
                response = client.post(url, json=body, headers=self.headers)
            except Exception as err:
                time.sleep(self._transport_retry(err, attempt))
                continue
            wait = self._retry_wait(response, attempt)
            if wait is None:
                return response
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover - the last attempt raises or returns

    async def acompress(
        self,
        documents: Sequence[str],
        query: str,
        *,
        top_k: int | None = None,
        document_scores: Sequence[float] | None = None,
    ) -> CompressionResult:
        """``compress`` with the async client: the event loop keeps running while the service works."""
        body = self._body(documents, query, top_k, document_scores)
        client = self._async_client()
        for attempt in range(self.max_retries + 1):
            try:
                response = await client.post(self.url, json=body, headers=self.headers)
            except Exception as err:
                await asyncio.sleep(self._transport_retry(err, attempt))
                continue
            wait = self._retry_wait(response, attempt)
            if wait is None:
                return _result(response)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the pooled sync client (async clients close with ``aclose`` on their loop)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close the async client of the running event loop."""
        client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def __enter__(self) -> RemoteGemFilterCompressor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _body(self, documents: Any, query: Any, top_k: Any, document_scores: Any) -> dict[str, Any]:
        docs = _check_documents(documents)
        _check_query(query)
        body: dict[str, Any] = {"documents": docs, "query": query}
        if top_k is not None:
            body["top_k"] = check_top_k(top_k)
        scores = check_document_scores(document_scores, len(docs))
        if scores is not None:
            body["document_scores"] = scores
        if self.options:
            body["options"] = self.options
        return body

    def _sync_client(self) -> Any:
        if self._client is None:
            httpx = _httpx()
            self._client = httpx.Client(timeout=self.timeout)
        return self._client

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            httpx = _httpx()
            client = httpx.AsyncClient(timeout=self.timeout)
            self._aclients[loop] = client
        return client

    def _retry_wait(self, response: Any, attempt: int) -> float | None:
        """None when ``response`` is final (a result, or an error raised here); else seconds to wait."""
        if response.status_code == 200:
            return None
        if response.status_code not in RETRY_STATUSES:
            raise _error(response)
        if attempt >= self.max_retries:
            raise _error(response, f" (after {attempt + 1} attempts)")
        return min(self.max_retry_wait, _retry_after(response.headers.get("retry-after"), attempt))

    def _transport_retry(self, err: Exception, attempt: int) -> float:
        httpx = _httpx()
        if isinstance(err, httpx.TimeoutException):
            raise TimeoutError(
                f"endpoint: no answer from {self.url} within {self.timeout} s; raise timeout= or check the service."
            ) from err
        if not isinstance(err, httpx.TransportError):
            raise err
        if not isinstance(err, httpx.ConnectError) or attempt >= self.max_retries:
            raise RemoteError(
                f"endpoint: could not reach {self.url} ({type(err).__name__}: {err}); "
                "is `gemfilter serve` running there?"
            ) from err
        return min(self.max_retry_wait, _backoff(attempt))


def _httpx() -> Any:
    try:
        import httpx
    except ImportError as err:
        raise ImportError(
            "RemoteGemFilterCompressor needs httpx; install it with: pip install 'gemfilter-rag[serve]'"
        ) from err
    return httpx


def _json_of(response: Any) -> Any:
    try:
        return response.json()
    except ValueError as err:
        raise RemoteError(f"endpoint: the answer is not JSON ({err}); is this a gemfilter service?", 200) from err


def _result(response: Any) -> CompressionResult:
    return CompressionResult.from_dict(_json_of(response))


def _error(response: Any, suffix: str = "") -> Exception:
    """The exception for an error answer: the library's type for 413/422, else ``RemoteError``."""
    try:
        detail = response.json()["error"]
        message, kind, exception = str(detail["message"]), detail.get("kind"), detail.get("exception")
    except (ValueError, KeyError, TypeError):
        message, kind, exception = f"HTTP {response.status_code}: {response.text[:500]}", None, None
    if response.status_code in (413, 422) and exception in ("TypeError", "ValueError"):
        return TypeError(message) if exception == "TypeError" else ValueError(message)
    return RemoteError(message + suffix, response.status_code, kind)


def _retry_after(value: str | None, attempt: int) -> float:
    """Seconds from a Retry-After header (delay-seconds or an HTTP date); exponential backoff without one."""
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - time.time())
    return _backoff(attempt)


def _backoff(attempt: int) -> float:
    return (0.25 * 2**attempt) * (1 + random.random() / 2)
