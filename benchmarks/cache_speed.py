"""Chunk-cache speed (issue 21): ``compress`` over 20 NQ passages with every chunk cached, against a cold call.

    python -m benchmarks.cache_speed                 # 20 NQ evaluation questions, 3 repeats, this machine
    python -m benchmarks.cache_speed --n 5 --repeats 1 --threads 1

For each question (NQ-open evaluation lines, its gold passage at position 10 among the 19 hardest other gold
passages, as ``benchmarks.datasets.build_nq`` builds them), in one process and in turn:

- **first**: the compressor with an empty ``ChunkCache`` (every chunk encoded alone after the prefix and
  stored, then the question's tokens through the model: the first query over a corpus nobody indexed);
- **warm**: ``compressor.warm(documents)`` on the benchmark's shared cache (indexing: chunks seen before
  are skipped), timed;
- then ``--repeats`` rounds of **cold** (today's joint pass over the whole prompt, no cache) and **cached**
  (every chunk in the cache: only the question's ~40 tokens run through layers ``0..r``), alternating.

Per question the ratio cached / cold is the median over the repeats; the summary gives the geometric mean
of the ratios with a bootstrap 95% interval over questions, and the share of questions at or below 0.1.
Rows and summary: ``benchmarks/results/cache_speed.json``; table: ``benchmarks/results/cache_speed.md``.
The stored bytes per context token of each precision come from ``ChunkCache.bytes_per_token``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import RESULTS_DIR, BenchConfig
from .stats import bootstrap_ci

BUDGET = 256
POSITION = 10


def ratio_summary(ratios: Sequence[float], seed: int = 0, draws: int = 2000) -> dict[str, float]:
    """Geometric mean of ``ratios`` with a percentile bootstrap 95% interval over them (``stats.bootstrap_ci``
    of the mean log ratio)."""
    if not ratios or min(ratios) <= 0:
        raise ValueError(f"ratios: need positive ratios, got {list(ratios)[:5]}")
    logs = [math.log(r) for r in ratios]
    lo, hi = bootstrap_ci(logs, n_boot=draws, seed=seed)
    return {"geomean": math.exp(statistics.fmean(logs)), "ci_low": math.exp(lo), "ci_high": math.exp(hi)}


def timed(fn: Any) -> tuple[Any, float]:
    """(fn(), seconds)."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(n: int, repeats: int, out_dir: Path) -> dict[str, Any]:
    """Measure every question and write ``cache_speed.{json,md}``."""
    from gemfilter_rag import ChunkCache

    from .datasets import build_nq
    from .machine import cpu_model
    from .methods import CACHED_BENCH_BYTES, Resources

    cfg = BenchConfig(name="cache-speed", datasets=("nq",), sizes={"nq": n}, positions=(POSITION,))
    res = Resources(cfg)
    comp = res.base
    cached = res.cached  # the gemfilter-cached method's compressor: refuses a profile without a cache-mode readout
    items = build_nq(cfg, res)
    comp.compress(items[0].documents, items[0].question, top_k=BUDGET)  # load and warm up once
    rows = []
    for item in items:
        docs, q = item.documents, item.question
        fresh = comp.with_cache(ChunkCache(CACHED_BENCH_BYTES))
        first, first_s = timed(lambda: fresh.compress(docs, q, top_k=BUDGET))  # noqa: B023
        encoded, warm_s = timed(lambda: cached.warm(docs))  # noqa: B023
        cold_s, hot_s = [], []
        for _ in range(repeats):
            cold, s = timed(lambda: comp.compress(docs, q, top_k=BUDGET))  # noqa: B023
            cold_s.append(s)
            hot, s = timed(lambda: cached.compress(docs, q, top_k=BUDGET))  # noqa: B023
            hot_s.append(s)
        rows.append(
            {
                "id": item.id,
                "context_tokens": hot.original_tokens,
                "question_tokens": len(comp.tokenizer(q, add_special_tokens=False)["input_ids"]),
                "first_s": first_s,
                "warm_s": warm_s,
                "warm_encoded": encoded,
                "cold_s": statistics.median(cold_s),
                "cached_s": statistics.median(hot_s),
                "ratio": statistics.median(h / c for h, c in zip(hot_s, cold_s, strict=True)),
                "same_as_first": hot.kept_token_indices == first.kept_token_indices,
                "same_as_cold": hot.kept_token_indices == cold.kept_token_indices,
            }
        )
        print(f"{item.id}: cold {rows[-1]['cold_s']:.3f} s, cached {rows[-1]['cached_s']:.3f} s", flush=True)
    import torch

    ratios = [r["ratio"] for r in rows]
    store = cached.cache
    assert store is not None
    summary = {
        "n": len(rows),
        "repeats": repeats,
        "budget": BUDGET,
        "ratio": ratio_summary(ratios),
        "at_most_0.1": sum(r <= 0.1 for r in ratios),
        "median_cold_s": statistics.median(r["cold_s"] for r in rows),
        "median_cached_s": statistics.median(r["cached_s"] for r in rows),
        "median_first_s": statistics.median(r["first_s"] for r in rows),
        "first_over_cold": ratio_summary([r["first_s"] / r["cold_s"] for r in rows]),
        "same_as_first": sum(r["same_as_first"] for r in rows),
        "same_as_cold": sum(r["same_as_cold"] for r in rows),
        "cache": store.stats(),
        "bytes_per_token": {
            dtype: ChunkCache(1, dtype=dtype).bytes_per_token(cached, chunk_tokens=128) for dtype in ("fp16", "int8")
        },
        "cache_layer": cached.cache_layer,
        "machine": {"cpu": cpu_model(), "torch_threads": torch.get_num_threads()},
    }
    report = {"summary": summary, "rows": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cache_speed.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out_dir / "cache_speed.md").write_text(markdown(summary))
    return report


