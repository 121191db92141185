"""Summaries with intervals, paired comparisons, Markdown tables and plots of a benchmark run.

Every rate is printed as ``61.3% [56.0, 66.4] (n=300)``: the Wilson 95% interval for independent items,
or a bootstrap over questions where one question is several items (NQ pooled over gold positions).
Per data set slice (NQ: each gold position; needles: each context length) and budget, the shipped
default is compared in pairs with plain RAG and every other method on the items both finished: the
difference with a paired bootstrap interval, the discordant counts and the exact McNemar test
(``benchmarks.stats``). The section goes into ``benchmarks/README.md`` between the preset's markers.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import DEFAULT_METHOD
from .methods import METHODS
from .stats import bootstrap_ci, compare, fmt_ci, fmt_diff, fmt_rate

README = Path(__file__).resolve().parent / "README.md"
Row = dict[str, Any]


def markers(name: str) -> tuple[str, str]:
    """The begin/end markers of the generated section of preset ``name``."""
    return f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"


def label(m: str) -> str:
    """The method's display name."""
    return METHODS[m].label if m in METHODS else m


def slice_of(row: Row) -> str:
    """The slice a row's item belongs to: its data set, NQ per gold position, needles per length."""
    if row["dataset"] == "nq" and row.get("position") is not None:
        return f"nq, gold at {row['position']}"
    if row["dataset"] == "needle" and row.get("length") is not None:
        return f"needle {row['length'] // 1024}K"
    return str(row["dataset"])


def budget_key(b: int | None) -> str:
    return "all" if b is None else str(b)


def rate(rows: Sequence[Row], key: str, seed: int = 0) -> dict[str, Any]:
    """k, n, the rate and its 95% interval of boolean ``key`` over rows that have it.

    Items of one cluster (``cluster``: one NQ question at several positions) are resampled together
    (bootstrap); independent items get the Wilson interval.
    """
    got = [r for r in rows if r.get(key) is not None and not r.get("error")]
    k, n = sum(bool(r[key]) for r in got), len(got)
    clusters = [r.get("cluster") or r["id"] for r in got]
    if n and len(set(clusters)) < n:
        lo, hi = bootstrap_ci([float(bool(r[key])) for r in got], clusters, seed=seed)
        return {"k": k, "n": n, "rate": k / n, "low": lo, "high": hi, "interval": "cluster bootstrap"}
    from .stats import wilson

    if not n:  # nothing measured (e.g. no answers at this budget): None, not NaN, in the JSON
        return {"k": 0, "n": 0, "rate": None, "low": None, "high": None, "interval": "wilson"}
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n, "low": lo, "high": hi, "interval": "wilson"}


def fmt(r: dict[str, Any]) -> str:
    """A rate dict as ``61.3% [56.0, 66.4] (n=300)``."""
    if r["interval"] == "wilson":
        return fmt_rate(r["k"], r["n"])
    return fmt_ci(r["rate"], r["low"], r["high"], r["n"])


def group(rows: Sequence[Row], *keys: Callable[[Row], Any]) -> dict[tuple[Any, ...], list[Row]]:
    """Rows grouped by the values of ``keys`` (in first-seen order)."""
    out: dict[tuple[Any, ...], list[Row]] = {}
    for r in rows:
        out.setdefault(tuple(k(r) for k in keys), []).append(r)
    return out


def cost(rows: Sequence[Row]) -> dict[str, Any]:
    """Compression seconds per item (median, mean) and tokens sent (mean) over rows without error."""
    ok = [r for r in rows if not r.get("error")]
    secs = [float(r["latency_s"]) for r in ok]
    toks = [float(r["tokens_sent"]) for r in ok]
    return {
        "n": len(ok),
        "median_s": statistics.median(secs) if secs else None,
        "mean_s": statistics.fmean(secs) if secs else None,
        "tokens_sent": statistics.fmean(toks) if toks else None,
        "original_tokens": statistics.fmean(float(r["original_tokens"]) for r in ok) if ok else None,
    }


def pairs(
    rows: Sequence[Row], method_a: str, method_b: str, budget: int | None, key: str, budget_b: int | None = None
) -> tuple[list[bool], list[bool], list[str]]:
    """Outcomes ``key`` of two methods on the items both have (A at ``budget``, B at ``budget_b``)."""
    bb = budget if budget_b is None else budget_b
    a = {r["id"]: r for r in rows if r["method"] == method_a and r["budget"] == budget and r.get(key) is not None}
    b = {r["id"]: r for r in rows if r["method"] == method_b and r["budget"] == bb and r.get(key) is not None}
    ids = [i for i in a if i in b and not a[i].get("error") and not b[i].get("error")]
    clusters = [a[i].get("cluster") or i for i in ids]
    return [bool(a[i][key]) for i in ids], [bool(b[i][key]) for i in ids], clusters


