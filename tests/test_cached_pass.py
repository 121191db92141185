"""The cached path against references computed without it: exactly where it must be exact.

* One document: nothing differs from the joint pass (the document follows the prefix in both).
* Several documents, layer 0: every block's keys (moved to its place) and values equal the joint pass's,
  and so does the question's attention; the first document's keys and values equal the joint pass's at
  every layer.
* Several documents, every layer: the exact reference of cached chunks is a pass in which each block sees
  only the prefix and itself (a block-diagonal 4D mask on an eager model) *at the positions it was encoded
  at* (each block restarts at P), its keys then moved to their places, and the question run over them with
  transformers' own cache. A block-diagonal mask at the joint positions is exact at layer 0 only: RoPE makes
  a block's attention to the prefix depend on their distance, which the cache fixes at encoding time.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch
from tinymodels import ARCHS, GEMMA3_WINDOW, TRAINING_TEXT, build_model, build_tokenizer

from gemfilter_rag import ChunkCache, GemFilterCompressor, capture
from gemfilter_rag.cached_pass import cached_record, identity, model_fingerprint, prompt_blocks
from gemfilter_rag.pipeline import build_prompts
from gemfilter_rag.prompt import FilterPrompt
from gemfilter_rag.scoring import query_positions

LAYER = 2
DOCS = [p.replace("\n", " ") for p in TRAINING_TEXT.split("\n\n")[:4]]
QUERY = "What does Cambridge tell you?"
ALL = [*ARCHS, "mistral_sliding", "qwen2_sliding"]


def setup(arch: str, docs: list[str], query: str = QUERY) -> tuple[GemFilterCompressor, FilterPrompt, torch.Tensor]:
    comp = GemFilterCompressor(build_model(arch), build_tokenizer(), filter_layer=LAYER)
    (prompt,) = build_prompts(comp.plan, [(docs, query)])
    return comp, prompt, query_positions(prompt.length, prompt.query_start, "question")


def cached(comp: GemFilterCompressor, prompt: FilterPrompt, rows: torch.Tensor, cache: ChunkCache, **kw: Any) -> Any:
    who = identity(comp.plan.model, LAYER)
    return cached_record(comp.plan.model, cache, who, prompt, comp.config.separator, rows, True, **kw)


def groups(prompt: FilterPrompt) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per context token: its block (-1 the prefix; documents and separators each their own) and its position
    in the pass that encoded it (P + its index in the block); and the context's length. From the prompt's
    offsets alone."""
    p = prompt.doc_offsets[0]
    ends = [o + len(d.ids) for o, d in zip(prompt.doc_offsets, prompt.documents, strict=True)]
    context = ends[-1]
    group = torch.full((context,), -1, dtype=torch.long)
    enc = torch.arange(context)
    runs, start = [], p
    for o, e in zip(prompt.doc_offsets, ends, strict=True):
        if o > start:
            runs.append((start, o))  # the separator before this document
        runs.append((o, e))
        start = e
    for b, (a, e) in enumerate(runs):
        group[a:e] = b
        enc[a:e] = p + torch.arange(e - a)
    return group, enc, context


