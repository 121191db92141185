"""Markdown tables (into ``benchmarks/README.md`` between markers) and PNG plots from a results dict."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .methods import METHODS

README = Path(__file__).resolve().parent / "README.md"


def markers(name: str) -> tuple[str, str]:
    """The begin/end markers of the generated section of preset ``name``."""
    return f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _num(x: float | None, fmt: str = "{:.0f}") -> str:
    return "–" if x is None else fmt.format(x)


def _label(m: str) -> str:
    return METHODS[m].label if m in METHODS else m


def dataset_table(summary: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """One row per (method, budget): recall, accuracy, tokens, ratio, latency, errors."""
    lines = [
        "| method | budget | n | answer recall | accuracy | tokens sent | ratio | latency (s) | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    budgets = sorted({b for per in summary.values() for b in per if b != "all"}, key=int)
    for b in ["all", *budgets]:
        for m, per in summary.items():
            s = per.get(b)
            if s is None:
                continue
            lines.append(
                f"| {_label(m)} | {b} | {s['n']} | {_pct(s['recall'])} | {_pct(s['accuracy'])} | "
                f"{_num(s['tokens_sent'])} | {_num(s['ratio'], '{:.1f}x')} | "
                f"{_num(s['latency_s'], '{:.2f}')} | {s['errors']} |"
            )
    return lines


def position_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """NQ answer recall by gold position, per method and budget."""
    nq = [r for r in rows if r["dataset"] == "nq" and not r["error"]]
    positions = sorted({r["position"] for r in nq})
    if not positions:
        return []
    lines = [
        "| method | budget | " + " | ".join(f"gold at {p}" for p in positions) + " |",
        "|---|---:|" + "---:|" * len(positions),
    ]
    for m in dict.fromkeys(r["method"] for r in nq):
        for b in dict.fromkeys(r["budget"] for r in nq if r["method"] == m):
            cells = []
            for p in positions:
                got = [r["recall"] for r in nq if r["method"] == m and r["budget"] == b and r["position"] == p]
                cells.append(_pct(sum(got) / len(got)) if got else "–")
            lines.append(f"| {_label(m)} | {'all' if b is None else b} | " + " | ".join(cells) + " |")
    return lines


def needle_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Needle kept / answer right per method and context length."""
    nd = [r for r in rows if r["dataset"] == "needle" and not r["error"]]
    lengths = sorted({r["length"] for r in nd})
    if not lengths:
        return []
    lines = [
        "| method | budget | " + " | ".join(f"{n} tokens: kept / right" for n in lengths) + " |",
        "|---|---:|" + "---:|" * len(lengths),
    ]
    for m in dict.fromkeys(r["method"] for r in nd):
        b = next(r["budget"] for r in nd if r["method"] == m)
        cells = []
        for n in lengths:
            got = [r for r in nd if r["method"] == m and r["length"] == n]
            kept = sum(r["recall"] for r in got) / len(got)
            right = [r["correct"] for r in got if r.get("correct") is not None]
            cells.append(f"{_pct(kept)} / {_pct(sum(right) / len(right)) if right else '–'}")
        lines.append(f"| {_label(m)} | {b} | " + " | ".join(cells) + " |")
    return lines