def summaries(rows: Sequence[Row], readers: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """Rates with intervals, costs and paired comparisons, per data set / slice, method and budget."""
    out: dict[str, Any] = {"rates": [], "comparisons": [], "costs": []}
    keys = ["recall", *(f"correct_{r}" for r in readers)]
    for scope, pick in (("dataset", lambda r: r["dataset"]), ("slice", slice_of)):
        for (where, m, b), rs in group(rows, pick, lambda r: r["method"], lambda r: r["budget"]).items():
            if scope == "slice" and where == rs[0]["dataset"]:
                continue  # the slice is the whole data set
            entry = {"scope": scope, "where": where, "method": m, "budget": budget_key(b)}
            entry.update({key: rate(rs, key, seed) for key in keys})
            entry["errors"] = sum(1 for r in rs if r.get("error"))
            out["rates"].append(entry)
    for (ds, m, b), rs in group(rows, lambda r: r["dataset"], lambda r: r["method"], lambda r: r["budget"]).items():
        out["costs"].append({"dataset": ds, "method": m, "budget": budget_key(b), **cost(rs)})
    for (where,), rs in group(rows, slice_of).items():
        methods = list(dict.fromkeys(r["method"] for r in rs))
        budgets = sorted({r["budget"] for r in rs if r["budget"] is not None})
        if DEFAULT_METHOD not in methods:
            continue
        for key in keys:
            for b in budgets:
                for other in methods:
                    if other == DEFAULT_METHOD:
                        continue
                    bb = None if other == "full" else b
                    a, o, cl = pairs(rs, DEFAULT_METHOD, other, b, key, bb)
                    if not a or (key == "recall" and other == "full"):
                        continue
                    c = compare(a, o, label(DEFAULT_METHOD), label(other), cl, seed=seed)
                    out["comparisons"].append(
                        {"where": where, "metric": key, "budget": b, "other": other, **c.__dict__}
                    )
    return out


# ---------------------------------------------------------------- Markdown


def _find(summary: dict[str, Any], scope: str, where: str, method: str, budget: str) -> dict[str, Any] | None:
    for e in summary["rates"]:
        if (e["scope"], e["where"], e["method"], e["budget"]) == (scope, where, method, budget):
            return e
    return None


def rate_table(summary: dict[str, Any], scope: str, where: str, key: str, budgets: Sequence[str]) -> list[str]:
    """Methods as rows, budgets as columns, each cell ``rate [CI] (n)`` of ``key``."""
    methods = list(dict.fromkeys(e["method"] for e in summary["rates"] if e["where"] == where))
    lines = ["| method | " + " | ".join(f"@{b}" if b != "all" else "no budget" for b in budgets) + " |"]
    lines.append("|---|" + "---:|" * len(budgets))
    for m in methods:
        cells = []
        for b in budgets:
            e = _find(summary, scope, where, m, b)
            cells.append(fmt(e[key]) if e and e[key]["n"] else "–")
        if any(c != "–" for c in cells):
            name = f"**{label(m)}**" if m == DEFAULT_METHOD else label(m)  # the shipped default in bold
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def comparison_table(summary: dict[str, Any], key: str, wheres: Sequence[str] | None = None) -> list[str]:
    """The default against each other method: rates, difference [CI], discordant pairs, McNemar verdict."""
    rows = [c for c in summary["comparisons"] if c["metric"] == key and (wheres is None or c["where"] in wheres)]
    if not rows:
        return []
    lines = [
        f"| slice | budget | {label(DEFAULT_METHOD)} vs | n | default | other | difference [95% CI] | "
        "only default / only other | verdict |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for c in rows:
        lines.append(
            f"| {c['where']} | {c['budget']} | {label(c['other'])} | {c['n']} | {100 * c['rate_a']:.1f}% | "
            f"{100 * c['rate_b']:.1f}% | {fmt_diff(_Cmp(c))} | {c['only_a']} / {c['only_b']} | {c['verdict']} |"
        )
    return lines


class _Cmp:
    """A comparison dict with attribute access, for ``fmt_diff``."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.diff, self.low, self.high = d["diff"], d["low"], d["high"]


def cost_table(summary: dict[str, Any], budgets: Sequence[str]) -> list[str]:
    """Per data set and method: compression seconds per item (median / mean) and tokens sent per budget."""
    lines = [
        "| data set | method | context tokens | s/item median | s/item mean | "
        + " | ".join(f"tokens sent @{b}" for b in budgets)
        + " |",
        "|---|---|---:|---:|---:|" + "---:|" * len(budgets),
    ]
    for (ds, m), cs in group(summary["costs"], lambda c: c["dataset"], lambda c: c["method"]).items():
        if m == "full":
            continue
        all_s = [c for c in cs if c["n"]]
        if not all_s:
            continue
        med = statistics.median(c["median_s"] for c in all_s)
        mean = statistics.fmean(c["mean_s"] for c in all_s)
        ctx = statistics.fmean(c["original_tokens"] for c in all_s)
        toks = []
        for b in budgets:
            c = next((c for c in cs if c["budget"] == b and c["n"]), None)
            toks.append(f"{c['tokens_sent']:.0f}" if c else "–")
        lines.append(f"| {ds} | {label(m)} | {ctx:.0f} | {med:.2f} | {mean:.2f} | " + " | ".join(toks) + " |")
    return lines


def render(results: dict[str, Any]) -> str:
    """The generated Markdown section for one run."""
    cfg, mach = results["config"], results["machine"]
    v = mach["versions"]
    t = results["timings_s"]
    summary = results["summary"]
    readers = results.get("readers") or {}
    budgets = [str(b) for b in cfg["budgets"]]
    sizes = ", ".join(f"{d} {x['items']} items" for d, x in results["datasets"].items())
    out = [
        f"### Preset `{cfg['name']}`",
        "",
        f"Run of commit `{results.get('commit')}`"
        + (f" (reported by `{results['reported_by']}`)" if results.get("reported_by") else "")
        + f" on {mach['cpu']}, {mach['cores']} cores, torch threads "
        f"{mach['torch_threads']}, load average at start {_load(mach)}"
        + (f", at end {_load(results['machine_end'])}" if results.get("machine_end") else "")
        + f"; Python {mach['python']}, torch {v.get('torch')}, transformers {v.get('transformers')}, "
        f"sentence-transformers {v.get('sentence-transformers')}, langchain-classic {v.get('langchain-classic')}, "
        f"llama-index-core {v.get('llama-index-core')}, bm25s {v.get('bm25s')}. Filter model layer "
        f"{results['filter_layer']}. Seed {cfg['seed']}; {sizes} (NQ: each question at gold positions "
        f"{tuple(cfg['positions'])}). Readers: "
        + (", ".join(readers.values()) or "none")
        + f", greedy, {cfg['max_new_tokens']} new tokens, on {cfg['answer_items'] or 'all'} items per data set "
        f"at budgets {tuple(cfg['answer_budgets'])} and the full context up to {cfg['answer_full_max_tokens']} "
        f"tokens. LongLLMLingua on {cfg['lingua_items'] or 'all'} items per data set at "
        f"{tuple(cfg['lingua_budgets'] or cfg['budgets'])}. Total run time {t['total'] / 60:.1f} min ("
        + ", ".join(f"{k} {s:.0f} s" for k, s in t.items() if k != "total")
        + ")"
        + (
            f"; {results['resumed_rows']} rows resumed from an earlier, interrupted run"
            if results.get("resumed_rows")
            else ""
        )
        + ".",
        "",
    ]
    for merged in results.get("merges") or []:
        what = (
            f"The {', '.join(merged['datasets_added'])} rows come from a later run of this preset"
            if merged.get("datasets_added")
            else f"Rows of {', '.join(label(m) for m in merged['methods'])} come from a second run of the same items"
        )
        out += [
            f"{what} on commit `{merged['commit']}` (`python -m benchmarks.merge`; its run time "
            f"{merged['timings_s']['total'] / 60:.1f} min)"
            + ("." if merged.get("datasets_added") else ", which replaced this run's rows of that method."),
            "",
        ]
    gf = results.get("gemfilter_calls") or {}
    if gf.get("fallback"):
        out += [f"GemFilter ran one `compress` call per budget (shared passes switched off: {gf['fallback']}).", ""]
    lingua = results.get("lingua") or {}
    if lingua:
        out += ["LongLLMLingua side environment: " + ", ".join(f"{k} {v}" for k, v in lingua.items()) + ".", ""]
    for ds in results["datasets"]:
        out += [f"#### {ds}: answer recall", "", *rate_table(summary, "dataset", ds, "recall", ["all", *budgets]), ""]
        slices = list(dict.fromkeys(e["where"] for e in summary["rates"] if e["scope"] == "slice" and _ds(e) == ds))
        for s in slices:
            out += [f"{s}:", "", *rate_table(summary, "slice", s, "recall", budgets), ""]
        wheres = slices or [ds]
        cmp = comparison_table(summary, "recall", wheres)
        if cmp:
            out += [f"Paired comparisons of answer recall ({ds}):", "", *cmp, ""]
        for rd, rl in readers.items():
            key = f"correct_{rd}"
            acc = rate_table(summary, "dataset", ds, key, ["all", *(str(b) for b in cfg["answer_budgets"])])
            if len(acc) > 2:
                out += [f"Accuracy, reader {rl} ({ds}):", "", *acc, ""]
                cmp = comparison_table(summary, key, wheres)
                out += [f"Paired comparisons of accuracy, reader {rl} ({ds}):", "", *cmp, ""] if cmp else []
    out += ["#### Cost per answer", "", *cost_table(summary, budgets), ""]
    rc = results.get("reader_cost") or {}
    if any(x["calls"] for x in rc.values()):
        out += [
            "Reader seconds per answer (this run, cache hits excluded): "
            + ", ".join(
                f"{readers.get(k, k)} {x['seconds'] / x['calls']:.2f} s ({x['calls']} answers)"
                for k, x in rc.items()
                if x["calls"]
            )
            + ".",
            "",
        ]
    for p in results.get("plots", []):
        out.append(f"![{Path(p).stem}](results/{Path(p).name})")
    return "\n".join(out).rstrip() + "\n"


def _ds(e: dict[str, Any]) -> str:
    return str(e["where"]).split(",")[0].split(" ")[0]


def _load(mach: dict[str, Any]) -> str:
    load = mach.get("load_avg_1_5_15")
    return "?" if not load else "/".join(f"{x:.1f}" for x in load)


def write_readme(results: dict[str, Any], path: Path = README) -> Path:
    """Replace the section between this preset's markers in ``path`` (appended when absent)."""
    begin, end = markers(results["config"]["name"])
    section = f"{begin}\n{render(results)}{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- plots


def write_plots(results: dict[str, Any], rows: Sequence[Row], out_dir: Path) -> list[str]:
    """``recall_vs_tokens_<dataset>.png`` per data set: answer recall (95% CI bars) against tokens sent,
    one line per method through its budgets; returns the PNG paths (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional
        return []
    name = results["config"]["name"]
    summary = results["summary"]
    paths = []
    for ds in results["datasets"]:
        fig, ax = plt.subplots(figsize=(7, 4.8))
        for m in dict.fromkeys(e["method"] for e in summary["rates"] if e["where"] == ds):
            pts = []
            for e in summary["rates"]:
                if e["scope"] == "dataset" and e["where"] == ds and e["method"] == m and e["budget"] != "all":
                    c = next(
                        (
                            c
                            for c in summary["costs"]
                            if (c["dataset"], c["method"], c["budget"]) == (ds, m, e["budget"])
                        ),
                        None,
                    )
                    r = e["recall"]
                    if c and c["tokens_sent"] is not None and r["n"]:
                        pts.append((c["tokens_sent"], 100 * r["rate"], 100 * r["low"], 100 * r["high"]))
            if not pts:
                continue
            pts.sort()
            x = [p[0] for p in pts]
            y = [p[1] for p in pts]
            # a bootstrap interval over questions need not contain the pooled rate: clip at the point
            err = [[max(0.0, p[1] - p[2]) for p in pts], [max(0.0, p[3] - p[1]) for p in pts]]
            style = {"linewidth": 2.5} if m == DEFAULT_METHOD else {"linewidth": 1.2}
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label(m), **style)
        ax.set_xlabel("tokens sent (mean; budgets 128 / 256 / 512)")
        ax.set_ylabel("answer recall (%), 95% CI")
        ax.set_ylim(0, 102)
        ax.set_title(f"{ds}: answer recall against tokens sent (preset {name})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        p = (
            out_dir / f"recall_vs_tokens_{ds}.png"
            if name == "standard"
            else out_dir / f"{name}_recall_vs_tokens_{ds}.png"
        )
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(str(p))
    return paths


def write_results(results: dict[str, Any], rows: Sequence[Row], readers: Sequence[str], readme: bool = True) -> None:
    """Summarise ``rows`` into ``results`` and write the rows, plots, JSON and (``readme``) README section of
    the run named by ``results["config"]["name"]`` into its output directory."""
    import gzip
    import json

    name = results["config"]["name"]
    out_dir = Path(results["config"]["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    results["summary"] = summaries(rows, readers, results["config"]["seed"])
    results["rows_file"] = f"{name}.rows.jsonl.gz"
    with gzip.open(out_dir / results["rows_file"], "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, default=str) + "\n")
    results["plots"] = write_plots(results, rows, out_dir)
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=1, default=str))
    if readme:
        write_readme(results)
