"""Benchmark harness: registries, metric normalisation and data set builders on tiny synthetic data (no model)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.config import BenchConfig, preset
from benchmarks.datasets import (
    DATASETS,
    hard_distractors,
    hotpot_items,
    nq_items,
    place_gold,
    read_jsonl,
    squad_items,
    window_paragraphs,
)
from benchmarks.methods import METHODS, fill_budget
from benchmarks.metrics import answer_correct, contains_answer, normalize, ratio, summarize
from benchmarks.report import dataset_table, markers, write_readme
from benchmarks.run import summarize_rows, throughput


class WordRes:
    """Stand-in for Resources: one token per whitespace word."""

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def cut(self, text: str, budget: int) -> str:
        return " ".join(text.split()[:budget])


def test_registries_hold_every_documented_entry():
    assert {"nq", "hotpotqa", "squad", "needle"} <= set(DATASETS)
    assert {
        "full",
        "rag",
        "gemfilter-token",
        "gemfilter-sentence",
        "gemfilter-document",
        "embeddings-filter",
        "longllmlingua",
    } <= set(METHODS)
    assert not METHODS["full"].budgeted and METHODS["longllmlingua"].batch is not None
    assert all((m.fn is None) != (m.batch is None) for m in METHODS.values())


def test_normalize_drops_case_punctuation_and_articles():
    assert normalize("The  Eiffel-Tower, in PARIS!") == "eiffel tower in paris"
    assert normalize("an apple a day") == "apple day"


def test_contains_answer_respects_word_boundaries():
    assert contains_answer("It was built in 1889 by Gustave Eiffel.", ["1889"])
    assert not contains_answer("It was built in 18890.", ["1889"])
    assert contains_answer("Born in the U.S.", ["U.S"])
    assert not contains_answer("anything", [""])
    assert answer_correct("The answer is Paris.", ["paris", "Lyon"])
    assert not answer_correct("London", ["Paris"])


def test_ratio_and_summarize():
    assert ratio(1000, 250) == 4.0 and ratio(10, 0) == 10.0
    s = summarize(
        [
            {
                "recall": True,
                "correct": False,
                "latency_s": 1.0,
                "tokens_sent": 10,
                "original_tokens": 40,
                "ratio": 4.0,
                "error": None,
            },
            {
                "recall": False,
                "correct": None,
                "latency_s": 3.0,
                "tokens_sent": 30,
                "original_tokens": 40,
                "ratio": 4 / 3,
                "error": "boom",
            },
        ]
    )
    assert s["n"] == 2 and s["errors"] == 1
    # the failed row sent nothing: it counts in n and errors, never in the means
    assert s["recall"] == 1.0 and s["accuracy"] == 0.0 and s["latency_s"] == 1.0 and s["tokens_sent"] == 10


def test_config_validation_names_the_argument():
    with pytest.raises(ValueError, match="positions"):
        BenchConfig(positions=(0,))
    with pytest.raises(ValueError, match="budgets"):
        BenchConfig(budgets=())
    with pytest.raises(ValueError, match="preset"):
        preset("nope")
    assert preset("quick", n=3).n == 3 and preset("quick").budgets == (256, 512)


def test_place_gold_and_hard_distractors():
    others = ["a", "b", "c"]
    assert place_gold("G", others, 1) == ["G", "a", "b", "c"]
    assert place_gold("G", others, 4) == ["a", "b", "c", "G"]
    with pytest.raises(ValueError, match="position"):
        place_gold("G", others, 5)
    assert hard_distractors([0.1, 0.9, 0.5, 0.7], own=1, count=2) == [3, 2]


def _nq_file(tmp_path: Path) -> Path:
    path = tmp_path / "nq.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i, t in enumerate(TOPICS):
            ctx = [{"title": t, "text": f"Facts about {t}: answer{i}.", "hasanswer": True, "isgold": True}]
            f.write(json.dumps({"question": f"what about {t}", "answers": [f"answer{i}"], "ctxs": ctx}) + "\n")
    return path


TOPICS = ["cats", "dogs", "rivers", "mountains", "planets", "songs"]


def _bag(texts: list[str]) -> np.ndarray:
    """Unit-norm topic counts: a question is most similar to its own topic's passage."""
    m = np.array([[t.lower().count(w) for w in TOPICS] for t in texts], dtype=np.float32) + 1e-3
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def test_nq_items_put_gold_at_each_position(tmp_path):
    records = read_jsonl(_nq_file(tmp_path))
    assert len(records) == 6
    cfg = BenchConfig(n=2, n_docs=4, positions=(1, 4), budgets=(8,), max_context_tokens=8)
    items = nq_items(records, _bag, _bag, cfg)
    assert len(items) == 4
    for it in items:
        assert len(it.documents) == 4
        gold = it.documents[it.meta["position"] - 1]
        assert contains_answer(gold, it.answers)
        assert sum(contains_answer(d, it.answers) for d in it.documents) == 1
        assert it.retrieved is not None and contains_answer(it.retrieved[0], it.answers)
    again = nq_items(records, _bag, _bag, cfg)
    assert [i.id for i in again] == [i.id for i in items]


