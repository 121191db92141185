"""Long inputs (16K-32K tokens, beyond one filter pass): answer survival and time per question.

Development set, built from data the project has:

* HotpotQA: a question's own 10 paragraphs mixed among paragraphs of other records until the page
  holds ``length`` tokens, its two supporting paragraphs together at a chosen depth;
* SQuAD: questions over their whole article;
* needles (``gemfilter_rag.needles.NEEDLES``) at 5 depths of essay haystacks.

Each page is cut into ~2,000-character chunks of whole paragraphs, as a text splitter would, and
every method gets the same chunks and the same budget: plain RAG (all-MiniLM-L6-v2 ranks the chunks
and fills the budget), the shipped default (``GemFilterCompressor.from_pretrained()``), and the
options that this study compares. ``--split train`` draws from the training records (for tuning),
``--split eval`` (the default) from the evaluation records.

    python -m benchmarks.long_study --out benchmarks/results/long_study
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gemfilter_rag import GemFilterCompressor
from gemfilter_rag.answers import contains_answer
from gemfilter_rag.data import (
    HOTPOT_EVAL,
    HOTPOT_TRAIN,
    SQUAD_EVAL_ARTICLES,
    SQUAD_TRAIN_ARTICLES,
    essays_haystack,
    long_context_eval_json,
)
from gemfilter_rag.needles import NEEDLES, make_probe
from gemfilter_rag.training.examples import Example

from .datasets import read_jsonl
from .readout_study import fill_budget, mcnemar, wilson

CHUNK_CHARS = 2000


def chunk_page(paragraphs: Sequence[str], max_chars: int = CHUNK_CHARS) -> list[str]:
    """Pack whole paragraphs into chunks of at most ``max_chars`` (a longer paragraph is a chunk of its own)."""
    chunks: list[str] = []
    current = ""
    for p in paragraphs:
        if current and len(current) + 2 + len(p) > max_chars:
            chunks.append(current)
            current = p
        else:
            current = f"{current}\n\n{p}" if current else p
    if current:
        chunks.append(current)
    return chunks


def hotpot_paragraph(title: str, sentences: Sequence[str]) -> str:
    return f"{title}\n" + "".join(sentences).strip()


def hotpot_long(
    records: Sequence[dict[str, Any]], pool: Sequence[int], count: int, length: int, count_tokens: Any, seed: int
) -> list[Example]:
    """HotpotQA questions of ``pool`` whose supporting paragraphs sit at depths 0.1..0.9 of a ``length``-token page."""
    rng = random.Random(seed)
    picked = [i for i in rng.sample(list(pool), 4 * count) if str(records[i]["answer"]).lower() not in ("yes", "no")]
    out = []
    for k, i in enumerate(picked[:count]):
        r = records[i]
        support = {t for t, _ in r["supporting_facts"]}
        own = [(t, s) for t, s in r["context"]]
        gold = [hotpot_paragraph(t, s) for t, s in own if t in support]
        rest = [hotpot_paragraph(t, s) for t, s in own if t not in support]
        total = sum(count_tokens(p) for p in gold + rest)
        while total < length:
            j = rng.choice(pool)
            if j == i:
                continue
            t, s = rng.choice(records[j]["context"])
            p = hotpot_paragraph(t, s)
            rest.append(p)
            total += count_tokens(p)
        rng.shuffle(rest)
        depth = round(0.1 + 0.8 * (k % 5) / 4, 2)
        at = round(depth * len(rest))
        page = rest[:at] + gold + rest[at:]
        meta = {"length": length, "depth": depth, "tokens": total}
        out.append(
            Example(f"hotlong-{i}-{length}", "hotpotqa", r["question"], chunk_page(page), [r["answer"]], [], meta)
        )
    return out


def squad_long(data: dict[str, Any], articles: Sequence[int], per_article: int, seed: int) -> list[Example]:
    """SQuAD questions over their whole article."""
    rng = random.Random(seed)
    out = []
    for a in articles:
        art = data["data"][a]
        paragraphs = [p["context"] for p in art["paragraphs"]]
        chunks = chunk_page(paragraphs)
        qas = [(p, q) for p, par in enumerate(art["paragraphs"]) for q in par["qas"] if q["answers"]]
        for p, qa in rng.sample(qas, min(per_article, len(qas))):
            meta = {"article": art["title"], "depth": round((p + 0.5) / len(paragraphs), 2)}
            answers = sorted({x["text"] for x in qa["answers"]})
            out.append(Example(f"squadlong-{qa['id']}", "squad", qa["question"], chunks, answers, [], meta))
    return out


def needle_long(tokenizer: Any, lengths: Sequence[int], depths: Sequence[float], needles: int) -> list[Example]:
    """Needles at each depth of essay haystacks of each length, chunked."""
    haystack = essays_haystack()
    out = []
    for n, needle in enumerate(NEEDLES[:needles]):
        shift = (n * len(haystack)) // max(1, needles)
        rotated = haystack[shift:] + haystack[:shift]
        for length in lengths:
            for depth in depths:
                probe = make_probe(tokenizer, rotated[: 6 * length], needle, length, depth)
                chunks = chunk_page(probe.context.split("\n\n"))
                meta = {"length": length, "depth": depth}
                out.append(
                    Example(
                        f"needlelong-{n}-{length}-{depth}",
                        "needle",
                        needle.question,
                        chunks,
                        list(needle.answers),
                        [],
                        meta,
                    )
                )
    return out


def methods(comp: GemFilterCompressor, names: Sequence[str]) -> dict[str, GemFilterCompressor]:
    """The GemFilter variants compared (all share the default's weights)."""
    table = {
        "default": comp,
        "no-prefilter": comp.with_embeddings(None),  # attention-only readout, knockout over every window
        "single-layer-14": comp.with_embeddings(None).with_options(scorer="layer", filter_layer=14),  # before
    }
    return {n: table[n] for n in names}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=["train", "eval"], default="eval")
    ap.add_argument("--hotpot", type=int, default=20, help="HotpotQA questions per length")
    ap.add_argument("--lengths", type=int, nargs="+", default=[16000, 32000])
    ap.add_argument("--squad", type=int, default=2, help="SQuAD questions per article")
    ap.add_argument("--needles", type=int, default=3)
    ap.add_argument("--budgets", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--methods", nargs="+", default=["default", "no-prefilter"])
    ap.add_argument("--slow-methods", nargs="*", default=["single-layer-14"], help="run on --slow-items only")
    ap.add_argument("--slow-items", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/long_study")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    rows_path = out.with_suffix(".jsonl")
    rows = read_jsonl(rows_path) if rows_path.exists() else []
    if not args.report_only:
        torch.set_num_threads(2)
        comp = GemFilterCompressor.from_pretrained(device="cpu")
        assert comp.embedder is not None
        tok = comp.tokenizer

        def count(text: str) -> int:
            return len(tok(text, add_special_tokens=False)["input_ids"])

        hot = long_context_eval_json("hotpotqa")
        pool = HOTPOT_EVAL if args.split == "eval" else HOTPOT_TRAIN
        items: list[Example] = []
        for length in args.lengths:
            items += hotpot_long(hot, pool, args.hotpot, length, count, args.seed + length)
        squad = long_context_eval_json("squad")
        arts = SQUAD_EVAL_ARTICLES if args.split == "eval" else SQUAD_TRAIN_ARTICLES
        items += squad_long(squad, list(arts), args.squad, args.seed)
        items += needle_long(tok, args.lengths, [0.1, 0.3, 0.5, 0.7, 0.9], args.needles)
        variants = methods(comp, [*args.methods, *args.slow_methods])
        done = {(r["id"], r["method"], r["budget"]) for r in rows}
        slow_ids = {it.id for it in items[:: max(1, len(items) // max(1, args.slow_items))][: args.slow_items]}
        with open(rows_path, "a", encoding="utf-8") as f:
            for n, item in enumerate(items):
                tokens = count("\n\n".join(item.documents))
                base = {"dataset": item.source, "id": item.id, "context_tokens": tokens, **item.meta}
                new = []
                for budget in args.budgets:
                    if (item.id, "rag", budget) not in done:
                        t0 = time.perf_counter()
                        sims = comp.embedder.similarities(item.question, item.documents)
                        order = sorted(range(len(item.documents)), key=lambda d: (-float(sims[d]), d))
                        text = fill_budget(comp, [item.documents[d] for d in order], budget)
                        new.append(
                            {
                                **base,
                                "method": "rag",
                                "budget": budget,
                                "kept": contains_answer(text, item.answers),
                                "s": time.perf_counter() - t0,
                            }
                        )
                    for name, variant in variants.items():
                        if name in args.slow_methods and item.id not in slow_ids:
                            continue
                        if (item.id, name, budget) in done:
                            continue
                        t0 = time.perf_counter()
                        res = variant.compress(item.documents, item.question, top_k=budget)
                        new.append(
                            {
                                **base,
                                "method": name,
                                "budget": budget,
                                "kept": contains_answer(res.text, item.answers),
                                "s": time.perf_counter() - t0,
                            }
                        )
                for r in new:
                    f.write(json.dumps(r) + "\n")
                f.flush()
                rows += new
                summary = [(r["method"], r["budget"], r["kept"], round(r["s"], 1)) for r in new]
                print(f"{n + 1}/{len(items)} {item.id} {summary}", flush=True)
    table = report(rows)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


def report(rows: list[dict[str, Any]]) -> str:
    """Answer kept [95% CI] per data set, length bucket, budget and method; paired tests against plain RAG; time."""

    def bucket(r: dict[str, Any]) -> str:
        n = int(r["context_tokens"])
        return "<8K" if n < 8000 else "8-16K" if n < 16000 else "16-24K" if n < 24000 else "24-40K"

    cells: dict[tuple[str, str, int, str], dict[str, dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["dataset"], bucket(r), int(r["budget"]), r["method"]), {})[r["id"]] = r
    lines = [
        "| data set | tokens | budget | method | answer kept | 95% CI | n | vs plain RAG (paired) "
        "| s / question (median) |",
        "|---|---|---:|---|---:|---|---:|---|---:|",
    ]
    for key in sorted(cells, key=lambda k: (k[0], k[1], k[2], k[3] != "rag", k[3])):
        d, b, budget, m = key
        got = cells[key]
        k, n = sum(bool(r["kept"]) for r in got.values()), len(got)
        lo, hi = wilson(k, n)
        rag = cells.get((d, b, budget, "rag"), {})
        ids = sorted(set(got) & set(rag))
        test = ""
        if m != "rag" and ids:
            a = [bool(got[i]["kept"]) for i in ids]
            c = [bool(rag[i]["kept"]) for i in ids]
            diff = (sum(a) - sum(c)) / len(ids)
            p = mcnemar(a, c)
            test = f"{100 * diff:+.1f} pts, p={p:.2g}" + (": no significant difference" if p >= 0.05 else "")
        secs = sorted(float(r["s"]) for r in got.values())
        lines.append(
            f"| {d} | {b} | {budget} | {m} | {100 * k / n:.0f}% | [{100 * lo:.0f}, {100 * hi:.0f}] | {n} | {test} | "
            f"{secs[len(secs) // 2]:.1f} |"
        )
    return "\n".join(lines) + "\n\n" + by_depth(rows)


def by_depth(rows: list[dict[str, Any]]) -> str:
    """Answer kept per depth of the relevant text (all data sets and lengths together), per budget and method."""
    cells: dict[tuple[int, str], dict[float, list[bool]]] = {}
    for r in rows:
        if "depth" in r:
            cells.setdefault((int(r["budget"]), r["method"]), {}).setdefault(float(r["depth"]), []).append(
                bool(r["kept"])
            )
    depths = sorted({d for got in cells.values() for d in got})
    if not depths:
        return ""
    bins = [(lo, lo + 0.2) for lo in (0.0, 0.2, 0.4, 0.6, 0.8)]
    lines = [
        "Answer kept by depth of the relevant text (fraction of the page before it; every data set and length):",
        "",
        "| budget | method | " + " | ".join(f"{lo:.1f}-{hi:.1f}" for lo, hi in bins) + " |",
        "|---:|---|" + "---:|" * len(bins),
    ]
    for (budget, method), got in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1] != "rag", kv[0][1])):
        row = []
        for lo, hi in bins:
            kept = [k for d, ks in got.items() if lo <= d < hi or (hi == 1.0 and d == 1.0) for k in ks]
            row.append(f"{100 * sum(kept) / len(kept):.0f}% ({len(kept)})" if kept else "-")
        lines.append(f"| {budget} | {method} | " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
