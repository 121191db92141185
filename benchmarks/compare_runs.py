"""Paired comparisons of methods across benchmark runs of the same items.

    python -m benchmarks.compare_runs cache:gemfilter-cached cache:gemfilter-sentence onepass:gemfilter-sentence
    python -m benchmarks.compare_runs cache:gemfilter-cached cache:gemfilter-sentence --budget 256 --out cmp.md

Each argument is ``RUN:METHOD`` (a results name under ``--output-dir`` and a method of its rows), and may be
followed by ``=LABEL`` (``onepass:gemfilter-sentence=default 0.2``). The first is compared with every other,
per data set, on the items both hold at ``--budget`` (the runs must share the preset's items: same sizes,
seed and data): answer kept for each, the paired difference with a bootstrap 95% interval (one NQ question
at several positions resampled together) and the exact McNemar p-value (``benchmarks.stats.compare``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import RESULTS_DIR
from .merge import load_run
from .stats import compare, fmt_p

Row = dict[str, Any]


def parse_spec(spec: str) -> tuple[str, str, str]:
    """``RUN:METHOD[=LABEL]`` -> (run, method, label)."""
    body, _, label = spec.partition("=")
    run, sep, method = body.partition(":")
    if not sep or not run or not method:
        raise ValueError(f"{spec!r}: expected RUN:METHOD[=LABEL], e.g. cache:gemfilter-cached")
    return run, method, label or f"{run}:{method}"


def outcomes(rows: Sequence[Row], method: str, budget: int) -> dict[tuple[str, str], Row]:
    """(data set, item id) -> the row of ``method`` at ``budget`` (rows with an error or no recall left out)."""
    return {
        (r["dataset"], r["id"]): r
        for r in rows
        if r["method"] == method and r.get("budget") == budget and r.get("recall") is not None and not r.get("error")
    }


def comparisons(a: dict[tuple[str, str], Row], b: dict[tuple[str, str], Row]) -> dict[str, Any]:
    """Per data set, the paired comparison of ``a`` against ``b`` on their shared items."""
    out = {}
    for ds in sorted({k[0] for k in a} & {k[0] for k in b}):
        keys = [k for k in a if k[0] == ds and k in b]
        clusters = [a[k].get("cluster") or k[1] for k in keys]
        out[ds] = compare(
            [bool(a[k]["recall"]) for k in keys], [bool(b[k]["recall"]) for k in keys], "A", "B", clusters
        )
    return out


def table(label_a: str, results: dict[str, dict[str, Any]], budget: int) -> str:
    """Markdown: one row per (other method, data set)."""
    lines = [
        f"Paired comparisons at {budget} tokens: **{label_a}** (A) against each method (B), on the items both hold.",
        "",
        "| B | data set | n | A kept | B kept | A - B [95% CI] | A only / B only | McNemar |",
        "|---|---|---:|---:|---:|---|---:|---|",
    ]
    for label_b, per in results.items():
        for ds, c in per.items():
            lines.append(
                f"| {label_b} | {ds} | {c.n} | {100 * c.rate_a:.1f}% | {100 * c.rate_b:.1f}% | "
                f"{100 * c.diff:+.1f} [{100 * c.low:+.1f}, {100 * c.high:+.1f}] | "
                f"{c.only_a} / {c.only_b} | {fmt_p(c.p)} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> str:
    """Command line: print (and with ``--out`` write) the comparison table."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.compare_runs", description=__doc__.split("\n")[0])
    p.add_argument("specs", nargs="+", help="RUN:METHOD[=LABEL]; the first is compared with every other")
    p.add_argument("--budget", type=int, default=256, help="token budget (default 256)")
    p.add_argument("--output-dir", default=str(RESULTS_DIR), help="where the runs' results are")
    p.add_argument("--out", default=None, help="write the table to this Markdown file as well")
    args = p.parse_args(argv)
    if len(args.specs) < 2:
        p.error("specs: give at least two RUN:METHOD, the first compared with the others")
    try:
        specs = [parse_spec(s) for s in args.specs]
    except ValueError as err:
        p.error(str(err))
    out_dir = Path(args.output_dir)
    runs: dict[str, list[Row]] = {}
    for run, _, _ in specs:
        if run not in runs:
            runs[run] = load_run(out_dir, run)[1]
    picked = [(label, outcomes(runs[run], method, args.budget)) for run, method, label in specs]
    for label, rows in picked:
        if not rows:
            p.error(f"{label}: no rows at budget {args.budget}")
    label_a, a = picked[0]
    text = table(label_a, {label: comparisons(a, b) for label, b in picked[1:]}, args.budget)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
