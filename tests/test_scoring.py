"""Scores: pure functions on hand-checked cases, and whole passes against independent computations."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch

from gemfilter_rag import GemFilterCompressor, ScoringConfig
from gemfilter_rag.prompt import FilterPrompt, build_prompt
from gemfilter_rag.scoring import (
    aggregate,
    attention_probs,
    pool,
    query_logits,
    token_scores,
    top_k_sorted,
    visibility_mask,
)

DOCS = [
    "Cities send messages. New York tells you that you should make more money.",
    "Startups in 2005 could be started for far less money than in 1995. Servers were cheaper.",
    "When you write an essay, you find out what you think.",
]
QUERY = "What does New York tell you?"


# ---------------------------------------------------------------- pure functions, hand-checked


def test_query_logits_repeats_gqa_keys() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 6, 3, 4, generator=g)  # (B, H, Q, D)
    k = torch.randn(2, 2, 5, 4, generator=g)  # (B, KV, T, D)
    out = query_logits(q, k)
    assert out.shape == (2, 6, 3, 5)
    for b in range(2):
        for h in range(6):
            kv = h // 3  # heads 0-2 share key head 0, heads 3-5 key head 1
            for i in range(3):
                for t in range(5):
                    assert out[b, h, i, t].item() == pytest.approx(float(q[b, h, i] @ k[b, kv, t]), abs=1e-5)


def test_query_logits_rejects_indivisible_heads() -> None:
    with pytest.raises(ValueError, match="multiple"):
        query_logits(torch.zeros(1, 3, 1, 2), torch.zeros(1, 2, 4, 2))


def test_visibility_mask_causal_and_sliding() -> None:
    causal = visibility_mask(torch.tensor([0, 2, 4]), 5)
    assert causal.tolist() == [
        [True, False, False, False, False],
        [True, True, True, False, False],
        [True, True, True, True, True],
    ]
    sliding = visibility_mask(torch.tensor([0, 2, 4]), 5, sliding_window=2)
    assert sliding.tolist() == [
        [True, False, False, False, False],
        [False, True, True, False, False],
        [False, False, False, True, True],
    ]


def test_attention_probs_is_masked_softmax() -> None:
    logits = torch.tensor([[[[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]]]])  # (1, 1, 2, 3)
    visible = torch.tensor([[True, True, False], [True, True, True]])
    probs = attention_probs(logits, 0.5, visible)
    e = torch.exp(torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(probs[0, 0, 0], torch.cat([e / e.sum(), torch.zeros(1)]))
    e2 = torch.exp(torch.tensor([0.0, 0.0, 2.5]))
    torch.testing.assert_close(probs[0, 0, 1], e2 / e2.sum())


def test_aggregate_sum_and_max() -> None:
    s = torch.tensor([[[[1.0, 0.0], [2.0, 1.0]], [[0.0, 5.0], [0.0, 0.0]]]])  # (B=1, H=2, Q=2, T=2)
    # rows summed: head 0 -> [3, 1], head 1 -> [0, 5]
    assert aggregate(s, "sum").tolist() == [[3.0, 6.0]]
    assert aggregate(s, "max").tolist() == [[3.0, 5.0]]
    with pytest.raises(ValueError, match="heads"):
        aggregate(s, "mean")


def test_pool_hand_checked() -> None:
    x = torch.tensor([[0.0, 5.0, 0.0, 0.0, 1.0, 0.0]])
    assert pool(x, "max", 3).tolist() == [[5.0, 5.0, 5.0, 1.0, 1.0, 1.0]]
    # zero padding is counted in the average
    torch.testing.assert_close(pool(x, "avg", 3), torch.tensor([[5 / 3, 5 / 3, 5 / 3, 1 / 3, 1 / 3, 1 / 3]]))
    torch.testing.assert_close(pool(x, "avg", 5), torch.tensor([[1.0, 1.0, 6 / 5, 6 / 5, 1 / 5, 1 / 5]]))
    assert pool(x, "none", 7) is x
    assert pool(x, "max", 1) is x
    with pytest.raises(ValueError, match="pool"):
        pool(x, "median", 3)


def test_pool_width_longer_than_sequence() -> None:
    x = torch.tensor([[1.0, 2.0]])
    assert pool(x, "max", 7).tolist() == [[2.0, 2.0]]
    torch.testing.assert_close(pool(x, "avg", 7), torch.tensor([[3 / 7, 3 / 7]]))


def test_top_k_sorted_ties_and_bounds() -> None:
    s = torch.tensor([0.5, 2.0, 2.0, 1.0, 2.0])
    assert top_k_sorted(s, 2).tolist() == [1, 2]  # equal scores: the earlier tokens win
    assert top_k_sorted(s, 3).tolist() == [1, 2, 4]
    assert top_k_sorted(s, 4).tolist() == [1, 2, 3, 4]
    assert top_k_sorted(s, 99).tolist() == [0, 1, 2, 3, 4]
    assert top_k_sorted(s, 0).tolist() == []
    assert top_k_sorted(torch.empty(0), 3).tolist() == []


def test_token_scores_composes_the_steps() -> None:
    g = torch.Generator().manual_seed(1)
    q_all = torch.randn(1, 4, 6, 8, generator=g)
    k = torch.randn(1, 2, 6, 8, generator=g)
    rows = torch.tensor([4, 5])
    cfg = ScoringConfig(query=2, softmax=True, heads="max", pool="avg", pool_width=3)
    got = token_scores(q_all[:, :, rows], k, rows, cfg, 0.25, sliding_window=3)
    # independent: loop over heads and rows
    ref = torch.zeros(4, 6)
    for h in range(4):
        for r in rows.tolist():
            logits = torch.tensor([float(q_all[0, h, r] @ k[0, h // 2, t]) * 0.25 for t in range(6)])
            visible = torch.tensor([r - 3 < t <= r for t in range(6)])
            ref[h] += torch.softmax(logits.masked_fill(~visible, float("-inf")), 0)
    per_token = ref.max(dim=0).values
    padded = torch.cat([torch.zeros(1), per_token, torch.zeros(1)])
    pooled = torch.stack([padded[t : t + 3].sum() / 3 for t in range(6)])
    torch.testing.assert_close(got[0], pooled, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- whole passes, independent references


def _manual_pool(x: torch.Tensor, kind: str, width: int) -> torch.Tensor:
    half = width // 2
    out = []
    for t in range(x.shape[0]):
        window = x[max(0, t - half) : t + half + 1]
        out.append(window.max() if kind == "max" else window.sum() / width)
    return torch.stack(out)


def _prompt(comp: GemFilterCompressor) -> FilterPrompt:
    cfg = comp.config
    return build_prompt(
        comp.tokenizer,
        DOCS,
        QUERY,
        separator=cfg.separator,
        template=cfg.template,
        use_chat_template=cfg.use_chat_template,
    )


def _rows(prompt: FilterPrompt, query: Any) -> torch.Tensor:
    t = prompt.length
    if query == "last":
        return torch.tensor([t - 1])
    if query == "question":
        return torch.arange(prompt.query_start, t)
    return torch.arange(t - query, t)


_ATTENTIONS: dict[tuple[int, tuple[int, ...]], Any] = {}


def _eager_attentions(model: Any, ids: torch.Tensor) -> Any:
    """Attention weights of every layer from one full eager forward (cached per model and prompt)."""
    key = (id(model), tuple(ids.tolist()))
    if key not in _ATTENTIONS:
        assert model.config._attn_implementation == "eager"
        with torch.no_grad():
            _ATTENTIONS[key] = model(input_ids=ids[None], output_attentions=True, use_cache=False).attentions
    return _ATTENTIONS[key]


SOFTMAX_CONFIGS = [
    ScoringConfig(),
    ScoringConfig(query="last", heads="max", pool="none"),
    ScoringConfig(query=5, heads="sum", pool="avg", pool_width=3),
]


@pytest.mark.parametrize("layer", [0, 1, 3])
@pytest.mark.parametrize("scoring", SOFTMAX_CONFIGS, ids=["default", "last-max-none", "5-sum-avg3"])
def test_softmax_scores_match_eager_attention(
    tiny_model_factory: Any, tokenizer: Any, arch: str, layer: int, scoring: ScoringConfig
) -> None:
    eager = tiny_model_factory(arch, "eager")
    comp = GemFilterCompressor(tiny_model_factory(arch, "sdpa"), tokenizer, filter_layer=layer, scoring=scoring)
    prompt = _prompt(comp)
    got = comp.score_prompt(prompt)
    attn = _eager_attentions(eager, prompt.input_ids)[layer][0]  # (H, T, T)
    rows = _rows(prompt, scoring.query)
    per_head = attn[:, rows].sum(dim=1)  # (H, T)
    agg = per_head.sum(0) if scoring.heads == "sum" else per_head.max(0).values
    ref = agg if scoring.pool == "none" else _manual_pool(agg, scoring.pool, scoring.pool_width)
    ctx = prompt.context_positions()
    assert got.shape == (prompt.context_tokens,)
    torch.testing.assert_close(got, ref[ctx].float(), rtol=1e-4, atol=1e-5)


def test_gemma3_sliding_layer_hides_far_tokens(tiny_model_factory: Any, tokenizer: Any) -> None:
    model = tiny_model_factory("gemma3", "sdpa")
    window = model.config.sliding_window
    sliding = model.config.layer_types.index("sliding_attention")
    comp = GemFilterCompressor(model, tokenizer, filter_layer=sliding, scoring=ScoringConfig(query="last", pool="none"))
    prompt = _prompt(comp)
    scores = comp.score_prompt(prompt)
    positions = prompt.context_positions()
    far = positions <= prompt.length - 1 - window
    assert far.any()
    assert torch.all(scores[far] == 0)
    full = model.config.layer_types.index("full_attention")
    comp_full = GemFilterCompressor(
        model, tokenizer, filter_layer=full, scoring=ScoringConfig(query="last", pool="none")
    )
    assert torch.all(comp_full.score_prompt(prompt) > 0)


def _paper_reference(model: Any, ids: torch.Tensor, layer: int) -> torch.Tensor:
    """Raw ``q_last . k`` summed over heads, from layer ``layer``'s own projections, avg-pooled width 5."""
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[layer]  # (1, T, E)
        block = model.model.layers[layer]
        attn = block.self_attn
        cfg = model.config
        n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        d = attn.head_dim
        x = block.input_layernorm(hidden)
        if hasattr(attn, "qkv_proj"):  # Phi3: fused
            qkv = attn.qkv_proj(x)
            q, k = qkv[..., : n_heads * d], qkv[..., n_heads * d : (n_heads + n_kv) * d]
        else:
            q, k = attn.q_proj(x), attn.k_proj(x)
        t = ids.shape[1]
        q = q.view(1, t, n_heads, d).transpose(1, 2)  # (1, H, T, D)
        k = k.view(1, t, n_kv, d).transpose(1, 2)  # (1, KV, T, D)
        if hasattr(attn, "q_norm"):  # Gemma3
            q, k = attn.q_norm(q), attn.k_norm(k)
        position_ids = torch.arange(t)[None]
        if isinstance(model.model.rotary_emb.rope_type, dict):  # Gemma3: one RoPE per layer type
            cos, sin = model.model.rotary_emb(hidden, position_ids, attn.layer_type)
        else:
            cos, sin = model.model.rotary_emb(hidden, position_ids)
        apply_rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        q, k = apply_rope(q, k, cos, sin)
        k = k.repeat_interleave(n_heads // n_kv, dim=1)  # (1, H, T, D)
        raw = (q[0, :, -1:] @ k[0].transpose(-1, -2))[:, 0]  # (H, T)
        return _manual_pool(raw.sum(0), "avg", 5)  # (T,)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_paper_scores_match_recomputed_qk(tiny_model: Any, tokenizer: Any, layer: int) -> None:
    comp = GemFilterCompressor(tiny_model, tokenizer, filter_layer=layer, scoring=ScoringConfig.paper())
    prompt = _prompt(comp)
    got = comp.score_prompt(prompt)
    ref = _paper_reference(tiny_model, prompt.input_ids[None], layer)
    torch.testing.assert_close(got, ref[prompt.context_positions()].float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["mistral_sliding", "qwen2_sliding"])
@pytest.mark.parametrize("layer", [1, 3])
def test_sliding_window_models_match_eager(tiny_model_factory: Any, tokenizer: Any, arch: str, layer: int) -> None:
    eager = tiny_model_factory(arch, "eager")
    scoring = ScoringConfig(pool="none")
    comp = GemFilterCompressor(tiny_model_factory(arch, "sdpa"), tokenizer, filter_layer=layer, scoring=scoring)
    prompt = _prompt(comp)
    got = comp.score_prompt(prompt)
    attn = _eager_attentions(eager, prompt.input_ids)[layer][0]  # (H, T, T)
    ref = attn[:, _rows(prompt, "question")].sum(dim=(0, 1))  # (T,)
    torch.testing.assert_close(got, ref[prompt.context_positions()].float(), rtol=1e-4, atol=1e-5)
