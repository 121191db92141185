"""Structured-lookup benchmark (issue 20): does the one exact answer survive compression, and is every
identifier of the kept text whole?

    python -m benchmarks.structured              # 10 evaluation seeds per kind and depth (resumes)
    python -m benchmarks.structured --quick      # 1 seed per kind and depth: a smoke run
    python -m benchmarks.structured --n 20
    python -m benchmarks.structured --report     # only rewrite structured.md from structured.json

Cases come from ``benchmarks.structured_data`` (the library's generator, ``EVAL_SEEDS`` only, which
readout training never draws): for every kind (``KINDS``: a JSON object of 25, 75 or 140 UUID pairs, a
Markdown table, a CSV table, service logs, a Python module) and every depth of the gold item (``DEPTHS``),
the first ``n`` evaluation seeds; each case is eight chunks as a retriever hands them over. Every method
keeps at most ``BUDGETS`` tokens of the default model's tokenizer:

- ``gemfilter``: the shipped default, ``GemFilterCompressor.from_pretrained()``, ``compress(top_k=budget)``;
- ``rag``: plain RAG, all-MiniLM-L6-v2 ranking the chunks, best first up to the budget
  (``benchmarks.methods.METHODS["rag"]``);
- ``bm25-sentences``: BM25 over the chunks' sentences (``benchmarks.methods.METHODS["bm25-sentences"]``).

Metrics: **answer kept**, the exact answer string (case and all) is in the kept text; **whole
identifiers**, no kept span ends (or starts) inside an identifier: every identifier of the kept text (a
run of letters, digits and ``_``, joined by ``-``, ``.``, ``:`` or ``/``: words, numbers, UUIDs, codes,
timestamps) is a whole identifier of the documents (``broken_identifiers``). For GemFilter, whose result
has its character spans, the rows also count the spans whose end falls inside an identifier of their
document (``inside_identifier``). Rates carry Wilson 95% intervals (``benchmarks.stats``).
Rows and summary: ``benchmarks/results/structured.json``; tables: ``benchmarks/results/structured.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .config import RESULTS_DIR, BenchConfig
from .datasets import Item
from .stats import fmt_rate, wilson
from .structured_data import StructuredCase, make_case

KINDS: tuple[tuple[str, str, dict[str, int]], ...] = (
    ("json-25", "json", {"pairs": 25}),
    ("json-75", "json", {"pairs": 75}),
    ("json-140", "json", {"pairs": 140}),
    ("markdown", "markdown", {}),
    ("csv", "csv", {}),
    ("logs", "logs", {}),
    ("code", "code", {}),
)
"""(label, generator kind, its size option) of every case kind."""
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
BUDGETS = (128, 256, 512)
METHODS = ("gemfilter", "rag", "bm25-sentences")
N_DEFAULT = 10
FIRST_SEED = 100_000
"""The first of ``structured_data.EVAL_SEEDS``: case ``i`` of a kind and depth takes seed ``FIRST_SEED + i``."""

IDENTIFIER = re.compile(r"[A-Za-z0-9_]+(?:[-.:/][A-Za-z0-9_]+)*")
"""A word, number or identifier: letters, digits and ``_``, joined by ``-``, ``.``, ``:`` or ``/``."""

MethodFn = Callable[[Item, int], tuple[str, float, dict[str, Any]]]
"""``(item, budget) -> (kept text, seconds, extra row fields)``: one method on one case."""


# ---------------------------------------------------------------- cases


def cases(n: int, kinds: Sequence[tuple[str, str, dict[str, int]]] = KINDS) -> list[tuple[str, StructuredCase]]:
    """(label, case) of every kind and depth for the first ``n`` evaluation seeds."""
    out = []
    for label, kind, options in kinds:
        for depth in DEPTHS:
            for i in range(n):
                out.append((label, make_case(kind, FIRST_SEED + i, "eval", depth=depth, **options)))
    return out


def case_item(label: str, case: StructuredCase) -> Item:
    """The benchmark ``Item`` of a case (what ``benchmarks.methods`` functions take): its chunks as the
    documents, its one exact answer as the only accepted one."""
    meta = {"kind": label, "seed": case.seed, "depth": case.depth, "gold_document": case.gold_document}
    return Item(
        f"structured-{label}", f"{label}-{case.seed}-d{case.depth:g}", case.question, list(case.documents),
        [case.answer], meta,
    )  # fmt: skip


# ---------------------------------------------------------------- the metrics (pure)


def answer_kept(text: str, answer: str) -> bool:
    """Whether the exact answer string (no normalisation) appears in the kept text."""
    return answer in text


def identifiers(text: str) -> set[str]:
    """Every identifier (``IDENTIFIER``) of ``text``."""
    return set(IDENTIFIER.findall(text))


def broken_identifiers(kept: str, documents: Sequence[str]) -> list[str]:
    """The identifiers of the kept text that are no whole identifier of any document, in order, each once:
    what a kept span ending (or starting) inside an identifier leaves ("E-123" of "E-12345")."""
    whole = set().union(*(identifiers(d) for d in documents)) if documents else set()
    out: list[str] = []
    for m in IDENTIFIER.finditer(kept):
        if m.group(0) not in whole and m.group(0) not in out:
            out.append(m.group(0))
    return out


def inside_identifier(text: str, positions: Iterable[int]) -> list[bool]:
    """Whether each character position of ``text`` falls strictly inside an identifier of it (a span
    ending there cuts the identifier in two)."""
    bounds = [(m.start(), m.end()) for m in IDENTIFIER.finditer(text)]
    return [any(a < p < b for a, b in bounds) for p in positions]


def measure(item: Item, text: str) -> dict[str, Any]:
    """The metrics of one kept text: answer kept, and the broken identifiers (at most 5 listed)."""
    broken = broken_identifiers(text, item.documents)
    return {"answer_kept": answer_kept(text, item.answers[0]), "whole": not broken, "broken": broken[:5]}


# ---------------------------------------------------------------- the run


def run_cases(
    items: Sequence[Item],
    methods: dict[str, MethodFn],
    budgets: Sequence[int],
    done: set[tuple[str, str, int]] | None = None,
    on_item: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per item, method and budget not in ``done`` ((item id, method, budget) keys); ``on_item`` gets
    the rows so far after each item (to write them)."""
    rows: list[dict[str, Any]] = []
    for item in items:
        for name, fn in methods.items():
            for budget in budgets:
                if done is not None and (item.id, name, budget) in done:
                    continue
                text, seconds, extra = fn(item, budget)
                row = {"id": item.id, **item.meta, "method": name, "budget": budget, "seconds": seconds}
                rows.append({**row, **measure(item, text), **extra})
        if on_item is not None:
            on_item(rows)
    return rows


