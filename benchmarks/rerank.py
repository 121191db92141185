"""Rerank benchmark: GemFilter's per-document relevance (what ``/v1/rerank`` answers) against MiniLM ranking.

    python -m benchmarks.rerank --nq 100 --hotpot 100      # appends rows, skips those already done
    python -m benchmarks.rerank --report                   # only rewrite the table from the rows

Items are the standard benchmark's evaluation items (``benchmarks.datasets``): NQ questions from lines
1000-1999 with 20 passages (the gold one among the 19 other gold passages MiniLM ranks highest), the gold
passage at one seeded random position per question; HotpotQA records 3000-4999 (10 paragraphs, two of them
supporting, yes/no questions left out). Every method orders the same documents:

- ``minilm``: cosine similarity of all-MiniLM-L6-v2 (``gemfilter_rag.embeddings.minilm``);
- ``gemfilter-<measure>``: one filter pass of the shipped default (``GemFilterCompressor.from_pretrained()``)
  at the service's rerank budget, each ``gemfilter_rag.rerank`` measure read from the same result.

Recall@k: NQ, the gold passage is in the top k; HotpotQA ``any``, at least one supporting paragraph is in
the top k, and ``both``, both are. Rates carry Wilson 95% intervals; each GemFilter measure is compared
with MiniLM on the same items (exact McNemar test, paired bootstrap interval of the difference).
Rows: ``benchmarks/results/rerank.jsonl``; table: ``benchmarks/results/rerank.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from gemfilter_rag.rerank import MEASURES, ranking, relevance, rerank_budget

from .config import RESULTS_DIR, BenchConfig
from .datasets import Item, hotpot_items, lce_json, place_gold
from .stats import compare, fmt_diff, fmt_p, fmt_rate

KS = (1, 3, 5)
METHODS = ("minilm", *(f"gemfilter-{m}" for m in MEASURES))


def nq_rerank_items(n: int, seed: int, res: Any) -> list[Item]:
    """NQ evaluation items of the standard benchmark, the gold passage moved to a seeded random position."""
    from .datasets import build_nq

    cfg = BenchConfig(name="rerank", datasets=("nq",), sizes={"nq": n}, positions=(1,), seed=seed)
    res.cfg = cfg
    out = []
    for item in build_nq(cfg, res):
        record = item.meta["record"]
        position = random.Random(f"{seed}-nq-{record}").randint(1, cfg.n_docs)
        docs = place_gold(item.documents[0], item.documents[1:], position)
        meta = {"record": record, "position": position, "gold": [position - 1]}
        out.append(Item("nq", f"nq-{record}", item.question, docs, item.answers, meta))
    return out


def hotpot_rerank_items(n: int, seed: int) -> list[Item]:
    """HotpotQA evaluation items with the indices of their two supporting paragraphs in ``meta["gold"]``."""
    records = lce_json("hotpotqa")
    cfg = BenchConfig(name="rerank", datasets=("hotpotqa",), sizes={"hotpotqa": n}, seed=seed)
    items = hotpot_items(records, cfg)
    for item in items:
        record = records[item.meta["record"]]
        titles = {str(t) for t, _ in _literal(record["supporting_facts"])}
        item.meta["gold"] = [i for i, (t, _) in enumerate(_literal(record["context"])) if str(t) in titles]
    return items


def _literal(value: Any) -> list[Any]:
    import ast

    return list(ast.literal_eval(value)) if isinstance(value, str) else list(value)


def measure(item: Item, comp: Any, embedder: Any) -> dict[str, Any]:
    """One row: every method's order of the item's documents, and the time each took."""
    from gemfilter_rag.pipeline import build_prompts, compress_prompts

    t0 = time.perf_counter()
    sims = embedder.similarities(item.question, item.documents).tolist()
    minilm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    (prompt,) = build_prompts(comp.plan, [(item.documents, item.question)])
    budget = rerank_budget(prompt.context_tokens, comp.config.top_k)
    (result,) = compress_prompts(comp.plan, [prompt], [item.question], top_k=[budget])
    gemfilter_s = time.perf_counter() - t0
    orders = {"minilm": ranking(sims)}
    for m in MEASURES:
        orders[f"gemfilter-{m}"] = ranking(relevance(result, m))
    return {
        "dataset": item.dataset,
        "id": item.id,
        **item.meta,
        "n_docs": len(item.documents),
        "context_tokens": prompt.context_tokens,
        "budget": budget,
        "seconds": {"minilm": minilm_s, "gemfilter": gemfilter_s},
        "orders": orders,
    }


def hits(row: dict[str, Any], method: str, k: int, rule: str) -> bool:
    """Whether the top ``k`` of ``method`` hold the gold document(s): ``rule`` "any" or "both" (all)."""
    top = set(row["orders"][method][:k])
    gold = row["gold"]
    return any(g in top for g in gold) if rule == "any" else bool(gold) and all(g in top for g in gold)


def report(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of every data set, k and method, and the paired comparisons with MiniLM."""
    lines = ["# Rerank: GemFilter relevance vs MiniLM ranking", ""]
    lines.append(
        "Generated by `python -m benchmarks.rerank` from `rerank.jsonl`. Recall@k with Wilson 95% intervals; "
        "paired comparisons with MiniLM on the same items (exact McNemar p, bootstrap 95% interval of the "
        "difference)."
    )
    for dataset, rules in (("nq", ("any",)), ("hotpotqa", ("any", "both"))):
        mine = [r for r in rows if r["dataset"] == dataset]
        if not mine:
            continue
        secs = {m: sum(r["seconds"][m] for r in mine) / len(mine) for m in ("minilm", "gemfilter")}
        lines += ["", f"## {dataset} ({len(mine)} questions)", ""]
        lines.append(
            f"Mean seconds per question on this machine: MiniLM {secs['minilm']:.2f}, "
            f"GemFilter filter pass {secs['gemfilter']:.2f}; mean context {_mean(mine, 'context_tokens'):.0f} tokens."
        )
        for rule in rules:
            what = {"nq": "the gold passage", "any": "a supporting paragraph", "both": "both supporting paragraphs"}
            name = what["nq" if dataset == "nq" else rule]
            ks = [k for k in KS if not (rule == "both" and k == 1)]
            lines += ["", f"### {name} in the top k", ""]
            lines.append("| method | " + " | ".join(f"recall@{k}" for k in ks) + " |")
            lines.append("|---|" + "---|" * len(ks))
            for m in METHODS:
                cells = [fmt_rate(sum(hits(r, m, k, rule) for r in mine), len(mine)) for k in ks]
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
            lines += ["", "| GemFilter measure vs MiniLM | " + " | ".join(f"@{k}" for k in ks) + " |"]
            lines.append("|---|" + "---|" * len(ks))
            for m in METHODS[1:]:
                cells = []
                for k in ks:
                    a = [hits(r, m, k, rule) for r in mine]
                    b = [hits(r, "minilm", k, rule) for r in mine]
                    c = compare(a, b, m, "minilm")
                    cells.append(f"{fmt_diff(c)}, {fmt_p(c.p)} ({c.only_a} vs {c.only_b} discordant)")
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return sum(float(r[key]) for r in rows) / len(rows)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows written so far (a half-written last line, from a kill, is skipped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nq", type=int, default=100, help="NQ questions (each at one random gold position)")
    parser.add_argument("--hotpot", type=int, default=100, help="HotpotQA questions")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples and the gold positions")
    parser.add_argument("--output-dir", default=str(RESULTS_DIR), help="where rerank.jsonl and rerank.md go")
    parser.add_argument("--report", action="store_true", help="only rewrite rerank.md from the rows")
    args = parser.parse_args(argv)
    if args.nq < 0 or args.hotpot < 0:
        parser.error(f"--nq, --hotpot: {args.nq}, {args.hotpot} must be >= 0 questions.")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows_path, table_path = out / "rerank.jsonl", out / "rerank.md"
    if not args.report:
        run(args, rows_path, table_path)
    table_path.write_text(report(read_rows(rows_path)), encoding="utf-8")
    print(f"wrote {table_path}")


def run(args: argparse.Namespace, rows_path: Path, table_path: Path) -> None:
    from gemfilter_rag import GemFilterCompressor
    from gemfilter_rag.embeddings import minilm

    from .methods import Resources

    done = {(r["dataset"], r["id"]) for r in read_rows(rows_path) if r.get("seed", 0) == args.seed}
    items: list[Item] = []
    if args.nq:
        items += nq_rerank_items(args.nq, args.seed, Resources(BenchConfig(name="rerank")))
    if args.hotpot:
        items += hotpot_rerank_items(args.hotpot, args.seed)
    todo = [i for i in items if (i.dataset, i.id) not in done]
    print(f"{len(items)} items, {len(items) - len(todo)} done, {len(todo)} to run", flush=True)
    if not todo:
        return
    comp = GemFilterCompressor.from_pretrained()
    embedder = minilm()
    started = time.monotonic()
    for n, item in enumerate(todo, 1):
        row = {**measure(item, comp, embedder), "seed": args.seed}
        with rows_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if n % 10 == 0 or n == len(todo):
            table_path.write_text(report(read_rows(rows_path)), encoding="utf-8")
            print(f"{n}/{len(todo)} in {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
