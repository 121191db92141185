"""Does the learned readout beat plain RAG at the same budget? Answer survival on questions training never saw.

Items (evaluation splits of ``gemfilter_rag.data``, never used for training):

* HotpotQA distractor, records 3000-4999 (non yes/no), the question's 10 paragraphs;
* NaturalQuestions, questions from lines 1000-1999, the gold passage at position 1, 10 and 20 among the
  19 passages most similar to the question (all-MiniLM-L6-v2 over the 2,000 gold passages);
* needles (``gemfilter_rag.needles.NEEDLES``) at 10 depths of 2K, 4K and 8K-token essay haystacks, cut
  into paragraph chunks.

Every method sends at most ``--budget`` tokens. One filter pass per item (up to the deeper of the
readout's layer and the old single-layer default's) serves every GemFilter variant through the
library's own pipeline (the readout ``Scorer`` -> ``select`` -> ``assemble``), so each variant is what
``compress`` returns. Metric: an accepted answer survives in the kept text (SQuAD normalisation).

    python -m benchmarks.readout_study --profile readout/smollm2-135m-instruct.json \
        --out benchmarks/results/readout_study
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gemfilter_rag import GemFilterCompressor
from gemfilter_rag.answers import contains_answer
from gemfilter_rag.assemble import assemble
from gemfilter_rag.capture import PassRecord
from gemfilter_rag.data import HOTPOT_EVAL, NQ_EVAL, essays_haystack, load_nq, long_context_eval_json
from gemfilter_rag.embeddings import minilm
from gemfilter_rag.evidence import Evidence
from gemfilter_rag.needles import NEEDLES, make_probes
from gemfilter_rag.pipeline import build_prompts, select, whole_target
from gemfilter_rag.scorers import Scores
from gemfilter_rag.scoring import query_positions
from gemfilter_rag.selection import select_ranked, unit_scores
from gemfilter_rag.training import nq_similarities
from gemfilter_rag.training.examples import (
    Example,
    chunk_paragraphs,
    hotpot_examples,
    nq_examples,
)
from gemfilter_rag.units import prompt_units

from .datasets import read_jsonl

OLD_LAYER = 14  # the single-layer default shipped before the readout (profile of 2026-11-22)
READOUT_VARIANTS = ("attention", "attention+retriever", "attention+embedding", "attention+embedding+retriever")


def eval_items(
    tokenizer: Any, hotpot: int, nq: int, needle_lengths: Sequence[int], depths: int, seed: int
) -> list[Example]:
    """The evaluation items, drawn with ``seed`` from the evaluation splits."""
    rng = random.Random(seed)
    items: list[Example] = []
    if hotpot:
        records = long_context_eval_json("hotpotqa")
        picked = sorted(rng.sample(list(HOTPOT_EVAL), min(len(HOTPOT_EVAL), 2 * hotpot)))
        items += hotpot_examples(records, picked)[:hotpot]
    if nq:
        records = load_nq()
        sims = nq_similarities(records, minilm())
        picked = sorted(rng.sample(list(NQ_EVAL), min(len(NQ_EVAL), 2 * nq)))
        found = nq_examples(records, picked, lambda i: sims[i], positions=(1, 10, 20))
        items += found[: 3 * nq]
    if needle_lengths:
        grid = [round((i + 0.5) / depths, 3) for i in range(depths)]
        for k, probe in enumerate(make_probes(tokenizer, essays_haystack(), needle_lengths, grid, NEEDLES[:5])):
            chunks, positives = chunk_paragraphs(probe.context, probe.needle_span)
            meta = {"length": probe.length, "depth": probe.depth}
            items.append(Example(f"needle-{k}", "needle", probe.question, chunks, list(probe.answers), positives, meta))
    return items


def fill_budget(comp: GemFilterCompressor, ranked: Sequence[str], budget: int, separator: str = "\n\n") -> str:
    """Plain RAG: whole documents best first until ``budget`` tokens, the last one cut on a token boundary."""
    out: list[str] = []
    used = 0
    sep = len(comp.tokenizer(separator, add_special_tokens=False)["input_ids"])
    for doc in ranked:
        enc = comp.tokenizer(doc, add_special_tokens=False, return_offsets_mapping=True)
        n = len(enc["input_ids"]) + (sep if out else 0)
        if used + n <= budget:
            out.append(doc)
            used += n
            continue
        rest = budget - used - (sep if out else 0)
        if rest > 0:
            out.append(doc[: enc["offset_mapping"][rest - 1][1]])
        break
    return separator.join(out)


def study_pass(
    readout: GemFilterCompressor, old: GemFilterCompressor, prompt: Any, rows: torch.Tensor
) -> tuple[PassRecord, torch.Tensor]:
    """One pass through the readout's layer that also scores the old single-layer default at its layer.

    Returns the readout's ``PassRecord`` and the old default's token scores (T,).
    """
    from gemfilter_rag import capture
    from gemfilter_rag.scoring import row_attention, token_scores

    ids = prompt.input_ids[None]  # (1, T)
    stack: list[torch.Tensor] = []
    old_scores: list[torch.Tensor] = []

    def observe(layer: int, cap: Any) -> None:
        q = cap.query[:, :, rows]  # (1, H, Q, D)
        stack.append(row_attention(q, cap.key, rows, cap.scaling, cap.sliding_window)[0].float())
        if layer == old.filter_layer:
            old_scores.append(token_scores(q, cap.key, rows, old.config.scoring, cap.scaling, cap.sliding_window)[0])

    with torch.inference_mode():
        cap = capture.capture_layer(readout.model, ids, readout.filter_layer, observe=observe)
    q = cap.query[:, :, rows]
    stack.append(row_attention(q, cap.key, rows, cap.scaling, cap.sliding_window)[0].float())
    if old.filter_layer == readout.filter_layer:
        old_scores.append(token_scores(q, cap.key, rows, old.config.scoring, cap.scaling, cap.sliding_window)[0])
    item = PassRecord(q, cap.key, rows, cap.scaling, cap.sliding_window, torch.stack(stack))
    return item, old_scores[0].float()


def run_item(
    old: GemFilterCompressor,
    readout: GemFilterCompressor,
    item: Example,
    budget: int,
) -> list[dict[str, Any]]:
    """Every method's outcome on one item."""
    emb = readout.embedder
    assert emb is not None and readout.readouts is not None
    rows: list[dict[str, Any]] = []
    base = {"dataset": item.source, "id": item.id, **{k: v for k, v in item.meta.items() if k != "similarities"}}

    def row(method: str, text: str, seconds: float, **kw: Any) -> None:
        rows.append({**base, "method": method, "kept": contains_answer(text, item.answers), "s": seconds, **kw})

    t0 = time.perf_counter()
    doc_sims = emb.similarities(item.question, item.documents)  # (D,) the retriever's scores
    t_embed = time.perf_counter() - t0
    order = sorted(range(len(item.documents)), key=lambda d: (-float(doc_sims[d]), d))
    row("rag", fill_budget(readout, [item.documents[d] for d in order], budget), t_embed)

    (prompt,) = build_prompts(readout.plan, [(item.documents, item.question)])
    if prompt.context_tokens <= budget:  # every method keeps the whole context: no pass
        full = "\n\n".join(item.documents)
        single = f"layer{old.filter_layer}"
        for method in (single, single + "+share", *("readout:" + v for v in READOUT_VARIANTS), "minilm-sentences"):
            row(method, full, 0.0)
        return rows
    rows_q = query_positions(prompt.length, prompt.query_start, readout.config.scoring.query)
    t0 = time.perf_counter()
    passed, old_tokens = study_pass(readout, old, prompt, rows_q)
    t_pass = time.perf_counter() - t0
    scores = [float(s) for s in doc_sims]
    units = prompt_units(prompt, "sentence", budget)

    def gemfilter(method: str, comp: GemFilterCompressor, variant: str | None, document_scores: Any) -> None:
        t1 = time.perf_counter()
        evidence = Evidence(prompt, item.question, document_scores, emb if variant and "embedding" in variant else None)
        if variant is None:  # the old single-layer default, scored inside the same pass
            tokens = old_tokens[prompt.context_positions()]
            sc = Scores(tokens, unit_scores(tokens, units.units).double())
        else:
            assert comp.readouts is not None  # the evidence holds exactly the variant's inputs: it is chosen
            sc = comp.scorer.score(passed, whole_target(prompt, units), evidence)
        keep = select(comp.plan, sc, units, budget, document_scores)
        res = assemble(prompt, item.question, keep, sc.tokens, comp.filter_layer, comp.config, {})
        row(method, res.text, t_pass + time.perf_counter() - t1, tokens=res.compressed_tokens)

    gemfilter(f"layer{old.filter_layer}", old, None, None)  # the single-layer score, inside the same pass
    gemfilter(f"layer{old.filter_layer}+share", old, None, scores)
    for variant in READOUT_VARIANTS:
        gemfilter("readout:" + variant, readout, variant, scores if "retriever" in variant else None)
    # MiniLM sentence selection: the same units ranked by their similarity to the question
    t1 = time.perf_counter()
    sims = Evidence(prompt, item.question, None, emb).sim_units(units.units, units.documents)
    assert sims is not None
    keep = select_ranked(sims, units.units, budget)
    res = assemble(prompt, item.question, keep, torch.zeros(prompt.context_tokens), None, readout.config, {})
    row("minilm-sentences", res.text, time.perf_counter() - t1 + t_embed)
    return rows