def gemfilter_method(comp: Any) -> MethodFn:
    """GemFilter as a ``MethodFn``: ``compress`` at the budget; the rows also count the kept spans whose end
    falls inside an identifier of their document."""

    def run(item: Item, budget: int) -> tuple[str, float, dict[str, Any]]:
        t0 = time.perf_counter()
        res = comp.compress(item.documents, item.question, top_k=budget)
        seconds = time.perf_counter() - t0
        cuts = sum(
            sum(inside_identifier(text, [b for _, b in d.spans]))
            for d, text in zip(res.documents, item.documents, strict=True)
        )
        return res.text, seconds, {"tokens": res.compressed_tokens, "span_ends_inside": cuts}

    return run


def library_method(name: str, res: Any) -> MethodFn:
    """A ``benchmarks.methods`` method as a ``MethodFn``, its output cut to the budget as ``benchmarks.run`` does."""
    from .methods import METHODS as REGISTERED

    fn = REGISTERED[name].fn
    assert fn is not None, f"{name} is a batch method"

    def run(item: Item, budget: int) -> tuple[str, float, dict[str, Any]]:
        out = fn(item, budget, res)
        text = res.cut(out.text, budget)
        res.forget()
        return text, out.latency_s, {"tokens": res.count_tokens(text)}

    return run


# ---------------------------------------------------------------- the report (pure)


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per method, budget and kind (and ``"all"``): cases, answer kept and whole identifiers, with Wilson 95%."""
    out: dict[str, Any] = {}
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in rows:
        for kind in (r["kind"], "all"):
            groups.setdefault((r["method"], int(r["budget"]), kind), []).append(r)
    for (method, budget, kind), mine in sorted(groups.items()):
        cell: dict[str, Any] = {"n": len(mine)}
        for metric in ("answer_kept", "whole"):
            k = sum(bool(r[metric]) for r in mine)
            lo, hi = wilson(k, len(mine))
            cell[metric] = {"k": k, "rate": k / len(mine), "low": lo, "high": hi}
        out.setdefault(method, {}).setdefault(str(budget), {})[kind] = cell
    return out


def _order(values: Iterable[str], first: Sequence[str]) -> list[str]:
    seen = list(dict.fromkeys(values))
    return [v for v in first if v in seen] + sorted(v for v in seen if v not in first)


def report(rows: Sequence[dict[str, Any]]) -> str:
    """The Markdown tables: per budget, answer kept and whole identifiers by kind and method; answer kept by
    depth at each budget; GemFilter's kept spans that end inside an identifier."""
    lines = ["# Structured lookups: answer survival and whole identifiers", ""]
    lines.append(
        "Generated by `python -m benchmarks.structured` from `structured.json` (cases of "
        "`benchmarks.structured_data`, evaluation seeds only). Answer kept: the exact answer string is in the "
        "kept text. Whole identifiers: no kept span ends (or starts) inside an identifier, i.e. every "
        "identifier of the kept text is whole in the documents. Wilson 95% intervals."
    )
    if not rows:
        return "\n".join([*lines, "", "No rows yet."]) + "\n"
    methods = _order((r["method"] for r in rows), METHODS)
    kinds = _order((r["kind"] for r in rows), [k for k, _, _ in KINDS])
    budgets = sorted({int(r["budget"]) for r in rows})
    for metric, title in (("answer_kept", "Answer kept"), ("whole", "Whole identifiers")):
        for budget in budgets:
            lines += ["", f"## {title}, {budget} tokens", ""]
            lines += _table("kind", [*kinds, "all"], methods, rows, metric, budget, lambda r: str(r["kind"]))
    depths = sorted({float(r["depth"]) for r in rows})
    for budget in budgets:
        lines += ["", f"## Answer kept by depth of the gold item, {budget} tokens (every kind)", ""]
        keys = [f"{d:g}" for d in depths]
        lines += _table("depth", keys, methods, rows, "answer_kept", budget, lambda r: f"{float(r['depth']):g}")
    spans = [r for r in rows if "span_ends_inside" in r]
    if spans:
        total = sum(int(r["span_ends_inside"]) for r in spans)
        cut = sum(1 for r in spans if r["span_ends_inside"])
        lines += [
            "",
            f"GemFilter's own spans: {total} kept spans end inside an identifier of their document, "
            f"in {cut} of {len(spans)} results.",
        ]
    return "\n".join(lines) + "\n"


