"""Calibration: multi-layer capture, needle probes, recall measures, layer choice and profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tinymodels import TRAINING_TEXT

from gemfilter_rag import GemFilterCompressor
from gemfilter_rag.calibration import (
    SCORING_OPTIONS,
    CalibrationReport,
    calibrate,
    needle_recall,
    query_rows,
    span_tokens,
)
from gemfilter_rag.capture import capture_layer, capture_layers
from gemfilter_rag.needles import NEEDLES, answer_found, make_probe, make_probes
from gemfilter_rag.profiles import Profile
from gemfilter_rag.prompt import build_prompt

HAYSTACK = TRAINING_TEXT * 3


def test_capture_layers_matches_capture_layer(tiny_model: torch.nn.Module, tokenizer) -> None:
    ids = torch.tensor([tokenizer(TRAINING_TEXT[:400], add_special_tokens=False)["input_ids"]])
    caps = capture_layers(tiny_model, ids, [3, 0, 2])
    assert sorted(caps) == [0, 2, 3]
    for layer, cap in caps.items():
        one = capture_layer(tiny_model, ids, layer)
        torch.testing.assert_close(cap.query, one.query)
        torch.testing.assert_close(cap.key, one.key)
        assert cap.scaling == one.scaling and cap.sliding_window == one.sliding_window


def test_capture_layers_rejects_bad_layers(tiny_model_factory) -> None:
    model = tiny_model_factory("llama")
    ids = torch.tensor([[1, 5, 6, 7]])
    with pytest.raises(ValueError, match="layers"):
        capture_layers(model, ids, [])
    with pytest.raises(ValueError, match="layers"):
        capture_layers(model, ids, [0, 99])


def test_at_least_eight_distinct_needles() -> None:
    assert len({n.question for n in NEEDLES}) >= 8
    for n in NEEDLES:
        assert answer_found(n.fact, n.answers), n.fact


@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_make_probe_places_the_needle(tokenizer, depth: float) -> None:
    probe = make_probe(tokenizer, HAYSTACK, NEEDLES[1], 300, depth)
    a, b = probe.needle_span
    assert probe.context[a:b] == NEEDLES[1].fact
    n = len(tokenizer(probe.context, add_special_tokens=False)["input_ids"])
    assert n <= 300 + 5
    assert abs(a / len(probe.context) - depth) < 0.35


def test_make_probe_validates(tokenizer) -> None:
    with pytest.raises(ValueError, match="depth"):
        make_probe(tokenizer, HAYSTACK, NEEDLES[0], 100, 1.5)
    with pytest.raises(ValueError, match="length"):
        make_probe(tokenizer, HAYSTACK, NEEDLES[0], 0, 0.5)


def test_span_tokens_and_needle_recall_against_a_manual_count() -> None:
    ends = [3, 6, 9, 12, 15]
    starts = [0, 3, 6, 9, 12]
    assert span_tokens(starts, ends, (4, 10)).tolist() == [1, 2, 3]
    scores = torch.tensor([0.1, 0.9, 0.8, 0.05, 0.7])
    needle = torch.tensor([1, 2, 3])
    units = [(0, 1), (1, 4), (4, 5)]
    tok, sent = needle_recall(scores, needle, units, 2)
    assert tok == pytest.approx(2 / 3)  # tokens 1 and 2 are the top 2
    assert sent is False  # the 3-token unit does not fit in 2
    tok, sent = needle_recall(scores, needle, units, 3)
    assert sent is True and tok == pytest.approx(2 / 3)  # top 3 = {1, 2, 4}


def test_query_rows(tokenizer) -> None:
    prompt = build_prompt(
        tokenizer,
        ["one two three"],
        "why?",
        separator="\n\n",
        template="Context:\n{context}\n\nQuestion: {query}",
        use_chat_template=True,
    )
    t = prompt.length
    assert query_rows(prompt, "last").tolist() == [t - 1]
    assert query_rows(prompt, "question").tolist() == list(range(prompt.query_start, t))
    assert query_rows(prompt, 3).tolist() == [t - 3, t - 2, t - 1]


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_calibrate_matches_per_layer_compression(tiny_model_factory, tokenizer, arch: str) -> None:
    """The report's sentence recall for one (option, layer) equals running the compressor there."""
    model = tiny_model_factory(arch)
    probes = make_probes(tokenizer, HAYSTACK, [200], [0.2, 0.8], NEEDLES[:2])
    report = calibrate(model, tokenizer, probes, budget=40, progress=False)
    assert set(report.sentence_recall) == set(SCORING_OPTIONS)
    for option in SCORING_OPTIONS:
        assert len(report.sentence_recall[option]) == 4
        assert all(0.0 <= x <= 1.0 for x in report.token_recall[option])
    option, layer = "question_softmax_max7", 2
    comp = GemFilterCompressor(
        model, tokenizer, filter_layer=layer, scoring=SCORING_OPTIONS[option], granularity="sentence"
    )
    hits = 0
    for p in probes:
        res = comp.compress([p.context], p.question, top_k=40)
        hits += all(any(a <= s and e <= b for a, b in res.documents[0].spans) for s, e in [p.needle_span])
    assert report.sentence_recall[option][layer] == pytest.approx(hits / len(probes))


