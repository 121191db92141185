"""Tables and heatmap of ``benchmarks.needle`` rows, written into ``benchmarks/README.md``."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- needle:begin -->", "<!-- needle:end -->"
DEFAULT = ("gemfilter", "question_softmax_max7", "sentence")


def load(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(run headers, measurement rows) of a JSON-lines file."""
    runs, rows = [], []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        (rows if "method" in r else runs).append(r)
    return runs, rows


def label(key: tuple[str, str, str]) -> str:
    method, scoring, granularity = key
    if method == "plain_rag":
        return "plain RAG (MiniLM, whole chunks)"
    if method == "full":
        return "full context"
    name = {"question_softmax_max7": "question softmax", "paper": "paper (last token, raw q.k)"}.get(scoring, scoring)
    star = " **(default)**" if key == DEFAULT else ""
    return f"GemFilter {name}, {granularity}{star}"


def pct(values: Iterable[bool]) -> str:
    vals = list(values)
    return f"{100 * sum(vals) / len(vals):.0f}%" if vals else "–"


def group(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[(r["method"], r["scoring"], r["granularity"])].append(r)
    return out


def recall_table(rows: Sequence[dict[str, Any]], lengths: Sequence[int], budgets: Sequence[int]) -> list[str]:
    """Needle-sentence recall per method, length and budget."""
    head = "| method | " + " | ".join(f"{length // 1024}K @{b}" for length in lengths for b in budgets) + " |"
    lines = [head, "|---|" + "---:|" * (len(lengths) * len(budgets))]
    for key, rs in group(r for r in rows if r["method"] != "full").items():
        cells = [
            pct(r["needle_kept"] for r in rs if r["length"] == n and r["budget"] == b) for n in lengths for b in budgets
        ]
        lines.append(f"| {label(key)} | " + " | ".join(cells) + " |")
    return lines


def answer_table(rows: Sequence[dict[str, Any]], lengths: Sequence[int], budget: int) -> list[str]:
    """Answer string kept / model answer right, per method and length, at ``budget`` (full context: no budget)."""
    head = "| method | " + " | ".join(f"{n // 1024}K kept / right" for n in lengths) + " |"
    lines = [head, "|---|" + "---:|" * len(lengths)]
    for key, rs in group(r for r in rows if r["budget"] in (budget, None)).items():
        cells = []
        for n in lengths:
            mine = [r for r in rs if r["length"] == n and "correct" in r]
            cells.append(f"{pct(r['answer_kept'] for r in mine)} / {pct(r['correct'] for r in mine)}" if mine else "–")
        lines.append(f"| {label(key)} | " + " | ".join(cells) + " |")
    return lines


def heatmap(rows: Sequence[dict[str, Any]], budget: int, path: Path) -> Path:
    """PNG: needle recall by length (rows) and depth (columns), default vs the paper's scoring vs plain RAG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [DEFAULT, ("gemfilter", "paper", "token"), ("plain_rag", "minilm", "document")]
    lengths = sorted({r["length"] for r in rows})
    bins = 10  # depth deciles: runs with 10 and with 5 depths share columns

    def decile(depth: float) -> int:
        return min(bins - 1, int(depth * bins))

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 0.6 * len(lengths) + 2), sharey=True)
    for ax, key in zip(axes, panels, strict=True):
        hits = np.zeros((len(lengths), bins))
        counts = np.zeros((len(lengths), bins))
        for r in rows:
            if (r["method"], r["scoring"], r["granularity"]) == key and r["budget"] == budget:
                i, j = lengths.index(r["length"]), decile(r["depth"])
                hits[i, j] += r["needle_kept"]
                counts[i, j] += 1
        grid = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(bins), [f"{10 * j}-{10 * j + 10}%" for j in range(bins)], fontsize=6, rotation=45)
        ax.set_yticks(range(len(lengths)), [f"{n // 1024}K" for n in lengths])
        ax.set_xlabel("needle depth")
        ax.set_title(label(key).replace("**", ""), fontsize=9)
    axes[0].set_ylabel("context tokens")
    fig.colorbar(im, ax=list(axes), label=f"needle sentence kept at {budget} tokens")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_report(jsonl: Path, readme: Path = Path("benchmarks/README.md"), budget: int = 256) -> str:
    """Render the section, put it between the needle markers of ``readme``; return it."""
    runs, rows = load(jsonl)
    lengths = sorted({r["length"] for r in rows})
    budgets = sorted({r["budget"] for r in rows if r["budget"] is not None})
    png = heatmap(rows, budget, jsonl.with_name(jsonl.stem + "_heatmap.png"))
    probes = {(r["length"], r["depth"], r["needle"]) for r in rows}
    per_len = {n: len({p for p in probes if p[0] == n}) for n in lengths}
    run = runs[-1] if runs else {}
    seconds = sum({(r["length"], r["depth"], r["needle"], r["scoring"]): r["seconds"] for r in rows}.values())
    text = [
        BEGIN,
        f"Probes per length: {', '.join(f'{n // 1024}K: {k}' for n, k in per_len.items())} "
        f"({len({r['needle'] for r in rows})} needles; depths per length: "
        f"{', '.join(str(len({r['depth'] for r in rows if r['length'] == n})) for n in lengths)}). "
        f"Filter layer {run.get('filter_layer')}; "
        f"beyond the model's 8K positions, windows of {run.get('window')} tokens; "
        f"{run.get('cpu', '?')}, {run.get('threads', '?')} torch threads, torch {run.get('torch', '?')}; "
        f"scoring and selection time {seconds / 60:.0f} min. Rows: `{jsonl}`.",
        "",
        "**Needle-sentence recall** (the whole needle sentence is among the kept tokens):",
        "",
        *recall_table(rows, lengths, budgets),
        "",
        f"**Answers at {budget} tokens**: the answer string survives in the text / SmolLM2-135M-Instruct answers "
        "right from it (the full context has no budget; beyond the model's 8K positions it cannot be read):",
        "",
        *answer_table(rows, lengths, budget),
        "",
        f"![needle heatmap]({png.relative_to(readme.parent) if png.is_relative_to(readme.parent) else png})",
        END,
    ]
    section = "\n".join(text)
    body = readme.read_text()
    if BEGIN in body and END in body:
        body = body[: body.index(BEGIN)] + section + body[body.index(END) + len(END) :]
    else:
        body = body.rstrip("\n") + "\n\n## Needle benchmark (`python -m benchmarks.needle`)\n\n" + section + "\n"
    readme.write_text(body)
    return section
