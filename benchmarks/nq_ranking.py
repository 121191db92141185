"""Where the NQ gap is: how well each signal one model could give ranks a question's gold passage.

On NQ (20 passages on different topics) the default keeps the answer less often than plain MiniLM
retrieval; its readout leans on the question's words in the text. This study asks whether the filter
model's own early layers hold the topic signal an embedding model gives, with no readout in the way:
each NQ training question (lines 0-999 of the shared dev file, never the evaluation lines) gets its gold
passage among the 19 other gold passages nearest to the question (all-MiniLM-L6-v2, as the benchmark's NQ
items), and every signal ranks the 20. Metric: the gold passage is in the signal's top 1, 2 or 3 (two
passages are about the 256-token budget); ties count against the gold passage.

Signals: MiniLM cosine; ``lexical.overlap_features`` (the readout's ``overlap`` block, a passage as one
unit); BM25 over the 20 passages (k1 1.2, b 0.75), and with the title's words counted once more; the
filter model's hidden state entering layer l (each token's state unit-normed, mean-pooled over the
passage, or over the question, each encoded alone; centred by the 20 passages' mean), by cosine, and by a
cosine with learned per-dimension weights (a listwise softmax over the 20, fitted on lines 0-699 with an L2
pull towards 1; every rate is on lines 700-999). The layers read are the ones an exit at no more than 0.35 of
the model's layers can read: 0..9 of the default's 30, 0..5 of Gemma 3 270M's 18.

    python -m benchmarks.nq_ranking --threads 1
    python -m benchmarks.nq_ranking --threads 1 --model gemma3-270m
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.datasets import hard_distractors
from benchmarks.run import git_commit
from benchmarks.speed import machine
from benchmarks.stats import fmt_p, fmt_rate, mcnemar_exact
from gemfilter_rag.capture import capture_layer, decoder_layers
from gemfilter_rag.data import NQ_TRAIN, load_nq
from gemfilter_rag.lexical import STOPWORDS, content_words, overlap_features
from gemfilter_rag.loading import cache_dir
from gemfilter_rag.training.examples import nq_passage

OUT = Path(__file__).parent / "results"
DISTRACTORS = 19
FIT = range(0, 700)
"""Training lines the learned weights are fitted on; the rates are on the rest of ``NQ_TRAIN``."""
EXIT_SHARE = 0.35
"""The largest share of the model's layers an exit may read (issue 19's bound)."""
TOPS = (1, 2, 3)


def early_layers(num_layers: int) -> tuple[int, ...]:
    """The layers an exit at no more than ``EXIT_SHARE`` of ``num_layers`` reads: 0 .. floor(share * n) - 1."""
    return tuple(range(max(1, int(EXIT_SHARE * num_layers))))


def gold_rank(scores: np.ndarray) -> int:
    """Rank of candidate 0 (the gold passage) among ``scores`` (C,): how many score at least as high."""
    return int((scores >= scores[0]).sum() - 1)


def bm25(
    question: str, passages: Sequence[str], title_weight: float = 0.0, k1: float = 1.2, b: float = 0.75
) -> np.ndarray:
    """BM25 of each passage for the question's content words (``lexical.content_words`` less ``STOPWORDS``),
    idf over ``passages``; ``title_weight``: each word in the passage's first line adds that share of its idf
    once more. (P,) float64."""
    wanted = [w for w in dict.fromkeys(content_words(question)) if w not in STOPWORDS]
    words = [content_words(p) for p in passages]
    titles = [set(content_words(p.split("\n", 1)[0])) for p in passages]
    n = len(passages)
    mean_len = max(1.0, sum(map(len, words)) / max(1, n))
    sets = [set(w) for w in words]
    idf = {w: math.log((n - sum(w in s for s in sets) + 0.5) / (sum(w in s for s in sets) + 0.5) + 1.0) for w in wanted}
    out = np.zeros(n)
    for i, (ws, title) in enumerate(zip(words, titles, strict=True)):
        tf = collections.Counter(ws)
        norm = k1 * (1 - b + b * len(ws) / mean_len)
        out[i] = sum(idf[w] * (tf[w] * (k1 + 1) / (tf[w] + norm) + title_weight * (w in title)) for w in wanted)
    return out


@torch.inference_mode()
def pooled_states(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], layers: Sequence[int]) -> np.ndarray:
    """Mean over each text's tokens of the unit-normed hidden state entering each of ``layers``, the text
    encoded alone (the pass stops inside the last layer's attention). (T, len(layers), d) float32."""
    blocks = decoder_layers(model)
    found: dict[int, torch.Tensor] = {}

    def hook(index: int) -> Any:
        def record(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            states = (args[0] if args else kwargs["hidden_states"])[0].float()  # (T, d)
            found[index] = (states / states.norm(dim=-1, keepdim=True).clamp_min(1e-12)).mean(0)  # (d,)

        return record

    handles = [blocks[i].register_forward_pre_hook(hook(i), with_kwargs=True) for i in layers]
    out = []
    try:
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][:, :512]  # (1, T)
            found.clear()
            capture_layer(model, ids, max(layers))
            out.append(torch.stack([found[i] for i in layers]).numpy())  # (L, d)
    finally:
        for h in handles:
            h.remove()
    return np.stack(out).astype(np.float32)


def cached(name: str, make: Any) -> np.ndarray:
    """``make()``'s array, kept under the cache directory as ``name``.npy."""
    path = cache_dir() / "bench" / f"{name}.npy"
    if path.exists():
        return np.load(path)
    value = np.asarray(make())
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, value)
    return value


