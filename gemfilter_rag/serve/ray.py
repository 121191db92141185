"""The same app on Ray Serve: one replica = one process with one model, the app's own dynamic batcher.

Needs the ``ray`` extra: ``pip install 'gemfilter-rag[ray]'``. Three ways to start it:

- ``gemfilter serve --ray --replicas 2 [--num-gpus 1] [--ray-address auto] --port 8000``;
- ``serve run gemfilter_rag.serve.ray:app num_replicas=2 num_gpus=1 model=/models/x max_batch=16``
  (Ray's CLI; ``app`` is an application builder, every argument a string);
- from Python: ``serve.run(deployment(model=..., num_replicas=2), route_prefix="/")``.

Each replica loads its own ``GemFilterCompressor`` (``from_pretrained`` with the given arguments) and
serves ``create_app`` through ``serve.ingress``; Ray's HTTP proxy spreads requests over the replicas
and each replica batches what it receives. On a multi-machine cluster only the address
(``ray.init(address=...)`` / ``--ray-address``), the replica count and ``num_gpus`` change; the model
path must exist on every node (or be the embedded default, fetched on each node once).
"""

from __future__ import annotations

from typing import Any

from . import require
from .settings import ServeSettings

DEPLOYMENT_NAME = "GemFilter"
APP_NAME = "gemfilter"


class ReplicaApp:
    """The ASGI app a replica serves: it loads the model and builds ``create_app`` on the replica, at its
    first call (Ray Serve's lifespan startup), so that only these arguments travel to the replica."""

    def __init__(self, load: dict[str, Any], settings: ServeSettings) -> None:
        self.load = load
        self.settings = settings
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from .app import create_app
            from .loader import load_compressor

            self._app = create_app(load_compressor(self.load), self.settings)
        await self._app(scope, receive, send)

    def __getstate__(self) -> dict[str, Any]:
        return {"load": self.load, "settings": self.settings, "_app": None}  # never ship a loaded model


class GemFilterReplica:
    """One replica of the deployment: Ray wraps it around ``ReplicaApp`` (``serve.ingress``)."""


def deployment(
    model: str | None = None,
    *,
    device: str | None = None,
    profile: str | None = None,
    options: dict[str, Any] | None = None,
    settings: ServeSettings | None = None,
    num_replicas: int | str | None = 1,
    autoscaling_config: dict[str, Any] | None = None,
    ray_actor_options: dict[str, Any] | None = None,
    max_ongoing_requests: int | None = None,
) -> Any:
    """A Ray Serve application (``Deployment.bind()``) serving ``create_app`` on each replica.

    Args:
        model, device, profile, options: what each replica passes to ``GemFilterCompressor.from_pretrained``.
        settings: the app's batching and limits, per replica.
        num_replicas: fixed replica count (ignored with ``autoscaling_config``).
        autoscaling_config: Ray's autoscaling, e.g. ``{"min_replicas": 1, "max_replicas": 8}``.
        ray_actor_options: resources per replica, e.g. ``{"num_cpus": 2, "num_gpus": 1}``.
        max_ongoing_requests: requests Ray sends one replica at once; default ``max_batch + max_queue``,
            so each replica's own queue (and 429) applies as on uvicorn.
    """
    require("ray.serve", "fastapi", "prometheus_client", extra="ray")
    from ray import serve

    settings = settings or ServeSettings()
    load = {"model": model, "device": device, **({"profile": profile} if profile else {}), **(options or {})}

    replica = serve.ingress(ReplicaApp(load, settings))(GemFilterReplica)
    config: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "max_ongoing_requests": max_ongoing_requests or settings.max_batch + settings.max_queue,
        "ray_actor_options": ray_actor_options or {"num_cpus": 1},
    }
    if autoscaling_config:
        config["autoscaling_config"] = autoscaling_config
    else:
        config["num_replicas"] = num_replicas
    return serve.deployment(replica, **config).bind()  # type: ignore[attr-defined]


def app(args: dict[str, str]) -> Any:
    """Application builder for ``serve run gemfilter_rag.serve.ray:app key=value ...``.

    Keys: ``model``, ``device``, ``profile``, ``num_replicas``, ``min_replicas`` and ``max_replicas``
    (autoscaling), ``num_cpus``, ``num_gpus``, ``cache_mib``, ``cache_file`` and ``cache_dtype`` (a chunk
    cache per replica, the file shared), and every ``ServeSettings`` field (``max_batch``, ...).
    """
    args = dict(args)
    load = {k: args.pop(k) for k in ("model", "device", "profile") if k in args}
    from ..chunk_cache import cache_arguments

    cache = cache_arguments(args.pop("cache_mib", None), args.pop("cache_file", None), args.pop("cache_dtype", None))
    actor: dict[str, Any] = {k: float(args.pop(k)) for k in ("num_cpus", "num_gpus") if k in args}
    scaling: dict[str, Any] = {k: int(args.pop(k)) for k in ("min_replicas", "max_replicas") if k in args}
    replicas = int(args.pop("num_replicas", 1))
    settings = ServeSettings.from_mapping(args)  # the rest; unknown keys are an error that lists the valid ones
    return deployment(
        load.get("model"),
        device=load.get("device"),
        profile=load.get("profile"),
        options={"cache": cache} if cache is not None else None,
        settings=settings,
        num_replicas=replicas,
        autoscaling_config=scaling or None,
        ray_actor_options=actor or None,
    )


def run_on_ray(
    load: dict[str, Any],
    settings: ServeSettings,
    *,
    host: str,
    port: int,
    address: str | None = None,
    **deployment_options: Any,
) -> None:
    """Start (or join) Ray, start Serve's HTTP proxy on ``host:port`` and run the deployment until
    SIGTERM/SIGINT; then delete the application (Ray Serve lets the replicas finish their requests) and
    leave Ray (a local Ray instance this call started stops with it)."""
    require("ray.serve", extra="ray")
    import signal
    import threading

    import ray
    from ray import serve

    ray.init(address=address, include_dashboard=False, ignore_reinit_error=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        load = dict(load)
        model = load.pop("model", None)
        cache = load.pop("cache", None)  # ChunkCache keyword arguments: each replica makes its own cache
        options = {"cache": cache} if cache is not None else None
        app = deployment(model, settings=settings, options=options, **load, **deployment_options)
        serve.run(app, name=APP_NAME, route_prefix="/")
        print(f"gemfilter serve --ray: ready at http://{host}:{port}/ (Ctrl-C or SIGTERM stops it)", flush=True)
        stop.wait()
        # let the replicas finish their requests; bounded, since a signal sent to the whole process
        # group may already have stopped the local Ray processes
        deleting = threading.Thread(target=serve.delete, args=(APP_NAME,), daemon=True)
        deleting.start()
        deleting.join(settings.drain_timeout_s + 10)
    finally:
        ray.shutdown()