def run_adapters(readout: GemFilterCompressor, item: Example, budget: int) -> list[dict[str, Any]]:
    """The item through both framework adapters with their defaults, the retriever's scores near-equal:
    1.00, 0.99, 0.98, ... in the retriever's order (as a reranker or vector store leaves them)."""
    from langchain_core.documents import Document
    from langchain_gemfilter import GemFilterDocumentCompressor
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.postprocessor.gemfilter import GemFilterNodePostprocessor

    emb = readout.embedder
    assert emb is not None
    sims = emb.similarities(item.question, item.documents)
    order = sorted(range(len(item.documents)), key=lambda d: (-float(sims[d]), d))
    near = {d: round(1.0 - 0.01 * rank, 2) for rank, d in enumerate(order)}
    base = {"dataset": item.source, "id": item.id, **item.meta}
    rows = []
    t0 = time.perf_counter()
    docs = [Document(page_content=t, metadata={"relevance_score": near[d]}) for d, t in enumerate(item.documents)]
    out = GemFilterDocumentCompressor(compressor=readout, top_k=budget).compress_documents(docs, item.question)
    text = "\n\n".join(d.page_content for d in out)
    rows.append(
        {
            **base,
            "method": "langchain-adapter",
            "kept": contains_answer(text, item.answers),
            "s": time.perf_counter() - t0,
        }
    )
    t0 = time.perf_counter()
    nodes = [NodeWithScore(node=TextNode(text=t), score=near[d]) for d, t in enumerate(item.documents)]
    post = GemFilterNodePostprocessor(compressor=readout, top_k=budget)
    kept = post.postprocess_nodes(nodes, QueryBundle(item.question))
    text = "\n\n".join(n.node.get_content() for n in kept)
    rows.append(
        {
            **base,
            "method": "llamaindex-adapter",
            "kept": contains_answer(text, item.answers),
            "s": time.perf_counter() - t0,
        }
    )
    return rows


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a proportion k/n."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Exact two-sided McNemar p-value of paired outcomes ``a`` vs ``b``."""
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    p = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * p)