def test_hotpot_items_skip_yes_no_and_records_past_5000():
    ctx = str([["T1", ["Alpha is red.", " It glows."]], ["T2", ["Beta is blue."]]])
    recs = [
        {"_id": str(i), "answer": "yes" if i % 2 else f"ans{i}", "question": f"q{i}?", "context": ctx, "type": "bridge"}
        for i in range(5004)
    ]
    items = hotpot_items(recs, BenchConfig(n=50, seed=1))
    assert len(items) == 50
    assert all(it.meta["record"] < 5000 and it.meta["record"] % 2 == 0 for it in items)
    assert items[0].documents == ["T1\nAlpha is red. It glows.", "T2\nBeta is blue."]


def test_window_paragraphs_and_squad_items():
    assert window_paragraphs([5, 5, 5, 5, 5], center=2, cap=15) == (1, 4)
    assert window_paragraphs([5, 50, 5], center=0, cap=12) == (0, 1)
    paras = [
        {
            "context": f"paragraph {k} " + "word " * 20,
            "qas": [
                {
                    "question": f"q{k}",
                    "id": f"id{k}",
                    "answers": [{"text": f"paragraph {k}", "answer_start": 0}],
                    "is_impossible": False,
                },
                {"question": "none", "id": f"x{k}", "answers": [], "is_impossible": True},
            ],
        }
        for k in range(6)
    ]
    data = {"data": [{"title": "Art", "paragraphs": paras}]}
    items = squad_items(data, lambda t: len(t.split()), BenchConfig(n=6, max_context_tokens=512, budgets=(10,)))
    assert len(items) == 6 and all(it.id.startswith("squad-id") for it in items)
    for it in items:
        assert sum(len(d.split()) + 2 for d in it.documents) <= 512
        assert contains_answer(it.documents[it.meta["gold_paragraph"]], it.answers)


def test_fill_budget_never_exceeds_the_budget():
    res = WordRes()
    text = fill_budget(["one two three", "four five six seven", "eight"], 5, res)  # type: ignore[arg-type]
    assert res.count_tokens(text) <= 5 and text.startswith("one two three")
    assert fill_budget(["a b"], 10, res) == "a b"  # type: ignore[arg-type]


def _rows() -> list[dict]:
    rows = []
    for m, lat in (("gemfilter-sentence", 2.0), ("longllmlingua", 8.0)):
        for i in range(2):
            rows.append(
                {
                    "dataset": "nq",
                    "id": f"i{i}",
                    "method": m,
                    "budget": 256,
                    "position": 1,
                    "original_tokens": 1000,
                    "tokens_sent": 250,
                    "ratio": 4.0,
                    "recall": i == 0,
                    "correct": True,
                    "latency_s": lat,
                    "error": None,
                }
            )
    return rows