def render(results: dict[str, Any]) -> str:
    """The generated Markdown section for one run."""
    cfg, mach = results["config"], results["machine"]
    v = mach["versions"]
    t = results["timings_s"]
    out = [
        f"### Preset `{cfg['name']}`",
        "",
        f"Machine: {mach['cpu']}, {mach['cores']} cores, torch threads {mach['torch_threads']}, "
        f"load average at start {mach.get('load_avg_1_5_15')}; "
        f"Python {mach['python']}, torch {v.get('torch')}, transformers {v.get('transformers')}, "
        f"sentence-transformers {v.get('sentence-transformers')}, langchain-classic {v.get('langchain-classic')}. "
        f"Filter layer {results['filter_layer']}. Seed {cfg['seed']}, n={cfg['n']} per data set"
        f" (NQ: each question at each gold position {tuple(cfg['positions'])}). Total run time "
        f"{t['total'] / 60:.1f} min (" + ", ".join(f"{k} {s:.0f} s" for k, s in t.items() if k != "total") + ").",
        "",
    ]
    lingua = results.get("lingua") or {}
    if lingua:
        out += ["LongLLMLingua side environment: " + ", ".join(f"{k} {v}" for k, v in lingua.items()) + ".", ""]
    for name, d in results["datasets"].items():
        out += [f"#### {name} ({d['items']} items)", "", *dataset_table(d["summary"]), ""]
        if name == "nq":
            pos = position_table(results["rows"])
            out += ["NQ answer recall by gold position:", "", *pos, ""] if pos else []
        if name == "needle":
            nt = needle_table(results["rows"])
            out += ["Needle kept in the compressed context / answer right, by context length:", "", *nt, ""]
    tp = results.get("throughput") or {}
    if tp.get("pairs"):
        out += [
            "#### Compression throughput (same items, same model)",
            "",
            "| method | context tokens | seconds | tokens/s |",
            "|---|---:|---:|---:|",
        ]
        for m, v2 in tp.items():
            if m != "pairs":
                out.append(f"| {_label(m)} | {v2['tokens']} | {v2['seconds']:.1f} | {_num(v2['tokens_per_s'])} |")
        a, b = tp.get("gemfilter-sentence", {}), tp.get("longllmlingua", {})
        if a.get("tokens_per_s") and b.get("tokens_per_s"):
            out += [
                "",
                f"GemFilter compresses {a['tokens_per_s'] / b['tokens_per_s']:.1f}x faster than "
                f"LongLLMLingua on these {tp['pairs']} (item, budget) pairs.",
            ]
        out.append("")
    for p in results.get("plots", []):
        out.append(f"![{Path(p).stem}](results/{Path(p).name})")
    return "\n".join(out).rstrip() + "\n"


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


def write_plots(results: dict[str, Any], out_dir: Path) -> list[str]:
    """Bar charts of recall and accuracy per data set, and the needle heatmap; returns the PNG paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional
        return []
    name = results["config"]["name"]
    paths = []
    sets = [(k, d) for k, d in results["datasets"].items()]
    for metric, title in (("recall", "answer recall in compressed context"), ("accuracy", "answer accuracy")):
        fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4.5), squeeze=False)
        for ax, (ds, d) in zip(axes[0], sets, strict=True):
            labels, vals = [], []
            for m, per in d["summary"].items():
                for b, s in per.items():
                    if s.get(metric) is not None:
                        labels.append(f"{_label(m)} @{b}")
                        vals.append(100 * s[metric])
            ax.barh(range(len(vals)), vals, color="tab:blue")
            ax.set_yticks(range(len(vals)), labels, fontsize=7)
            ax.invert_yaxis()
            ax.set_xlim(0, 100)
            ax.set_title(f"{ds}: {metric} (%)")
        fig.suptitle(f"{title} — preset {name}")
        fig.tight_layout()
        p = out_dir / f"{name}_{metric}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(str(p))
    nd = [r for r in results["rows"] if r["dataset"] == "needle" and not r["error"]]
    methods = list(dict.fromkeys(r["method"] for r in nd))
    if nd:
        lengths = sorted({r["length"] for r in nd})
        depths = sorted({r["depth"] for r in nd})
        fig, axes = plt.subplots(1, len(methods), figsize=(4.5 * len(methods), 4), squeeze=False)
        for ax, m in zip(axes[0], methods, strict=True):
            grid = [[0.0] * len(lengths) for _ in depths]
            for i, dpt in enumerate(depths):
                for j, n in enumerate(lengths):
                    got = [r["recall"] for r in nd if r["method"] == m and r["depth"] == dpt and r["length"] == n]
                    grid[i][j] = sum(got) / len(got) if got else float("nan")
            im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
            ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
            ax.set_yticks(range(len(depths)), [f"{100 * d:.0f}%" for d in depths])
            ax.set_xlabel("context length (tokens)")
            ax.set_ylabel("needle depth")
            ax.set_title(f"{_label(m)}: needle kept", fontsize=9)
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
        p = out_dir / f"{name}_needle.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(str(p))
    return paths
