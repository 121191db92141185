"""The real default model (SmolLM2-135M-Instruct): a needle in a ~4K-token essay haystack survives.

Loads the embedded default once for the module (``$GEMFILTER_CACHE`` is honoured, so a cache that
already holds the model makes this offline).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from gemfilter_rag import GemFilterCompressor
from gemfilter_rag.data import essays_haystack

pytestmark = pytest.mark.real

NEEDLE = "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
QUESTION = "What is the best thing to do in San Francisco?"
HAYSTACK_TOKENS = 4000


@pytest.fixture(scope="module")
def compressor() -> GemFilterCompressor:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return GemFilterCompressor.from_pretrained(device="cpu")


@pytest.fixture(scope="module")
def haystack(compressor: GemFilterCompressor) -> str:
    """The first ~4K tokens of the essays, cut at a token boundary."""
    text = essays_haystack()[:40_000]
    enc = compressor.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert len(enc["input_ids"]) > HAYSTACK_TOKENS
    return text[: enc["offset_mapping"][HAYSTACK_TOKENS][0]]


def _plant(haystack: str, depth: float) -> str:
    """Insert the needle as its own sentence after the sentence end nearest ``depth`` of the text."""
    pos = int(len(haystack) * depth)
    candidates = [i + 1 for i in range(len(haystack) - 1) if haystack[i] in ".!?" and haystack[i + 1] in " \n"]
    cut = min(candidates, key=lambda i: abs(i - pos))
    return haystack[:cut] + " " + NEEDLE + haystack[cut:]


def test_default_model_is_profiled(compressor: GemFilterCompressor) -> None:
    assert compressor.num_layers == 30 and compressor.max_positions == 8192
    assert compressor.profile is not None
    assert compressor.filter_layer == compressor.profile.filter_layer


@pytest.mark.parametrize("depth", [0.1, 0.5, 0.9])
def test_needle_survives_top_k_256(compressor: GemFilterCompressor, haystack: str, depth: float) -> None:
    document = _plant(haystack, depth)
    result = compressor.compress([document], QUESTION, top_k=256)
    assert result.original_tokens > 3500
    assert result.compressed_tokens <= 256
    assert result.filter_layer == compressor.filter_layer
    assert NEEDLE in result.text, f"needle lost at depth {depth}: kept {result.text[:300]!r}..."


def test_paper_mode_token_smoke(compressor: GemFilterCompressor, haystack: str) -> None:
    paper = GemFilterCompressor(
        compressor.model,
        compressor.tokenizer,
        granularity="token",
        scorer="paper",  # the paper's scoring; scoring=ScoringConfig.paper() alone is refused under the readout
        filter_layer=compressor.filter_layer,
    )
    assert paper.scorer.rows == "last" and paper.readouts is None
    document = _plant(haystack[: len(haystack) // 4], 0.5)  # ~1K tokens: a smoke check, kept cheap
    result = paper.compress([document], QUESTION, top_k=256)
    assert result.compressed_tokens == 256
    doc: Any = result.documents[0]
    assert doc.text == "".join(document[a:b] for a, b in doc.spans)
    assert result.text == doc.text


def test_the_default_takes_the_chunk_cache_path_and_keeps_the_needle(
    compressor: GemFilterCompressor, haystack: str
) -> None:
    """The shipped profile carries a cache-mode readout: with a ChunkCache, compress runs only the question's
    tokens over the cached chunks, the needle in one of eight chunks survives, and a second call over the same
    chunks encodes nothing and keeps the same tokens."""
    import warnings

    from gemfilter_rag import ChunkCache

    step = len(haystack) // 8
    chunks = [haystack[i * step : (i + 1) * step] for i in range(8)]
    chunks[5] = _plant(chunks[5], 0.5)
    cache = ChunkCache()
    cached = compressor.with_cache(cache)
    assert cached.uses_cache and cached.cache_layer == compressor.filter_layer
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "runs the joint pass" warning: the profile has the readout
        assert cached.warm(chunks) == len(chunks) + 2  # the chunks, the separator and the prefix
        first = cached.compress(chunks, QUESTION, top_k=256)
    before = cache.stats()
    again = cached.compress(chunks, QUESTION, top_k=256)
    after = cache.stats()
    assert after["stored"] == before["stored"] and after["misses"] == before["misses"]
    assert after["hits"] > before["hits"]
    assert NEEDLE in first.text and again.kept_token_indices == first.kept_token_indices
    assert first.compressed_tokens <= 256