def block_mask(group: torch.Tensor, pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """(1, 1, C, C) additive mask: causal, each block sees the prefix and itself (and keys within ``window`` of
    ``pos``, for sliding layers)."""
    c = group.shape[0]
    i, j = torch.arange(c)[:, None], torch.arange(c)[None, :]
    allowed = (j <= i) & ((group[None, :] == -1) | (group[None, :] == group[:, None]))
    if window is not None:
        allowed &= (pos[:, None] - pos[None, :]) < window
    return torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[None, None]


def masks_for(arch: str, group: torch.Tensor, pos: torch.Tensor) -> Any:
    full = block_mask(group, pos, None)
    sliding = block_mask(group, pos, GEMMA3_WINDOW)
    if arch == "mistral_sliding":
        return sliding
    if arch in ("gemma3", "qwen2_sliding"):
        return {"full_attention": full, "sliding_attention": sliding}
    return full


def reference_attention(arch: str, prompt: FilterPrompt, rows: torch.Tensor) -> torch.Tensor:
    """(L, H, T): the question rows' mean attention at layers 0..LAYER on the exact reference (see the module),
    with transformers' eager attention, its own cache and its own ``apply_rotary_pos_emb``; no GemFilter code."""
    from transformers import DynamicCache

    eager = build_model(arch, "eager")
    group, enc, c = groups(prompt)
    ids = prompt.input_ids
    past = DynamicCache()
    with torch.inference_mode():
        eager(
            input_ids=ids[None, :c],
            attention_mask=masks_for(arch, group, enc),
            position_ids=enc[None],
            use_cache=True,
            cache=past,
        )
        apply = sys.modules[type(eager).__module__].apply_rotary_pos_emb
        rotary = eager.model.rotary_emb
        types = getattr(eager.config, "layer_types", None) or ["full_attention"] * len(past.layers)
        moved = []
        for layer, cached_layer in enumerate(past.layers):
            keys = cached_layer.keys.clone()  # (1, KV, C, D), at the encoding positions
            delta = (torch.arange(c) - enc)[None]  # (1, C): how far each token moves (0 for the prefix)
            x = keys[:, 0]
            cos, sin = rotary(x, delta, types[layer]) if arch == "gemma3" else rotary(x, delta)
            _, turned = apply(keys, keys, cos, sin)  # R(delta) R(enc) = R(joint position)
            moved.append((turned, cached_layer.values))
        live = DynamicCache(ddp_cache_data=moved)
        out = eager(
            input_ids=ids[None, c:],
            position_ids=torch.arange(c, prompt.length)[None],
            use_cache=True,
            cache=live,
            output_attentions=True,
        )
    return torch.stack([out.attentions[layer][0][:, rows - c].mean(dim=1) for layer in range(LAYER + 1)])


# ---------------------------------------------------------------- exact: one document, every layer


@pytest.mark.parametrize("arch", ALL)
def test_one_document_cached_equals_the_joint_pass(arch: str) -> None:
    comp, prompt, rows = setup(arch, DOCS[:1])
    (joint,) = comp.plan.model.run([(prompt.input_ids, rows)], LAYER, attention=True)
    record = cached(comp, prompt, rows, ChunkCache(dtype="fp32"))
    assert record.attention is not None and joint.attention is not None
    assert record.attention.shape == joint.attention.shape == (LAYER + 1, 4, prompt.length)
    torch.testing.assert_close(record.attention, joint.attention, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(record.key, joint.key, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(record.query, joint.query, rtol=1e-5, atol=1e-5)
    assert torch.equal(record.rows.cpu(), joint.rows.cpu()) and record.scaling == joint.scaling
    assert record.sliding_window == joint.sliding_window


# ---------------------------------------------------------------- exact: several documents, layer 0


@pytest.mark.parametrize("arch", ALL)
def test_layer_zero_and_the_first_document_are_exact(arch: str) -> None:
    comp, prompt, rows = setup(arch, DOCS)
    model = comp.plan.model
    caps = capture.capture_layers(model.model, prompt.input_ids[None], list(range(LAYER + 1)), values=True)
    cache = ChunkCache(dtype="fp32")
    record = cached(comp, prompt, rows, cache)
    (joint,) = model.run([(prompt.input_ids, rows)], LAYER, attention=True)
    assert record.attention is not None and joint.attention is not None
    torch.testing.assert_close(record.attention[0], joint.attention[0], rtol=1e-5, atol=1e-6)
    # the past the cached pass ran over, rebuilt from the cache: compare it with the joint pass's keys/values
    from gemfilter_rag.cached_pass import fill, past_of

    frame, blocks, context = prompt_blocks(prompt, comp.config.separator)
    who = identity(model, LAYER)
    entries, encoded = fill(model, cache, who, frame, [(b.text, b.ids) for b in blocks])
    assert encoded == 0  # every block was stored by the cached pass
    past = past_of(model, entries, who, frame, blocks, prompt.length)
    first = prompt.doc_offsets[0] + len(prompt.documents[0].ids)
    for layer in range(LAYER + 1):
        k, v = caps[layer].key[0, :, :context], caps[layer].value
        if layer == 0:  # every block
            torch.testing.assert_close(past[0][0][0], k, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(past[0][1][0], v[0, :, :context], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(past[layer][0][0, :, :first], k[:, :first], rtol=1e-5, atol=1e-5)  # prefix + doc 0
        if layer < LAYER:
            assert v is not None
            torch.testing.assert_close(past[layer][1][0, :, :first], v[0, :, :first], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(
        past[1][0][0, :, first:], caps[1].key[0, :, first:context], atol=1e-3
    )  # the approximation


# ---------------------------------------------------------------- exact: several documents, every layer


@pytest.mark.parametrize("arch", ALL)
def test_several_documents_equal_the_block_diagonal_reference(arch: str) -> None:
    comp, prompt, rows = setup(arch, DOCS)
    record = cached(comp, prompt, rows, ChunkCache(dtype="fp32"))
    expected = reference_attention(arch, prompt, rows)
    assert record.attention is not None and record.attention.shape == expected.shape
    torch.testing.assert_close(record.attention, expected.float(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_block_diagonal_at_joint_positions_is_exact_at_layer_zero_only(arch: str) -> None:
    """The naive reference (each block sees the prefix and itself, at its place in the prompt)."""
    comp, prompt, rows = setup(arch, DOCS)
    record = cached(comp, prompt, rows, ChunkCache(dtype="fp32"))
    group, _, c = groups(prompt)
    t = prompt.length
    full_group = torch.cat([group, torch.full((t - c,), -2)])  # the live tokens see everything before them
    pos = torch.arange(t)

    def mask(window: int | None) -> torch.Tensor:
        m = block_mask(full_group, pos, window)
        m[..., c:, :] = block_mask(torch.full((t,), -1), pos, window)[..., c:, :]
        return m

    masks: Any = (
        {"full_attention": mask(None), "sliding_attention": mask(GEMMA3_WINDOW)} if arch == "gemma3" else mask(None)
    )
    with torch.inference_mode():
        out = build_model(arch, "eager")(
            input_ids=prompt.input_ids[None], attention_mask=masks, use_cache=False, output_attentions=True
        )
    naive = torch.stack([out.attentions[layer][0][:, rows].mean(dim=1) for layer in range(LAYER + 1)])
    assert record.attention is not None
    torch.testing.assert_close(record.attention[0], naive[0].float(), rtol=1e-5, atol=1e-6)
    assert (record.attention[1:] - naive[1:]).abs().max() > 1e-4  # RoPE distances to the prefix differ


# ---------------------------------------------------------------- what the record holds, and the entries


def test_record_shapes_and_key_rows() -> None:
    comp, prompt, rows = setup("qwen2", DOCS)
    keys = torch.tensor([prompt.query_start + 2, prompt.query_start + 3])
    record = cached(comp, prompt, rows, ChunkCache(), key_rows=keys)
    t = prompt.length
    assert record.attention is not None and record.attention.shape == (LAYER + 1, 4, t)
    assert record.key_attention is not None and record.key_attention.shape == (LAYER + 1, 4, t)
    assert record.key.shape == (1, 2, t, 16) and record.query.shape == (1, 4, rows.numel(), 16)
    assert record.similarity is None  # the context's hidden states never exist on this path
    torch.testing.assert_close(record.attention.sum(-1), torch.ones(LAYER + 1, 4), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="after the context"):
        cached(comp, prompt, torch.tensor([prompt.doc_offsets[0]]), ChunkCache())


@pytest.mark.parametrize("arch", ALL)
def test_attention_computed_once_equals_the_models_own(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorded layers' attention, computed once for output and record, gives the pass the model's own
    attention gives: the same records and the same exit-layer keys (which every earlier output feeds)."""
    comp, prompt, rows = setup(arch, DOCS)
    keys = torch.tensor([prompt.query_start + 1, prompt.query_start + 2])
    cache = ChunkCache(dtype="fp32")
    fused = cached(comp, prompt, rows, cache, key_rows=keys)
    monkeypatch.setattr(capture, "FUSED_WEIGHTS", 0)  # every layer through the model's attention function
    plain = cached(comp, prompt, rows, cache, key_rows=keys)
    assert fused.attention is not None and plain.attention is not None
    torch.testing.assert_close(fused.attention, plain.attention, rtol=1e-5, atol=1e-6)
    assert fused.key_attention is not None and plain.key_attention is not None
    torch.testing.assert_close(fused.key_attention, plain.key_attention, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused.key, plain.key, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.query, plain.query, rtol=1e-5, atol=1e-5)


def test_chunks_are_encoded_once_and_reused_in_any_order_and_query() -> None:
    comp, prompt, rows = setup("llama", DOCS)
    cache = ChunkCache(dtype="fp32")
    cached(comp, prompt, rows, cache)
    assert cache.stats()["stored"] == 1 + len(DOCS) + 1  # the prefix, every document, the separator
    other, prompt2, rows2 = setup("llama", DOCS[::-1], "Who left?")
    record = cached(other, prompt2, rows2, cache)
    assert cache.stats()["stored"] == 1 + len(DOCS) + 1  # nothing new
    expected = reference_attention("llama", prompt2, rows2)
    torch.testing.assert_close(record.attention, expected.float(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
def test_stored_precision_changes_little(dtype: str) -> None:
    comp, prompt, rows = setup("llama", DOCS)
    exact = cached(comp, prompt, rows, ChunkCache(dtype="fp32"))
    rounded = cached(comp, prompt, rows, ChunkCache(dtype=dtype))
    assert exact.attention is not None and rounded.attention is not None
    tol = {"fp16": 1e-4, "int8": 3e-2}[dtype]
    assert (exact.attention - rounded.attention).abs().max() < tol


def test_models_do_not_share_entries() -> None:
    cache = ChunkCache()
    for arch in ("llama", "qwen2"):
        comp, prompt, rows = setup(arch, DOCS[:2])
        cached(comp, prompt, rows, cache)
    assert cache.stats()["stored"] == 2 * 4
    assert model_fingerprint(build_model("llama")) != model_fingerprint(build_model("qwen2"))
    # two fresh models of the same weights (the shared tiny models' configs are touched by other tests)
    assert model_fingerprint(fresh("llama", "sdpa")) == model_fingerprint(fresh("llama", "eager"))


def fresh(arch: str, attn: str) -> Any:
    from tinymodels import SEED, model_config
    from transformers import AutoModelForCausalLM

    torch.manual_seed(SEED)
    return AutoModelForCausalLM.from_config(model_config(arch, len(build_tokenizer())), attn_implementation=attn).eval()
