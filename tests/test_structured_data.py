"""The generator of the structured-data benchmark: pure, seeded, one exact answer, depth honoured."""

from __future__ import annotations

import json
import re

import pytest

from benchmarks.structured_data import (
    EVAL_SEEDS,
    GENERATORS,
    JSON_PAIRS,
    TRAIN_SEEDS,
    chunk_lines,
    gold_index,
    key_value_json,
    log_lines,
    make_case,
)

KINDS = sorted(GENERATORS)


def test_train_and_eval_seeds_are_disjoint() -> None:
    assert TRAIN_SEEDS == range(0, 10_000) and EVAL_SEEDS == range(100_000, 110_000)
    assert not set(TRAIN_SEEDS) & set(EVAL_SEEDS)


@pytest.mark.parametrize("kind", KINDS)
def test_make_case_refuses_a_seed_of_the_other_split(kind: str) -> None:
    with pytest.raises(ValueError, match="it is a train seed"):
        make_case(kind, 5, "eval")
    with pytest.raises(ValueError, match="it is a eval seed"):
        make_case(kind, 100_005, "train")
    with pytest.raises(ValueError, match="in no split"):
        make_case(kind, 50_000, "eval")
    assert make_case(kind, 100_005, "eval").seed == 100_005


def test_make_case_names_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="kind"):
        make_case("xml", 100_000, "eval")
    with pytest.raises(ValueError, match="split"):
        make_case("json", 100_000, "test")
    with pytest.raises(ValueError, match="depth"):
        make_case("json", 100_000, "eval", depth=1.5)


@pytest.mark.parametrize("kind", KINDS)
def test_a_case_is_the_same_for_the_same_seed_and_differs_across_seeds(kind: str) -> None:
    a, b = make_case(kind, 100_001, "eval"), make_case(kind, 100_001, "eval")
    assert a == b
    c = make_case(kind, 100_002, "eval")
    assert (c.documents, c.question) != (a.documents, a.question)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 17, 9_999])
@pytest.mark.parametrize("depth", [0.0, 0.4, 1.0])
def test_the_answer_appears_exactly_once(kind: str, seed: int, depth: float) -> None:
    case = make_case(kind, seed, "train", depth=depth)
    assert sum(d.count(case.answer) for d in case.documents) == 1
    assert case.answer in case.documents[case.gold_document]
    assert 1 < len(case.documents) <= 8 and case.question.endswith("?")


@pytest.mark.parametrize("pairs", JSON_PAIRS)
@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 1.0])
def test_key_value_json_puts_the_gold_pair_at_the_depth(pairs: int, depth: float) -> None:
    case = key_value_json(3, pairs=pairs, depth=depth)
    assert len(case.documents) == 8
    whole = "\n".join(case.documents)
    obj = json.loads(whole)  # the chunks are the lines of one object, one pair a line, in order
    assert len(obj) == pairs
    key = re.search(r'"([0-9a-f-]{36})"', case.question).group(1)  # type: ignore[union-attr]
    assert list(obj).index(key) == gold_index(depth, pairs) == case.gold_item
    assert obj[key] == case.answer
    assert all(line.count('": "') == 1 for line in whole.splitlines()[1:-1])
    # the chunk holding the pair is where that depth falls
    assert abs(case.gold_document / 7 - depth) <= 0.2


@pytest.mark.parametrize("kind", ["markdown", "csv"])
def test_table_rows_answer_their_question(kind: str) -> None:
    case = make_case(kind, 100_003, "eval", rows=40, depth=0.75)
    column, key = re.match(r"What is the (\w+) of (SKU-\d+)\?", case.question).groups()  # type: ignore[union-attr]
    sep = "|" if kind == "markdown" else ","
    header = [c.strip() for c in case.documents[0].splitlines()[0].strip("|").split(sep)]
    rows = [line for d in case.documents for line in d.splitlines()[2 if kind == "markdown" else 1 :]]
    assert len(rows) == 40
    cells = [[c.strip() for c in r.strip("|").split(sep)] for r in rows]
    row = next(i for i, r in enumerate(cells) if r[0] == key)
    assert row == gold_index(0.75, 40) and cells[row][header.index(column)] == case.answer
    assert all(d.splitlines()[0] == case.documents[0].splitlines()[0] for d in case.documents)  # header each


def test_log_lines_hold_the_error_at_the_depth() -> None:
    for seed in range(6):
        case = log_lines(seed, lines=80, depth=0.5)
        lines = [line for d in case.documents for line in d.splitlines()]
        assert len(lines) == 80
        code = re.search(r"E-\d{5}", case.question).group(0)  # type: ignore[union-attr]
        (hit,) = [i for i, line in enumerate(lines) if code in line]
        assert hit == gold_index(0.5, 80) and case.answer in lines[hit] and " ERROR " in lines[hit]
        assert all(re.match(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z ", line) for line in lines)


def test_code_functions_return_the_answer() -> None:
    case = make_case("code", 42, "train", functions=16, depth=0.0)
    name = re.search(r"function (\w+) return", case.question).group(1)  # type: ignore[union-attr]
    source = "\n\n\n".join(case.documents)
    namespace: dict[str, object] = {}
    exec(compile(source, "<case>", "exec"), namespace)  # the module runs
    assert str(namespace[name]("x")) == case.answer  # type: ignore[operator]
    assert case.gold_item == 0 and re.search(r"^def (\w+)", source, re.M).group(1) == name  # type: ignore[union-attr]


def test_chunk_lines_and_gold_index() -> None:
    groups = chunk_lines(list("abcdefghij"), 4)
    assert len(groups) == 4 and sum(groups, []) == list("abcdefghij")
    assert {len(g) for g in groups} == {2, 3}  # nearly equal
    assert chunk_lines(["a", "b"], 8) == [["a"], ["b"]]
    assert [gold_index(d, 5) for d in (0, 0.5, 1)] == [0, 2, 4]
    with pytest.raises(ValueError, match="chunks"):
        chunk_lines(["a"], 0)


@pytest.mark.parametrize("kind", KINDS)
def test_the_chunks_are_detected_as_their_kind(kind: str) -> None:
    from gemfilter_rag.structure import detect_kind

    expected = {"json": "json", "markdown": "markdown", "csv": "csv", "logs": "logs", "code": "code"}[kind]
    for seed in range(3):
        assert {detect_kind(d) for d in make_case(kind, seed, "train").documents} == {expected}


def test_the_benchmark_reads_the_generator_of_the_library() -> None:
    import benchmarks.structured_data as bench
    from gemfilter_rag.training import structured

    assert bench.make_case is structured.make_case and bench.TRAIN_SEEDS is structured.TRAIN_SEEDS
    assert all(getattr(bench, name) is getattr(structured, name) for name in bench.__all__)


@pytest.mark.parametrize("kind", KINDS)
def test_gold_span_is_the_gold_item(kind: str) -> None:
    from benchmarks.structured_data import gold_span

    for seed in range(4):
        case = make_case(kind, seed, "train", depth=seed / 3)
        a, b = gold_span(case)
        text = case.documents[case.gold_document][a:b]
        assert case.answer in text
        if kind == "code":
            name = re.search(r"function (\w+) return", case.question).group(1)  # type: ignore[union-attr]
            last = text.splitlines()[-1]
            assert text.startswith(f"def {name}(") and last.strip().startswith("return") and case.answer in last
        else:
            assert "\n" not in text  # one line: the pair, the row, the log line
            looked_up = re.search(r'"([0-9a-f-]{36})"|(SKU-\d+)|(E-\d{5})', case.question)
            assert looked_up is not None and looked_up.group(looked_up.lastindex or 0) in text
