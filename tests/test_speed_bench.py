"""benchmarks.speed: the quick run on a tiny saved model produces consistent JSON, Markdown and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_factory: Any) -> Path:
    from tinymodels import build_tokenizer

    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model_factory("llama").save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path


def test_quick_run_writes_a_consistent_report(tiny_model_dir: Path, tmp_path: Path) -> None:
    from benchmarks import speed

    out = tmp_path / "results"
    assert speed.main(["--quick", "--model", str(tiny_model_dir), "--out", str(out)]) == 0
    report = json.loads((out / "speed.json").read_text())
    assert report["machine"]["cores"] >= 1 and report["machine"]["torch_threads"] >= 1
    assert report["num_layers"] == 4
    assert report["layer_fraction_limit"] == pytest.approx((report["filter_layer"] + 1) / 4)
    assert [r["context_tokens"] for r in report["prefill"]] == list(speed.QUICK_PREFILL)
    for row in report["prefill"]:
        assert row["ratio"] == pytest.approx(row["filter_s"] / row["prefill_s"])
        assert row["prefill_peak_mb"] > 0 and row["filter_peak_mb"] > 0
    for row in report["generation"]:
        full, gem = row["full"], row["gemfilter"]
        assert full["new_tokens"] == gem["new_tokens"] == speed.NEW_TOKENS
        assert gem["read_tokens"] < full["read_tokens"]  # GemFilter's full model read fewer tokens
        assert 0 < gem["first_token"] <= gem["total"] and 0 < full["first_token"] <= full["total"]
    assert [r["previous"] for r in report["stages"]] == [False]  # no previous default for another model
    for row in report["stages"]:
        assert set(speed.STAGES) <= set(row) and row["total"] == pytest.approx(sum(row[s] for s in speed.STAGES))
    md = (out / "speed.md").read_text()
    assert report["machine"]["cpu"] in md and md.count("| gemfilter |") == len(report["generation"])
    assert "| tokenize | units | pass | features | readout | select | assemble |" in md
    for name in ("speed_time.png", "speed_memory.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_context_documents_fill_the_budget(tokenizer: Any) -> None:
    from benchmarks.speed import context_documents

    docs = context_documents(tokenizer, 300)
    n = sum(len(tokenizer(d, add_special_tokens=False)["input_ids"]) for d in docs)
    assert 290 <= n <= 300 and docs
    from gemfilter_rag.data import load_essays

    essays = "\n".join(text for _, text in load_essays())
    assert all(d in essays for d in docs)  # whole paragraphs, the last one cut
    more = context_documents(tokenizer, 3000)
    assert len(more) > len(docs) and more[: len(docs) - 1] == docs[:-1]


@pytest.mark.parametrize("readout", [False, True])
def test_stage_times_time_what_compress_does(readout: bool) -> None:
    from test_feature_blocks import blocks_compressor
    from tinymodels import TRAINING_TEXT, build_model, build_tokenizer

    from benchmarks.speed import STAGES, stage_times
    from gemfilter_rag import GemFilterCompressor

    comp = blocks_compressor("llama") if readout else GemFilterCompressor(build_model("llama"), build_tokenizer())
    docs = [p.replace("\n", " ") for p in TRAINING_TEXT.split("\n\n")]
    got = stage_times(comp, docs, "What does Cambridge tell you?", 40)  # raises if it kept other tokens
    assert tuple(got) == STAGES and all(v >= 0 for v in got.values())
    assert got["pass"] > 0


def test_cache_speed_ratio_summary_is_a_geometric_mean_with_an_interval_around_it() -> None:
    from benchmarks.cache_speed import markdown, ratio_summary

    s = ratio_summary([0.05, 0.2, 0.1, 0.1])
    assert s["geomean"] == pytest.approx(0.1)
    assert 0.05 <= s["ci_low"] <= s["geomean"] <= s["ci_high"] <= 0.2
    assert ratio_summary([0.3] * 5)["ci_low"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="ratios"):
        ratio_summary([0.1, 0.0])
    summary = {
        "n": 4, "repeats": 1, "budget": 256, "ratio": s, "first_over_cold": s, "at_most_0.1": 3,
        "median_cold_s": 1.0, "median_cached_s": 0.1, "median_first_s": 0.9, "same_as_first": 4,
        "same_as_cold": 2, "bytes_per_token": {"fp16": 4224.0, "int8": 2140.0}, "cache_layer": 5,
        "machine": {"cpu": "test CPU", "torch_threads": 1},
    }  # fmt: skip
    table = markdown(summary)
    assert "| every chunk cached | 0.100 | 0.100 [" in table and "3 of 4" in table and "3.93 GiB" in table
