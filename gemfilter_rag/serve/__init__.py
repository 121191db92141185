"""``gemfilter serve``: GemFilter compression as an HTTP service (FastAPI on uvicorn, or Ray Serve).

Needs the ``serve`` extra: ``pip install 'gemfilter-rag[serve]'`` (``[ray]`` for Ray Serve).
``create_app(compressor, settings)`` builds the ASGI app; ``build_server(...)`` runs it on uvicorn with a
graceful drain; ``gemfilter_rag.serve.ray`` deploys the same app on Ray Serve. The client side is
``gemfilter_rag.remote.RemoteGemFilterCompressor``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import ServeSettings

if TYPE_CHECKING:
    from .app import create_app
    from .server import build_server

__all__ = ["ServeSettings", "build_server", "create_app", "require"]

EXTRA_HINT = "pip install 'gemfilter-rag[serve]'"


def require(*modules: str, extra: str = "serve") -> None:
    """Import ``modules`` or raise an ImportError that says which extra to install."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ImportError(
                f"gemfilter serve needs {name}, which is not installed ({err}); "
                f"install it with: pip install 'gemfilter-rag[{extra}]'"
            ) from err


def __getattr__(name: str) -> Any:
    if name == "create_app":
        require("fastapi", "prometheus_client")
        from .app import create_app

        return create_app
    if name == "build_server":
        require("fastapi", "uvicorn", "prometheus_client")
        from .server import build_server

        return build_server
    raise AttributeError(f"module 'gemfilter_rag.serve' has no attribute {name!r}")
