"""Re-rotating keys to other positions: the pure functions, then exactness on every tiny architecture.

Keys a model computes at positions A..A+n and moved by ``rope.rerotate`` to B..B+n must equal the keys
the model itself computes at B..B+n (within float32 rounding). The model's keys come from transformers'
own cache here (no GemFilter code on that side); the tables from ``capture.rotary_tables``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tinymodels import ARCHS, build_model, build_tokenizer, model_config

from gemfilter_rag import capture
from gemfilter_rag.rope import apply_turn, rerotate, rotate, turn_, turn_between, unrotate


def tables(n: int, r: int, offset: int = 0, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (10000 ** (torch.arange(0, r, 2).float() / r))  # (R/2,)
    freqs = torch.arange(offset, offset + n).float()[:, None] * inv  # (n, R/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (n, R)
    return emb.cos() * scale, emb.sin() * scale


def reference_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' formula written out: x * cos + rotate_half(x) * sin."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def test_rotate_is_the_rotate_half_formula_and_unrotate_inverts_it() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 16, generator=g)  # (B, KV, n, D)
    cos, sin = tables(7, 16, offset=5)
    torch.testing.assert_close(rotate(x, cos, sin), reference_rotate(x, cos, sin))
    torch.testing.assert_close(unrotate(rotate(x, cos, sin), cos, sin), x, rtol=1e-5, atol=1e-5)


def test_rerotate_moves_keys_and_handles_scaling_and_partial_rotary() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(1, 2, 6, 16, generator=g)  # pre-RoPE keys
    for r, scale in ((16, 1.0), (8, 1.0), (16, 1.3)):  # full, partial (first 8 dims), attention scaling (YaRN-like)
        a, b = tables(6, r, 3, scale), tables(6, r, 40, scale)
        ka = torch.cat((reference_rotate(base[..., :r], *a), base[..., r:]), dim=-1)
        kb = torch.cat((reference_rotate(base[..., :r], *b), base[..., r:]), dim=-1)
        torch.testing.assert_close(rerotate(ka, *a, *b), kb, rtol=1e-5, atol=1e-5)
    assert rerotate(ka.half(), *a, *b).dtype == torch.float16


def test_one_turn_in_place_equals_unrotating_then_rotating() -> None:
    g = torch.Generator().manual_seed(2)
    keys = torch.randn(3, 2, 6, 16, generator=g)  # (L, KV, n, D): several layers that share the tables
    for r, scale in ((16, 1.0), (8, 1.0), (16, 1.3)):
        a, b = tables(6, r, 3, scale), tables(6, r, 40, scale)
        expected = rotate(unrotate(keys, *a), *b)
        c, s = turn_between(*a, *b)  # (n, R/2)
        assert c.shape == (6, r // 2)
        torch.testing.assert_close(apply_turn(keys, c, s), expected, rtol=1e-5, atol=1e-5)
        moved = keys.clone()
        view = moved[:, :, 2:]  # a view is turned where it lies; the tokens before it stay
        turn_(view, c[2:], s[2:])
        torch.testing.assert_close(moved[:, :, 2:], expected[:, :, 2:], rtol=1e-5, atol=1e-5)
        assert torch.equal(moved[:, :, :2], keys[:, :, :2])
    with pytest.raises(ValueError, match="float32"):
        turn_(keys.half(), c, s)
    with pytest.raises(ValueError, match="does not fit"):
        apply_turn(keys[:, :, :4], c, s)


def test_bad_tables_are_refused() -> None:
    x = torch.randn(1, 1, 4, 8)
    cos, sin = tables(4, 8)
    with pytest.raises(ValueError, match="tables"):
        rotate(x, cos[:3], sin[:3])
    with pytest.raises(ValueError, match="rotate_half"):
        unrotate(x, torch.rand(4, 8), torch.rand(4, 8))  # halves differ: an interleaved layout


def model_keys(model: Any, ids: torch.Tensor, offset: int) -> list[torch.Tensor]:
    """Post-RoPE keys of every layer for ``ids`` placed at positions offset.., from transformers' own cache."""
    from transformers import DynamicCache

    cache = DynamicCache()  # full layers: every key kept
    positions = torch.arange(offset, offset + ids.shape[0])[None]
    with torch.inference_mode():
        model(input_ids=ids[None], position_ids=positions, use_cache=True, cache=cache)
    return [layer.keys for layer in cache.layers]  # (1, KV, n, D) each


def partial_phi3() -> Any:
    from transformers import AutoModelForCausalLM

    cfg = model_config("phi3", len(build_tokenizer()))
    cfg.rope_parameters["partial_rotary_factor"] = 0.5
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").float().eval()


@pytest.mark.parametrize("arch", [*ARCHS, "phi3_partial"])
def test_keys_moved_from_a_to_b_equal_the_keys_computed_at_b(arch: str) -> None:
    model = partial_phi3() if arch == "phi3_partial" else build_model(arch)
    ids = torch.tensor(build_tokenizer()("Cities send messages. New York tells you to make money.")["input_ids"])
    n, a, b = int(ids.shape[0]), 3, 29
    tabs = capture.rotary_tables(model, b + n, range(len(capture.decoder_layers(model))))
    at_a, at_b = model_keys(model, ids, a), model_keys(model, ids, b)
    for layer, (ka, kb) in enumerate(zip(at_a, at_b, strict=True)):
        cos, sin = tabs[layer]
        moved = rerotate(ka, cos[a : a + n], sin[a : a + n], cos[b : b + n], sin[b : b + n])
        # layer 0 sees only the token's embedding; deeper layers see relative positions only (RoPE), so
        # the keys at b equal the moved keys up to float32 rounding at every layer
        torch.testing.assert_close(moved, kb, rtol=2e-5, atol=2e-5, msg=f"layer {layer}")
        assert not torch.allclose(ka, kb, atol=1e-3), "the offsets must change the keys for the test to mean anything"


def test_gemma3_sliding_and_full_layers_get_their_own_tables() -> None:
    model = build_model("gemma3")
    tabs = capture.rotary_tables(model, 12, range(4))
    assert tabs[0][0].shape == (12, 16)
    assert torch.equal(tabs[0][0], tabs[2][0]) and not torch.equal(tabs[0][0], tabs[1][0])  # local vs global base
