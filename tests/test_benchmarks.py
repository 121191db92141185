"""Benchmark harness: registries, metric normalisation and data set builders on tiny synthetic data (no model)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

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
from benchmarks.report import markers, rate_table, summaries, write_readme
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
        "gemfilter-prior",
        "embeddings-filter",
        "sentence-embedding-optimizer",
        "bm25-sentences",
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
    # only the answer line counts: "Answer:" labels are dropped, an echoed prompt or context is not read
    assert answer_correct("Answer:\nThe code is 7734.", ["7734"])
    assert answer_correct("Answer: 1978\nContext: ...", ["1978"])
    assert not answer_correct("Answer the question with a short phrase.\n\nContext: signed in 1978", ["1978"])


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
    assert preset("quick", n=3).n == 3 and preset("quick").budgets == (128, 256, 512)
    with pytest.raises(ValueError, match="answer_budgets"):
        BenchConfig(answer_budgets=(300,))
    with pytest.raises(ValueError, match="needle_grid"):
        BenchConfig(needle_grid=((2048, 0, 3),))
    with pytest.raises(ValueError, match="gemfilter_calls"):
        BenchConfig(gemfilter_calls="sometimes")


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
    items = nq_items(records, _bag, _bag, cfg, questions=range(6))
    assert len(items) == 4
    for it in items:
        assert len(it.documents) == 4
        gold = it.documents[it.meta["position"] - 1]
        assert contains_answer(gold, it.answers)
        assert sum(contains_answer(d, it.answers) for d in it.documents) == 1
        assert it.retrieved is not None and contains_answer(it.retrieved[0], it.answers)
    again = nq_items(records, _bag, _bag, cfg, questions=range(6))
    assert [i.id for i in again] == [i.id for i in items]


def test_hotpot_items_come_from_the_eval_records_only_and_skip_yes_no():
    from gemfilter_rag.data import HOTPOT_EVAL, HOTPOT_TRAIN

    ctx = str([["T1", ["Alpha is red.", " It glows."]], ["T2", ["Beta is blue."]]])
    recs = [
        {"_id": str(i), "answer": "yes" if i % 2 else f"ans{i}", "question": f"q{i}?", "context": ctx, "type": "bridge"}
        for i in range(7405)
    ]
    items = hotpot_items(recs, BenchConfig(n=1000, seed=1))
    assert len(items) == 1000  # every non-yes/no record of 3000-4999
    records = {it.meta["record"] for it in items}
    assert records == {i for i in HOTPOT_EVAL if i % 2 == 0}
    assert not records & set(HOTPOT_TRAIN) and max(records) < 5000
    assert items[0].documents == ["T1\nAlpha is red. It glows.", "T2\nBeta is blue."]


def test_nq_questions_come_from_the_eval_lines_only(tmp_path):
    from gemfilter_rag.data import NQ_EVAL, NQ_TRAIN

    records = [
        {
            "question": f"q{i} {TOPICS[i % 6]}",
            "answers": [f"a{i}"],
            "ctxs": [{"title": "t", "text": f"{TOPICS[i % 6]}"}],
        }
        for i in range(2000)
    ]
    cfg = BenchConfig(n=300, n_docs=3, positions=(1, 3), budgets=(8,), max_context_tokens=8)
    items = nq_items(records, _bag, _bag, cfg)
    questions = {it.meta["record"] for it in items}
    assert len(questions) == 300 and questions <= set(NQ_EVAL) and not questions & set(NQ_TRAIN)
    # distractors may be any passage, training lines included
    assert all(len(it.documents) == 3 for it in items)
    assert len({it.meta["cluster"] for it in items}) == 300  # one cluster per question, two positions each


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
    cfg = BenchConfig(n=6, max_context_tokens=512, budgets=(10,))
    items = squad_items(data, lambda t: len(t.split()), cfg, articles=range(1))
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


def _results(rows: list[dict], readers: tuple[str, ...] = ()) -> dict:
    return {
        "config": BenchConfig(name="t", budgets=(256,), answer_budgets=(256,)).to_dict(),
        "commit": "abc",
        "filter_layer": 3,
        "datasets": {"nq": {"items": 2}},
        "summary": summaries(rows, list(readers)),
        "readers": {r: r for r in readers},
        "rows": rows,
        "timings_s": {"total": 60.0},
        "machine": {"cpu": "x", "cores": 2, "torch_threads": 2, "python": "3", "versions": {}},
    }


def test_throughput_and_tables(tmp_path):
    rows = _rows()
    tp = throughput(rows, ["gemfilter-sentence", "longllmlingua"])
    assert tp["pairs"] == 2 and tp["gemfilter-sentence"]["tokens_per_s"] == 500.0
    assert tp["longllmlingua"]["tokens_per_s"] == 125.0
    assert summarize_rows(rows)["gemfilter-sentence"]["256"]["recall"] == 0.5
    results = _results(rows)
    table = rate_table(results["summary"], "dataset", "nq", "recall", ["256"])
    assert any("50.0% [9.5, 90.5] (n=2)" in line and "GemFilter (default)" in line for line in table)
    readme = tmp_path / "README.md"
    readme.write_text("# Bench\n\nhand-written\n")
    write_readme(results, readme)
    write_readme(results, readme)  # idempotent: the section is replaced, not duplicated
    text = readme.read_text()
    begin, end = markers("t")
    assert text.count(begin) == 1 and text.count(end) == 1 and "hand-written" in text
    assert "no significant difference (p=1.000)" in text  # the paired test of the default vs LongLLMLingua


def _paired_rows(n: int, only_default: int, only_rag: int) -> list[dict]:
    """NQ rows at one position: the default and plain RAG, with the given discordant counts."""
    rows = []
    for i in range(n):
        d = i < only_default or i >= only_default + only_rag
        r = only_default <= i < only_default + only_rag or i >= only_default + only_rag
        for m, ok in (("gemfilter-sentence", d), ("rag", r)):
            rows.append(
                {"dataset": "nq", "id": f"q{i}-p1", "cluster": f"q{i}", "position": 1, "method": m, "budget": 256,
                 "recall": ok, "latency_s": 1.0, "tokens_sent": 250, "original_tokens": 2000, "error": None}
            )  # fmt: skip
    return rows


def test_summaries_compare_the_default_in_pairs():
    rows = _paired_rows(40, only_default=12, only_rag=1)
    s = summaries(rows, [])
    c = next(c for c in s["comparisons"] if c["other"] == "rag" and c["where"] == "nq, gold at 1")
    assert (c["n"], c["only_a"], c["only_b"]) == (40, 12, 1)
    assert c["p"] == pytest.approx(2 * 14 / 2**13)  # binomial tail: P(X <= 1 | 13)
    assert c["verdict"].startswith("GemFilter (default) > plain RAG (MiniLM) (p=0.003")
    rate = next(e for e in s["rates"] if e["scope"] == "dataset" and e["method"] == "rag")
    assert rate["recall"]["n"] == 40 and rate["recall"]["interval"] == "wilson"  # one position: independent
    cost = next(c for c in s["costs"] if c["method"] == "rag")
    assert cost["median_s"] == 1.0 and cost["tokens_sent"] == 250


def test_pooled_nq_rates_bootstrap_over_questions():
    rows = _paired_rows(10, 0, 0)
    rows += [{**r, "id": r["id"].replace("-p1", "-p10"), "position": 10} for r in rows]
    s = summaries(rows, [])
    pooled = next(e for e in s["rates"] if e["scope"] == "dataset" and e["method"] == "rag")
    assert pooled["recall"]["n"] == 20 and pooled["recall"]["interval"] == "cluster bootstrap"
    assert {e["where"] for e in s["rates"] if e["scope"] == "slice"} == {"nq, gold at 1", "nq, gold at 10"}


def test_recall_vs_tokens_plot(tmp_path):
    rows = _rows()
    results = _results(rows)
    from benchmarks.report import write_plots

    paths = write_plots(results, rows, tmp_path)
    assert [p.endswith("t_recall_vs_tokens_nq.png") for p in paths] == [True]
    assert (tmp_path / "t_recall_vs_tokens_nq.png").stat().st_size > 1000


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

    from benchmarks.datasets import chunk_probe
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


def test_compare_runs_pairs_methods_of_two_runs_on_their_shared_items(tmp_path: Path) -> None:
    from benchmarks.compare_runs import main, parse_spec

    def write(name: str, rows: list[dict[str, Any]]) -> None:
        (tmp_path / f"{name}.json").write_text(json.dumps({"rows_file": f"{name}.rows.jsonl.gz"}))
        with gzip.open(tmp_path / f"{name}.rows.jsonl.gz", "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    def row(method: str, i: int, kept: bool, budget: int = 256) -> dict[str, Any]:
        return {"dataset": "nq", "id": f"nq-{i}", "method": method, "budget": budget, "recall": kept}

    write("one", [row("a", i, i < 9) for i in range(10)] + [row("a", 0, False, 128)])
    write("two", [row("b", i, i < 2) for i in range(12)])  # items 10, 11 are not in run one
    text = main(["one:a=new", "two:b", "--output-dir", str(tmp_path), "--out", str(tmp_path / "t.md")])
    assert "| two:b | nq | 10 | 90.0% | 20.0% | +70.0 [" in text and "| 7 / 0 | p=0.016 |" in text
    assert (tmp_path / "t.md").read_text() == text
    assert parse_spec("run:m=label") == ("run", "m", "label")
    with pytest.raises(ValueError, match="RUN:METHOD"):
        parse_spec("no-method")
    with pytest.raises(SystemExit):
        main(["one:a", "two:missing", "--output-dir", str(tmp_path)])
