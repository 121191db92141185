"""Lexical match features: the rare terms of a question and how each unit holds them."""

from __future__ import annotations

import pytest
import torch

from gemfilter_rag.lexical import FEATURES, match_features, rare_terms


@pytest.mark.parametrize(
    ("question", "terms"),
    [
        ("What is the value of key 3f2a9c1e-0b4d-4e6f-8a7b-1c2d3e4f5a6b?", ["3f2a9c1e-0b4d-4e6f-8a7b-1c2d3e4f5a6b"]),
        ("Which service logged error E-12345?", ["E-12345"]),
        ("What does function foo_bar return?", ["foo_bar"]),
        ("What is the qty of SKU-48213 in bin BQ411?", ["SKU-48213", "BQ411"]),
        ('Who wrote "The Old Man and the Sea" in 1952?', ["The Old Man and the Sea", "1952"]),
        ("What do getUserName and HttpClient do in version 2.5.1?", ["getUserName", "HttpClient", "2.5.1"]),
        ("Where was Constantinople?", ["Constantinople"]),
        ("How many are there, according to the question?", []),  # common words only
        ("", []),
    ],
)
def test_rare_terms(question: str, terms: list[str]) -> None:
    assert rare_terms(question) == terms


def test_rare_terms_never_split_a_uuid_into_numbers() -> None:
    terms = rare_terms("Is 3f2a9c1e-0b4d-4e6f-8a7b-1c2d3e4f5a6b the same as 3f2a9c1e-0b4d-4e6f-8a7b-1c2d3e4f5a6b?")
    assert terms == ["3f2a9c1e-0b4d-4e6f-8a7b-1c2d3e4f5a6b"]  # once, whole


def test_match_features_shape_and_values() -> None:
    units = [
        "2024-03-05 ERROR [pay] E-12345 timeout",
        "2024-03-05 INFO ok E-123456",  # holds a longer code, not the term
        '  "E-12345": "retry",',
        "| E-12345 | retry |",
        "nothing to see",
    ]
    x = match_features("Which service logged error E-12345?", units)
    assert x.shape == (len(units), len(FEATURES)) and x.dtype == torch.float32
    contains, count, longest, key = x.unbind(1)
    assert contains.tolist() == [1, 0, 1, 1, 0]
    assert count.tolist() == [1, 0, 1, 1, 0]
    assert key.tolist() == [0, 0, 1, 1, 0]  # followed by '"' or a cell separator
    assert longest[0] == 1 and longest[1] == 1 and 0 < longest[4] < 1  # "e" of "see" shares one character
    assert 0 <= float(longest.min()) and float(longest.max()) <= 1


def test_match_features_counts_terms_and_ignores_case() -> None:
    x = match_features("Does SKU-48213 sit in bin BQ411?", ["sku-48213 in bq411", "SKU-48213 only", "SKU-4821"])
    assert x[:, 1].tolist() == [2, 1, 0]
    assert x[2, 2] == pytest.approx(8 / 9)  # "SKU-4821" is 8 of the 9 characters of "SKU-48213"


def test_match_features_without_terms_or_units() -> None:
    assert match_features("How?", ["a", "b"]).tolist() == [[0.0] * len(FEATURES)] * 2
    assert match_features("What is E-1?", []).shape == (0, len(FEATURES))


def test_term_spans_locate_every_occurrence_and_token_hits_find_their_tokens() -> None:
    from gemfilter_rag.lexical import term_spans, token_hits

    q = 'Is "E-12345" the same as E-12345 or 2005?'
    spans = term_spans(q)
    assert [q[a:b] for a, b in spans] == ["E-12345", "E-12345", "2005"]  # repeats kept, quotes dropped
    assert term_spans("How many are there?") == []
    tokens = [(0, 2), (2, 5), (5, 6), (6, 9), (9, 13)]
    assert token_hits(tokens, [(4, 7)]) == [1, 2, 3]
    assert token_hits(tokens, [(0, 1), (12, 20)]) == [0, 4]
    assert token_hits(tokens, []) == []