def _table(
    head: str,
    keys: Sequence[str],
    methods: Sequence[str],
    rows: Sequence[dict[str, Any]],
    metric: str,
    budget: int,
    key_of: Callable[[dict[str, Any]], str],
) -> list[str]:
    """One Markdown table: a row per key (``"all"``: every row), a column per method, ``metric``'s rate."""
    out = [f"| {head} | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for key in keys:
        cells = []
        for m in methods:
            mine = [
                r
                for r in rows
                if r["method"] == m and int(r["budget"]) == budget and (key == "all" or key_of(r) == key)
            ]
            cells.append(fmt_rate(sum(bool(r[metric]) for r in mine), len(mine)))
        out.append(f"| {key} | " + " | ".join(cells) + " |")
    return out


# ---------------------------------------------------------------- the command


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of an earlier run (none if there is no file or it does not parse)."""
    if not path.exists():
        return []
    try:
        return list(json.loads(path.read_text(encoding="utf-8")).get("rows", []))
    except (json.JSONDecodeError, AttributeError):
        return []


def write(path: Path, table: Path, rows: Sequence[dict[str, Any]], config: dict[str, Any]) -> None:
    """Write the rows, their summary and the tables (the JSON through a temporary file: a kill keeps the old one)."""
    data = {"config": config, "summary": summarize(rows), "rows": list(rows)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    table.write_text(report(rows), encoding="utf-8")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command's options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one seed per kind and depth (a smoke run)")
    parser.add_argument("--n", type=int, default=None, help=f"seeds per kind and depth (default {N_DEFAULT})")
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS), help="token budgets")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to run")
    parser.add_argument("--output-dir", default=str(RESULTS_DIR), help="where structured.json and .md go")
    parser.add_argument("--report", action="store_true", help="only rewrite structured.md from structured.json")
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = 1 if args.quick else N_DEFAULT
    if not 1 <= args.n <= 10_000 or any(b < 1 for b in args.budgets):
        parser.error(f"--n {args.n} must be within 1..10000 and every budget >= 1 (got {args.budgets}).")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (or only rewrite its tables) and write ``structured.{json,md}``."""
    args = parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path, table = out / "structured.json", out / "structured.md"
    earlier = read_rows(path)
    config = {"n": args.n, "budgets": args.budgets, "methods": args.methods, "depths": list(DEPTHS)}
    if args.report:
        write(path, table, earlier, config)
        print(f"wrote {table}")
        return
    items = [case_item(label, case) for label, case in cases(args.n)]
    done = {(r["id"], r["method"], int(r["budget"])) for r in earlier}
    methods = build_methods(args.methods)
    started = time.monotonic()

    def save(rows: list[dict[str, Any]]) -> None:
        write(path, table, [*earlier, *rows], config)
        print(f"{len(rows)} new rows in {time.monotonic() - started:.0f} s", flush=True)

    rows = run_cases(items, methods, args.budgets, done, save)
    write(path, table, [*earlier, *rows], config)
    print(f"wrote {path} and {table}")


def build_methods(names: Sequence[str]) -> dict[str, MethodFn]:
    """The methods by name: GemFilter's default compressor and the library methods sharing its tokenizer."""
    from gemfilter_rag import GemFilterCompressor

    from .methods import Resources

    comp = GemFilterCompressor.from_pretrained()
    res = Resources(BenchConfig(name="structured"))
    res.base = comp  # budgets counted in the same tokenizer; the default model is loaded once
    out: dict[str, MethodFn] = {}
    for name in names:
        out[name] = gemfilter_method(comp) if name == "gemfilter" else library_method(name, res)
    return out


if __name__ == "__main__":
    main()
