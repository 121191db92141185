"""Readout training: labelled examples, cached features, the fit, the layer choice and the command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tinymodels import TRAINING_TEXT, build_model, build_tokenizer

from gemfilter_rag import GemFilterCompressor, training
from gemfilter_rag.answers import contains_answer
from gemfilter_rag.features import LEXICAL
from gemfilter_rag.readout import ReadoutSet
from gemfilter_rag.training import TrainingReport, choose_layer, train_readout
from gemfilter_rag.training.examples import (
    Example,
    answer_spans,
    chunk_paragraphs,
    hotpot_examples,
    nq_examples,
    squad_examples,
)
from gemfilter_rag.training.extract import extract
from gemfilter_rag.training.fit import Design, cross_validate, fit_logistic, outcome

# ---------------------------------------------------------------- examples and their labels


def test_hotpot_positives_are_the_supporting_sentences() -> None:
    record = {
        "question": "Which city hosts the tower?",
        "answer": "Paris",
        "supporting_facts": [["Tower", 1], ["City", 0]],
        "context": [
            ["Tower", ["The tower is tall.", " It stands in Paris.", " It is old."]],
            ["City", ["Paris is a city.", " It is big."]],
            ["Other", ["Nothing here."]],
        ],
    }
    yes_no = {**record, "answer": "yes"}
    (ex,) = hotpot_examples([record, yes_no], [0, 1])  # the yes/no question is skipped
    assert ex.documents[0] == "Tower\nThe tower is tall. It stands in Paris. It is old."
    texts = [ex.documents[d][a:b] for d, a, b in ex.positives]
    assert texts == ["It stands in Paris.", "Paris is a city."]


def test_answer_spans_match_whole_words_only() -> None:
    text = "The Parisian walked in Paris, then paris again."
    assert [text[a:b] for a, b in answer_spans(text, ["Paris"])] == ["Paris", "paris"]
    assert contains_answer("He was born in the U.S.A.!", ["u.s.a"]) and not contains_answer("Parisian", ["Paris"])


def test_nq_examples_place_the_gold_among_its_nearest_passages() -> None:
    records = [
        {
            "question": f"q{i}",
            "answers": [f"ans{i}"],
            "ctxs": [{"title": f"T{i}", "text": f"about ans{i} here", "isgold": True}],
        }
        for i in range(6)
    ]
    sims = {i: [float(-abs(i - j)) for j in range(6)] for i in range(6)}  # nearest passages: neighbours
    (ex,) = nq_examples(records, [2], lambda i: sims[i], n_docs=4, seed=0)
    assert len(ex.documents) == 4 and sum("ans2" in d for d in ex.documents) == 1
    gold = next(i for i, d in enumerate(ex.documents) if "ans2" in d)
    assert ex.positives == [(gold, ex.documents[gold].index("ans2"), ex.documents[gold].index("ans2") + 4)]
    others = [d.split("\n")[0] for i, d in enumerate(ex.documents) if i != gold]
    assert sorted(others) == ["T0", "T1", "T3"]  # the three most similar other passages
    fixed = nq_examples(records, [2, 3], lambda i: sims[i], n_docs=4, positions=(1, 4))
    assert [e.meta["position"] for e in fixed] == [1, 4, 1, 4]
    assert fixed[0].positives[0][0] == 0 and fixed[1].positives[0][0] == 3


def test_squad_positives_are_the_answer_spans() -> None:
    data = {
        "data": [
            {
                "title": "A",
                "paragraphs": [
                    {"context": "First paragraph.", "qas": []},
                    {
                        "context": "The river Elm flows north.",
                        "qas": [{"id": "x", "question": "Where?", "answers": [{"text": "north", "answer_start": 20}]}],
                    },
                ],
            }
        ]
    }
    (ex,) = squad_examples(data, [0], lambda t: len(t.split()), max_tokens=100)
    assert ex.documents == ["First paragraph.", "The river Elm flows north."]
    d, a, b = ex.positives[0]
    assert ex.documents[d][a:b] == "north" and ex.answers == ["north"]


def test_chunks_keep_the_needle_whole() -> None:
    text = TRAINING_TEXT * 3
    start = text.index("Cambridge tells you")
    span = (start, start + 40)
    chunks, positives = chunk_paragraphs(text, span, max_chars=200)
    assert "".join(chunks) == text
    ((d, a, b),) = positives
    assert chunks[d][a:b] == text[span[0] : span[1]]


# ---------------------------------------------------------------- the fit


def _design(x: torch.Tensor, y: list[int], source: str = "s") -> Design:
    from gemfilter_rag.training.extract import ExampleFeatures

    n = x.shape[0]
    ex = ExampleFeatures(
        id="e", source=source, raw=torch.zeros(n, 2), units=[(i, i + 1) for i in range(n)],
        unit_docs=torch.zeros(n, dtype=torch.long), labels=torch.tensor(y, dtype=torch.bool),
        texts=[f"w{i}" for i in range(n)], answers=[f"w{y.index(1)}"], n_context=n, heads=1, max_layer=0,
        sim_unit=None, sim_doc=None, meta={},
    )  # fmt: skip
    return Design(x.double(), torch.tensor(y, dtype=torch.float64), ex)


def test_fit_logistic_learns_a_separating_feature_and_outcome_keeps_the_answer() -> None:
    g = torch.Generator().manual_seed(0)
    designs = []
    for _ in range(20):
        y = [0] * 9 + [1]
        x = torch.randn(10, 3, generator=g)
        x[:, 1] = torch.tensor(y, dtype=torch.float32) * 3 + 0.1 * torch.randn(10, generator=g)  # the signal
        designs.append(_design(x, y))
    w, b = fit_logistic(designs, l2=1e-3)
    assert float(w[1]) > 1.0 and abs(float(w[1])) > 5 * max(abs(float(w[0])), abs(float(w[2])))
    assert all(outcome(d, w, b, budget=1) == (True, True) for d in designs)  # one unit of budget: the right one


def test_fit_refuses_examples_without_both_labels() -> None:
    with pytest.raises(ValueError, match="positive and negative"):
        fit_logistic([_design(torch.zeros(3, 2), [1, 1, 1])], l2=0.0)


def test_choose_layer_takes_the_earliest_within_tolerance() -> None:
    per_layer = {i: {"answer_kept": {"all": v}} for i, v in enumerate([0.5, 0.78, 0.80, 0.79])}
    assert choose_layer(per_layer, 0.02) == 1
    assert choose_layer(per_layer, 0.0) == 2


# ---------------------------------------------------------------- extraction and training on a tiny model


def _examples() -> list[Example]:
    """Questions whose answer sits in one labelled sentence among the training paragraphs."""
    paragraphs = [p.replace("\n", " ") for p in TRAINING_TEXT.split("\n\n")]
    facts = [
        ("What does Cambridge tell you?", "Cambridge tells you", "smarter"),
        ("When were startups cheap?", "Startups in 2005", "2005"),
        ("What do founders build?", "Founders often", "features"),
        ("What did Dr. Smith say?", "Dr. Smith said", "good"),
        ("What does New York tell you?", "New York tells you", "money"),
        ("What does writing find?", "When you write", "think"),
    ]
    out = []
    for k, (q, anchor, answer) in enumerate(facts):
        d = next(i for i, p in enumerate(paragraphs) if anchor in p)
        a = paragraphs[d].index(anchor)
        b = paragraphs[d].index(".", paragraphs[d].index(answer)) + 1
        out.append(Example(f"t{k}", "toy" if k % 2 else "toy2", q, paragraphs, [answer], [(d, a, b)]))
    return out


def test_extract_caches_and_train_readout_writes_a_usable_readout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comp = GemFilterCompressor(build_model("llama"), build_tokenizer())
    examples = _examples()
    feats = extract(comp, examples, 2, tmp_path)
    assert len(feats) == len(examples)
    f = feats[0]
    shapes = {k: tuple(v.shape) for k, v in f.raw.items()}
    u = len(f.units)
    channels = 3 * 4  # layers 0..2, 4 heads
    assert shapes == {
        "mass": (u, channels),
        "mean": (u, channels),
        "max": (u, channels),
        "sim_mean": (u, 3),
        "sim_max": (u, 3),
        "key_mass": (u, channels),
        "lexical": (u, len(LEXICAL)),
        "overlap": (u, 2),
    }
    assert f.labels.any() and not f.labels.all()
    labelled = [t for t, y in zip(f.texts, f.labels.tolist(), strict=True) if y]
    assert any("Cambridge tells you" in t for t in labelled)
    holds = [i for i, t in enumerate(f.texts) if "cambridge" in t.lower()]  # the rare term of the question
    assert holds and f.raw["lexical"][:, 0].nonzero().flatten().tolist() == holds
    assert not torch.equal(f.raw["key_mass"], f.raw["mass"])
    plain = feats[2]  # "What do founders build?": no rare terms, so the key rows are the question's rows
    assert plain.raw["lexical"].abs().sum() == 0 and torch.equal(plain.raw["key_mass"], plain.raw["mass"])

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("cached features must not run the model again")

    from gemfilter_rag.filter_model import FilterModel

    with monkeypatch.context() as patched:
        patched.setattr(FilterModel, "run", no_model)
        again = extract(comp, examples, 2, tmp_path)
    same = [all(torch.equal(a.raw[k], b.raw[k]) for k in a.raw) for a, b in zip(feats, again, strict=True)]
    assert same == [True] * len(feats)
    readouts, report = train_readout(
        comp, examples, embedder=None, max_layer=2, budget=16, folds=2, cache=tmp_path, log=lambda s: None
    )
    assert isinstance(report, TrainingReport) and set(report.per_layer) == {0, 1, 2}
    assert readouts.layer == report.chosen_layer and set(readouts.variants) == {"attention"}
    assert readouts.provenance["examples"] == {"toy": 3, "toy2": 3}
    assert readouts.blocks == training.BLOCKS and readouts.uses_hidden  # every block by default
    assert readouts.uses_key_attention and readouts.variants["attention"].uses_lexical
    assert set(report.ablations) == set(training.ABLATIONS)
    cv = cross_validate(again, readouts.layer, "attention", 1e-2, 16, folds=2)
    assert set(cv["answer_kept"]) == {"toy", "toy2", "all"}
    # the readout goes into a profile and the compressor uses it at its layer
    from gemfilter_rag.profiles import Profile, fingerprint

    profile = Profile(
        "tiny", fingerprint(comp.model.config), {"filter_layer": readouts.layer}, readout=readouts.to_dict()
    )
    path = tmp_path / "tiny.json"
    profile.save(path)
    loaded = GemFilterCompressor(comp.model, comp.tokenizer, profile=str(path))
    assert isinstance(loaded.readouts, ReadoutSet) and loaded.filter_layer == readouts.layer
    res = loaded.compress(examples[0].documents, examples[0].question, top_k=24)
    assert res.compressed_tokens <= 24 and res.filter_layer == readouts.layer


def test_train_readout_command_on_a_tiny_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = tmp_path / "tiny"
    build_model("qwen2").save_pretrained(model_dir)
    build_tokenizer().save_pretrained(model_dir)
    import gemfilter_rag.training as training

    seen: list[Any] = []
    monkeypatch.setattr(training, "build_examples", lambda tok, emb, sizes, seed=0: seen.append(sizes) or _examples())
    monkeypatch.setenv("GEMFILTER_CACHE", str(tmp_path / "cache"))
    from gemfilter_rag.cli import main

    out = tmp_path / "out"
    code = main(
        [
            "train-readout",
            "--model",
            str(model_dir),
            "--out",
            str(out),
            "--no-embeddings",
            "--nq",
            "0",
            "--max-layer",
            "1",
        ]
        + ["--folds", "2", "--budget", "16", "--name", "Tiny Qwen", "--structured", "5"]
    )
    assert code == 0 and seen[0].structured == 5
    profile = json.loads((out / "tiny-qwen.json").read_text())
    assert profile["name"] == "Tiny Qwen" and profile["readout"]["layer"] == profile["defaults"]["filter_layer"] <= 1
    assert profile["source"].startswith("trained: gemfilter train-readout")
    report = json.loads((out / "tiny-qwen.report.json").read_text())
    assert set(report["per_layer"]) == {"0", "1"}
    assert main(["train-readout", "--model", str(model_dir), "--max-layer", "9"]) == 2  # outside the model
    assert main(["train-readout", "--model", str(model_dir), "--structured", "-1"]) == 2


def test_structured_examples_draw_training_seeds_and_label_the_gold_item() -> None:
    from gemfilter_rag.training import Sizes, build_examples
    from gemfilter_rag.training.examples import STRUCTURED_KINDS, structured_examples
    from gemfilter_rag.training.structured import TRAIN_SEEDS

    examples = structured_examples(14, seed=3)
    assert examples == structured_examples(14, seed=3) and examples != structured_examples(14, seed=4)
    seeds = [e.meta["seed"] for e in examples]
    assert len(set(seeds)) == 14 and all(s in TRAIN_SEEDS for s in seeds)
    kinds = [e.meta["kind"] for e in examples]
    assert kinds[:7] == ["json-25", "json-75", "json-140", "markdown", "csv", "logs", "code"] == kinds[7:]
    assert len(STRUCTURED_KINDS) == 7
    for e in examples:
        ((d, a, b),) = e.positives
        assert e.source == "structured" and e.answers[0] in e.documents[d][a:b]
        assert sum(doc.count(e.answers[0]) for doc in e.documents) == 1
        assert contains_answer(e.documents[d][a:b], e.answers)  # what training judges survival by
    assert [e.id for e in build_examples(None, None, Sizes(0, 0, 0, 0, structured=7), seed=3)] == [
        e.id for e in examples[:7]
    ]
    with pytest.raises(ValueError, match="n"):
        structured_examples(-1)


def test_interleave_keeps_every_source_in_proportion() -> None:
    from gemfilter_rag.training import interleave

    examples = [Example(f"a{i}", "a", "q", ["d"], ["x"], []) for i in range(6)]
    examples += [Example(f"b{i}", "b", "q", ["d"], ["x"], []) for i in range(3)]
    out = interleave(examples)
    assert sorted(e.id for e in out) == sorted(e.id for e in examples)
    assert [e.id for e in out if e.source == "a"] == [f"a{i}" for i in range(6)]  # each source in its order
    for k in range(3, len(out) + 1, 3):  # any prefix holds both sources about 2:1
        prefix = [e.source for e in out[:k]]
        assert abs(prefix.count("a") - 2 * prefix.count("b")) <= 2


def test_cached_only_extracts_nothing_new(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    comp = GemFilterCompressor(build_model("llama"), build_tokenizer())
    examples = _examples()
    extract(comp, examples[:2], 1, tmp_path)

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("cached_only must not run the model")

    from gemfilter_rag.filter_model import FilterModel

    monkeypatch.setattr(FilterModel, "run", no_model)
    got = extract(comp, examples, 1, tmp_path, cached_only=True)
    assert [f.id for f in got] == [e.id for e in examples[:2]]


def test_entries_of_feature_version_2_are_read_with_their_text_blocks(tmp_path: Path) -> None:
    """An entry cached before key_mass and the text blocks existed is still used: the text blocks are
    computed from its texts, and it says it lacks key_mass."""
    from gemfilter_rag.training.extract import cache_key

    comp = GemFilterCompressor(build_model("llama"), build_tokenizer())
    examples = _examples()[:1]
    (fresh,) = extract(comp, examples, 1, tmp_path)
    new = tmp_path / f"{cache_key(comp, 1, examples[0], None)}.pt"
    record = torch.load(new, weights_only=False)
    record["raw"] = {k: v for k, v in record["raw"].items() if k not in ("key_mass", "lexical", "overlap")}
    old = tmp_path / f"{cache_key(comp, 1, examples[0], None, version=2)}.pt"
    torch.save(record, old)
    new.unlink()
    (again,) = extract(comp, examples, 1, tmp_path, cached_only=True)
    assert "key_mass" not in again.raw
    assert torch.equal(again.raw["lexical"], fresh.raw["lexical"])
    assert torch.equal(again.raw["overlap"], fresh.raw["overlap"])


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_cached_pass_features_match_the_joint_pass_at_layer_0_and_read_no_hidden_states(
    tmp_path: Path, arch: str
) -> None:
    """The cached path's records (each document encoded alone after the prefix) give the joint pass's
    attention at layer 0, where nothing has mixed yet (up to the cache's fp16 rounding), differ beyond it, and
    hold no hidden-state blocks."""
    comp = GemFilterCompressor(build_model(arch), build_tokenizer())
    examples = _examples()[:3]
    joint = extract(comp, examples, 2, tmp_path)
    cached = extract(comp, examples, 2, tmp_path, mode="cached")
    heads = joint[0].heads
    for j, c in zip(joint, cached, strict=True):
        assert c.units == j.units and torch.equal(c.labels, j.labels)
        assert set(c.raw) == set(j.raw) - {"sim_mean", "sim_max"}
        for name in ("mass", "mean", "max", "key_mass"):
            torch.testing.assert_close(c.raw[name][:, :heads], j.raw[name][:, :heads], atol=2e-3, rtol=2e-3)
        assert not torch.allclose(c.raw["mass"][:, 2 * heads :], j.raw["mass"][:, 2 * heads :], atol=1e-4)
        assert torch.equal(c.raw["overlap"], j.raw["overlap"])
    again = extract(comp, examples, 2, tmp_path, mode="cached", cached_only=True)  # its own cache entries
    assert [torch.equal(a.raw["mass"], b.raw["mass"]) for a, b in zip(again, cached, strict=True)] == [True] * 3
    with pytest.raises(ValueError, match="mode"):
        extract(comp, examples, 2, tmp_path, mode="fused")


def test_train_readout_cached_mode_refuses_hidden_blocks_and_trains_without_them(tmp_path: Path) -> None:
    comp = GemFilterCompressor(build_model("llama"), build_tokenizer())
    examples = _examples()
    kw: dict[str, Any] = {"embedder": None, "max_layer": 1, "budget": 16, "folds": 2, "cache": tmp_path}
    with pytest.raises(ValueError, match="sim_mean"):
        train_readout(comp, examples, mode="cached", log=lambda s: None, **kw)
    readouts, report = train_readout(
        comp, examples, mode="cached", blocks=training.CACHED_BLOCKS, log=lambda s: None, **kw
    )
    assert not readouts.uses_hidden and readouts.provenance["mode"] == "cached"
    from gemfilter_rag.features import LAYER_BLOCKS

    hidden = {name for name, subset in training.ABLATIONS.items() if set(subset) & set(LAYER_BLOCKS)}
    assert "+hidden" in hidden and report.ablations and not set(report.ablations) & hidden
    assert set(report.ablations) == set(training.ABLATIONS) - hidden


def test_train_readout_command_stores_the_cache_mode_readout_beside_the_joint_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = tmp_path / "tiny"
    build_model("llama").save_pretrained(model_dir)
    build_tokenizer().save_pretrained(model_dir)
    import gemfilter_rag.profiles as profiles
    import gemfilter_rag.training as training
    from gemfilter_rag.profiles import Profile, fingerprint

    monkeypatch.setattr(training, "build_examples", lambda tok, emb, sizes, seed=0: _examples())
    monkeypatch.setenv("GEMFILTER_CACHE", str(tmp_path / "cache"))
    from gemfilter_rag.cli import main

    base = [
        "train-readout",
        "--model",
        str(model_dir),
        "--no-embeddings",
        "--nq",
        "0",
        "--max-layer",
        "1",
        "--folds",
        "2",
    ]
    base += ["--budget", "16", "--no-ablations"]
    assert main([*base, "--cached-pass", "--out", str(tmp_path / "x")]) == 2  # no joint readout to go beside
    assert main([*base, "--out", str(tmp_path / "joint"), "--name", "tiny"]) == 0
    joint = Profile.load(tmp_path / "joint" / "tiny.json")
    assert joint.match == fingerprint(build_model("llama").config)
    monkeypatch.setattr(profiles, "find_profile", lambda config: joint)
    bad = [*base, "--cached-pass", "--out", str(tmp_path / "y"), "--blocks", "mass", "sim_mean"]
    assert main(bad) == 2
    assert main([*base, "--cached-pass", "--out", str(tmp_path / "both")]) == 0
    both = json.loads((tmp_path / "both" / "tiny.json").read_text())
    readouts = ReadoutSet.from_dict(both["readout"])
    assert readouts.to_dict()["variants"] == joint.readout["variants"]  # the joint readout as it was
    assert readouts.cached is not None and not readouts.cached.uses_hidden
    assert readouts.cached.provenance["mode"] == "cached"
