"""Test helpers for the service: a real uvicorn server on a free loopback port, in a thread; result comparison.

``running_server(compressor, settings)`` binds 127.0.0.1 on a port the OS picks (no race for the port),
serves the app in a background thread and stops it on exit. ``same_result(a, b)`` compares two
``CompressionResult`` as the service promises: everything equal but the timings, and ``score_share``
equal to float precision (a request padded inside a batched pass sums its attention in another order).
"""

from __future__ import annotations

import dataclasses
import math
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..result import CompressionResult


@dataclass
class LiveServer:
    """A running server: its base URL, the uvicorn server and the ``CompressionService``."""

    url: str
    server: Any
    thread: threading.Thread

    @property
    def service(self) -> Any:
        return self.server.service


@contextmanager
def running_server(compressor: Any, settings: Any = None, *, startup_timeout: float = 300.0) -> Iterator[LiveServer]:
    """Serve ``create_app(compressor, settings)`` on uvicorn at 127.0.0.1:<free port> while the block runs."""
    from .server import build_server

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = build_server(compressor, settings, host="127.0.0.1", port=port, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="gemfilter-test-server")
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start; see the log above")
        time.sleep(0.01)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def wait_until(condition: Any, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition()`` until it is true (every 5 ms), or raise ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def same_result(a: CompressionResult, b: CompressionResult, rel: float = 1e-4) -> bool:
    """Whether two results are equal but for timings, with the documents' scores (``score_share``,
    ``best_unit_score``: floats of the pass, which padding in a batch moves by rounding) equal within ``rel``."""

    def exact(r: CompressionResult) -> CompressionResult:
        docs = [dataclasses.replace(d, score_share=0.0, best_unit_score=0.0) for d in r.documents]
        return dataclasses.replace(r, timings={}, documents=docs)

    def scores(r: CompressionResult) -> list[float]:
        return [x for d in r.documents for x in (d.score_share, d.best_unit_score)]

    pairs = zip(scores(a), scores(b), strict=False)
    return exact(a) == exact(b) and all(math.isclose(x, y, rel_tol=rel, abs_tol=1e-9) for x, y in pairs)


def without_timings(result: CompressionResult) -> CompressionResult:
    """The result with empty timings, for ``==`` against another run of the same request."""
    return dataclasses.replace(result, timings={})
