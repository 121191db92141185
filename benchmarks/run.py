"""Run the quality benchmark: ``python -m benchmarks.run --preset quick|standard``.

Every registered method gets the same items and token budget; every reader answers the same
outputs. Rows are appended to ``<output_dir>/<name>.work.jsonl`` as they are measured (with the
text each method sent), so a run that stops resumes where it was (the same code, configuration and
filter model; anything else starts a new work file). Answers are cached per (reader, context,
question) under the cache directory. The results (JSON, gzipped JSONL rows without texts), tables
(``benchmarks/README.md``, between markers) and plots (PNG) land under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .config import BenchConfig, preset
from .datasets import DATASETS, Item
from .machine import cpu_model
from .methods import METHODS, Output, Resources
from .metrics import answer_correct, contains_answer, ratio, summarize
from .readers import ANSWER_PROMPT, READERS, Reader, greedy_answer

__all__ = ["ANSWER_PROMPT", "greedy_answer", "main"]

RESUMABLE_FIELDS = frozenset(
    {
        "output_dir",
        "readers",
        "answer",
        "answer_items",
        "answer_budgets",
        "answer_full_max_tokens",
        "max_new_tokens",
        "lingua_items",
        "lingua_budgets",
        "lingua_timeout_s",
    }
)
"""Configuration fields a resumed run may change without starting its work file again."""


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads and library versions of this machine."""
    import importlib.metadata as md

    import torch

    versions: dict[str, str | None] = {}
    for pkg in (
        "torch",
        "transformers",
        "gemfilter-rag",
        "sentence-transformers",
        "langchain-core",
        "langchain-classic",
        "llama-index-core",
        "bm25s",
    ):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {
        "load_avg_1_5_15": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def git_commit() -> str | None:
    """The checked-out commit of this repository, with ``+dirty`` when tracked files changed (what a run writes
    itself, ``benchmarks/README.md`` and ``benchmarks/results/``, does not count), if any."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        own = [":(exclude)benchmarks/README.md", ":(exclude)benchmarks/results"]
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "-uno", "--", ".", *own], cwd=root, capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip()[:12] + ("+dirty" if dirty.stdout.strip() else "")


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


def spread(items: Sequence[Item], k: int | None) -> list[Item]:
    """``k`` items evenly spaced over ``items`` (all of them when ``k`` is None or there are at most ``k``)."""
    if k is None or len(items) <= k:
        return list(items)
    step = len(items) / k
    return [items[int(i * step)] for i in range(k)]


class WorkLog:
    """The rows of one run, appended to a JSON-lines file as they are measured; reloaded to resume.

    The file's first line records a fingerprint (configuration, code commit, filter model); a file
    with another fingerprint is moved aside and a new one started, unless ``adopt``: then its rows are
    kept whatever wrote them (``adopted`` holds that fingerprint), to report a run whose own report
    step failed.
    """

    def __init__(self, path: Path, fingerprint: dict[str, Any], adopt: bool = False) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.adopted: dict[str, Any] | None = None
        self.rows: dict[tuple[str, str, str, int | None], dict[str, Any]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            lines = path.read_text(encoding="utf-8").splitlines()
            head = json.loads(lines[0]) if lines else {}
            if adopt and head.get("fingerprint") not in (None, fingerprint):
                self.adopted = head["fingerprint"]
            if head.get("fingerprint") == fingerprint or self.adopted is not None:
                for line in lines[1:]:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by a crash
                        continue
                    self.rows[self.key(row)] = row
            else:
                path.replace(path.with_suffix(f".{int(time.time())}.old"))
        if not path.exists():
            path.write_text(json.dumps({"fingerprint": fingerprint}) + "\n", encoding="utf-8")
        self.resumed = len(self.rows)

    @staticmethod
    def key(row: dict[str, Any]) -> tuple[str, str, str, int | None]:
        return row["dataset"], row["id"], row["method"], row["budget"]

    def get(self, dataset: str, item_id: str, method: str, budget: int | None) -> dict[str, Any] | None:
        return self.rows.get((dataset, item_id, method, budget))

    def add(self, row: dict[str, Any]) -> None:
        self.rows[self.key(row)] = row
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=str) + "\n")


def compress_rows(items: Sequence[Item], cfg: BenchConfig, res: Resources, log: WorkLog) -> list[dict[str, Any]]:
    """Run every configured method on ``items`` at every budget (resuming from ``log``)."""
    from tqdm.auto import tqdm

    if not items:
        return []
    name = items[0].dataset
    methods = cfg.methods_for(name)
    rows: list[dict[str, Any]] = []
    for it in tqdm(items, desc=f"{name}: compress", unit="item"):
        for m in methods:
            spec = METHODS[m]
            if spec.fn is None:
                continue
            for b in cfg.budgets if spec.budgeted else [None]:
                row = log.get(name, it.id, m, b)
                if row is None:
                    cpu = time.process_time()
                    try:
                        out = spec.fn(it, b or 0, res)
                    except Exception as err:  # noqa: BLE001 - a failing method is recorded, the run goes on
                        out = Output("", 0.0, error=f"{type(err).__name__}: {err}"[:500])
                    out.extra["cpu_s"] = round(time.process_time() - cpu, 4)  # the run's own CPU time (sizing)
                    row = score_output(it, m, b, out, res)
                    log.add(row)
                rows.append(row)
        res.forget()
    by_id = {it.id: it for it in items}
    for m in methods:
        spec = METHODS[m]
        if spec.batch is None:
            continue
        budgets = cfg.lingua_budgets or cfg.budgets
        # drawn from the items the readers answer, so that its accuracy is measured on all of them
        subset = spread(spread(items, cfg.answer_items if cfg.answer else None), cfg.lingua_items)
        todo = [it for it in subset if any(log.get(name, it.id, m, b) is None for b in budgets)]
        if todo:
            print(f"{name}: {m} on {len(todo)} items x {len(budgets)} budgets ...", flush=True)
            for (i, b), o in spec.batch(todo, budgets, res).items():
                log.add(score_output(by_id[i], m, b, o, res))
        rows += [r for it in subset for b in budgets if (r := log.get(name, it.id, m, b)) is not None]
    return rows


def answer_rows(
    rows: list[dict[str, Any]], items: Sequence[Item], cfg: BenchConfig, readers: Sequence[Reader], res: Resources
) -> None:
    """Each reader answers the answered subset of items, from every method's output at the answer budgets
    and from the full context where it fits; sets ``prediction_<reader>`` and ``correct_<reader>``."""
    from tqdm.auto import tqdm

    if not readers or not items:
        return
    chosen = {it.id for it in spread(items, cfg.answer_items)}
    by_id = {it.id: it for it in items}
    todo = [
        r
        for r in rows
        if r["id"] in chosen
        and r["error"] is None
        and (
            r["budget"] in cfg.answer_budgets
            or (r["budget"] is None and r["tokens_sent"] <= cfg.answer_full_max_tokens)
        )
    ]
    for rd in readers:
        for r in tqdm(todo, desc=f"{items[0].dataset}: answer ({rd.name})", unit="answer"):
            if r["budget"] is None and not rd.fits(r["tokens_sent"]):
                continue
            it = by_id[r["id"]]
            r[f"prediction_{rd.name}"] = rd(r["text"], it.question)
            r[f"correct_{rd.name}"] = answer_correct(r[f"prediction_{rd.name}"], it.answers)


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
    p.add_argument(
        "--preset",
        default="quick",
        help="quick (a smoke run, < 20 min on 2 CPU cores), standard (about 2.3 h) or full (issue 13's sizes, 5-6 h)",
    )
    p.add_argument("--datasets", nargs="+", help=f"subset of {sorted(DATASETS)}")
    p.add_argument("--methods", nargs="+", help=f"subset of {sorted(METHODS)} (restricts every data set)")
    p.add_argument("--readers", nargs="*", help=f"subset of {sorted(READERS)}; none: no answers")
    p.add_argument("--budgets", nargs="+", type=int)
    p.add_argument("--n", type=int, help="items per data set (replaces the preset's sizes)")
    p.add_argument("--answer-items", type=int, help="items per data set that the readers answer")
    p.add_argument("--seed", type=int)
    p.add_argument("--model", help="filter model directory (default: the packaged SmolLM2)")
    p.add_argument("--nq-path", help="NQ-open oracle JSONL(.gz)")
    p.add_argument("--output-dir")
    p.add_argument("--no-answer", action="store_true", help="skip answer generation (accuracy)")
    p.add_argument("--name", help="results file name (default: the preset name)")
    p.add_argument("--no-readme", action="store_true", help="do not write the tables into benchmarks/README.md")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--gemfilter-calls", choices=["shared", "per-budget"])
    p.add_argument(
        "--adopt-work",
        action="store_true",
        help="keep the work file's rows even if another commit or configuration wrote them (to report a run "
        "whose report step failed); the results name the commit that measured them",
    )
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The preset with the command line's overrides applied."""
    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "datasets": args.datasets,
            "budgets": args.budgets,
            "seed": args.seed,
            "model": args.model,
            "nq_path": args.nq_path,
            "output_dir": args.output_dir,
            "name": args.name,
            "answer_items": args.answer_items,
            "gemfilter_calls": args.gemfilter_calls,
        }.items()
        if v is not None
    }
    base = preset(args.preset)
    if args.methods is not None:
        # --methods restricts every data set; a data set's own shorter list (needles) stays as short
        restricted = {ds: tuple(m for m in ms if m in args.methods) for ds, ms in base.dataset_methods.items()}
        overrides.update(methods=tuple(args.methods), dataset_methods=restricted)
    if args.n is not None:
        overrides.update(n=args.n, sizes={})
    if args.readers is not None:
        overrides["readers"] = tuple(args.readers)
    if args.no_answer:
        overrides["answer"] = False
    if args.budgets is not None:
        keep = tuple(b for b in base.answer_budgets or () if b in args.budgets) or None
        overrides.setdefault("answer_budgets", keep)
        if base.lingua_budgets is not None:
            overrides.setdefault("lingua_budgets", tuple(b for b in base.lingua_budgets if b in args.budgets) or None)
    return preset(args.preset, **overrides)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run a benchmark preset and write JSON, PNG and the README tables."""
    args = parse_args(argv)
    cfg = config_from_args(args)
    for name in cfg.datasets:
        if name not in DATASETS:
            raise SystemExit(f"--datasets: unknown {name!r}; choose from {sorted(DATASETS)}")
    for name in {m for d in cfg.datasets for m in cfg.methods_for(d)}:
        if name not in METHODS:
            raise SystemExit(f"--methods: unknown {name!r}; choose from {sorted(METHODS)}")
    for name in cfg.readers:
        if name not in READERS:
            raise SystemExit(f"--readers: unknown {name!r}; choose from {sorted(READERS)}")
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
    readers = []
    if cfg.answer:
        for name in cfg.readers:
            # the default reader is the filter model itself: one copy of the weights
            shared = (res.base.model, res.base.tokenizer) if name == "smollm2" and cfg.model is None else None
            readers.append(Reader(name, cfg.max_new_tokens, loaded=shared))
    commit = git_commit()
    fingerprint = {
        # what decides the compressed rows (answers are cached apart, by content; LongLLMLingua rows by item)
        "config": {k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE_FIELDS},
        "commit": commit,
        "filter_layer": res.base.filter_layer,
        "filter_config": repr(res.base.config),
    }
    out_dir = Path(cfg.output_dir)
    log = WorkLog(out_dir / f"{cfg.name}.work.jsonl", fingerprint, adopt=args.adopt_work)
    if log.resumed:
        print(f"resuming: {log.resumed} rows from {log.path}", flush=True)
    results: dict[str, Any] = {
        "config": cfg.to_dict(),
        "commit": commit,
        "machine": machine_info(),
        "filter_layer": res.base.filter_layer,
        "filter_config": repr(res.base.config),
        "model_dir": str(res.model_dir),
        "readers": {rd.name: rd.label for rd in readers},
        "datasets": {},
        "timings_s": {"load": load_s},
        "resumed_rows": log.resumed,
    }
    if log.adopted is not None:  # the rows were measured by the code of the work file's commit
        results.update(commit=log.adopted.get("commit"), reported_by=commit)
    all_rows: list[dict[str, Any]] = []
    for name in cfg.datasets:
        t0 = time.perf_counter()
        items = DATASETS[name](cfg, res)
        rows = compress_rows(items, cfg, res, log)
        t1 = time.perf_counter()
        answer_rows(rows, items, cfg, readers, res)
        all_rows += rows
        results["datasets"][name] = {
            "items": len(items),
            "answered_items": min(len(items), cfg.answer_items or len(items)),
        }
        results["timings_s"][name] = time.perf_counter() - t0
        results["timings_s"][f"{name}_answers"] = time.perf_counter() - t1
        print(f"{name}: {len(items)} items in {results['timings_s'][name]:.0f} s", flush=True)
        _write(results, all_rows, res, readers, args.no_readme, time.perf_counter() - t_start)  # partial results
    results["machine_end"] = machine_info()
    _write(results, all_rows, res, readers, args.no_readme, time.perf_counter() - t_start)
    print(f"done in {results['timings_s']['total']:.0f} s; results in {out_dir / (cfg.name + '.json')}")
    return results


def public_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without the sent text (what is kept with the results)."""
    return [{k: v for k, v in r.items() if k != "text"} for r in rows]


def _write(
    results: dict[str, Any],
    all_rows: list[dict[str, Any]],
    res: Resources,
    readers: Sequence[Reader],
    no_readme: bool,
    elapsed: float,
) -> None:
    """Write the JSON, rows, plots and README section for the data sets done so far."""
    from .report import write_results

    results["lingua"] = res.lingua_info
    results["gemfilter_calls"] = {"shared": res.gemfilter.shared, "fallback": res.gemfilter.fallback}
    results["reader_cost"] = {
        rd.name: {"calls": rd.calls, "seconds": rd.seconds, "cpu_seconds": rd.cpu_seconds} for rd in readers
    }
    results["timings_s"]["total"] = elapsed
    write_results(results, public_rows(all_rows), [rd.name for rd in readers], readme=not no_readme)


if __name__ == "__main__":
    main()