def test_throughput_and_tables(tmp_path):
    rows = _rows()
    tp = throughput(rows, ["gemfilter-sentence", "longllmlingua"])
    assert tp["pairs"] == 2 and tp["gemfilter-sentence"]["tokens_per_s"] == 500.0
    assert tp["longllmlingua"]["tokens_per_s"] == 125.0
    summary = summarize_rows(rows)
    table = dataset_table(summary)
    assert any("50%" in line and "GemFilter (sentence)" in line for line in table)
    readme = tmp_path / "README.md"
    readme.write_text("# Bench\n\nhand-written\n")
    results = {
        "config": BenchConfig(name="t").to_dict(),
        "filter_layer": 3,
        "datasets": {"nq": {"items": 2, "summary": summary}},
        "rows": rows,
        "throughput": tp,
        "timings_s": {"total": 60.0},
        "machine": {"cpu": "x", "cores": 2, "torch_threads": 2, "python": "3", "versions": {}},
    }
    write_readme(results, readme)
    write_readme(results, readme)  # idempotent: the section is replaced, not duplicated
    text = readme.read_text()
    begin, end = markers("t")
    assert text.count(begin) == 1 and text.count(end) == 1 and "hand-written" in text
    assert "4.0x faster" in text


def test_spread_picks_evenly_and_keeps_small_lists():
    from benchmarks.datasets import Item
    from benchmarks.run import spread

    items = [Item("d", str(i), "q", ["x"], ["a"]) for i in range(12)]
    assert [it.id for it in spread(items, 3)] == ["0", "4", "8"]
    assert len(spread(items[:2], 3)) == 2


def test_cosine_matrix_ranks_like_cosine():
    from benchmarks.methods import cosine_matrix

    sims = cosine_matrix([[1.0, 0.0]], [[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    assert sims.shape == (1, 3)
    assert np.allclose(sims[0], [1.0, 0.0, 2**-0.5])


def test_needle_chunks_are_whole_sentences_and_hold_the_needle():
    from tinymodels import TRAINING_TEXT, build_tokenizer

    from benchmarks.needle import chunk_probe
    from gemfilter_rag.needles import NEEDLES, make_probe

    tok = build_tokenizer()
    probe = make_probe(tok, TRAINING_TEXT * 3, NEEDLES[2], 600, 0.4)
    chunks, at, (a, b) = chunk_probe(tok, probe, chunk_tokens=40)
    assert len(chunks) > 3
    assert chunks[at][a:b] == NEEDLES[2].fact
    # in order and without gaps: the chunks, rejoined with the text between them, are the context
    pos = 0
    for c in chunks:
        i = probe.context.index(c, pos)
        assert not probe.context[pos:i].strip()
        pos = i + len(c)
    assert not probe.context[pos:].strip()


def test_needle_report_tables_count_per_cell(tmp_path):
    from benchmarks.needle_report import answer_table, recall_table, write_report

    def row(method, scoring, gran, budget, kept, length=4096, depth=0.5, needle=0, correct=None):
        r = {"length": length, "depth": depth, "needle": needle, "method": method, "scoring": scoring}
        r.update(granularity=gran, budget=budget, needle_kept=kept, answer_kept=kept, seconds=1.0)
        if correct is not None:
            r["correct"] = correct
        return r

    rows = [
        row("gemfilter", "question_softmax_max7", "sentence", 256, True, needle=0, correct=True),
        row("gemfilter", "question_softmax_max7", "sentence", 256, False, needle=1, correct=False),
        row("gemfilter", "question_softmax_max7", "sentence", 256, True, needle=2, correct=True),
        row("plain_rag", "minilm", "document", 256, False, needle=0, correct=False),
        row("full", "-", "-", None, True, needle=0, correct=True),
    ]
    recall = "\n".join(recall_table(rows, [4096], [256]))
    assert "| GemFilter question softmax, sentence **(default)** | 67% |" in recall
    assert "| plain RAG (MiniLM, whole chunks) | 0% |" in recall
    assert "full context" not in recall  # no budget: not a recall row
    answers = "\n".join(answer_table(rows, [4096], 256))
    assert "| GemFilter question softmax, sentence **(default)** | 67% / 67% |" in answers
    assert "| full context | 100% / 100% |" in answers
    jsonl = tmp_path / "n.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [{"run": "x", "cpu": "c"}, *rows]) + "\n")
    readme = tmp_path / "README.md"
    readme.write_text("# B\n\n<!-- needle:begin -->old<!-- needle:end -->\ntail\n")
    write_report(jsonl, readme)
    body = readme.read_text()
    assert "old" not in body and body.endswith("tail\n") and "67%" in body
    assert (tmp_path / "n_heatmap.png").stat().st_size > 1000
