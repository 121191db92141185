"""GemFilterCompressor.compress: provenance, byte-exact spans, accounting, all documents reported."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tinymodels import fills_budget

from gemfilter_rag import CompressionResult, GemFilterCompressor, GemFilterConfig, ScoringConfig

DOCS = [
    "The most important thing in a young company is to make something people want. Founders often spend "
    "months building features nobody asked for.",
    "Cities send messages. New York tells you that you should make more money.\nCambridge tells you that you "
    "should be smarter.",
    "",
    "日本語のテキストです。東京は大きい。 Emoji 🎉🚀 and a family 👨‍👩‍👧. Combining: e\u0301 n\u0303 a\u0300.",
    "   ",
    "Startups in 2005 could be started for far less money than in 1995. Servers were cheaper!",
]
QUERY = "What does Cambridge tell you?"


def _check_result(result: CompressionResult, docs: list[str], separator: str = "\n\n") -> None:
    assert [d.index for d in result.documents] == list(range(len(docs)))
    for d, original in zip(result.documents, docs, strict=True):
        spans = d.spans
        assert all(0 <= a < b <= len(original) for a, b in spans)
        assert all(spans[i][1] < spans[i + 1][0] for i in range(len(spans) - 1)), "spans overlap or touch"
        assert d.text == "".join(original[a:b] for a, b in spans)
        assert d.kept == bool(spans)
        assert 0 <= d.kept_tokens <= d.original_tokens
        assert 0.0 <= d.score_share <= 1.0 + 1e-6
    assert result.text == separator.join(d.text for d in result.documents if d.text)
    assert result.compressed_tokens == len(result.kept_token_indices) == sum(d.kept_tokens for d in result.documents)
    joined = sum(1 for d in result.documents if d.text)
    assert (result.separator_tokens == 0) == (joined < 2)
    assert result.output_tokens == result.compressed_tokens + result.separator_tokens
    assert result.original_tokens == sum(d.original_tokens for d in result.documents)
    assert result.kept_token_indices == sorted(set(result.kept_token_indices))
    assert all(0 <= i < result.original_tokens for i in result.kept_token_indices)
    assert set(result.timings) == {"tokenize", "filter", "select", "total"}
    assert all(v >= 0 for v in result.timings.values())


@pytest.mark.parametrize("granularity", ["token", "sentence", "document"])
@pytest.mark.parametrize("top_k", [3, 25, 80])
def test_spans_are_exact_and_accounted(make_compressor: Any, arch: str, granularity: str, top_k: int) -> None:
    comp = make_compressor(arch, granularity=granularity)
    result = comp.compress(DOCS, QUERY, top_k=top_k)
    _check_result(result, DOCS)
    assert result.compressed_tokens <= top_k
    assert result.granularity == granularity
    assert result.filter_layer == comp.filter_layer
    assert result.query == QUERY


def test_paper_mode_token_spans(make_compressor: Any, arch: str) -> None:
    comp = make_compressor(arch, granularity="token", scoring=ScoringConfig.paper())
    result = comp.compress(DOCS, QUERY, top_k=20)
    _check_result(result, DOCS)
    assert fills_budget(result, 20)  # as many tokens as fit with their separators


@pytest.mark.parametrize("extra", [0, 1, 1000])
def test_budget_at_least_context_keeps_everything(make_compressor: Any, arch: str, extra: int) -> None:
    comp = make_compressor(arch)
    whole = comp.compress(DOCS, QUERY, top_k=10_000)
    total = whole.original_tokens
    assert whole.output_tokens == total + whole.separator_tokens > total  # the separators count too
    result = comp.compress(DOCS, QUERY, top_k=whole.output_tokens + extra)
    _check_result(result, DOCS)
    assert [d.text for d in result.documents] == DOCS  # byte for byte, unicode included
    assert all(d.spans == ([(0, len(t))] if t else []) for d, t in zip(result.documents, DOCS, strict=True))
    assert result.filter_layer is None and result.ratio == 1.0
    assert result.kept_token_indices == list(range(total))


def test_budget_one_below_context_runs_the_filter(make_compressor: Any) -> None:
    comp = make_compressor("llama", granularity="token")
    whole = comp.compress(DOCS, QUERY, top_k=10_000).output_tokens
    result = comp.compress(DOCS, QUERY, top_k=whole - 1)
    assert result.filter_layer == comp.filter_layer
    assert result.output_tokens == whole - 1


def test_empty_document_list(make_compressor: Any) -> None:
    result = make_compressor("gemma3").compress([], QUERY, top_k=10)
    assert result.text == "" and result.documents == [] and result.kept_token_indices == []
    assert result.original_tokens == result.compressed_tokens == 0
    assert result.ratio == 1.0


def test_empty_documents_are_reported(make_compressor: Any) -> None:
    docs = ["", "Cities send messages.", "", ""]
    for top_k in (1, 3, 100):
        result = make_compressor("mistral", granularity="token").compress(docs, QUERY, top_k=top_k)
        _check_result(result, docs)
        assert len(result.documents) == 4
        for i in (0, 2, 3):
            d = result.documents[i]
            assert (d.text, d.spans, d.kept_tokens, d.original_tokens) == ("", [], 0, 0)
            assert d.ratio == 1.0 and not d.kept
    only_empty = make_compressor("mistral").compress(["", ""], QUERY, top_k=5)
    assert [d.original_tokens for d in only_empty.documents] == [0, 0] and only_empty.text == ""


def test_score_shares_sum_to_one(make_compressor: Any, arch: str) -> None:
    result = make_compressor(arch).compress(DOCS, QUERY, top_k=10)
    assert sum(d.score_share for d in result.documents) == pytest.approx(1.0, abs=1e-4)
    assert all(d.score_share == 0.0 for d, t in zip(result.documents, DOCS, strict=True) if not t)


def test_custom_separator_and_no_chat_template(make_compressor: Any, tokenizer_no_template: Any) -> None:
    comp = make_compressor("phi3", tokenizer=tokenizer_no_template, separator=" || ", granularity="token")
    result = comp.compress(DOCS, QUERY, top_k=40)
    _check_result(result, DOCS, separator=" || ")
    full = comp.compress(DOCS, QUERY, top_k=100_000)
    assert full.text == " || ".join(t for t in DOCS if t)


def test_to_dict_is_json_ready(make_compressor: Any) -> None:
    result = make_compressor("qwen2").compress(DOCS, QUERY, top_k=12)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["text"] == result.text and data["ratio"] == pytest.approx(result.ratio)
    assert len(data["documents"]) == len(DOCS)
    assert result.ratio == pytest.approx(result.original_tokens / result.compressed_tokens)


def test_result_is_deterministic(make_compressor: Any, arch: str) -> None:
    comp = make_compressor(arch)
    a = comp.compress(DOCS, QUERY, top_k=30)
    b = comp.compress(DOCS, QUERY, top_k=30)
    assert a.kept_token_indices == b.kept_token_indices and a.text == b.text


def test_options_override_config(tiny_model_factory: Any, tokenizer: Any) -> None:
    base = GemFilterConfig(filter_layer=1, granularity="document", top_k=7)
    comp = GemFilterCompressor(tiny_model_factory("llama"), tokenizer, base, granularity="token", softmax=False)
    assert comp.config.granularity == "token" and comp.config.top_k == 7 and comp.filter_layer == 1
    assert comp.config.scoring.softmax is False
    assert comp.compress(DOCS, QUERY).compressed_tokens == 7
    default = GemFilterCompressor(tiny_model_factory("llama"), tokenizer)
    assert default.filter_layer == 1  # 4 layers, no profile: round(0.5 * 4) - 1
    assert default.profile is None and default.num_layers == 4 and default.max_positions == 1024


def test_with_options_shares_the_model_and_stats_give_the_provenance(make_compressor: Any) -> None:
    comp = make_compressor("llama", filter_layer=1)
    assert comp.with_options() is comp
    sibling = comp.with_options(granularity="token", pool="avg")
    assert sibling is not comp and sibling.model is comp.model and sibling.tokenizer is comp.tokenizer
    assert (sibling.config.granularity, sibling.config.scoring.pool) == ("token", "avg")
    assert sibling.filter_layer == comp.filter_layer == 1
    result = comp.compress(["Alpha beta gamma. Delta epsilon.", ""], "What is alpha?", top_k=3)
    first = result.documents[0]
    assert first.stats(result.filter_layer) == {
        "index": 0,
        "kept_tokens": first.kept_tokens,
        "original_tokens": first.original_tokens,
        "ratio": first.ratio,
        "score_share": first.score_share,
        "spans": [list(s) for s in first.spans],
        "filter_layer": 1,
    }
