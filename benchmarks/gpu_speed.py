"""Prompt-phase time and peak GPU memory: full attention vs GemFilter, on Llama-3.1-8B's shape.

Time and memory do not depend on the weight values, so the model is built with random weights
from Llama-3.1-8B-Instruct's configuration (written out below; nothing is downloaded) and fed
random token ids. For each length it measures

* full: one prefill of the whole prompt with a KV cache (``logits_to_keep=1``), as a server
  would before decoding;
* gemfilter: the filter pass (layers 0..r, no cache), top-k token selection, then the prefill of
  the kept tokens plus the question.

Usage: ``python -m benchmarks.gpu_speed`` on a CUDA machine (about 5 minutes on one H100);
``--tiny`` runs the same code on a tiny config on CPU (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

LLAMA_31_8B: dict[str, Any] = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
}
TINY: dict[str, Any] = {
    **LLAMA_31_8B,
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 4096,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
LENGTHS = (8192, 16384, 32768, 65536, 131072 - 256)
TINY_LENGTHS = (256, 512, 1024)
FILTER_LAYER = 13  # the paper's layer for Llama-3.1-8B-Instruct
TINY_FILTER_LAYER = 1
BUDGET = 1024
TINY_BUDGET = 64
QUESTION_TOKENS = 32


class _NoTokenizer:
    """Stands in for a tokenizer: the benchmark feeds token ids and never encodes text."""

    pad_token_id = 0
    eos_token_id = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the GPU benchmark feeds token ids; no tokenizer is used")


def build_model(tiny: bool, device: torch.device, dtype: torch.dtype, attn: str) -> Any:
    """A random-weight LlamaForCausalLM with Llama-3.1-8B's (or a tiny) configuration on ``device``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**(TINY if tiny else LLAMA_31_8B))
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM._from_config(cfg, attn_implementation=attn, dtype=dtype)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def _prompt(n_context: int, vocab: int) -> Any:
    """A FilterPrompt of random ids: 8 template tokens, ``n_context`` context tokens, the question."""
    from gemfilter_rag.prompt import FilterPrompt, TokenizedDocument

    g = torch.Generator().manual_seed(n_context)
    prefix, middle = 8, 4
    total = prefix + n_context + middle + QUESTION_TOKENS
    ids = torch.randint(3, vocab, (total,), generator=g)  # (T,)
    doc_ids = ids[prefix : prefix + n_context].tolist()
    doc = TokenizedDocument(text="", ids=doc_ids, starts=[0] * n_context, ends=[0] * n_context)
    return FilterPrompt(ids, [doc], [prefix], prefix + n_context + middle, n_context)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return int(torch.cuda.memory_allocated(device))
    return 0


def _peak(device: torch.device) -> int:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0


@torch.inference_mode()
def full_prefill(model: Any, ids: torch.Tensor) -> None:
    """The prompt phase with full attention: one forward over all ids with a KV cache."""
    model(input_ids=ids, use_cache=True, logits_to_keep=1)


@torch.inference_mode()
def gemfilter_prompt(compressor: Any, prompt: Any, budget: int) -> int:
    """GemFilter's prompt phase: filter pass, top-k selection, prefill of the kept tokens. Returns their count."""
    from gemfilter_rag.generation import answer_input_ids
    from gemfilter_rag.pipeline import keep_tokens

    scores = compressor.score_prompt(prompt)  # (N,)
    keep = keep_tokens(compressor.plan, prompt, scores, budget)
    ids = answer_input_ids(prompt, keep.tolist())[None].to(prompt_device(compressor))  # (1, T')
    compressor.model(input_ids=ids, use_cache=True, logits_to_keep=1)
    return int(ids.shape[1])


def prompt_device(compressor: Any) -> torch.device:
    return next(compressor.model.parameters()).device


def measure(fn: Any, device: torch.device) -> tuple[float, int, Any]:
    """(seconds, peak bytes above the resident weights, fn's result) of one call."""
    base = _reset_peak(device)
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, max(0, _peak(device) - base), out


