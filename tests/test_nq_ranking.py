"""The NQ ranking study's pieces: ranks, BM25, pooled hidden states and learned weights (tiny data, no download)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.nq_ranking import bm25, centred_cosine, early_layers, fit_weights, gold_rank, pooled_states
from tests.tinymodels import build_model, build_tokenizer


def test_gold_rank_counts_ties_against_the_gold_passage():
    assert gold_rank(np.array([0.9, 0.1, 0.5])) == 0
    assert gold_rank(np.array([0.5, 0.9, 0.5, 0.1])) == 2  # one above, one tied
    assert gold_rank(np.array([0.0, 0.0])) == 1


def test_bm25_ranks_the_passage_with_the_rare_word_first_and_title_weight_breaks_ties():
    passages = [
        "Paris\nThe river flows through the city.",
        "Lyon\nThe river Rhone meets the Saone.",
        "Rhone\nA river of France and Switzerland.",
    ]
    plain = bm25("Which river is the Rhone?", passages)
    assert plain[0] < min(plain[1], plain[2])  # "river" is in every passage, "rhone" in two
    titled = bm25("Which river is the Rhone?", passages, title_weight=1.0)
    assert titled[2] - plain[2] > 0 and titled[1] == pytest.approx(plain[1])  # only passage 2's title names it
    assert np.all(bm25("the of a", passages) == 0)  # stopwords only: no evidence


def test_pooled_states_are_means_of_unit_states_one_row_per_layer():
    model, tok = build_model("llama"), build_tokenizer()
    out = pooled_states(model, tok, ["alpha beta gamma", "delta"], (0, 1))
    assert out.shape == (2, 2, model.config.hidden_size)
    assert np.all(np.linalg.norm(out, axis=-1) <= 1.0 + 1e-5)  # a mean of unit vectors
    ids = tok("alpha beta gamma", return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        states = model(input_ids=ids, output_hidden_states=True).hidden_states[1][0]  # entering layer 1
    want = (states / states.norm(dim=-1, keepdim=True)).mean(0).numpy()
    np.testing.assert_allclose(out[0, 1], want, atol=1e-5)


def test_centred_cosine_ignores_what_every_passage_shares_and_learned_weights_fit_the_signal():
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(8, generator=g) * 10
    passages = shared + torch.randn(40, 5, 8, generator=g)  # (Q, P, d): a big common part
    questions = passages[:, 0].clone()
    questions[:, 4:] = torch.randn(40, 4, generator=g)  # only dimensions 0..3 tell the gold passage
    plain = centred_cosine(questions, passages)  # (Q, P)
    assert plain.shape == (40, 5)
    w = fit_weights(questions, passages, steps=200)
    assert w[:4].mean() > w[4:].mean()
    learned = centred_cosine(questions, passages, w)
    assert (learned.argmax(-1) == 0).float().mean() >= (plain.argmax(-1) == 0).float().mean()


def test_early_layers_stay_within_the_exit_share():
    assert early_layers(30) == tuple(range(10))  # 10 / 30 = 0.33 of the default model
    assert early_layers(18) == tuple(range(6))  # 6 / 18 = 0.33 of Gemma 3 270M
    assert early_layers(2) == (0,)  # a tiny model still reads one layer
    for n in (2, 7, 18, 30, 64):
        assert len(early_layers(n)) / n <= 0.35 or n < 3
