"""Selection: exact top-k of the scores (token), whole units within the budget (sentence, document)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gemfilter_rag import GemFilterCompressor
from gemfilter_rag.prompt import FilterPrompt, build_prompt
from gemfilter_rag.selection import (
    MAX_SENTENCE_TOKENS,
    fit_joins,
    output_tokens,
    select_ranked,
    select_tokens,
    select_units,
    token_units,
    unit_scores,
)
from gemfilter_rag.sentences import sentence_spans
from gemfilter_rag.units import prompt_units

DOCS = [
    "The most important thing in a young company is to make something people want. Founders often spend "
    "months building features nobody asked for. It is easy to mistake activity for progress.",
    "Cities send messages. New York tells you that you should make more money. Cambridge tells you that you "
    "should be smarter.",
    "",
    "Startups in 2005 could be started for far less money than in 1995. Servers were cheaper, the software was "
    "free. That changed who could start a company!",
]
QUERY = "What message does Cambridge send?"


# ---------------------------------------------------------------- pure functions


def test_select_tokens_is_top_k_in_order() -> None:
    s = torch.tensor([0.1, 0.9, 0.3, 0.8, 0.2])
    assert select_tokens(s, 2).tolist() == [1, 3]
    assert select_tokens(s, 3).tolist() == [1, 2, 3]
    assert select_tokens(s, 10).tolist() == [0, 1, 2, 3, 4]


def test_unit_scores_sums_inside_units() -> None:
    s = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert unit_scores(s, [(0, 2), (2, 5), (1, 4)]).tolist() == [3.0, 12.0, 9.0]
    assert unit_scores(s, []).numel() == 0


def test_select_units_greedy_skips_what_does_not_fit() -> None:
    s = torch.tensor([1.0, 1.0, 1.0, 5.0, 5.0, 5.0, 5.0, 0.5, 2.0])
    units = [(0, 3), (3, 7), (7, 8), (8, 9)]  # sums 3, 20, 0.5, 2
    # budget 5: the best unit (4 tokens) fits, the next (3 tokens) does not, the 1-token ones do
    assert select_units(s, units, 5).tolist() == [3, 4, 5, 6, 8]
    assert select_units(s, units, 6).tolist() == [3, 4, 5, 6, 7, 8]
    assert select_units(s, units, 3).tolist() == [0, 1, 2]
    assert select_units(s, units, 100).tolist() == list(range(9))
    assert select_units(s, [], 10).tolist() == []
    assert select_units(s, [(2, 2)], 10).tolist() == []  # an empty unit is never "kept"


def test_output_tokens_adds_a_separator_between_documents_that_keep_any() -> None:
    ends = [3, 3, 7, 10]  # documents [0, 3), [3, 3) (empty), [3, 7), [7, 10)
    keep = torch.tensor([0, 1, 8])
    assert output_tokens(keep, ends, 2) == 3 + 2  # two documents: one separator
    assert output_tokens(torch.tensor([0, 4, 8]), ends, 2) == 3 + 2 * 2
    assert output_tokens(torch.tensor([4, 5]), ends, 2) == 2  # one document: none
    assert output_tokens(torch.tensor([0, 4, 8]), ends, 0) == 3
    assert output_tokens(torch.empty(0, dtype=torch.long), ends, 5) == 0


def test_fit_joins_keeps_the_text_within_the_budget() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(40, generator=gen)
    ends = [10, 20, 30, 40]
    for budget in range(0, 45):
        for join in (0, 1, 3):
            keep = fit_joins(lambda b: select_tokens(scores, b), budget, ends, join)
            assert output_tokens(keep, ends, join) <= budget
            assert keep.tolist() == select_tokens(scores, int(keep.numel())).tolist()  # still the best tokens
            assert int(keep.numel()) >= min(40, budget) - join * (len(ends) - 1)  # gives up no more than separators
            more = select_tokens(scores, int(keep.numel()) + 1)
            assert keep.numel() == 40 or output_tokens(more, ends, join) > budget  # the most tokens that fit
            if join == 0:
                assert keep.tolist() == select_tokens(scores, budget).tolist()
    # whole documents: the third does not fit once its separator is charged
    units = [(0, 10), (10, 20), (20, 30), (30, 40)]
    values = torch.tensor([4.0, 3.0, 2.0, 1.0])
    assert fit_joins(lambda b: select_ranked(values, units, b), 30, ends, 1).tolist() == list(range(20))
    assert fit_joins(lambda b: select_ranked(values, units, b), 32, ends, 1).tolist() == list(range(30))


def test_token_units_follow_spans_and_cap_length() -> None:
    # tokens end at these characters; spans are two sentences [0, 10) and [10, 25)
    ends = [3, 6, 10, 12, 15, 18, 21, 25]
    assert token_units(ends, [(0, 10), (10, 25)], offset=100, max_tokens=64) == [(100, 103), (103, 108)]
    assert token_units(ends, [(0, 10), (10, 25)], offset=0, max_tokens=2) == [(0, 2), (2, 3), (3, 5), (5, 7), (7, 8)]
    # a token that straddles a boundary belongs to the span that holds its last character
    assert token_units([4, 12, 25], [(0, 10), (10, 25)], offset=0, max_tokens=64) == [(0, 1), (1, 3)]
    assert token_units([], [], offset=5, max_tokens=4) == []


# ---------------------------------------------------------------- through the compressor


def _prompt(comp: GemFilterCompressor, docs: list[str] = DOCS) -> FilterPrompt:
    cfg = comp.config
    return build_prompt(
        comp.tokenizer,
        docs,
        QUERY,
        separator=cfg.separator,
        template=cfg.template,
        use_chat_template=cfg.use_chat_template,
    )


def _independent_top_k(scores: torch.Tensor, k: int) -> list[int]:
    ranked = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(ranked[:k])


@pytest.mark.parametrize("top_k", [1, 17, 60])
def test_token_granularity_keeps_exact_top_k(make_compressor: Any, arch: str, top_k: int) -> None:
    comp = make_compressor(arch, granularity="token", filter_layer=1)
    scores = comp.score_prompt(_prompt(comp))
    result = comp.compress(DOCS, QUERY, top_k=top_k)
    kept = result.kept_token_indices
    # the best tokens, as many as fit once a separator between kept documents is counted
    assert kept == _independent_top_k(scores, len(kept))
    units = prompt_units(_prompt(comp), "token", top_k)
    assert units.join > 0
    assert units.output_tokens(torch.tensor(kept)) <= top_k
    assert len(kept) >= top_k - units.join * (sum(1 for d in DOCS if d) - 1)
    assert result.compressed_tokens == len(kept)
    assert result.filter_layer == 1


def _sentence_units(prompt: FilterPrompt, budget: int) -> list[tuple[int, int]]:
    units, start = [], 0
    for doc in prompt.documents:
        units += token_units(doc.ends, sentence_spans(doc.text), start, min(MAX_SENTENCE_TOKENS, budget))
        start += len(doc.ids)
    return units


@pytest.mark.parametrize("top_k", [5, 30, 70])
def test_sentence_granularity_keeps_whole_sentences(make_compressor: Any, arch: str, top_k: int) -> None:
    comp = make_compressor(arch, granularity="sentence", filter_layer=2)
    prompt = _prompt(comp)
    units = _sentence_units(prompt, top_k)
    assert len(units) >= 8
    result = comp.compress(DOCS, QUERY, top_k=top_k)
    kept = set(result.kept_token_indices)
    assert len(kept) == result.compressed_tokens <= top_k
    for a, b in units:
        inside = {t for t in range(a, b) if t in kept}
        assert not inside or len(inside) == b - a, f"unit {(a, b)} partly kept"
    # greedy by unit score, within the budget less the separators: the pure selection on the same scores
    scores = comp.score_prompt(prompt)
    layout = prompt_units(prompt, "sentence", top_k)
    fitted = fit_joins(lambda b: select_units(scores, units, b), top_k, layout.doc_ends, layout.join)
    assert result.kept_token_indices == fitted.tolist()
    assert layout.output_tokens(fitted) <= top_k


@pytest.mark.parametrize("top_k", [1, 3, 5])
def test_sentence_granularity_keeps_something_when_every_sentence_is_longer_than_the_budget(
    make_compressor: Any, top_k: int
) -> None:
    comp = make_compressor("llama", granularity="sentence", filter_layer=1)
    prompt = _prompt(comp)
    assert all(b - a > top_k for a, b in _sentence_units(prompt, MAX_SENTENCE_TOKENS))
    result = comp.compress(DOCS, QUERY, top_k=top_k)
    assert result.compressed_tokens == top_k


@pytest.mark.parametrize("top_k", [10, 40, 80])
def test_document_granularity_keeps_whole_documents(make_compressor: Any, arch: str, top_k: int) -> None:
    comp = make_compressor(arch, granularity="document", filter_layer=0)
    result = comp.compress(DOCS, QUERY, top_k=top_k)
    assert result.compressed_tokens <= top_k
    for doc, original in zip(result.documents, DOCS, strict=True):
        assert doc.kept_tokens in (0, doc.original_tokens)
        assert doc.text in ("", original)
        if doc.kept_tokens and doc.original_tokens:
            assert doc.text == original


def test_budget_never_exceeded_across_budgets(make_compressor: Any) -> None:
    for granularity in ("token", "sentence", "document"):
        comp = make_compressor("qwen2", granularity=granularity)
        for top_k in (1, 2, 3, 8, 33, 64, 99):
            result = comp.compress(DOCS, QUERY, top_k=top_k)
            assert result.compressed_tokens == len(result.kept_token_indices) <= top_k
            assert sum(d.kept_tokens for d in result.documents) == result.compressed_tokens
