"""Scoring in windows when a prompt is longer than the filter model's context."""

from __future__ import annotations

import pytest
import torch
from tinymodels import SEED, TRAINING_TEXT, fills_budget, model_config

from gemfilter_rag import GemFilterCompressor
from gemfilter_rag.evidence import Evidence
from gemfilter_rag.pipeline import window_scorer
from gemfilter_rag.selection import token_units, unit_scores
from gemfilter_rag.sentences import sentence_spans
from gemfilter_rag.windows import normalise, plan_windows, score_in_windows


@pytest.mark.parametrize(
    ("sizes", "window", "overlap"),
    [([1] * 10, 4, 1), ([3, 5, 2, 7, 1, 4, 6] * 5, 12, 4), ([7], 7, 0), ([2, 2, 2, 2], 8, 3), ([9, 1, 1], 5, 2)],
)
def test_plan_windows_packs_units_in_order(sizes: list[int], window: int, overlap: int) -> None:
    runs = plan_windows(sizes, window, overlap)
    assert runs[0][0] == 0 and runs[-1][1] == len(sizes)
    covered: set[int] = set()
    for (i, j), nxt in zip(runs, [*runs[1:], None], strict=True):
        assert j > i
        tokens = sum(sizes[i:j])
        assert tokens <= window or j - i == 1  # only a unit larger than the window runs alone
        covered |= set(range(i, j))
        if nxt is not None:
            assert i < nxt[0] <= j  # moves forward, never leaves a gap
            assert sum(sizes[nxt[0] : j]) <= overlap  # shares at most `overlap` tokens
    assert covered == set(range(len(sizes)))


def test_plan_windows_validates() -> None:
    with pytest.raises(ValueError, match="overlap"):
        plan_windows([1, 2], 4, 4)


def test_normalise_against_manual_values() -> None:
    torch.testing.assert_close(
        normalise(torch.tensor([1.0, 2.0, 3.0])), torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    )
    assert normalise(torch.tensor([5.0, 5.0])).tolist() == [1.0, 1.0]


def _decoy_prompt(tokenizer, n_sentences: int, needle_at: int):
    """One document of plain sentences, one needle sentence crowded by decoys, and a decoy every 10th
    sentence elsewhere."""
    from gemfilter_rag.prompt import build_prompt

    parts = []
    for i in range(n_sentences):
        if i == needle_at:
            parts.append("The company sat.")
        elif abs(i - needle_at) <= 6 or i % 10 == 5:
            parts.append("The money sat.")
        else:
            parts.append("Young users often build.")
    text = " ".join(parts)
    prompt = build_prompt(
        tokenizer, [text], "Who sat?", separator="\n\n", template="{context}\n{query}", use_chat_template=False
    )
    return text, prompt


def test_knockout_ranks_windows_against_each_other(tokenizer) -> None:
    """Scores shared out per window (as softmax attention is) cannot be merged by value: a decoy alone in
    its window outscores the needle that shares its window with a decoy. The knockout's last pass
    scores the survivors together, so the needle wins wherever it sits."""
    (needle_id,) = tokenizer(" company", add_special_tokens=False)["input_ids"]  # one token each
    (decoy_id,) = tokenizer(" money", add_special_tokens=False)["input_ids"]
    calls: list[int] = []

    def score(ids: torch.Tensor, rows: torch.Tensor, start: int, units: list, region: list) -> torch.Tensor:
        calls.append(int(ids.numel()))
        assert ids.numel() <= 120  # memory bounded by the window
        assert len(units) == len(region) and [b - a for a, b in units] == [b - a for a, b in region]
        logit = torch.tensor([3.0 if t == needle_id else 2.0 if t == decoy_id else 0.0 for t in ids.tolist()])
        mass = torch.softmax(logit, 0)[start:]  # one unit of mass per window, like attention
        return unit_scores(mass, units)

    for needle_at in (2, 40, 77):
        text, prompt = _decoy_prompt(tokenizer, 80, needle_at)
        assert prompt.length > 4 * 120
        calls.clear()
        scores = score_in_windows(prompt, 120, "last", score)  # (N,)
        assert scores.shape == (prompt.context_tokens,)
        assert len(calls) >= 4
        doc = prompt.documents[0]
        a = text.index("company")
        needle = next(i for i, (s, e) in enumerate(zip(doc.starts, doc.ends, strict=True)) if s <= a < e)
        piece = (120 - (prompt.length - prompt.context_tokens)) // 8
        units = token_units(doc.ends, sentence_spans(text), 0, piece)  # the knockout's own units
        values = unit_scores(scores, units)  # a unit's tokens share its value: sums give it back
        best = units[int(torch.argmax(values))]
        assert best[0] <= needle < best[1], (needle_at, best, needle)
        # survivors of the last pass are worth >= 1, knocked-out units less than 1: selection at any
        # granularity takes every survivor before any knocked-out unit
        assert float(values.max()) >= 1.0
        assert bool(((values >= 1.0 - 1e-5) | (values < 1.0)).all())
        survivors = [u for u, v in zip(units, values.tolist(), strict=True) if v >= 1.0 - 1e-5]
        assert sum(b - a for a, b in survivors) <= 120


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

    inner, prefilter = window_scorer(comp.plan, prompt, Evidence(prompt, "What do cities send?", None, None))
    assert prefilter is None  # no embedding model: no round 0

    def score(ids: torch.Tensor, rows: torch.Tensor, *rest) -> torch.Tensor:
        calls.append(int(ids.numel()))
        assert ids.numel() <= 96  # memory bounded by the window
        assert int(rows.max()) == ids.numel() - 1  # the question rows end the window
        return inner(ids, rows, *rest)

    scores = score_in_windows(prompt, 96, cfg.scoring.query, score)
    assert scores.shape == (prompt.context_tokens,)
    assert len(calls) >= 2
    torch.testing.assert_close(comp.score_prompt(prompt), scores)
    res = comp.compress(docs, "What do cities send?", top_k=30)
    assert fills_budget(res, 30) and res.filter_layer == 2


