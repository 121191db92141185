"""capture: only layers 0..r run, the capture is layer r's query/key, the model is left as it was."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gemfilter_rag import capture

NUM_LAYERS = 4  # of the tiny models built in conftest.py


def _ids(tokenizer: Any, text: str = "Cities send messages. New York tells you to make more money.") -> torch.Tensor:
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])  # (1, T)


def _final_modules(model: Any) -> list[torch.nn.Module]:
    return [model.model.norm, model.lm_head]


@pytest.mark.parametrize("layer", [0, 2, NUM_LAYERS - 1])
def test_only_layers_up_to_filter_layer_run(tiny_model: Any, tokenizer: Any, layer: int) -> None:
    layers = capture.decoder_layers(tiny_model)
    assert len(layers) == NUM_LAYERS
    entered = [0] * len(layers)
    finished = [0] * len(layers)
    tail_calls = [0]
    handles = []
    for i, mod in enumerate(layers):
        handles.append(mod.register_forward_pre_hook(lambda *_, i=i: entered.__setitem__(i, entered[i] + 1)))
        handles.append(mod.register_forward_hook(lambda *_, i=i: finished.__setitem__(i, finished[i] + 1)))
    for mod in _final_modules(tiny_model):
        handles.append(mod.register_forward_pre_hook(lambda *_: tail_calls.__setitem__(0, tail_calls[0] + 1)))
    try:
        capture.capture_layer(tiny_model, _ids(tokenizer), layer)
    finally:
        for h in handles:
            h.remove()
    assert entered == [1 if i <= layer else 0 for i in range(len(layers))]
    # the filter layer itself stops inside its attention: it never returns
    assert finished == [1 if i < layer else 0 for i in range(len(layers))]
    assert tail_calls == [0]


def test_capture_shapes_scaling_and_window(tiny_model: Any, tokenizer: Any, arch: str) -> None:
    ids = _ids(tokenizer)
    cfg = tiny_model.config
    if arch == "gemma3":  # the fixture mixes sliding and full layers
        assert set(cfg.layer_types) == {"sliding_attention", "full_attention"}
    for layer in range(NUM_LAYERS):
        cap = capture.capture_layer(tiny_model, ids, layer)
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        assert cap.query.shape == (1, cfg.num_attention_heads, ids.shape[1], head_dim)
        assert cap.key.shape == (1, cfg.num_key_value_heads, ids.shape[1], head_dim)
        expected_scaling = (cfg.query_pre_attn_scalar if arch == "gemma3" else head_dim) ** -0.5
        assert cap.scaling == pytest.approx(expected_scaling)
        if arch == "gemma3":
            sliding = cfg.layer_types[layer] == "sliding_attention"
            assert cap.sliding_window == (cfg.sliding_window if sliding else None)
        else:
            assert cap.sliding_window is None
        assert not cap.query.requires_grad and not cap.key.requires_grad


def test_attn_implementation_restored_and_model_unchanged(tiny_model: Any, tokenizer: Any) -> None:
    ids = _ids(tokenizer)
    before_impl = tiny_model.config._attn_implementation
    with torch.no_grad():
        before = tiny_model(input_ids=ids).logits
    capture.capture_layer(tiny_model, ids, 1)
    assert tiny_model.config._attn_implementation == before_impl
    with torch.no_grad():
        after = tiny_model(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_attn_implementation_restored_when_forward_raises(tiny_model: Any, tokenizer: Any) -> None:
    before_impl = tiny_model.config._attn_implementation
    seen: list[str] = []

    def boom(*_: Any) -> None:
        seen.append(tiny_model.config._attn_implementation)
        raise RuntimeError("boom in layer 0")

    handle = capture.decoder_layers(tiny_model)[0].register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom in layer 0"):
            capture.capture_layer(tiny_model, _ids(tokenizer), 2)
    finally:
        handle.remove()
    assert seen and seen[0] != before_impl  # the pass did route through the dispatcher
    assert tiny_model.config._attn_implementation == before_impl
    assert capture._ARMED.get() is None
    capture.capture_layer(tiny_model, _ids(tokenizer), 2)  # and the next pass still works


def test_eager_model_capture_matches_sdpa_model(tiny_model_factory: Any, tokenizer: Any, arch: str) -> None:
    ids = _ids(tokenizer)
    eager = tiny_model_factory(arch, "eager")
    sdpa = tiny_model_factory(arch, "sdpa")
    a = capture.capture_layer(eager, ids, 2)
    b = capture.capture_layer(sdpa, ids, 2)
    assert eager.config._attn_implementation == "eager"
    torch.testing.assert_close(a.query, b.query, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.key, b.key, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layer", [-1, NUM_LAYERS, 100])
def test_layer_out_of_range(tiny_model: Any, tokenizer: Any, layer: int) -> None:
    with pytest.raises(ValueError, match=rf"filter_layer.*{layer}.*0\.\.{NUM_LAYERS - 1}"):
        capture.capture_layer(tiny_model, _ids(tokenizer), layer)


def test_encoder_only_model_rejected() -> None:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    )
    with pytest.raises(ValueError, match="not a decoder-only causal LM"):
        capture.decoder_layers(bert)


def test_base_model_without_lm_head_rejected(tiny_model: Any) -> None:
    with pytest.raises(ValueError, match="model:.*causal LM"):
        capture.decoder_layers(tiny_model.model)
