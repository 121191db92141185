"""``GemFilterCompressor(cache=ChunkCache(...))``: when compress takes the cached path, what it keeps, ``warm``,
the cache-mode readout in a profile, siblings, the memory guard and the bytes per token."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from test_readout import tiny_readouts
from tinymodels import TRAINING_TEXT, build_model, build_tokenizer

from gemfilter_rag import ChunkCache, GemFilterCompressor, memory
from gemfilter_rag.cached_pass import cached_record, identity
from gemfilter_rag.evidence import Evidence
from gemfilter_rag.features import BLOCKS_V1, LAYER_BLOCKS
from gemfilter_rag.kv_pack import bytes_per_token
from gemfilter_rag.pipeline import build_prompts, whole_target
from gemfilter_rag.profiles import Profile, fingerprint
from gemfilter_rag.readout import Readout, ReadoutSet, variant_extras
from gemfilter_rag.scorers import ReadoutScorer
from gemfilter_rag.scoring import query_positions
from gemfilter_rag.units import prompt_units

DOCS = [p.replace("\n", " ") for p in TRAINING_TEXT.split("\n\n")[:4]]
QUERY = "What does Cambridge tell you?"


def with_cached_readout(arch: str = "llama", **options: Any) -> GemFilterCompressor:
    """A compressor whose profile ships a joint readout (layer 2) and a cache-mode one (layer 1)."""
    model = build_model(arch)
    joint = tiny_readouts(layer=2)
    sets = ReadoutSet(joint.layer, joint.heads, joint.variants, joint.provenance, cached=tiny_readouts(layer=1, seed=5))
    profile = Profile("tiny", fingerprint(model.config), {"filter_layer": 2}, readout=sets.to_dict())
    return GemFilterCompressor(model, build_tokenizer(), profile=profile, **options)


def test_without_a_cache_mode_readout_compress_runs_the_joint_pass_and_says_so_once() -> None:
    plain = GemFilterCompressor(build_model("llama"), build_tokenizer())
    cache = ChunkCache()
    comp = GemFilterCompressor(build_model("llama"), build_tokenizer(), cache=cache)
    assert comp.cache is cache and not comp.uses_cache
    with pytest.warns(UserWarning, match="no cache-mode readout"):
        first = comp.compress(DOCS, QUERY, top_k=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = comp.compress(DOCS, "Who left?", top_k=30)  # once per compressor
    assert first.kept_token_indices == plain.compress(DOCS, QUERY, top_k=30).kept_token_indices
    assert again.kept_token_indices == plain.compress(DOCS, "Who left?", top_k=30).kept_token_indices
    assert cache.stats()["stored"] == 0 and cache.stats()["misses"] == 0


def test_force_with_one_document_keeps_what_the_joint_pass_keeps() -> None:
    plain = GemFilterCompressor(build_model("qwen2"), build_tokenizer(), granularity="token")
    comp = plain.with_cache(ChunkCache(dtype="fp32"), cache_mode="force")
    assert comp.uses_cache and comp.cache_layer == plain.filter_layer
    for doc in DOCS:
        ours, theirs = comp.compress([doc], QUERY, top_k=12), plain.compress([doc], QUERY, top_k=12)
        assert ours.kept_token_indices == theirs.kept_token_indices
        assert ours.filter_layer == theirs.filter_layer


def test_force_with_several_documents_and_warm() -> None:
    cache = ChunkCache()
    comp = GemFilterCompressor(build_model("llama"), build_tokenizer(), cache=cache, cache_mode="force")
    assert comp.warm(DOCS) == 1 + len(DOCS) + 1  # the prefix, the separator and every chunk
    assert comp.warm(DOCS) == 0
    stored = cache.stats()["stored"]
    res = comp.compress(DOCS, QUERY, top_k=40)
    assert res.compressed_tokens <= 40 and len(res.documents) == len(DOCS)
    assert cache.stats()["stored"] == stored  # warmed: the query encoded nothing
    batch = comp.compress_batch([(DOCS, QUERY), (DOCS[:2], "Who left?")], top_k=40)
    assert batch[0].kept_token_indices == res.kept_token_indices
    assert batch[1].kept_token_indices == comp.compress(DOCS[:2], "Who left?", top_k=40).kept_token_indices
    with pytest.raises(ValueError, match="cache"):
        GemFilterCompressor(build_model("llama"), build_tokenizer()).warm(DOCS)


def test_a_cache_mode_readout_in_the_profile_is_used_by_default() -> None:
    cache = ChunkCache(dtype="fp32")
    comp = with_cached_readout(cache=cache)
    assert comp.uses_cache and comp.cache_layer == 1 and comp.filter_layer == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = comp.compress(DOCS, QUERY, top_k=40)
    assert res.filter_layer == 1
    # by hand: the cached record, the cache-mode readout, greedy fill in rank order
    (prompt,) = build_prompts(comp.plan, [(DOCS, QUERY)])
    units = prompt_units(prompt, "sentence", 40)
    rows = query_positions(prompt.length, prompt.query_start, "question")
    readouts = comp.profile.readouts()  # type: ignore[union-attr]
    assert readouts is not None and readouts.cached is not None
    scorer = ReadoutScorer(readouts.cached)
    record = cached_record(comp.plan.model, cache, identity(comp.plan.model, 1), prompt, "\n\n", rows, True)
    scores = scorer.score(record, whole_target(prompt, units), Evidence(prompt, QUERY, None, None))
    left, kept = 40, []
    for u in torch.argsort(scores.units, descending=True, stable=True).tolist():
        a, b = units.units[u]
        if b - a <= left:
            kept += list(range(a, b))
            left -= b - a
    assert res.kept_token_indices == sorted(kept)
    assert comp.with_options(filter_layer=3).uses_cache is False  # not the readout: the joint pass
    assert comp.with_options(scorer="layer").uses_cache is False
    assert comp.with_options(top_k=10).cache is cache and comp.with_options(top_k=10).uses_cache


def test_readout_set_keeps_its_cached_readout_and_checks_it() -> None:
    joint = tiny_readouts(layer=2)
    sets = ReadoutSet(joint.layer, joint.heads, joint.variants, cached=tiny_readouts(layer=1))
    again = ReadoutSet.from_dict(sets.to_dict())
    assert again.cached is not None and again.cached.layer == 1
    assert "cached" not in joint.to_dict()  # profiles without one are written as before
    extras = variant_extras("attention")
    blocks = (*BLOCKS_V1, LAYER_BLOCKS[0])
    from gemfilter_rag.features import block_columns

    w = (0.0,) * (block_columns(blocks, 2, 4) + len(extras))
    hidden = ReadoutSet(1, 4, {"attention": Readout(1, 4, extras, w, 0.0, blocks)})
    with pytest.raises(ValueError, match="hidden"):
        ReadoutSet(2, 4, joint.variants, cached=hidden)
    with pytest.raises(ValueError, match="heads"):
        ReadoutSet(2, 4, joint.variants, cached=tiny_readouts(layer=1, heads=2))


def test_options_are_checked() -> None:
    tok = build_tokenizer()
    with pytest.raises(ValueError, match="cache_mode"):
        GemFilterCompressor(build_model("llama"), tok, cache=ChunkCache(), cache_mode="always")
    with pytest.raises(TypeError, match="ChunkCache"):
        GemFilterCompressor(build_model("llama"), tok, cache={})
    off = GemFilterCompressor(build_model("llama"), tok, cache=ChunkCache(), cache_mode="off")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        off.compress(DOCS, QUERY, top_k=20)  # off: no warning, no cache
    assert off.cache is not None and off.cache.stats()["misses"] == 0


def test_siblings_keep_or_drop_the_cache() -> None:
    comp = GemFilterCompressor(build_model("llama"), build_tokenizer(), cache=ChunkCache(), cache_mode="force")
    assert comp.with_options(top_k=5).uses_cache
    assert comp.with_embeddings(lambda texts: [[1.0, float(len(t))] for t in texts]).uses_cache
    assert comp.with_cache(None).cache is None and comp.cache is not None


def test_from_pretrained_takes_a_cache(tmp_path: Path) -> None:
    build_model("llama").save_pretrained(tmp_path)
    build_tokenizer().save_pretrained(tmp_path)
    cache = ChunkCache(path=tmp_path / "chunks.sqlite")
    comp = GemFilterCompressor.from_pretrained(str(tmp_path), device="cpu", cache=cache, cache_mode="force")
    assert comp.cache is cache and comp.uses_cache
    comp.compress(DOCS[:2], QUERY, top_k=20)
    assert cache.stats()["disk_entries"] == 4


def test_bytes_per_token_of_a_compressor() -> None:
    comp = GemFilterCompressor(build_model("llama"), build_tokenizer(), filter_layer=2)
    cache = ChunkCache(dtype="int8")
    assert cache.bytes_per_token(comp) == bytes_per_token(2, 2, 16, "int8") == 5 * 2 * 16
    assert cache.bytes_per_token(comp.model, exit_layer=1) == 3 * 2 * 16
    with pytest.raises(ValueError, match="exit_layer"):
        cache.bytes_per_token(comp.model)
    # and what an entry really takes
    warm = GemFilterCompressor(build_model("llama"), build_tokenizer(), filter_layer=2, cache=cache, cache_mode="force")
    warm.warm(DOCS[:1])
    stats = cache.stats()
    tokens = sum(p.tokens for p in cache._memory.values())
    assert stats["bytes"] == pytest.approx(tokens * cache.bytes_per_token(warm), rel=0.2)  # plus the per-chunk scales


def test_the_memory_guard_counts_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    comp = GemFilterCompressor(
        build_model("llama"), build_tokenizer(), cache=ChunkCache(max_bytes=1 << 40), cache_mode="force"
    )
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1 << 30)
    with pytest.raises(memory.InsufficientMemoryError, match="ChunkCache"):
        comp.compress(DOCS, QUERY, top_k=20)
    small = comp.with_cache(ChunkCache(max_bytes=1 << 20), cache_mode="force")
    assert small.compress(DOCS, QUERY, top_k=20).compressed_tokens <= 20
    est = memory.estimate_cached_pass(comp.model, 300, 20, 10, exit_layer=2, extra={memory.CACHE_ROOM: 7})
    assert est.parts[memory.CACHE_ROOM] == 7 and est.parts["past keys/values"] == 2 * 2 * 3 * 2 * 16 * 4 * 300


def test_threads_share_a_compressor_and_its_cache() -> None:
    from concurrent.futures import ThreadPoolExecutor

    comp = GemFilterCompressor(build_model("qwen2"), build_tokenizer(), cache=ChunkCache(), cache_mode="force")
    items = [(DOCS[i % 4 :] + DOCS[: i % 4], q) for i in range(8) for q in (QUERY, "Who left?")]
    alone = [comp.with_cache(ChunkCache(), cache_mode="force").compress(d, q, top_k=30) for d, q in items]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda item: comp.compress(item[0], item[1], top_k=30), items))
    assert [r.kept_token_indices for r in together] == [r.kept_token_indices for r in alone]
    assert comp.cache is not None and comp.cache.stats()["stored"] >= 1 + 4 + 1


def test_score_prompt_takes_the_cached_path_too() -> None:
    plain = GemFilterCompressor(build_model("llama"), build_tokenizer())
    comp = plain.with_cache(ChunkCache(dtype="fp32"), cache_mode="force")
    (prompt,) = build_prompts(comp.plan, [(DOCS[:1], QUERY)])
    torch.testing.assert_close(comp.score_prompt(prompt, QUERY), plain.score_prompt(prompt, QUERY))
    (several,) = build_prompts(comp.plan, [(DOCS, QUERY)])
    scores = comp.score_prompt(several, QUERY)
    assert scores.shape == (several.context_tokens,) and comp.cache is not None and comp.cache.stats()["stored"] == 6


def test_a_dynamically_quantised_model_encodes_each_chunk_alone() -> None:
    import copy

    from gemfilter_rag.loading import quantize_int8

    comp = GemFilterCompressor(quantize_int8(copy.deepcopy(build_model("llama"))), build_tokenizer(), filter_layer=2)
    model = comp.plan.model
    assert (
        model.dynamic_quantized
        and not GemFilterCompressor(build_model("llama"), build_tokenizer()).plan.model.dynamic_quantized
    )
    ids = [torch.tensor(build_tokenizer()(t)["input_ids"]) for t in DOCS[:3]]
    together = model.encode(ids, 2)
    for x, (keys, values) in zip(ids, together, strict=True):
        ((alone_keys, alone_values),) = model.encode([x], 2)
        assert torch.equal(keys, alone_keys) and torch.equal(values, alone_values)
    cached = comp.with_cache(ChunkCache(), cache_mode="force")
    assert cached.compress(DOCS, QUERY, top_k=30).compressed_tokens <= 30


def test_force_refuses_a_scorer_that_reads_hidden_states() -> None:
    from gemfilter_rag.features import block_columns

    model = build_model("llama")
    extras = variant_extras("attention")
    blocks = (*BLOCKS_V1, LAYER_BLOCKS[0])
    w = (0.1,) * (block_columns(blocks, 3, 4) + len(extras))
    sets = ReadoutSet(2, 4, {"attention": Readout(2, 4, extras, w, 0.0, blocks)})
    profile = Profile("hidden", fingerprint(model.config), {"filter_layer": 2}, readout=sets.to_dict())
    with pytest.raises(ValueError, match="hidden-state"):
        GemFilterCompressor(model, build_tokenizer(), profile=profile, cache=ChunkCache(), cache_mode="force")
    auto = GemFilterCompressor(model, build_tokenizer(), profile=profile, cache=ChunkCache())
    assert not auto.uses_cache  # no cache-mode readout: the joint pass
