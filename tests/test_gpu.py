"""GPU readiness: half precision and flash attention with the early exit (CUDA only), and the GPU
benchmark's code path on a tiny CPU config."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
needs_flash = pytest.mark.skipif(importlib.util.find_spec("flash_attn") is None, reason="flash-attn not installed")

DOCS = [
    "Cities send messages. New York tells you that you should make more money.",
    "Startups in 2005 could be started for far less money than in 1995.",
]
QUERY = "What does New York tell you?"


def _on_cuda(arch: str, attn: str, dtype: torch.dtype) -> Any:
    from tinymodels import build_model, build_tokenizer, model_config

    from gemfilter_rag import GemFilterCompressor

    torch.manual_seed(1234)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(model_config(arch, len(build_tokenizer())), attn_implementation=attn)
    model.load_state_dict(build_model(arch).state_dict())
    return GemFilterCompressor(model.to("cuda", dtype).eval(), build_tokenizer(), granularity="token")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_on_cuda_matches_fp32_scores(arch: str, dtype: torch.dtype) -> None:
    from tinymodels import build_model, build_tokenizer

    from gemfilter_rag import GemFilterCompressor
    from gemfilter_rag.pipeline import build_prompts

    gpu = _on_cuda(arch, "sdpa", dtype)
    cpu = GemFilterCompressor(build_model(arch), build_tokenizer(), granularity="token")
    prompt = build_prompts(cpu.plan, [(DOCS, QUERY)])[0]
    torch.testing.assert_close(gpu.score_prompt(prompt), cpu.score_prompt(prompt), rtol=0.1, atol=0.05)
    res = gpu.generate(DOCS, QUERY, max_new_tokens=4, top_k=8)
    assert res.compression.compressed_tokens == 8


@pytest.mark.gpu
@needs_cuda
@needs_flash
def test_flash_attention_2_with_the_early_exit(arch: str) -> None:
    if arch == "gemma3":
        pytest.skip("flash-attn's softcapping/sliding path is covered by sdpa on gemma3")
    from gemfilter_rag.pipeline import build_prompts

    flash = _on_cuda(arch, "flash_attention_2", torch.bfloat16)
    sdpa = _on_cuda(arch, "sdpa", torch.bfloat16)
    prompt = build_prompts(sdpa.plan, [(DOCS, QUERY)])[0]
    torch.testing.assert_close(flash.score_prompt(prompt), sdpa.score_prompt(prompt), rtol=0.05, atol=0.02)
    assert flash.model.config._attn_implementation == "flash_attention_2"  # restored after the pass
    items = [(DOCS, QUERY), (DOCS[:1], "What does a city send?")]
    assert [r.kept_token_indices for r in flash.compress_batch(items, top_k=6)] == [
        flash.compress(d, q, top_k=6).kept_token_indices for d, q in items
    ]


@pytest.mark.gpu
@needs_cuda
def test_gpu_benchmark_short_lengths(tmp_path: Path) -> None:
    from benchmarks import gpu_speed

    report = gpu_speed.run(False, (2048,), "sdpa", tmp_path)
    row = report["rows"][0]
    assert row["gemfilter_read_tokens"] < row["tokens"]
    assert row["gemfilter_peak_gib"] < row["full_peak_gib"]


def test_gpu_benchmark_tiny_on_cpu(tmp_path: Path) -> None:
    from benchmarks import gpu_speed

    assert gpu_speed.main(["--tiny", "--lengths", "200", "400", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "gpu_speed_tiny.md").read_text()
    assert report.count("\n| ") == 3  # header + two rows
    import json

    data = json.loads((tmp_path / "gpu_speed_tiny.json").read_text())
    assert [r["tokens"] for r in data["rows"]] == [200 + 44, 400 + 44]
    assert all(r["gemfilter_read_tokens"] == gpu_speed.TINY_BUDGET + 44 for r in data["rows"])
    assert data["num_layers"] == 4 and data["filter_layer"] == gpu_speed.TINY_FILTER_LAYER