def run(tiny: bool, lengths: tuple[int, ...], attn: str, out_dir: Path | None) -> dict[str, Any]:
    """All measurements; returns (and writes, unless ``out_dir`` is None) the report."""
    from gemfilter_rag import GemFilterCompressor, GemFilterConfig, ScoringConfig

    device = torch.device("cpu" if tiny else "cuda")
    dtype = torch.float32 if tiny else torch.bfloat16
    t_build = time.perf_counter()
    model = build_model(tiny, device, dtype, attn)
    built = time.perf_counter() - t_build
    layer = TINY_FILTER_LAYER if tiny else FILTER_LAYER
    budget = TINY_BUDGET if tiny else BUDGET
    # the paper's setting: single tokens, scored by the last token's q.k at layer r
    config = GemFilterConfig(filter_layer=layer, granularity="token", top_k=budget, scoring=ScoringConfig.paper())
    comp = GemFilterCompressor(model, _NoTokenizer(), config)
    vocab = model.config.vocab_size
    warm = _prompt(min(lengths) // 2, vocab)
    full_prefill(model, warm.input_ids[None].to(device))
    gemfilter_prompt(comp, warm, budget)
    rows = []
    for n in lengths:
        prompt = _prompt(n, vocab)
        ids = prompt.input_ids[None].to(device)  # (1, T)
        full_s, full_mem, _ = measure(lambda ids=ids: full_prefill(model, ids), device)
        gem_s, gem_mem, read = measure(lambda prompt=prompt: gemfilter_prompt(comp, prompt, budget), device)
        filt_s, filt_mem, _ = measure(lambda prompt=prompt: comp.score_prompt(prompt), device)
        rows.append(
            {
                "tokens": prompt.length,
                "full_s": full_s,
                "gemfilter_s": gem_s,
                "filter_s": filt_s,
                "speedup": full_s / gem_s,
                "full_peak_gib": full_mem / 2**30,
                "gemfilter_peak_gib": gem_mem / 2**30,
                "filter_peak_gib": filt_mem / 2**30,
                "gemfilter_read_tokens": read,
            }
        )
        print(
            f"{prompt.length:>7} tokens: full {full_s:7.3f}s {full_mem / 2**30:6.2f} GiB | gemfilter {gem_s:7.3f}s "
            f"{gem_mem / 2**30:6.2f} GiB (filter {filt_s:.3f}s) | {full_s / gem_s:.2f}x",
            flush=True,
        )
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "config": "tiny" if tiny else "Llama-3.1-8B-Instruct (random weights)",
        "dtype": str(dtype),
        "attn_implementation": attn,
        "filter_layer": layer,
        "num_layers": model.config.num_hidden_layers,
        "budget": budget,
        "build_s": built,
        "torch": torch.__version__,
        "weights_gib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30,
        "rows": rows,
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        name = "gpu_speed_tiny" if tiny else "gpu_speed"
        (out_dir / f"{name}.json").write_text(json.dumps(report, indent=2))
        (out_dir / f"{name}.md").write_text(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table."""
    lines = [
        f"{report['config']} on {report['device']}, {report['dtype']}, attention {report['attn_implementation']},"
        f" filter layer {report['filter_layer']} of {report['num_layers']}, budget {report['budget']} tokens; "
        "peak memory above the weights.",
        "",
        "| prompt tokens | full prefill (s) | GemFilter prompt phase (s) | filter pass (s) | speed-up "
        "| full peak (GiB) | GemFilter peak (GiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['tokens']} | {r['full_s']:.3f} | {r['gemfilter_s']:.3f} | {r['filter_s']:.3f} "
            f"| {r['speedup']:.2f}x | {r['full_peak_gib']:.2f} | {r['gemfilter_peak_gib']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU (smoke test)")
    parser.add_argument("--lengths", type=int, nargs="+", default=None, help="prompt context lengths")
    parser.add_argument("--attn", default="sdpa", help="attn_implementation: sdpa (default), flash_attention_2, eager")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or pass --tiny for the CPU smoke run")
    lengths = tuple(args.lengths) if args.lengths else (TINY_LENGTHS if args.tiny else LENGTHS)
    report = run(args.tiny, lengths, args.attn, args.out)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
