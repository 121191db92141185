"""Run the quality benchmark: ``python -m benchmarks.run --preset quick|full``.

Every registered method gets the same items and token budget; the results (JSON), tables
(``benchmarks/README.md``, between markers) and plots (PNG) land under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import BenchConfig, preset
from .datasets import DATASETS, Item
from .machine import cpu_model
from .methods import METHODS, Output, Resources
from .metrics import answer_correct, contains_answer, ratio, summarize

ANSWER_PROMPT = (
    "Answer the question with a short phrase, using the context.\n\nContext:\n{context}\n\nQuestion: {question}"
)


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads and library versions of this machine."""
    import importlib.metadata as md

    import torch

    cpu = cpu_model()
    versions: dict[str, str | None] = {}
    for pkg in (
        "torch",
        "transformers",
        "gemfilter-rag",
        "sentence-transformers",
        "langchain-core",
        "langchain-classic",
    ):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {
        "load_avg_1_5_15": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def greedy_answer(tokenizer: Any, model: Any, context: str, question: str, max_new_tokens: int) -> str:
    """The model's greedy short answer to ``question`` from ``context`` (``ANSWER_PROMPT`` in its chat template)."""
    import torch

    msgs = [{"role": "user", "content": ANSWER_PROMPT.format(context=context, question=question)}]
    ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids = ids["input_ids"]  # (1, T)
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())


class Answerer:
    """Greedy short answers of the default model given a context (memoised per context and question)."""

    def __init__(self, res: Resources, max_new_tokens: int) -> None:
        self.res = res
        self.max_new_tokens = max_new_tokens
        self._memo: dict[str, str] = {}

    def __call__(self, context: str, question: str) -> str:
        key = hashlib.sha1(f"{context}\x00{question}".encode()).hexdigest()
        if key not in self._memo:
            tok, model = self.res.tokenizer, self.res.base.model
            self._memo[key] = greedy_answer(tok, model, context, question, self.max_new_tokens)
        return self._memo[key]


def score_output(item: Item, method: str, budget: int | None, out: Output, res: Resources) -> dict[str, Any]:
    """One result row: the method's output cut to the budget, and its model-independent metrics."""
    text = res.cut(out.text, budget) if budget is not None else out.text
    original = res.count_tokens("\n\n".join(item.documents))
    sent = res.count_tokens(text)
    return {
        "dataset": item.dataset,
        "id": item.id,
        "method": method,
        "budget": budget,
        **item.meta,
        "original_tokens": original,
        "tokens_sent": sent,
        "ratio": ratio(original, sent),
        "recall": None if out.error else contains_answer(text, item.answers),
        "latency_s": out.latency_s,
        "error": out.error,
        "text": text,
        **out.extra,
    }


def spread(items: Sequence[Item], k: int) -> list[Item]:
    """``k`` items evenly spaced over ``items`` (all of them when there are at most ``k``)."""
    if len(items) <= k:
        return list(items)
    step = len(items) / k
    return [items[int(i * step)] for i in range(k)]


def run_dataset(
    name: str, items: list[Item], cfg: BenchConfig, res: Resources, answerer: Answerer | None
) -> list[dict[str, Any]]:
    """Run every configured method on ``items`` at every budget; answer with the default model."""
    from tqdm.auto import tqdm

    methods = cfg.needle_methods if name == "needle" else cfg.methods
    budgets = cfg.budgets[:1] if name == "needle" else cfg.budgets
    rows: list[dict[str, Any]] = []
    by_id = {it.id: it for it in items}
    for it in tqdm(items, desc=f"{name}: compress", unit="item"):
        for m in methods:
            spec = METHODS[m]
            if spec.fn is None:
                continue
            for b in budgets if spec.budgeted else [None]:
                try:
                    out = spec.fn(it, b or 0, res)
                except Exception as err:  # noqa: BLE001 - a failing method is recorded, the run goes on
                    out = Output("", 0.0, error=f"{type(err).__name__}: {err}"[:500])
                rows.append(score_output(it, m, b, out, res))
        res.scores.clear()
    for m in methods:
        spec = METHODS[m]
        if spec.batch is not None:
            subset = spread(items, cfg.batch_max_items) if cfg.batch_max_items else items
            print(f"{name}: {m} on {len(subset)} items x {len(budgets)} budgets ...", flush=True)
            outs = spec.batch(subset, budgets, res)
            rows += [score_output(by_id[i], m, b, o, res) for (i, b), o in outs.items()]
    if answerer is not None:
        for row in tqdm(rows, desc=f"{name}: answer", unit="answer"):
            wanted = cfg.answer_budgets is None or row["budget"] is None or row["budget"] in cfg.answer_budgets
            if row["error"] is None and wanted:
                it = by_id[row["id"]]
                row["prediction"] = answerer(row["text"], it.question)
                row["correct"] = answer_correct(row["prediction"], it.answers)
    return rows


