"""Retriever prior: validation, budget sharing and score addition, each against a manual computation."""

from __future__ import annotations

import math

import pytest
import torch
from tinymodels import TRAINING_TEXT

from gemfilter_rag.config import GemFilterConfig
from gemfilter_rag.prior import add_prior, budget_shares, check_document_scores, share_budget, standardise


def test_check_document_scores() -> None:
    assert check_document_scores(None, 3) is None
    assert check_document_scores([1, 2.5, -3], 3) == [1.0, 2.5, -3.0]
    assert check_document_scores(torch.tensor([0.1, 0.2]), 2) == pytest.approx([0.1, 0.2])
    with pytest.raises(ValueError, match="document_scores"):
        check_document_scores([1.0], 2)
    with pytest.raises(ValueError, match=r"document_scores\[1\]"):
        check_document_scores([1.0, math.nan], 2)
    with pytest.raises(ValueError, match="finite"):
        check_document_scores([math.inf], 1)
    with pytest.raises(TypeError, match="document_scores"):
        check_document_scores("abc", 3)
    with pytest.raises(TypeError, match=r"document_scores\[0\]"):
        check_document_scores(["x"], 1)


def test_config_validates_prior() -> None:
    with pytest.raises(ValueError, match="prior"):
        GemFilterConfig(prior="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prior_weight"):
        GemFilterConfig(prior_weight=-1.0)
    with pytest.raises(ValueError, match="prior_weight"):
        GemFilterConfig(prior_weight=math.nan)


def test_budget_shares_is_a_softmax_of_z_scores() -> None:
    scores = [0.9, 0.5, 0.1]
    mean = sum(scores) / 3
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / 3)
    z = [(s - mean) / std for s in scores]
    expected = [math.exp(2 * x) / sum(math.exp(2 * y) for y in z) for x in z]
    assert budget_shares(scores, 2.0).tolist() == pytest.approx(expected)
    assert budget_shares([3.0, 3.0], 5.0).tolist() == pytest.approx([0.5, 0.5])
    assert standardise([1.0, 1.0]).tolist() == [0.0, 0.0]


def test_share_budget_gives_each_document_its_share_and_carries_the_rest() -> None:
    # two documents of 10 single-token units; doc 0 scores low tokens, doc 1 high ones
    scores = torch.arange(20, dtype=torch.float32)
    units = [[(t, t + 1) for t in range(10)], [(t, t + 1) for t in range(10, 20)]]
    # equal retriever scores: 5 tokens each, the best inside each document
    values = [scores[:10], scores[10:]]  # single-token units: a unit's value is its token's score
    kept = share_budget([1.0, 1.0], units, values, 10, 1.0).tolist()
    assert kept == [5, 6, 7, 8, 9, 15, 16, 17, 18, 19]
    # doc 0 strongly preferred: it gets (almost) all, GemFilter's scores notwithstanding
    kept = share_budget([10.0, 0.0], units, values, 10, 20.0).tolist()
    assert kept == list(range(10))
    # a document shorter than its share passes the rest on to the next in retriever order
    short = [[(0, 2)], [(t, t + 1) for t in range(2, 20)]]
    kept = share_budget([5.0, 1.0], short, [scores[:2].sum()[None], scores[2:]], 10, 50.0).tolist()
    assert len(kept) == 10 and kept[:2] == [0, 1]


@pytest.mark.parametrize("budget", [1, 3, 7, 15])
def test_share_budget_never_exceeds_the_budget(budget: int) -> None:
    g = torch.Generator().manual_seed(budget)
    scores = torch.rand(30, generator=g)
    units = [[(0, 4), (4, 9)], [(9, 10), (10, 20)], [(20, 23), (23, 30)]]
    values = [torch.stack([scores[a:b].sum() for a, b in doc]) for doc in units]
    kept = share_budget([0.3, 0.9, 0.1], units, values, budget, 1.0)
    assert kept.numel() <= budget
    assert kept.tolist() == sorted(set(kept.tolist()))


def test_add_prior_against_manual_values() -> None:
    scores = torch.tensor([1.0, 3.0, 2.0, 2.0])  # shifted: [0, 2, 1, 1], mean 1
    out = add_prior(scores, [2, 2], [1.0, 0.0], 0.5)  # relative scores [0, -1]
    assert out.tolist() == pytest.approx([0.0, 2.0, 0.5, 0.5])
    # near-equal retriever scores change the token scores by near-equal amounts (z-scores would not)
    near = add_prior(scores, [2, 2], [1.00, 0.99], 0.5)
    assert (near - add_prior(scores, [2, 2], [1.0, 1.0], 0.5)).abs().max() <= 0.5 * 0.01 + 1e-6
    with pytest.raises(ValueError, match="doc_lengths"):
        add_prior(scores, [1, 2], [1.0, 0.0], 0.5)


def _docs() -> list[str]:
    parts = TRAINING_TEXT.split("\n\n")
    return [p.replace("\n", " ") for p in parts[:4]]


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_compress_with_document_scores_share(make_compressor, arch: str) -> None:
    docs = _docs()
    comp = make_compressor(arch, filter_layer=2, prior="share", prior_weight=8.0)
    res = comp.compress(docs, "What do cities send?", top_k=40, document_scores=[0.1, 0.2, 0.9, 0.3])
    assert res.compressed_tokens <= 40
    kept = [d.kept_tokens for d in res.documents]
    assert kept[2] == max(kept) and kept[2] > 0  # the retriever's favourite gets the largest share
    plain = comp.compress(docs, "What do cities send?", top_k=40)
    assert plain.compressed_tokens <= 40


def test_compress_with_document_scores_add_and_none(make_compressor) -> None:
    docs = _docs()
    strong = make_compressor("qwen2", filter_layer=1, prior="add", prior_weight=100.0, granularity="sentence")
    res = strong.compress(docs, "What do cities send?", top_k=30, document_scores=[0.0, 0.0, 1.0, 0.0])
    # the prior dominates: document 2's sentences come first; other documents only fill what is left
    others = res.compressed_tokens - res.documents[2].kept_tokens
    assert res.documents[2].kept_tokens > others > -1 and res.compressed_tokens <= 30
    off = make_compressor("qwen2", filter_layer=1, prior="none")
    a = off.compress(docs, "What do cities send?", top_k=30, document_scores=[0.0, 0.0, 1.0, 0.0])
    b = off.compress(docs, "What do cities send?", top_k=30)
    assert a.kept_token_indices == b.kept_token_indices
    with pytest.raises(ValueError, match="document_scores"):
        off.compress(docs, "q?", top_k=30, document_scores=[1.0])
