"""CompressionResult.to_dict / from_dict: the JSON form of a result (what the service sends) round-trips."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from gemfilter_rag import CompressionResult

DOCS = [
    "Cities send messages. New York tells you that you should make more money.",
    "",
    "Startups in 2005 could be started for far less money than in 1995. Servers were cheaper.",
]
QUERY = "What does New York tell you?"


def test_result_round_trips_through_json(make_compressor: Callable[..., Any], arch: str) -> None:
    comp = make_compressor(arch, granularity="sentence")
    result = comp.compress(DOCS, QUERY, top_k=10)
    back = CompressionResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back == result  # timings included: they are plain floats
    assert all(isinstance(s, tuple) for d in back.documents for s in d.spans)
    assert back.details is None and result.details is not None  # details stay in the process


def test_from_dict_ignores_unknown_keys_and_names_missing_ones() -> None:
    result = CompressionResult.from_dict(
        {
            "text": "",
            "documents": [],
            "query": "q",
            "kept_token_indices": [],
            "original_tokens": 0,
            "compressed_tokens": 0,
            "filter_layer": None,
            "granularity": "sentence",
            "ratio": 1.0,
            "a_field_of_a_newer_server": 1,
        }
    )
    assert result.timings == {} and result.documents == []
    with pytest.raises(ValueError, match="^query: missing"):
        CompressionResult.from_dict({"text": "", "documents": []})