def summarize_rows(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per method, per budget ("all" for uncompressed), the mean metrics."""
    out: dict[str, dict[str, Any]] = {}
    for m in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == m]
        out[m] = {}
        for b in dict.fromkeys(r["budget"] for r in mine):
            out[m]["all" if b is None else str(b)] = summarize(r for r in mine if r["budget"] == b)
    return out


def throughput(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, Any]:
    """Compression throughput (context tokens per second) on the (item, budget) pairs every method finished."""
    done = {m: {(r["id"], r["budget"]): r for r in rows if r["method"] == m and not r["error"]} for m in methods}
    common = set.intersection(*(set(d) for d in done.values())) if done else set()
    out: dict[str, Any] = {"pairs": len(common)}
    for m in methods:
        toks = sum(done[m][k]["original_tokens"] for k in common)
        secs = sum(done[m][k]["latency_s"] for k in common)
        out[m] = {"tokens": toks, "seconds": secs, "tokens_per_s": toks / secs if secs > 0 else None}
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; anything given overrides the preset."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--preset", default="quick", help="quick (< 20 min on 2 CPU cores) or full")
    p.add_argument("--datasets", nargs="+", help=f"subset of {sorted(DATASETS)}")
    p.add_argument("--methods", nargs="+", help=f"subset of {sorted(METHODS)}")
    p.add_argument("--budgets", nargs="+", type=int)
    p.add_argument("--n", type=int, help="items per data set")
    p.add_argument("--seed", type=int)
    p.add_argument("--model", help="filter/answer model directory (default: the packaged SmolLM2)")
    p.add_argument("--nq-path", help="NQ-open oracle JSONL(.gz)")
    p.add_argument("--output-dir")
    p.add_argument("--no-answer", action="store_true", help="skip answer generation (accuracy)")
    p.add_argument("--name", help="results file name (default: the preset name)")
    p.add_argument("--no-readme", action="store_true", help="do not write the tables into benchmarks/README.md")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run a benchmark preset and write JSON, PNG and the README tables."""
    args = parse_args(argv)
    overrides = {
        k: v
        for k, v in {
            "datasets": args.datasets,
            "methods": args.methods,
            "budgets": args.budgets,
            "n": args.n,
            "seed": args.seed,
            "model": args.model,
            "nq_path": args.nq_path,
            "output_dir": args.output_dir,
            "name": args.name,
        }.items()
        if v is not None
    }
    if args.no_answer:
        overrides["answer"] = False
    cfg = preset(args.preset, **overrides)
    for name in cfg.datasets:
        if name not in DATASETS:
            raise SystemExit(f"--datasets: unknown {name!r}; choose from {sorted(DATASETS)}")
    for name in (*cfg.methods, *cfg.needle_methods):
        if name not in METHODS:
            raise SystemExit(f"--methods: unknown {name!r}; choose from {sorted(METHODS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    t_start = time.perf_counter()
    res = Resources(cfg)
    t0 = time.perf_counter()
    _ = res.base, res.embedder
    load_s = time.perf_counter() - t0
    answerer = Answerer(res, cfg.max_new_tokens) if cfg.answer else None
    results: dict[str, Any] = {
        "config": cfg.to_dict(),
        "machine": machine_info(),
        "filter_layer": res.base.filter_layer,
        "model_dir": str(res.model_dir),
        "datasets": {},
        "timings_s": {"load": load_s},
    }
    all_rows: list[dict[str, Any]] = []
    for name in cfg.datasets:
        t0 = time.perf_counter()
        items = DATASETS[name](cfg, res)
        rows = run_dataset(name, items, cfg, res, answerer)
        all_rows += rows
        results["datasets"][name] = {"items": len(items), "summary": summarize_rows(rows)}
        results["timings_s"][name] = time.perf_counter() - t0
        print(f"{name}: {len(items)} items in {results['timings_s'][name]:.0f} s", flush=True)
        _write(results, all_rows, res, args.no_readme, time.perf_counter() - t_start)  # partial results survive
    results["machine_end"] = machine_info()
    _write(results, all_rows, res, args.no_readme, time.perf_counter() - t_start)
    print(f"done in {results['timings_s']['total']:.0f} s; results in {Path(cfg.output_dir) / (cfg.name + '.json')}")
    return results


def _write(
    results: dict[str, Any], all_rows: list[dict[str, Any]], res: Resources, no_readme: bool, elapsed: float
) -> None:
    """Write the JSON, plots and README section for the data sets done so far."""
    cfg = res.cfg
    speed_methods = [m for m in ("gemfilter-sentence", "longllmlingua") if m in cfg.methods]
    results["throughput"] = throughput([r for r in all_rows if r["dataset"] != "needle"], speed_methods)
    results["lingua"] = res.lingua_info
    results["timings_s"]["total"] = elapsed
    results["rows"] = [{k: v for k, v in r.items() if k != "text"} for r in all_rows]
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from .report import write_plots, write_readme

    results["plots"] = write_plots(results, out_dir)
    (out_dir / f"{cfg.name}.json").write_text(json.dumps(results, indent=1, default=str))
    if not no_readme:
        write_readme(results)


if __name__ == "__main__":
    main()
