"""Property-based tests: whatever the documents, query and budget, compression never corrupts text.

Random documents mix ASCII, CJK, emoji (with ZWJ sequences), combining marks, right-to-left
scripts, control whitespace, empty and whitespace-only documents and very long words. The
invariants checked on every result:

* every kept span is an exact substring of its document; spans are sorted, disjoint and in
  bounds, and the document's ``text`` is their concatenation;
* kept tokens never exceed the budget, and the token counts add up;
* every input document is present, in order, with complete provenance;
* the same input gives the same output;
* a budget at least the context length keeps every document byte for byte.

The number of examples comes from the hypothesis profile (``ci`` by default, ``long`` under
``make test-long``); the tests marked ``slow`` only run there.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tinymodels import fills_budget, separator_tokens

from gemfilter_rag import CompressionResult, GemFilterCompressor

ARCHS = ("llama", "qwen2", "gemma3")
GRANULARITIES = ("token", "sentence", "document")
LONG_POSITIONS = 16384

# Pools of characters that stress tokenizers and offset mapping.
CJK = "東京は日本の首都です北京上海한국어의문장カタカナ漢字"
EMOJI = ["🎉", "👍🏽", "👨‍👩‍👧‍👦", "🇯🇵", "❤️", "🙂"]
COMBINING = ["e\u0301", "a\u0308", "n\u0303", "\u0915\u094d\u0937"]  # é, ä, ñ, Devanagari conjunct
RTL = ["مرحبا", "بالعالم", "שלום", "עולם", "\u200f", "\u202b"]
WHITESPACE = [" ", "  ", "\n", "\n\n", "\t", "\r\n", "\u00a0", "\u2003", "\u3000"]
PUNCT = [".", "!", "?", ",", ";", "...", "。", "！", "؟", "Dr.", "e.g.", "3.14"]

_atoms = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789", min_size=1, max_size=8),
    st.text(alphabet=CJK, min_size=1, max_size=4),
    st.sampled_from(EMOJI + COMBINING + RTL + WHITESPACE + PUNCT),
    st.characters(exclude_categories=("Cs",)),  # anything else valid, NUL and controls included
)
_word_text = st.lists(_atoms, max_size=24).map("".join)
_document = st.one_of(
    _word_text,
    st.sampled_from(["", " ", "\n\n", "\t \u3000"]),  # empty and whitespace-only
    st.builds(
        lambda c, n: c * n, st.sampled_from(["a", "x", "語", "🎉", "e\u0301"]), st.integers(50, 300)
    ),  # one very long word
)
documents_strategy = st.lists(_document, min_size=1, max_size=6)
query_strategy = st.one_of(
    st.text(alphabet="abcdefgh xyz?", min_size=1, max_size=30).filter(lambda q: q.strip() != ""),
    st.lists(_atoms, min_size=1, max_size=6).map("".join).filter(lambda q: q.strip() != ""),
)

_LONG: dict[str, Any] = {}


@pytest.fixture(scope="module")
def compressor_for(tiny_model_factory: Callable[..., Any], tokenizer: Any) -> Callable[[str, str], Any]:
    """``(arch, granularity) -> GemFilterCompressor`` over a copy of the tiny model that accepts long prompts.

    The copy shares nothing with the shared fixture (so its longer context cannot leak into other
    tests) and has the same weights; rotary embeddings do not depend on the position limit.
    """
    cache: dict[tuple[str, str], GemFilterCompressor] = {}

    def get(arch: str, granularity: str) -> GemFilterCompressor:
        if arch not in _LONG:
            model = copy.deepcopy(tiny_model_factory(arch))
            model.config.max_position_embeddings = LONG_POSITIONS
            _LONG[arch] = model
        key = (arch, granularity)
        if key not in cache:
            cache[key] = GemFilterCompressor(_LONG[arch], tokenizer, filter_layer=1, granularity=granularity)
        return cache[key]

    return get


def check_invariants(
    result: CompressionResult, documents: list[str], query: str, budget: int, separator: str = "\n\n"
) -> None:
    """Assert every structural invariant of a ``CompressionResult`` for its inputs."""
    assert result.query == query
    assert len(result.documents) == len(documents)
    total = 0
    for i, (doc, src) in enumerate(zip(result.documents, documents, strict=True)):
        assert doc.index == i
        prev_end = -1
        for a, b in doc.spans:
            assert 0 <= a < b <= len(src), (i, a, b, len(src))
            assert a > prev_end, f"spans of document {i} overlap or touch: {doc.spans}"
            prev_end = b
        assert doc.text == "".join(src[a:b] for a, b in doc.spans)
        for a, b in doc.spans:
            assert src[a:b] in src
        assert 0 <= doc.kept_tokens <= doc.original_tokens
        assert doc.kept == bool(doc.spans)
        if doc.spans:
            assert doc.kept_tokens > 0
        assert 0.0 <= doc.score_share <= 1.0 + 1e-6
        total += doc.original_tokens
    assert result.original_tokens == total
    assert result.compressed_tokens == len(result.kept_token_indices) == sum(d.kept_tokens for d in result.documents)
    assert result.compressed_tokens <= result.output_tokens <= budget
    idx = result.kept_token_indices
    assert idx == sorted(set(idx))
    assert all(0 <= t < result.original_tokens for t in idx)
    assert result.text == separator.join(d.text for d in result.documents if d.text)
    start = 0  # provenance: each document's kept tokens are exactly the kept indices in its range
    for doc in result.documents:
        assert sum(start <= t < start + doc.original_tokens for t in idx) == doc.kept_tokens
        start += doc.original_tokens
    if result.original_tokens:
        assert abs(sum(d.score_share for d in result.documents) - 1.0) < 1e-3


def comparable(result: CompressionResult) -> dict[str, Any]:
    """A result as a dict without its timings (the only part allowed to change between runs)."""
    out = result.to_dict()
    out.pop("timings")
    return out


@given(
    documents=documents_strategy,
    query=query_strategy,
    budget=st.integers(1, 400),
    arch=st.sampled_from(ARCHS),
    granularity=st.sampled_from(GRANULARITIES),
)
def test_kept_text_is_exact_and_within_budget(
    compressor_for: Callable[[str, str], Any],
    documents: list[str],
    query: str,
    budget: int,
    arch: str,
    granularity: str,
) -> None:
    compressor = compressor_for(arch, granularity)
    result = compressor.compress(documents, query, top_k=budget)
    check_invariants(result, documents, query, budget)
    if granularity == "document":  # a document is kept whole or not at all
        for doc, src in zip(result.documents, documents, strict=True):
            assert doc.kept_tokens in (0, doc.original_tokens)
            if doc.kept_tokens:
                assert doc.text == src
    assert comparable(compressor.compress(documents, query, top_k=budget)) == comparable(result)


@given(
    documents=documents_strategy,
    query=query_strategy,
    extra=st.integers(0, 50),
    arch=st.sampled_from(ARCHS),
    granularity=st.sampled_from(GRANULARITIES),
)
def test_budget_at_least_length_keeps_everything(
    compressor_for: Callable[[str, str], Any], documents: list[str], query: str, extra: int, arch: str, granularity: str
) -> None:
    compressor = compressor_for(arch, granularity)
    whole = compressor.compress(documents, query, top_k=1_000_000)
    n = whole.original_tokens
    result = compressor.compress(documents, query, top_k=max(1, whole.output_tokens + extra))
    check_invariants(result, documents, query, max(1, whole.output_tokens + extra))
    assert result.compressed_tokens == n
    assert result.filter_layer is None  # nothing to cut: no filter pass ran
    for doc, src in zip(result.documents, documents, strict=True):
        assert doc.text == src
        assert doc.spans == ([(0, len(src))] if src else [])
    assert result.text == "\n\n".join(d for d in documents if d)


@given(documents=documents_strategy, query=query_strategy, budget=st.integers(1, 200))
def test_budget_one_below_length_cuts_tokens(
    compressor_for: Callable[[str, str], Any], documents: list[str], query: str, budget: int
) -> None:
    """At token granularity, a budget below the text's length keeps the most tokens that fit with the
    separators between the documents they come from."""
    compressor = compressor_for("llama", "token")
    whole = compressor.compress(documents, query, top_k=1_000_000)
    n = whole.output_tokens
    if whole.original_tokens < 2:
        return
    top_k = min(budget, n - 1)
    result = compressor.compress(documents, query, top_k=top_k)
    check_invariants(result, documents, query, top_k)
    # one document kept may leave less room than the next one's separator needs
    assert fills_budget(result, top_k, separator_tokens(compressor))
    assert result.filter_layer == 1


def _many_tiny(n: int) -> Any:
    tiny = st.one_of(
        st.sampled_from(["", " ", "a", "b.", "語", "🎉", "e\u0301", "שלום", "ok!"]),
        st.text(alphabet="abc .", max_size=4),
    )
    return st.lists(tiny, min_size=n, max_size=n)


_FEW = settings(
    max_examples=max(2, settings().max_examples // 10),
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


@_FEW
@given(documents=_many_tiny(1000), budget=st.integers(1, 600), granularity=st.sampled_from(GRANULARITIES))
def test_thousand_tiny_documents(
    compressor_for: Callable[[str, str], Any], documents: list[str], budget: int, granularity: str
) -> None:
    compressor = compressor_for("qwen2", granularity)
    result = compressor.compress(documents, "which one is ok?", top_k=budget)
    check_invariants(result, documents, "which one is ok?", budget)


@pytest.mark.slow
@settings(
    max_examples=max(5, settings().max_examples // 5),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(
    documents=st.lists(_word_text, min_size=1, max_size=40),
    query=query_strategy,
    budget=st.integers(1, 2000),
    arch=st.sampled_from(ARCHS),
    granularity=st.sampled_from(GRANULARITIES),
    separator=st.sampled_from(["\n\n", " ", "", "\n---\n", "。"]),
)
def test_long_runs_any_separator(
    tiny_model_factory: Callable[..., Any],
    tokenizer: Any,
    compressor_for: Callable[[str, str], Any],
    documents: list[str],
    query: str,
    budget: int,
    arch: str,
    granularity: str,
    separator: str,
) -> None:
    compressor_for(arch, granularity)  # builds the long-context copy
    compressor = GemFilterCompressor(
        _LONG[arch], tokenizer, filter_layer=2, granularity=granularity, separator=separator, pool="none", softmax=False
    )
    result = compressor.compress(documents, query, top_k=budget)
    check_invariants(result, documents, query, budget, separator=separator)


def test_spans_map_back_for_fixed_adversarial_input(compressor_for: Callable[[str, str], Any]) -> None:
    """A hand-written worst case, always run: every hazard in one call, at every granularity."""
    documents = [
        "",
        "   ",
        "e\u0301" * 80,
        "東京は日本の首都です。北京は中国の首都です。",
        "👨‍👩‍👧‍👦 family! 🇯🇵 flag.",
        "مرحبا بالعالم. שלום עולם.",
        "x" * 400,
        "Dr. Smith paid 3.14 dollars. Then she left!\r\n",
    ]
    for granularity in GRANULARITIES:
        compressor = compressor_for("llama", granularity)
        for budget in (1, 7, 64, 10_000):
            result = compressor.compress(documents, "what is the capital of Japan?", top_k=budget)
            check_invariants(result, documents, "what is the capital of Japan?", budget)
    assert torch.is_grad_enabled()  # the filter pass does not leak inference mode