def _report(recalls: dict[str, list[float]]) -> CalibrationReport:
    return CalibrationReport(
        num_layers=len(next(iter(recalls.values()))),
        budget=8,
        token_recall={k: list(v) for k, v in recalls.items()},
        sentence_recall={k: list(v) for k, v in recalls.items()},
        probes=4,
    )


def test_choose_takes_the_earliest_layer_within_tolerance() -> None:
    rep = _report({"paper": [0.1, 0.2, 0.3, 0.3], "question_softmax_max7": [0.2, 0.5, 0.89, 0.9]})
    assert rep.choose(0.02) == ("question_softmax_max7", 2)
    assert rep.choose(0.5) == ("question_softmax_max7", 1)
    assert rep.choose(0.0) == ("question_softmax_max7", 3)
    assert rep.cost(1) == pytest.approx(0.5)


def test_profile_round_trip_and_profile_argument(tmp_path, tiny_model_factory, tokenizer) -> None:
    model = tiny_model_factory("llama")
    rep = _report({"paper": [0.0, 0.1, 0.2, 0.2], "last_softmax_max7": [0.0, 0.9, 0.9, 0.9]})
    prof = rep.to_profile("tiny", model.config, command="test")
    path = tmp_path / "tiny.json"
    prof.save(path)
    loaded = Profile.load(path)
    assert loaded.filter_layer == 1 and loaded.defaults["scoring"]["query"] == "last"
    assert loaded.measurements["chosen"]["option"] == "last_softmax_max7"
    assert loaded.source.startswith("measured:")
    assert loaded.matches(model.config)
    comp = GemFilterCompressor(model, tokenizer, profile=path)
    assert comp.filter_layer == 1 and comp.config.scoring.query == "last"
    assert comp.profile == loaded
    with pytest.raises(FileNotFoundError, match="profile"):
        GemFilterCompressor(model, tokenizer, profile=tmp_path / "missing.json")


def test_shipped_profiles_are_valid() -> None:
    from gemfilter_rag.profiles import shipped_profiles

    profiles = shipped_profiles()
    names = {p.name for p in profiles}
    assert {
        "SmolLM2-135M-Instruct",
        "Llama-3.1-8B-Instruct",
        "Mistral-Nemo-Instruct-2407",
        "Phi-3.5-mini-instruct",
        "Gemma-3-270M",
    } <= names
    for p in profiles:
        cfg = p.config()
        assert 0 <= p.filter_layer < p.match["num_hidden_layers"]
        assert cfg.filter_layer == p.filter_layer
        assert p.source.split(":")[0] in ("measured", "paper", "trained")
        assert (p.readout is not None) == p.source.startswith("trained")
        json.dumps(p.measurements)
        if p.source.startswith("paper"):
            assert cfg.scoring.query == "last" and not cfg.scoring.softmax and cfg.granularity == "token"


def test_gemma3_270m_profile_matches_its_config_and_reads_up_to_a_full_attention_layer() -> None:
    from transformers import Gemma3TextConfig

    from gemfilter_rag.profiles import find_profile

    cfg = Gemma3TextConfig(
        num_hidden_layers=18, hidden_size=640, num_attention_heads=4, num_key_value_heads=1, vocab_size=262144
    )
    profile = find_profile(cfg)
    assert profile is not None and profile.name == "Gemma-3-270M"
    # a sliding-window layer sees only the last 512 tokens from the question: the trained readout's
    # deepest layer is a global one, and its readout is for this model's heads
    assert cfg.layer_types[profile.filter_layer] == "full_attention"
    readouts = profile.readouts()
    assert readouts is not None and readouts.layer == profile.filter_layer
    assert readouts.heads == cfg.num_attention_heads
    assert profile.measurements["chosen"]["sentence_recall"] == 1.0


def test_a_profile_written_before_defaults_loads_and_a_bad_field_is_named(tmp_path: Path) -> None:
    import json

    from gemfilter_rag.profiles import Profile

    old = {
        "name": "old",
        "match": {"model_type": "llama"},
        "filter_layer": 3,
        "scoring": {"query": "last"},
        "top_k": 64,
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    loaded = Profile.load(path)
    assert loaded.defaults == {"filter_layer": 3, "scoring": {"query": "last"}, "top_k": 64}
    cfg = loaded.config()
    assert cfg.filter_layer == 3 and cfg.scoring.query == "last" and cfg.top_k == 64 and cfg.granularity == "sentence"
    loaded.save(path)
    assert "defaults" in json.loads(path.read_text()) and Profile.load(path) == loaded
    with pytest.raises(ValueError, match="top_k"):
        Profile("bad", {}, {"top_k": 0})
    with pytest.raises(TypeError, match="defaults"):
        Profile("bad", {}, 3)  # type: ignore[arg-type]