def centred_cosine(question: torch.Tensor, passages: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine of the question's vector (..., d) with each passage's (..., P, d), both centred by the passages'
    mean and scaled by ``weights`` (d,) when given. Returns (..., P)."""
    mean = passages.mean(dim=-2, keepdim=True)  # (..., 1, d)
    p, q = passages - mean, question[..., None, :] - mean  # (..., P, d), (..., 1, d)
    if weights is not None:
        p, q = p * weights, q * weights
    return torch.nn.functional.cosine_similarity(p, q, dim=-1)  # (..., P)


def fit_weights(questions: torch.Tensor, passages: torch.Tensor, l2: float = 1e-2, steps: int = 300) -> torch.Tensor:
    """Per-dimension weights of ``centred_cosine`` that rank candidate 0 first: a listwise softmax over the
    candidates with a learned temperature, L2 towards 1. questions: (Q, d); passages: (Q, P, d). Returns (d,)."""
    torch.manual_seed(0)
    w = torch.ones(questions.shape[-1], requires_grad=True)
    log_t = torch.tensor(math.log(20.0), requires_grad=True)
    opt = torch.optim.Adam([w, log_t], lr=3e-3)
    target = torch.zeros(questions.shape[0], dtype=torch.long)
    for _ in range(steps):
        logits = centred_cosine(questions, passages, w) * log_t.exp()  # (Q, P)
        loss = torch.nn.functional.cross_entropy(logits, target) + l2 * (w - 1).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--model", default=None, help="filter model: a short name or a path (default: the default model)")
    p.add_argument("--out", default=None, help="results path without suffix (default: results/nq_ranking[_MODEL])")
    args = p.parse_args(argv)
    suffix = "" if args.model is None else "-" + Path(str(args.model)).name.replace("_", "-")
    out = Path(args.out) if args.out else OUT / ("nq_ranking" + suffix.replace("-", "_"))
    if args.threads:
        torch.set_num_threads(args.threads)
    from gemfilter_rag.embeddings import minilm
    from gemfilter_rag.loading import load_model
    from gemfilter_rag.shipped import shipped
    from gemfilter_rag.training import nq_similarities

    t0 = time.perf_counter()
    records = load_nq()
    corpus = [nq_passage(r) for r in records]
    lines = list(NQ_TRAIN)
    sims = nq_similarities(records, minilm())  # (Q, C): every question against every gold passage
    # per question: gold first, then its 19 nearest other passages
    candidates = [[i, *hard_distractors(sims[i].tolist(), i, DISTRACTORS)] for i in lines]
    spec = shipped(args.model)  # a short name ("gemma3-270m") or a path
    model, tokenizer = load_model(spec.directory() if spec else args.model, device="cpu", quantize=None)
    layers = early_layers(len(decoder_layers(model)))
    used = sorted({j for c in candidates for j in c})
    h_doc = cached(
        f"nq-ranking-states{suffix}-corpus-{len(used)}",
        lambda: pooled_states(model, tokenizer, [corpus[j] for j in used], layers),
    )
    h_q = cached(
        f"nq-ranking-states{suffix}-questions-{len(lines)}",
        lambda: pooled_states(model, tokenizer, [f"Question: {records[i]['question']}" for i in lines], layers),
    )
    where = {j: k for k, j in enumerate(used)}
    cand_idx = torch.tensor([[where[j] for j in c] for c in candidates])  # (Q, 20)
    test = [k for k, i in enumerate(lines) if i not in FIT]
    fit = [k for k, i in enumerate(lines) if i in FIT]
    texts = {k: (str(records[lines[k]]["question"]), [corpus[j] for j in candidates[k]]) for k in test}
    ranks: dict[str, list[int]] = {}
    for name, score in (
        ("all-MiniLM-L6-v2 cosine (the second model)", lambda k: sims[lines[k], candidates[k]]),
        (
            "`overlap` (the readout's idf-weighted share)",
            lambda k: overlap_features(*texts[k], list(range(len(candidates[k]))))[:, 0].numpy(),
        ),
        ("BM25", lambda k: bm25(*texts[k])),
        ("BM25, title words once more", lambda k: bm25(*texts[k], 1.0)),
    ):
        ranks[name] = [gold_rank(np.asarray(score(k))) for k in test]
    hq, hd = torch.from_numpy(h_q), torch.from_numpy(h_doc)  # (Q, L, d), (C', L, d)
    for li, layer in enumerate(layers):
        passages = hd[:, li][cand_idx]  # (Q, 20, d)
        questions = hq[:, li]  # (Q, d)
        plain = centred_cosine(questions[test], passages[test])  # (Q_test, 20)
        ranks[f"filter model, state into layer {layer}, cosine"] = [gold_rank(s.numpy()) for s in plain]
        w = fit_weights(questions[fit], passages[fit])
        learned = centred_cosine(questions[test], passages[test], w)
        ranks[f"filter model, state into layer {layer}, learned weights"] = [gold_rank(s.numpy()) for s in learned]
    name = args.model or "the default model"
    report(ranks, len(test), time.perf_counter() - t0, out, f"{name}, {len(decoder_layers(model))} layers")


def report(ranks: dict[str, list[int]], n: int, seconds: float, out: Path, model: str) -> None:
    """Rates with Wilson intervals, and the exact McNemar test of each signal's top 2 against MiniLM's."""
    reference = next(iter(ranks))
    ref_top2 = [r < 2 for r in ranks[reference]]
    rows = []
    for name, rs in ranks.items():
        tops = {k: sum(r < k for r in rs) for k in TOPS}
        p = None if name == reference else mcnemar_exact([r < 2 for r in rs], ref_top2)
        rows.append({"signal": name, "n": n, **{f"top{k}": v for k, v in tops.items()}, "p_top2_vs_minilm": p})
    m = machine()
    where = f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} with {m['torch_threads']} threads"
    commit = (git_commit() or "unknown")[:7]
    lines = [
        f"Machine: {where}, transformers {m['transformers']}; commit {commit}; {seconds:.0f} s. Filter model: {model}.",
        f"NQ training lines 700-999 (n={n}; weights fitted on lines 0-699), the gold passage among",
        "its 19 nearest other gold passages (all-MiniLM-L6-v2); `python -m benchmarks.nq_ranking`.",
        "",
        "| signal | gold in top 1 | top 2 | top 3 | p (top 2 vs MiniLM) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        p = "" if r["p_top2_vs_minilm"] is None else fmt_p(r["p_top2_vs_minilm"])
        lines.append(
            f"| {r['signal']} | {fmt_rate(r['top1'], n)} | {fmt_rate(r['top2'], n)} | {fmt_rate(r['top3'], n)} | {p} |"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps({"machine": m, "commit": commit, "model": model, "seconds": seconds, "rows": rows}, indent=2)
    )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
