"""benchmarks.serve: the request mix, the statistics and the report (the load run itself is make bench-serve)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import serve as bench


def test_request_mix_is_fixed_and_sized(tokenizer: Any) -> None:
    bodies = bench.build_requests(tokenizer, 4)
    again = bench.build_requests(tokenizer, 4)
    assert bodies == again and len(bodies) == 4
    for j, body in enumerate(bodies):
        assert len(body["documents"]) == bench.DOCS_PER_REQUEST and body["top_k"] == bench.BUDGET
        sizes = [len(tokenizer(d, add_special_tokens=False)["input_ids"]) for d in body["documents"]]
        assert all(0.8 * bench.CHUNK_TOKENS <= n <= 1.1 * bench.CHUNK_TOKENS for n in sizes), sizes
        assert ("document_scores" in body) == bool(j % 2)
    long = bench.long_request(tokenizer, 2048)
    total = sum(len(tokenizer(d, add_special_tokens=False)["input_ids"]) for d in long["documents"])
    assert 2048 - 64 - 2 * bench.CHUNK_TOKENS < total <= 2048


def test_percentile_and_summary() -> None:
    assert bench.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert bench.percentile([1.0, 2.0], 95) == pytest.approx(1.95)
    assert math.isnan(bench.percentile([], 50))
    samples = [bench.Sample(0, 200, 1.0, 100), bench.Sample(1, 200, 3.0, 300), bench.Sample(2, 429, 0.01)]
    row = bench.summarize(samples, wall=2.0)
    assert (row["requests"], row["ok"], row["statuses"]) == (3, 2, {"200": 2, "429": 1})
    assert row["requests_per_s"] == 1.0 and row["context_tokens_per_s"] == 200.0
    assert row["p50_s"] == 2.0


def test_batch_sizes_from_two_scrapes() -> None:
    def scrape(counts: dict[float, float], total: float) -> dict[str, float]:
        out = {f"gemfilter_batch_size_bucket{{le={le}}}": n for le, n in counts.items()}
        out["gemfilter_batch_size_count"] = max(counts.values())
        out["gemfilter_batch_size_sum"] = total
        return out

    before = scrape({1.0: 2, 2.0: 2, 8.0: 2, math.inf: 2}, 2)
    after = scrape({1.0: 3, 2.0: 3, 8.0: 6, math.inf: 6}, 2 + 1 + 3 * 8)
    got = bench.batch_sizes(before, after)
    assert got == {"batches": 4, "mean": 25 / 4, "histogram": {"<=1": 1, "<=8": 3}}


def test_report_renders(tmp_path: Path) -> None:
    row = {
        "requests": 4,
        "ok": 4,
        "requests_per_s": 1.5,
        "context_tokens_per_s": 2000.0,
        "p50_s": 1.0,
        "p95_s": 2.0,
        "p99_s": 2.5,
        "batch": {"batches": 2, "mean": 2.0, "histogram": {"<=2": 2}},
        "correct": 4,
        "accepted": 4,
        "load_avg_1m": [1.0, 1.2],
    }
    report = {
        "machine": {
            "cpu": "cpu",
            "cores": 2,
            "torch": "t",
            "transformers": "tr",
            "fastapi": "f",
            "uvicorn": "u",
            "load_avg_at_start": [1, 1, 1],
        },
        "model": "Llama (tiny), layer 1",
        "date": "today",
        "mean_context_tokens": 1500,
        "documents_per_request": 10,
        "load": [{**row, "mode": m, "clients": c} for m in ("batching", "one at a time") for c in (1, 4)],
        "shedding": {
            **row,
            "clients": 64,
            "max_queue": 8,
            "rejected_429": 40,
            "retry_after": ["1", "2"],
            "rejected_in_s_p95": 0.01,
            "bit_identical": 3,
        },
        "faults": {
            "background_requests": 16,
            "background_ok": 16,
            "background_correct": 16,
            "disconnecting_clients": 3,
            "disconnects_seen": 3,
            "max_size_context_tokens": 8000,
            "max_size_limit": 8192,
            "max_size_ok_and_correct": True,
            "over_limit_status": 413,
            "malformed": 96,
            "malformed_422": 96,
            "health_after": "ok",
            "exit_code_after_sigterm": 0,
        },
        "memory": {"idle": {"rss_mb": 900, "peak_rss_mb": 910}},
    }
    text = bench.markdown(report)
    assert text.count("| batching |") == 2 and text.count("| one at a time |") == 2
    assert "40 answered 429" in text and "96/96 malformed" in text and "RSS 900" in text
    bench.plot(report, tmp_path / "serve.png")
    assert (tmp_path / "serve.png").read_bytes()[:4] == b"\x89PNG"
