"""Time per question of the shipped default on long inputs, with where the time goes (issue 14).

HotpotQA pages of 8K-32K tokens built as in ``benchmarks.long_study`` (the question's paragraphs among
other records' paragraphs, cut into ~2,000-character chunks); per length a few questions, each compressed
to 256 tokens by ``GemFilterCompressor.from_pretrained()`` after one warm-up call, against plain RAG
(MiniLM ranks the chunks). The compressor's time is split into its embedding calls (the round-0
prefilter and the readout's similarity features) and the rest (filter passes, selection); the passes
are compared with a full prefill of one window (what one pass of the whole model over the same tokens
would cost) times the readout's layer fraction.

    python -m benchmarks.long_speed --out benchmarks/results/long_speed
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from gemfilter_rag import GemFilterCompressor
from gemfilter_rag.data import HOTPOT_EVAL, long_context_eval_json

from .long_study import hotpot_long
from .machine import cpu_model
from .readout_study import fill_budget


class _Timed:
    """Wraps an embedding function and adds up the seconds spent in it."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


@torch.inference_mode()
def full_prefill_seconds(comp: GemFilterCompressor, tokens: int) -> float:
    """Seconds of one full forward pass (every layer, no cache, last logits only) over ``tokens`` tokens."""
    ids = torch.randint(100, 1000, (1, tokens))
    comp.model(ids[:, :64], use_cache=False, logits_to_keep=1)  # warm-up
    t0 = time.perf_counter()
    comp.model(ids, use_cache=False, logits_to_keep=1)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[8000, 16000, 20000, 32000])
    ap.add_argument("--per-length", type=int, default=3)
    ap.add_argument("--budget", type=int, default=256)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="benchmarks/results/long_speed")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    comp = GemFilterCompressor.from_pretrained(device="cpu")
    assert comp.embedder is not None
    timed_texts = _Timed(comp.embedder._texts)
    timed_query = _Timed(comp.embedder._query)
    comp.embedder._texts, comp.embedder._query = timed_texts, timed_query
    tok = comp.tokenizer

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    hot = long_context_eval_json("hotpotqa")
    window = comp.config.window or comp.max_positions or 4096
    layers = comp.filter_layer + 1
    total_layers = int(comp.model.config.num_hidden_layers)
    prefill_window = full_prefill_seconds(comp, window)
    rows: list[dict[str, Any]] = []
    warm = hotpot_long(hot, list(HOTPOT_EVAL), 1, 4000, count, args.seed)[0]
    comp.compress(warm.documents, warm.question, top_k=args.budget)
    for length in args.lengths:
        for item in hotpot_long(hot, list(HOTPOT_EVAL), args.per_length, length, count, args.seed + length):
            t0 = time.perf_counter()
            sims = comp.embedder.similarities(item.question, item.documents)
            order = sorted(range(len(item.documents)), key=lambda d: (-float(sims[d]), d))
            fill_budget(comp, [item.documents[d] for d in order], args.budget)
            rag_s = time.perf_counter() - t0
            timed_texts.seconds = timed_query.seconds = 0.0
            t0 = time.perf_counter()
            comp.compress(item.documents, item.question, top_k=args.budget)
            total = time.perf_counter() - t0
            embed = timed_texts.seconds + timed_query.seconds
            row = {
                "id": item.id,
                "tokens": count("\n\n".join(item.documents)),
                "length": length,
                "rag_s": rag_s,
                "gemfilter_s": total,
                "embedding_s": embed,
                "passes_and_rest_s": total - embed,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": cpu_model(),
        "threads": torch.get_num_threads(),
        "window": window,
        "layers": f"{layers} of {total_layers}",
        "full_prefill_one_window_s": prefill_window,
        "layer_fraction_limit_one_window_s": prefill_window * layers / total_layers,
    }
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [
        f"Machine: {meta['machine']}, {meta['threads']} threads. One window = {window} tokens; a full prefill "
        f"of one window {prefill_window:.2f} s, its layer fraction ({layers}/{total_layers}) "
        f"{meta['layer_fraction_limit_one_window_s']:.2f} s.",
        "",
        "| tokens (target) | n | plain RAG s | GemFilter s (median) | of which embedding s | passes and rest s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for length in args.lengths:
        got = [r for r in rows if r["length"] == length]
        med = {k: statistics.median(r[k] for r in got) for k in ("rag_s", "gemfilter_s", "embedding_s")}
        rest = statistics.median(r["passes_and_rest_s"] for r in got)
        lines.append(
            f"| {length:,} | {len(got)} | {med['rag_s']:.1f} | {med['gemfilter_s']:.1f} | "
            f"{med['embedding_s']:.1f} | {rest:.1f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
