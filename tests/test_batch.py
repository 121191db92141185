"""compress_batch / generate_batch: padded batched passes give what one-by-one calls give."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from tinymodels import fills_budget

from gemfilter_rag.generation import GenerationResult
from gemfilter_rag.pipeline import build_prompts, compress_prompts
from gemfilter_rag.scorers import LayerScorer
from gemfilter_rag.scoring import query_positions

ITEMS: list[tuple[list[str], str]] = [
    (
        [
            "Cities send messages. New York tells you that you should make more money.",
            "Cambridge tells you that you should be smarter. Silicon Valley tells you to be more powerful.",
        ],
        "What does Cambridge tell you?",
    ),
    (["Startups in 2005 could be started for far less money than in 1995."], "When were startups cheap?"),
    (
        [
            "When you write an essay, you find out what you think. The act of putting ideas into sentences "
            "forces you to notice the gaps in them.",
            "",
            "Dr. Smith said the results were good.",
        ],
        "What does writing an essay do?",
    ),
]


@pytest.mark.parametrize("granularity", ["token", "sentence"])
def test_compress_batch_equals_one_by_one(make_compressor: Callable[..., Any], arch: str, granularity: str) -> None:
    comp = make_compressor(arch, granularity=granularity)
    batched = comp.compress_batch(ITEMS, top_k=10)
    single = [comp.compress(docs, q, top_k=10) for docs, q in ITEMS]
    assert [b.kept_token_indices for b in batched] == [s.kept_token_indices for s in single]
    assert [b.text for b in batched] == [s.text for s in single]
    assert [b.filter_layer for b in batched] == [s.filter_layer for s in single] == [comp.filter_layer] * 3


def whole(ids: torch.Tensor) -> Any:
    """A target of every position of a pass, one unit per token (the layer scorer needs no evidence)."""
    from gemfilter_rag.scorers import Target

    n = int(ids.shape[0])
    units = [(t, t + 1) for t in range(n)]
    return Target(torch.arange(n), units, [0] * n, units)


def test_padded_pass_matches_unpadded(make_compressor: Callable[..., Any], arch: str) -> None:
    comp = make_compressor(arch)
    prompts = build_prompts(comp.plan, ITEMS)
    assert len({p.length for p in prompts}) == len(prompts)  # the batch really pads
    inputs = [(p.input_ids, query_positions(p.length, p.query_start, comp.config.scoring.query)) for p in prompts]
    batched = comp.plan.model.run(inputs, comp.filter_layer, attention=True)
    heads = comp.model.config.num_attention_heads
    for (ids, rows), item in zip(inputs, batched, strict=True):
        (alone,) = comp.plan.model.run([(ids, rows)], comp.filter_layer, attention=True)
        assert item.attention is not None and alone.attention is not None
        assert item.attention.shape == (comp.filter_layer + 1, heads, ids.shape[0])  # every layer 0..r, (H, T)
        torch.testing.assert_close(item.attention, alone.attention, rtol=1e-4, atol=1e-5)
        assert isinstance(comp.scorer, LayerScorer)
        target = whole(ids)
        torch.testing.assert_close(
            comp.scorer.score(item, target, None).tokens,  # type: ignore[arg-type]
            comp.scorer.score(alone, target, None).tokens,  # type: ignore[arg-type]
            rtol=1e-4,
            atol=1e-5,
        )
    # the layers' attention is a distribution over the visible keys: each (layer, head) row sums to 1
    torch.testing.assert_close(batched[0].attention.sum(-1), torch.ones(comp.filter_layer + 1, heads))


def test_batch_size_and_order(make_compressor: Callable[..., Any]) -> None:
    comp = make_compressor("llama", granularity="token")
    items = ITEMS * 2
    by_two = comp.compress_batch(items, top_k=6, batch_size=2)
    by_all = comp.compress_batch(items, top_k=6, batch_size=16)
    assert [r.query for r in by_two] == [q for _, q in items]
    assert [r.kept_token_indices for r in by_two] == [r.kept_token_indices for r in by_all]
    # an item whose context fits the budget needs no pass and keeps everything
    roomy = comp.compress_batch(ITEMS, top_k=10_000)
    assert all(r.filter_layer is None and r.compressed_tokens == r.original_tokens for r in roomy)


def test_generate_batch_equals_one_by_one(make_compressor: Callable[..., Any], arch: str) -> None:
    comp = make_compressor(arch, granularity="token")
    batched = comp.generate_batch(ITEMS, max_new_tokens=8, top_k=12)
    for (docs, q), b in zip(ITEMS, batched, strict=True):
        one = comp.generate(docs, q, max_new_tokens=8, top_k=12)
        assert isinstance(one, GenerationResult)
        assert b.compression.kept_token_indices == one.compression.kept_token_indices
        assert b.prompt_tokens == one.prompt_tokens
        assert b.token_ids == one.token_ids
        assert b.text == one.text


def test_batch_errors_name_the_argument(make_compressor: Callable[..., Any]) -> None:
    comp = make_compressor("llama")
    with pytest.raises(TypeError, match="items"):
        comp.compress_batch("not pairs")
    with pytest.raises(TypeError, match=r"items\[1\]"):
        comp.compress_batch([ITEMS[0], ("just a query",)])
    with pytest.raises(ValueError, match="batch_size"):
        comp.compress_batch(ITEMS, batch_size=0)
    with pytest.raises(ValueError, match="query"):
        comp.generate_batch([(["text"], "")])


def test_prompts_longer_than_the_model_fall_back_to_windows(make_compressor: Callable[..., Any]) -> None:
    from tinymodels import MAX_POSITIONS, TRAINING_TEXT

    comp = make_compressor("llama", granularity="token")
    long_docs = [TRAINING_TEXT] * 3
    assert build_prompts(comp.plan, [(long_docs, "Who left?")])[0].length > MAX_POSITIONS
    items = [(long_docs, "Who left?"), ITEMS[1]]
    batched = comp.compress_batch(items, top_k=20)
    assert [r.kept_token_indices for r in batched] == [
        comp.compress(d, q, top_k=20).kept_token_indices for d, q in items
    ]
    # the answering prompt must fit the model too: the error names top_k
    with pytest.raises(ValueError, match="top_k"):
        comp.generate(long_docs, "Who left?", max_new_tokens=4, top_k=100_000)
    res = comp.generate(long_docs, "Who left?", max_new_tokens=4, top_k=20)
    assert isinstance(res, GenerationResult) and fills_budget(res.compression, 20)


def test_per_item_budgets_and_retriever_scores_equal_one_by_one(make_compressor: Callable[..., Any], arch: str) -> None:
    comp = make_compressor(arch, granularity="sentence")
    budgets = [8, None, 12]
    scores = [[0.2, 0.9], None, [0.5, 0.1, 0.7]]
    batched = compress_prompts(
        comp.plan, build_prompts(comp.plan, ITEMS), [q for _, q in ITEMS], top_k=budgets, document_scores=scores
    )
    single = [
        comp.compress(d, q, top_k=k, document_scores=s) for (d, q), k, s in zip(ITEMS, budgets, scores, strict=True)
    ]
    assert [b.kept_token_indices for b in batched] == [s.kept_token_indices for s in single]
    assert [b.text for b in batched] == [s.text for s in single]
    assert single[0].kept_token_indices != comp.compress(*ITEMS[0], top_k=8).kept_token_indices  # the scores count
    assert comp.compress_batch(ITEMS, top_k=12, document_scores=scores)[2].text == single[2].text
    with pytest.raises(ValueError, match="top_k"):
        compress_prompts(comp.plan, build_prompts(comp.plan, ITEMS), [q for _, q in ITEMS], top_k=[8, 8])
    with pytest.raises(ValueError, match="document_scores"):
        comp.compress_batch(ITEMS, document_scores=[None])
    with pytest.raises(ValueError, match=r"document_scores"):
        comp.compress_batch(ITEMS, document_scores=[[1.0], None, None])