def test_single_window_ranks_units_as_one_direct_pass(tokenizer) -> None:
    """A context that fits one window is scored by one pass: units rank as the direct pass ranks them."""
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
    scorer, _ = window_scorer(comp.plan, prompt, Evidence(prompt, "Who left?", None, None))
    windowed = score_in_windows(prompt, 1024, cfg.scoring.query, scorer)
    doc = prompt.documents[0]
    units = token_units(doc.ends, sentence_spans(doc.text), 0, 64)
    expected = 1.0 + normalise(unit_scores(direct, units))  # survivors of the last (only) pass
    torch.testing.assert_close(unit_scores(windowed, units), expected.float(), rtol=1e-4, atol=1e-5)


def test_frame_too_long_for_one_window_is_a_clear_error(tokenizer) -> None:
    model = _short_model("llama", len(tokenizer), 40)
    comp = GemFilterCompressor(model, tokenizer, filter_layer=1)
    with pytest.raises(ValueError, match="positions"):
        comp.compress([TRAINING_TEXT[:400]], "Why " * 40 + "?", top_k=10)


def test_window_option_sizes_the_windows_of_prompts_the_model_cannot_take(tokenizer) -> None:
    model = _short_model("qwen2", len(tokenizer), 160)
    comp = GemFilterCompressor(model, tokenizer, filter_layer=1, granularity="token")
    assert comp.window_size == 160
    small = comp.with_options(window=96)
    assert small.window_size == 96 and small.config.window == 96
    assert comp.with_options(window=4096).window_size == 160  # capped by the model's positions
    from gemfilter_rag.prompt import build_prompt

    cfg = small.config
    lengths: list[int] = []

    def score(ids: torch.Tensor, rows: torch.Tensor, *rest) -> torch.Tensor:
        lengths.append(int(ids.numel()))
        return window_scorer(small.plan, long, Evidence(long, "Who left?", None, None))[0](ids, rows, *rest)

    def prompt_of(text: str):
        return build_prompt(
            tokenizer, [text], "Who left?", separator=cfg.separator, template=cfg.template,
            use_chat_template=cfg.use_chat_template,
        )  # fmt: skip

    long = prompt_of(TRAINING_TEXT[:700])
    assert long.length > 160
    expected = score_in_windows(long, 96, cfg.scoring.query, score)
    assert lengths and max(lengths) <= 96
    torch.testing.assert_close(small.score_prompt(long), expected)
    assert small.compress([TRAINING_TEXT[:700]], "Who left?", top_k=20).compressed_tokens == 20
    short = prompt_of(TRAINING_TEXT[:300])
    assert 96 < short.length <= 160  # the model takes it whole: one pass, not windows
    torch.testing.assert_close(small.score_prompt(short), comp.score_prompt(short))


@pytest.mark.parametrize("bad", [10, 0, True, 2048.0, "4096"])
def test_window_option_is_validated(bad) -> None:
    from gemfilter_rag import GemFilterConfig

    with pytest.raises(ValueError, match="window"):
        GemFilterConfig(window=bad)


def test_prefilter_round_keeps_the_best_units_without_a_pass(tokenizer) -> None:
    """Round 0 values units without a pass; only the best ``prefilter_tokens`` reach the passes, and every
    unit it drops ranks below every unit that went on."""
    text, prompt = _decoy_prompt(tokenizer, 80, 40)
    seen: list[list] = []

    def score(ids: torch.Tensor, rows: torch.Tensor, start: int, units: list, region: list) -> torch.Tensor:
        seen.append(list(region))
        return torch.arange(len(units), dtype=torch.float64)  # any values: the later units win

    def prefilter(region: list) -> torch.Tensor:
        return torch.tensor([float(a) for a, _ in region])  # prefers late units

    scores = score_in_windows(prompt, 120, "last", score, prefilter=prefilter, prefilter_tokens=60)
    passed = {u for r in seen for u in r}
    assert sum(b - a for a, b in passed) <= 60  # only the prefilter's best 60 tokens met a pass
    assert len(seen) == 1  # they fit one window: a single pass
    doc = prompt.documents[0]
    units = token_units(doc.ends, sentence_spans(text), 0, (120 - (prompt.length - prompt.context_tokens)) // 8)
    values = unit_scores(scores, units)
    passed_values = [v for u, v in zip(units, values.tolist(), strict=True) if u in passed]
    dropped = [v for u, v in zip(units, values.tolist(), strict=True) if u not in passed]
    assert min(passed_values) >= 1.0 - 1e-5 > max(dropped)