def markdown(s: dict[str, Any]) -> str:
    """The summary as a Markdown table."""
    bpt = s["bytes_per_token"]

    def vs(x: dict[str, float]) -> str:
        return f"{x['geomean']:.3f} [{x['ci_low']:.3f}, {x['ci_high']:.3f}]"

    return (
        f"# Chunk cache speed: {s['n']} NQ questions x 20 passages, budget {s['budget']}, "
        f"{s['repeats']} repeats\n\n"
        f"Machine: {s['machine']['cpu']}, {s['machine']['torch_threads']} torch thread(s). "
        f"Cache layers 0..{s['cache_layer']}.\n\n"
        "| call | median seconds | vs cold (geometric mean, 95% CI) |\n|---|---:|---|\n"
        f"| cold (joint pass, no cache) | {s['median_cold_s']:.3f} | 1 |\n"
        f"| every chunk cached | {s['median_cached_s']:.3f} | {vs(s['ratio'])} |\n"
        f"| first query, empty cache | {s['median_first_s']:.3f} | {vs(s['first_over_cold'])} |\n\n"
        f"Cached calls at or below 0.1 of the cold call: {s['at_most_0.1']} of {s['n']}. The cached call kept the same "
        f"tokens as the first (empty-cache) call on {s['same_as_first']} of {s['n']} questions, and the same as the "
        f"joint pass on {s['same_as_cold']} of {s['n']} (a different readout on a different pass).\n\n"
        f"Stored bytes per context token: {bpt['fp16']:.0f} in fp16, {bpt['int8']:.0f} in int8 (128-token chunks); "
        f"a cache of 1M tokens: {bpt['fp16'] * 1e6 / 2**30:.2f} GiB / {bpt['int8'] * 1e6 / 2**30:.2f} GiB.\n"
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m benchmarks.cache_speed``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cache_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20, help="NQ evaluation questions (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="cold/cached rounds per question (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--output-dir", default=str(RESULTS_DIR), help="where cache_speed.{json,md} go")
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeats < 1:
        parser.error("--n and --repeats must be >= 1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = run(args.n, args.repeats, Path(args.output_dir))
    print(markdown(report["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
