"""Run the app on uvicorn, with a drain phase before uvicorn's own graceful shutdown.

On the first SIGTERM or SIGINT the service answers new requests with 503 (and ``/health`` with 503, so
a load balancer stops sending) while the requests in flight finish, up to ``drain_timeout_s``; then
uvicorn closes its sockets and runs the lifespan shutdown. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
from types import FrameType
from typing import Any

import uvicorn

from ..compressor import GemFilterCompressor
from .app import create_app
from .service import CompressionService
from .settings import ServeSettings


class DrainingServer(uvicorn.Server):
    """``uvicorn.Server`` whose first exit signal drains the ``CompressionService`` before shutting down."""

    def __init__(self, config: uvicorn.Config, service: CompressionService) -> None:
        super().__init__(config)
        self.service = service
        self.drain_requested = False
        self._drain: asyncio.Future[bool] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: drain (new requests get 503); a second one: uvicorn's usual exit."""
        if self.drain_requested:
            super().handle_exit(sig, frame)
        else:
            self.request_drain()

    def request_drain(self) -> None:
        """Start the graceful shutdown (what SIGTERM does); safe to call from any thread."""
        self.drain_requested = True

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's periodic check (every 0.1 s): start the drain when asked, exit once it is over."""
        if self.drain_requested and self._drain is None:
            self._drain = asyncio.ensure_future(self.service.drain(self.service.settings.drain_timeout_s))
        if self._drain is not None and self._drain.done():
            self.should_exit = True
        return await super().on_tick(counter)


def build_server(
    compressor: GemFilterCompressor,
    settings: ServeSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    **uvicorn_options: Any,
) -> DrainingServer:
    """The uvicorn server of the app around ``compressor``; ``.run()`` serves until a signal."""
    settings = settings or ServeSettings()
    app = create_app(compressor, settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=max(1, int(settings.drain_timeout_s)),
        **uvicorn_options,
    )
    return DrainingServer(config, app.state.service)
