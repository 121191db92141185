"""The structured-lookup benchmark's pure parts: cases as items, the identifier check, the run loop and the
tables, on tiny inputs (no real model; GemFilter on a tiny random one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tinymodels import build_model, build_tokenizer

from benchmarks import structured
from benchmarks.structured import (
    broken_identifiers,
    case_item,
    cases,
    gemfilter_method,
    inside_identifier,
    library_method,
    measure,
    parse_args,
    read_rows,
    report,
    run_cases,
    summarize,
    write,
)
from benchmarks.structured_data import EVAL_SEEDS, make_case

DOC = 'id E-12345 at 2024-05-17T10:03:22.123Z: "3f2a9c1e-0b4d-4e6f-8a7b-1c2d3e4f5a6b" ok'


def test_cases_are_evaluation_cases_of_every_kind_and_depth() -> None:
    found = cases(2, structured.KINDS[:2])
    assert len(found) == 2 * len(structured.DEPTHS) * 2
    assert {label for label, _ in found} == {"json-25", "json-75"}
    assert all(case.seed in EVAL_SEEDS for _, case in found)
    assert sorted({case.depth for _, case in found}) == list(structured.DEPTHS)


def test_case_item_carries_the_case() -> None:
    case = make_case("logs", 100_004, "eval", lines=30, depth=0.25)
    item = case_item("logs", case)
    assert item.documents == case.documents and item.question == case.question and item.answers == [case.answer]
    assert item.id == "logs-100004-d0.25" and item.dataset == "structured-logs"
    assert item.meta == {"kind": "logs", "seed": 100_004, "depth": 0.25, "gold_document": case.gold_document}
    assert item.retrieved is None  # plain RAG ranks the chunks themselves


def test_broken_identifiers_find_what_a_cut_leaves() -> None:
    assert broken_identifiers(DOC, [DOC]) == []
    assert broken_identifiers("id E-123", [DOC]) == ["E-123"]  # the end of a span inside the code
    assert broken_identifiers("345 at", [DOC]) == ["345"]  # the start of one inside it
    assert broken_identifiers('"3f2a9c1e-0b4d-', [DOC]) == ["3f2a9c1e-0b4d"]  # cut at a hyphen of the UUID
    assert broken_identifiers("2024-05-17T10:03", [DOC]) == ["2024-05-17T10:03"]  # a timestamp is one identifier
    assert broken_identifiers("ok\n\nid E-12345", [DOC, "other"]) == []  # pieces joined whole are fine
    assert broken_identifiers("E-1 E-1 ok", [DOC]) == ["E-1"]  # each once
    assert broken_identifiers("x", []) == ["x"]


def test_inside_identifier_is_strictly_inside() -> None:
    end_of_code = DOC.index("E-12345") + len("E-12345")
    inside = DOC.index("E-12345") + 3
    assert inside_identifier(DOC, [0, 2, 3, inside, end_of_code, len(DOC)]) == [False, False, False, True, False, False]
    uuid_hyphen = DOC.index("-0b4d") + 1  # just after a hyphen of the UUID
    assert inside_identifier(DOC, [uuid_hyphen]) == [True]


def test_measure_asks_for_the_exact_answer() -> None:
    case = make_case("csv", 100_001, "eval", rows=8, depth=0.5, chunks=2)
    item = case_item("csv", case)
    assert measure(item, f"row: {case.answer}")["answer_kept"]
    assert not measure(item, f"row: {case.answer[:-1]}")["answer_kept"]
    got = measure(item, item.documents[0][:-2])  # the chunk cut two characters short
    assert got["whole"] is False and len(got["broken"]) == 1


def fake(text_of: Any) -> Any:
    def run(item: Any, budget: int) -> tuple[str, float, dict[str, Any]]:
        return text_of(item, budget), 0.01, {"tokens": budget}

    return run


def test_run_cases_rows_skip_what_is_done_and_report_each_item() -> None:
    items = [case_item(label, case) for label, case in cases(1, structured.KINDS[3:5])]
    methods = {
        "all": fake(lambda item, b: "\n".join(item.documents)),
        "none": fake(lambda item, b: ""),
    }
    seen: list[int] = []
    rows = run_cases(items, methods, (128, 256), on_item=lambda r: seen.append(len(r)))
    assert len(rows) == len(items) * 2 * 2 and seen == [4 * (i + 1) for i in range(len(items))]
    assert all(r["answer_kept"] and r["whole"] for r in rows if r["method"] == "all")
    assert not any(r["answer_kept"] for r in rows if r["method"] == "none")
    assert {"kind", "seed", "depth", "method", "budget", "seconds", "tokens", "broken"} <= set(rows[0])
    done = {(items[0].id, "all", 128)}
    assert len(run_cases(items[:1], methods, (128, 256), done)) == 3


def rows_for_report() -> list[dict[str, Any]]:
    rows = []
    for i, (kind, depth) in enumerate([("json-25", 0.0), ("json-25", 1.0), ("code", 0.5), ("code", 0.5)]):
        for method in ("gemfilter", "rag"):
            kept = method == "gemfilter" or i % 2 == 0
            row = {"id": f"{kind}-{i}", "kind": kind, "seed": i, "depth": depth, "method": method, "budget": 128}
            row |= {"answer_kept": kept, "whole": method == "gemfilter", "broken": []}
            if method == "gemfilter":
                row["span_ends_inside"] = 1 if i == 3 else 0
            rows.append(row)
    return rows


def test_summarize_and_report_render_the_rates() -> None:
    rows = rows_for_report()
    summary = summarize(rows)
    assert summary["gemfilter"]["128"]["all"]["answer_kept"]["k"] == 4
    assert summary["rag"]["128"]["all"]["answer_kept"]["k"] == 2 and summary["rag"]["128"]["code"]["n"] == 2
    assert summary["rag"]["128"]["all"]["whole"]["rate"] == 0.0
    cell = summary["rag"]["128"]["json-25"]["answer_kept"]
    assert cell["low"] < cell["rate"] < cell["high"]
    text = report(rows)
    assert "## Answer kept, 128 tokens" in text and "## Whole identifiers, 128 tokens" in text
    assert "| kind | gemfilter | rag |" in text  # the methods in their order
    assert "| all | 100.0% [51.0, 100.0] (n=4) | 50.0% [15.0, 85.0] (n=4) |" in text
    assert "| json-25 |" in text and text.index("| json-25 |") < text.index("| code |")  # kinds in order
    assert "| 0.5 | 100.0%" in text  # by depth
    assert "1 kept spans end inside an identifier of their document, in 1 of 4 results" in text
    assert "No rows yet" in report([])


def test_write_and_read_rows_round_trip(tmp_path: Path) -> None:
    rows = rows_for_report()
    path, table = tmp_path / "structured.json", tmp_path / "structured.md"
    write(path, table, rows, {"n": 1})
    data = json.loads(path.read_text())
    assert data["config"] == {"n": 1} and data["rows"] == rows and "gemfilter" in data["summary"]
    assert read_rows(path) == rows and table.read_text() == report(rows)
    assert read_rows(tmp_path / "missing.json") == []
    (tmp_path / "bad.json").write_text("{not json")
    assert read_rows(tmp_path / "bad.json") == []


def test_parse_args() -> None:
    assert parse_args(["--quick"]).n == 1 and parse_args([]).n == structured.N_DEFAULT
    assert parse_args(["--n", "3"]).budgets == [128, 256, 512]
    with pytest.raises(SystemExit):
        parse_args(["--n", "0"])
    with pytest.raises(SystemExit):
        parse_args(["--methods", "llmlingua"])


def test_gemfilter_method_on_a_tiny_model_counts_its_own_spans() -> None:
    from gemfilter_rag import GemFilterCompressor

    comp = GemFilterCompressor(build_model("llama"), build_tokenizer(), filter_layer=1)
    case = make_case("csv", 100_002, "eval", rows=6, depth=0.5, chunks=2)
    item = case_item("csv", case)
    text, seconds, extra = gemfilter_method(comp)(item, 24)
    assert seconds > 0 and 0 < extra["tokens"] <= 24 and extra["span_ends_inside"] >= 0
    assert measure(item, text)["whole"] == (not broken_identifiers(text, item.documents))


class WordResources:
    """What a library method needs of ``benchmarks.methods.Resources``, counting words as tokens."""

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def cut(self, text: str, budget: int) -> str:
        return " ".join(text.split()[:budget])

    def forget(self) -> None:
        pass


def test_library_method_runs_a_registered_method_within_the_budget() -> None:
    case = make_case("logs", 100_003, "eval", lines=12, depth=1.0, chunks=3)
    item = case_item("logs", case)
    text, _, extra = library_method("bm25-sentences", WordResources())(item, 20)
    assert 0 < extra["tokens"] <= 20 and text
    assert set(text.split()) <= set(" ".join(item.documents).split())
