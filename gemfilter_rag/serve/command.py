"""The ``gemfilter serve`` subcommand: its arguments and what it runs (uvicorn, or Ray Serve with ``--ray``)."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

from .settings import ServeSettings

LIMIT_HELP = {
    "max_batch": "most requests per batched filter pass; 1 turns batching off",
    "max_wait_ms": "longest wait, in ms, for a batch to fill after its first request",
    "max_queue": "most requests waiting for the model; more get 429 with Retry-After",
    "max_request_bytes": "largest request body in bytes; larger get 413",
    "max_documents": "most documents per request; more get 413",
    "max_context_tokens": "most context tokens per request (filter model's tokenizer); more get 413",
    "drain_timeout_s": "on SIGTERM, seconds to let in-flight requests finish (new ones get 503)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``gemfilter serve``."""
    p.add_argument(
        "--model",
        default=None,
        help="model directory, .gguf file or cached hub id (default: the embedded SmolLM2-135M-Instruct)",
    )
    p.add_argument("--profile", default=None, help="a profile JSON to use instead of the matching shipped one")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    defaults = ServeSettings()
    for f in fields(ServeSettings):
        flag = "--drain-timeout" if f.name == "drain_timeout_s" else "--" + f.name.replace("_", "-")
        kind = int if f.type in (int, "int") else float
        default = getattr(defaults, f.name)
        p.add_argument(flag, dest=f.name, type=kind, default=default, help=f"{LIMIT_HELP[f.name]} (default {default})")
    cache = p.add_argument_group("chunk cache (each chunk's early-layer keys/values; a query runs only its own tokens)")
    cache.add_argument(
        "--cache-mib", type=int, default=None, help="keep a chunk cache of this many MiB in memory (default: none)"
    )
    cache.add_argument(
        "--cache-file",
        default=None,
        help="keep the chunk cache in this SQLite file too (made if missing; replicas and restarts share it)",
    )
    cache.add_argument(
        "--cache-dtype", choices=["fp16", "int8", "fp32"], default=None, help="stored precision (default fp16)"
    )
    ray = p.add_argument_group("Ray Serve (pip install 'gemfilter-rag[ray]')")
    ray.add_argument("--ray", action="store_true", help="deploy on Ray Serve instead of a single uvicorn process")
    ray.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to join, e.g. 'auto' or 'ray://head:10001' (default: start one)",
    )
    ray.add_argument("--replicas", type=int, default=1, help="number of replicas (default 1)")
    ray.add_argument(
        "--max-replicas", type=int, default=None, help="autoscale between --replicas and this many replicas"
    )
    ray.add_argument("--num-cpus", type=float, default=1.0, help="CPUs reserved per replica (default 1)")
    ray.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per replica, e.g. 1 or 0.5 (default 0)")


def settings_from(args: argparse.Namespace) -> ServeSettings:
    """The ``ServeSettings`` given on the command line."""
    return ServeSettings(**{f.name: getattr(args, f.name) for f in fields(ServeSettings)})


def load_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``GemFilterCompressor.from_pretrained`` from the command line."""
    if args.profile is not None and not Path(args.profile).is_file():
        raise FileNotFoundError(
            f"--profile: {args.profile} does not exist; pass a JSON written by gemfilter calibrate."
        )
    out: dict[str, Any] = {"model": args.model, "device": args.device}
    if args.profile is not None:
        out["profile"] = args.profile
    cache = cache_options(args)
    if cache is not None:
        out["cache"] = cache
    return out


def cache_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """``ChunkCache`` keyword arguments from ``--cache-mib``/``--cache-file``/``--cache-dtype`` (None: no cache)."""
    from ..chunk_cache import cache_arguments

    return cache_arguments(
        getattr(args, "cache_mib", None),
        getattr(args, "cache_file", None),
        getattr(args, "cache_dtype", None),
        name="--cache-{}",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT (then drain); returns the exit code."""
    settings = settings_from(args)
    if not 0 <= args.port < 65536:
        raise ValueError(f"--port: {args.port} is not a port; use 1..65535, e.g. 8000.")
    if args.ray:
        from .ray import run_on_ray

        replicas = {"num_replicas": args.replicas}
        if args.max_replicas is not None:
            replicas = {"autoscaling_config": {"min_replicas": args.replicas, "max_replicas": args.max_replicas}}
        run_on_ray(
            load_options(args),
            settings,
            host=args.host,
            port=args.port,
            address=args.ray_address,
            ray_actor_options={"num_cpus": args.num_cpus, "num_gpus": args.num_gpus},
            **replicas,
        )
        return 0
    from . import require

    require("fastapi", "uvicorn", "prometheus_client")
    from .loader import load_compressor
    from .server import build_server

    compressor = load_compressor(load_options(args))
    build_server(compressor, settings, host=args.host, port=args.port, log_level=args.log_level).run()
    return 0
