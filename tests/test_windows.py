"""Scoring in windows when a prompt is longer than the filter model's context."""

from __future__ import annotations

import pytest
import torch
from tinymodels import SEED, TRAINING_TEXT, model_config

from gemfilter_rag import GemFilterCompressor
from gemfilter_rag.windows import merge_window_scores, normalise, plan_windows, score_in_windows


@pytest.mark.parametrize(("length", "window", "overlap"), [(10, 4, 1), (100, 30, 5), (7, 7, 0), (8, 7, 3), (1, 5, 2)])
def test_plan_windows_covers_with_bounded_windows(length: int, window: int, overlap: int) -> None:
    slices = plan_windows(length, window, overlap)
    assert slices[0][0] == 0 and slices[-1][1] == length
    covered = set()
    for (a, b), nxt in zip(slices, [*slices[1:], None], strict=True):
        assert 0 < b - a <= window
        covered |= set(range(a, b))
        if nxt is not None:
            assert nxt[0] == b - overlap  # consecutive windows overlap by exactly `overlap`
    assert covered == set(range(length))


def test_plan_windows_validates() -> None:
    with pytest.raises(ValueError, match="overlap"):
        plan_windows(10, 4, 4)


def test_normalise_and_merge_against_manual_values() -> None:
    s = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(normalise(s), torch.tensor([0.0, 1.0, 2.0]))
    assert normalise(torch.tensor([5.0, 5.0])).tolist() == [1.0, 1.0]
    merged = merge_window_scores(5, [(0, 3), (2, 5)], [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 0.0, 3.0])])
    # window 1 -> [0, 1, 2]; window 2 -> [0, 0, 3]; token 2 keeps max(2, 0)
    assert merged.tolist() == [0.0, 1.0, 2.0, 0.0, 3.0]
    with pytest.raises(ValueError, match="cover"):
        merge_window_scores(4, [(0, 2)], [torch.tensor([1.0, 2.0])])


def _short_model(arch: str, vocab: int, positions: int):
    from transformers import AutoModelForCausalLM

    cfg = model_config(arch, vocab)
    cfg.max_position_embeddings = positions
    torch.manual_seed(SEED)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").float().eval()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_long_prompt_is_scored_in_windows(arch: str, tokenizer) -> None:
    model = _short_model(arch, len(tokenizer), 96)
    comp = GemFilterCompressor(model, tokenizer, filter_layer=2, granularity="token")
    docs = [TRAINING_TEXT[:600], TRAINING_TEXT[600:1200]]
    from gemfilter_rag.prompt import build_prompt

    cfg = comp.config
    prompt = build_prompt(
        tokenizer,
        docs,
        "What do cities send?",
        separator=cfg.separator,
        template=cfg.template,
        use_chat_template=cfg.use_chat_template,
    )
    assert prompt.length > 96
    calls: list[int] = []

    def score(ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        calls.append(int(ids.numel()))
        assert ids.numel() <= 96  # memory bounded by the window
        assert int(rows.max()) == ids.numel() - 1  # the question rows end the window
        return comp._score_ids(ids, rows)

    scores = score_in_windows(prompt, 96, cfg.scoring.query, score)
    assert scores.shape == (prompt.context_tokens,)
    assert len(calls) >= 2
    torch.testing.assert_close(comp.score_prompt(prompt), scores)
    res = comp.compress(docs, "What do cities send?", top_k=30)
    assert res.compressed_tokens == 30 and res.filter_layer == 2


def test_single_window_equals_normalised_direct_scores(tokenizer) -> None:
    model = _short_model("llama", len(tokenizer), 1024)
    comp = GemFilterCompressor(model, tokenizer, filter_layer=1)
    from gemfilter_rag.prompt import build_prompt

    cfg = comp.config
    prompt = build_prompt(
        tokenizer,
        [TRAINING_TEXT[:300]],
        "Who left?",
        separator=cfg.separator,
        template=cfg.template,
        use_chat_template=cfg.use_chat_template,
    )
    direct = comp.score_prompt(prompt)
    windowed = score_in_windows(prompt, 1024, cfg.scoring.query, comp._score_ids)
    torch.testing.assert_close(windowed, normalise(direct), rtol=1e-4, atol=1e-5)


def test_frame_too_long_for_one_window_is_a_clear_error(tokenizer) -> None:
    model = _short_model("llama", len(tokenizer), 40)
    comp = GemFilterCompressor(model, tokenizer, filter_layer=1)
    with pytest.raises(ValueError, match="positions"):
        comp.compress([TRAINING_TEXT[:400]], "Why " * 40 + "?", top_k=10)