def report(rows: list[dict[str, Any]]) -> str:
    """Markdown tables: rate [95% CI] (n) per data set and method, paired tests against plain RAG, NQ by position."""
    lines = []
    groups: dict[tuple[str, str], dict[str, bool]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["method"]), {})[r["id"]] = bool(r["kept"])
    datasets = sorted({d for d, _ in groups})
    methods = sorted({m for _, m in groups}, key=lambda m: (m != "rag", m))
    lines.append("| data set | method | answer kept | 95% CI | n | vs plain RAG (paired) |")
    lines.append("|---|---|---:|---|---:|---|")
    for d in datasets:
        rag = groups.get((d, "rag"), {})
        for m in methods:
            got = groups.get((d, m))
            if not got:
                continue
            k, n = sum(got.values()), len(got)
            lo, hi = wilson(k, n)
            ids = sorted(set(got) & set(rag))
            test = ""
            if m != "rag" and ids:
                diff = (sum(got[i] for i in ids) - sum(rag[i] for i in ids)) / len(ids)
                p = mcnemar([got[i] for i in ids], [rag[i] for i in ids])
                verdict = "no significant difference" if p >= 0.05 else ("better" if diff > 0 else "worse")
                test = f"{diff * 100:+.1f} pts, p={p:.3g}: {verdict}"
            lines.append(f"| {d} | {m} | {100 * k / n:.1f}% | [{100 * lo:.1f}, {100 * hi:.1f}] | {n} | {test} |")
    by_pos: dict[tuple[str, int], list[bool]] = {}
    for r in rows:
        if r["dataset"] == "nq":
            by_pos.setdefault((r["method"], int(r["position"])), []).append(bool(r["kept"]))
    if by_pos:
        positions = sorted({p for _, p in by_pos})
        lines += ["", "NQ answer kept by gold position:", ""]
        lines.append("| method | " + " | ".join(f"position {p}" for p in positions) + " | spread |")
        lines.append("|---|" + "---:|" * (len(positions) + 1))
        for m in methods:
            rates = [sum(by_pos.get((m, p), [])) / max(1, len(by_pos.get((m, p), []))) for p in positions]
            if any(by_pos.get((m, p)) for p in positions):
                cells = " | ".join(
                    f"{100 * x:.1f}% (n={len(by_pos.get((m, p), []))})" for x, p in zip(rates, positions, strict=True)
                )
                lines.append(f"| {m} | {cells} | {100 * (max(rates) - min(rates)):.1f} pts |")
    needle: dict[tuple[str, int], list[bool]] = {}
    for r in rows:
        if r["dataset"] == "needle":
            needle.setdefault((r["method"], int(r["length"])), []).append(bool(r["kept"]))
    if needle:
        lengths = sorted({n for _, n in needle})
        lines += ["", "Needles: answer kept by haystack length:", ""]
        lines.append("| method | " + " | ".join(f"{n} tokens" for n in lengths) + " |")
        lines.append("|---|" + "---:|" * len(lengths))
        for m in methods:
            if any(needle.get((m, n)) for n in lengths):
                cells = " | ".join(
                    f"{100 * sum(needle[(m, n)]) / len(needle[(m, n)]):.0f}% ({len(needle[(m, n)])})" for n in lengths
                )
                lines.append(f"| {m} | {cells} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True, help="profile JSON with the trained readout")
    ap.add_argument("--model", default=None, help="model directory (default: the embedded SmolLM2-135M)")
    ap.add_argument(
        "--old-layer", type=int, default=None, help="single-layer score compared (default: 14, or the readout's layer)"
    )
    ap.add_argument("--hotpot", type=int, default=300)
    ap.add_argument("--nq", type=int, default=200, help="NQ questions (each at positions 1, 10 and 20)")
    ap.add_argument("--needle-lengths", type=int, nargs="*", default=[2048, 4096, 8000])
    ap.add_argument("--depths", type=int, default=10)
    ap.add_argument("--budget", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/readout_study")
    ap.add_argument("--adapters", type=int, default=2, help="needles also run through both adapters (0: none)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    rows_path = out.with_suffix(".jsonl")
    rows = read_jsonl(rows_path) if rows_path.exists() else []
    if not args.report_only:
        torch.set_num_threads(2)
        readout = GemFilterCompressor.from_pretrained(
            args.model, device="cpu", profile=args.profile, embeddings="default"
        )
        assert readout.readouts is not None
        old_layer = args.old_layer if args.old_layer is not None else min(OLD_LAYER, readout.filter_layer)
        old = readout.with_options(filter_layer=old_layer, scorer="layer", prior="share")
        if readout.filter_layer < old_layer:
            raise SystemExit("--old-layer: deeper than the readout's layer; one pass cannot score both")
        items = eval_items(readout.tokenizer, args.hotpot, args.nq, args.needle_lengths, args.depths, args.seed)
        done = {r["id"] for r in rows}
        t0 = time.perf_counter()
        with open(rows_path, "a", encoding="utf-8") as f:
            for i, item in enumerate(items):
                if item.id in done:
                    continue
                new = run_item(old, readout, item, args.budget)
                if (
                    item.source == "needle"
                    and int(item.id.split("-")[1]) < args.adapters * len(args.needle_lengths) * args.depths
                ):
                    new += run_adapters(readout, item, args.budget)
                for r in new:
                    f.write(json.dumps(r) + "\n")
                f.flush()
                rows += new
                if i % 25 == 0:
                    print(f"{i}/{len(items)} items, {time.perf_counter() - t0:.0f} s", flush=True)
    table = report(rows)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
