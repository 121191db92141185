"""Bad inputs fail early with errors that name the argument and say what to do."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gemfilter_rag import GemFilterCompressor, GemFilterConfig, ScoringConfig

DOCS = ["Cities send messages.", "Startups were cheap in 2005."]


@pytest.mark.parametrize("query", ["", "   \n\t", None, 42, b"bytes", ["a list"]])
def test_bad_query(make_compressor: Any, query: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="query"):
        make_compressor("llama").compress(DOCS, query, top_k=4)


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["nested"]])
def test_non_str_document_names_its_index(make_compressor: Any, bad: Any) -> None:
    with pytest.raises(TypeError, match=r"documents\[2\]"):
        make_compressor("llama").compress(["ok", "fine", bad, "ok"], "q?", top_k=4)


@pytest.mark.parametrize("documents", ["a single string", b"bytes", 7, None])
def test_documents_not_a_sequence(make_compressor: Any, documents: Any) -> None:
    with pytest.raises(TypeError, match=r"documents: .*\[text\]"):
        make_compressor("llama").compress(documents, "q?", top_k=4)


@pytest.mark.parametrize("top_k", [0, -1, float("nan"), True, False, 2.5, float("inf"), "10", None])
def test_bad_top_k(make_compressor: Any, top_k: Any) -> None:
    comp = make_compressor("llama")
    if top_k is None:  # None means the configured default: not an error
        assert comp.compress(DOCS, "q?", top_k=None).compressed_tokens <= comp.config.top_k
        return
    with pytest.raises((TypeError, ValueError), match="top_k"):
        comp.compress(DOCS, "q?", top_k=top_k)
    with pytest.raises((TypeError, ValueError), match="top_k"):
        GemFilterConfig(top_k=top_k)


def test_whole_number_top_k_types_are_accepted(make_compressor: Any) -> None:
    import numpy as np

    comp = make_compressor("llama", granularity="token")
    for top_k in (3.0, np.int64(3), np.int32(3), np.float64(3.0)):
        assert comp.compress(DOCS, "q?", top_k=top_k).compressed_tokens == 3


@pytest.mark.parametrize("layer", [4, 99])
def test_filter_layer_out_of_range(tiny_model_factory: Any, tokenizer: Any, layer: int) -> None:
    with pytest.raises(ValueError, match=r"filter_layer: .*0\.\.3"):
        GemFilterCompressor(tiny_model_factory("qwen2"), tokenizer, filter_layer=layer)


@pytest.mark.parametrize("layer", [-1, True, 1.0, "2"])
def test_filter_layer_bad_value(layer: Any) -> None:
    with pytest.raises(ValueError, match="filter_layer"):
        GemFilterConfig(filter_layer=layer)


@pytest.mark.parametrize(
    "field,value",
    [
        ("granularity", "paragraph"),
        ("template", "no placeholders"),
        ("template", "{query} before {context}"),
        ("separator", 3),
        ("scoring", "paper"),
    ],
)
def test_bad_config_fields(field: str, value: Any) -> None:
    with pytest.raises((TypeError, ValueError), match=field):
        GemFilterConfig(**{field: value})


@pytest.mark.parametrize(
    "field,value",
    [
        ("query", "first"),
        ("query", 0),
        ("query", True),
        ("heads", "mean"),
        ("pool", "median"),
        ("pool_width", 4),
        ("pool_width", 0),
        ("pool_width", True),
    ],
)
def test_bad_scoring_fields(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        ScoringConfig(**{field: value})


def test_unknown_option(tiny_model_factory: Any, tokenizer: Any) -> None:
    with pytest.raises(TypeError, match="topk"):
        GemFilterCompressor(tiny_model_factory("llama"), tokenizer, topk=3)


def test_context_longer_than_model_limit_is_scored_in_windows(make_compressor: Any, arch: str) -> None:
    comp = make_compressor(arch, granularity="token")
    long_doc = "Cities send messages. " * 300
    assert len(comp.tokenizer(long_doc)["input_ids"]) > comp.max_positions
    result = comp.compress([long_doc, "Startups were cheap."], "What do cities send?", top_k=16)
    assert result.compressed_tokens == 16 and result.filter_layer == comp.filter_layer
    first = result.documents[0]
    assert first.text == "".join(long_doc[a:b] for a, b in first.spans)
    assert all(0 <= a < b <= len(long_doc) for a, b in first.spans)


def test_question_longer_than_model_limit(make_compressor: Any, arch: str) -> None:
    comp = make_compressor(arch, granularity="token")
    limit = comp.max_positions
    long_query = "Why do cities send messages? " * 300
    with pytest.raises(ValueError, match=rf"query: .*{limit} positions"):
        comp.compress(DOCS, long_query, top_k=1)


def test_not_a_model_or_tokenizer(tokenizer: Any, tiny_model_factory: Any) -> None:
    with pytest.raises(TypeError, match="model"):
        GemFilterCompressor("path/to/model", tokenizer)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tokenizer"):
        GemFilterCompressor(tiny_model_factory("llama"), None)
    with pytest.raises(TypeError, match="config"):
        GemFilterCompressor(tiny_model_factory("llama"), tokenizer, {"top_k": 3})  # type: ignore[arg-type]


def test_encoder_only_model_rejected(tokenizer: Any) -> None:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        )
    )
    with pytest.raises(ValueError, match="decoder-only causal LM.*AutoModelForCausalLM"):
        GemFilterCompressor(bert, tokenizer)
