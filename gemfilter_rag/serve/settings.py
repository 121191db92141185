"""``ServeSettings``: the service's limits and batching, shared by the CLI, the app and the Ray deployment."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

MiB = 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """Batching, back-pressure and request limits of ``gemfilter serve`` (each one a ``--flag`` of the CLI).

    The defaults suit a production service on one CPU or GPU: a request of 10-20 retrieved chunks is a
    few KB and 2-4K context tokens, far inside every limit, while a client that sends a whole book
    gets a 413 instead of a minute of model time.
    """

    max_batch: int = 8
    """Most requests run through one batched filter pass (``--max-batch``; 1 turns batching off)."""
    max_wait_ms: float = 5.0
    """Longest a request waits for others to join its batch, in ms (``--max-wait-ms``)."""
    max_queue: int = 64
    """Most requests waiting for the model; beyond it the server answers 429 with Retry-After (``--max-queue``)."""
    max_request_bytes: int = 4 * MiB
    """Largest request body, in bytes; larger ones get 413 (``--max-request-bytes``)."""
    max_documents: int = 256
    """Most documents in one request; more get 413 (``--max-documents``)."""
    max_context_tokens: int = 32_768
    """Most context tokens in one request, counted with the filter model's tokenizer; more get 413
    (``--max-context-tokens``). Prompts beyond the model's positions are scored in windows, so the cost
    grows with this: 32K tokens take about a minute on 2 CPU cores."""
    drain_timeout_s: float = 30.0
    """On SIGTERM/SIGINT, longest wait for in-flight requests before the server exits (``--drain-timeout``);
    meanwhile new requests get 503."""

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_request_bytes", "max_documents", "max_context_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {value!r} is not valid; use a whole number >= 1 (--{_flag(name)}).")
        for name in ("max_wait_ms", "drain_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: {value!r} is not valid; use a number >= 0 (--{_flag(name)}).")

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> ServeSettings:
        """Settings from a dict (e.g. Ray Serve's ``serve run ... max_batch=16`` arguments, all strings)."""
        kinds = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(data) - set(kinds))
        if unknown:
            raise TypeError(f"unknown setting(s) {unknown}; valid: {sorted(kinds)}.")
        values: dict[str, Any] = {}
        for name, value in data.items():
            is_int = kinds[name] in (int, "int")
            try:
                values[name] = int(value) if is_int else float(value)
            except (TypeError, ValueError):
                kind = "a whole number" if is_int else "a number"
                raise ValueError(f"{name}: {value!r} is not {kind}.") from None
        return cls(**values)


def _flag(name: str) -> str:
    return {"drain_timeout_s": "drain-timeout"}.get(name, name.replace("_", "-"))
