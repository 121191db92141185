"""Units that follow structure: the kind of a document, its structural spans, long units cut at
boundaries (never inside a word, number or identifier), the header or key path of a unit."""

from __future__ import annotations

import random
import re
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gemfilter_rag.headers import json_paths, unit_context
from gemfilter_rag.pieces import STRETCH, boundary_strength, cut_span, cut_units
from gemfilter_rag.prompt import build_prompt, tokenize_document
from gemfilter_rag.selection import MAX_SENTENCE_TOKENS, token_units
from gemfilter_rag.sentences import sentence_spans
from gemfilter_rag.structure import KINDS, detect_kind, structural_spans, structure
from gemfilter_rag.units import prompt_unit_contexts, prompt_units, unit_text

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _uuids(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def key_value_json(pairs: int, seed: int = 0) -> str:
    ids = _uuids(2 * pairs, seed)
    body = ",\n".join(f'  "{k}": "{v}"' for k, v in zip(ids[::2], ids[1::2], strict=True))
    return "{\n" + body + "\n}"


SAMPLES = {
    "json": (key_value_json(5), "json"),
    "json_nested": (
        '{\n  "name": "billing",\n  "limits": {\n    "cpu": 2,\n    "memory": "4Gi"\n  },\n  "tags": ["a", "b"]\n}\n',
        "json",
    ),
    "json_chunk": (  # a retriever's chunk from the middle of an object: it does not parse
        '  "a1": "7f3a",\n  "b2": "9c1e",\n  "c3": "0d4b",\n  "d4": "5e6f"',
        "json",
    ),
    "jsonl": (
        '{"id": 1, "name": "Ada", "role": "admin"}\n{"id": 2, "name": "Bob", "role": "user"}\n'
        '{"id": 3, "name": "Cy", "role": "user"}\n',
        "jsonl",
    ),
    "yaml": (
        "service:\n  name: billing\n  replicas: 3\n  image: registry/billing:1.4.2\n# ports\nports:\n"
        "  - 8080\n  - 9090\ndescription: |\n  Handles invoices.\n  And refunds.\nowner: team-ledger\n",
        "yaml",
    ),
    "markdown": (
        "# Inventory\n\nThe table lists the stock. It is updated daily.\n\n| sku | name | qty |\n|---|---|---|\n"
        "| A-1 | bolt | 40 |\n| A-2 | nut | 12 |\n\n- first item\n  continues here\n- second item\n",
        "markdown",
    ),
    "markdown_fence": (
        "## Usage\n\nCall it like this:\n\n```python\ndef f():\n    return 1\n\nx = f()\n```\nThat is all.\n",
        "markdown",
    ),
    "prose_with_table": (
        "The results are below. They were measured twice.\n| model | score |\n|---|---|\n| a | 0.91 |\n"
        "| b | 0.87 |\nThe first model wins.",
        "markdown",
    ),
    "csv": ('sku,name,qty,warehouse\nA-1,bolt,40,WH-3\nA-2,nut,12,WH-1\nA-3,"washer, steel",7,WH-2\n', "csv"),
    "tsv": ("sku\tname\tqty\nA-1\tbolt\t40\nA-2\tnut\t12\n", "tsv"),
    "code": (
        "import os\n\n\ndef foo_bar(x):\n    y = x + 1\n    return 'amber-4821'\n\n\nclass Thing:\n"
        "    def run(self):\n        return os.getcwd()\n",
        "code",
    ),
    "logs": (
        "2024-03-05T12:34:56.789Z INFO  [auth-svc] user login ok id=42\n"
        "2024-03-05T12:34:57.001Z ERROR [pay-svc] E-12345 timeout calling ledger\n"
        'Traceback (most recent call last):\n  File "x.py", line 3\n'
        "2024-03-05T12:35:00.000Z WARN  [pay-svc] retrying\n",
        "logs",
    ),
    "prose": (
        "The most important thing in a young company is to make something people want.\nFounders often "
        "spend months building features nobody asked for. Dr. Smith agreed, e.g. at 4,096 tokens.",
        "prose",
    ),
    "prose_colons": ("Note: this is important.\nAlso: that one.\nSee: here, please.", "prose"),
    "single_line": ("Just one line of text, e.g. this one.", "prose"),
    "single_log_line": ("2024-03-05 12:34:56 ERROR [db] E-500 connection refused", "logs"),
    "empty": ("", "prose"),
}


def _partitions(text: str, spans: list[tuple[int, int]]) -> bool:
    if not text:
        return spans == []
    return (
        spans[0][0] == 0
        and spans[-1][1] == len(text)
        and all(b > a for a, b in spans)
        and all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    )


# ---------------------------------------------------------------- detection and spans


@pytest.mark.parametrize("name", list(SAMPLES))
def test_every_kind_is_detected_and_its_spans_partition_the_text(name: str) -> None:
    text, kind = SAMPLES[name]
    assert detect_kind(text) == kind
    found, spans = structural_spans(text)
    assert found == kind in KINDS
    assert _partitions(text, spans)
    s = structure(text)
    assert s.spans == spans and len(s.roles) == len(spans)


def _pieces(name: str) -> list[str]:
    text = SAMPLES[name][0]
    return [text[a:b] for a, b in structural_spans(text)[1]]


def test_json_is_one_key_value_pair_a_unit() -> None:
    pieces = _pieces("json")
    assert len(pieces) == 5
    assert all(len(UUID.findall(p)) == 2 for p in pieces)  # a key and its value, never apart
    assert pieces[0].startswith("{\n") and pieces[-1].endswith("\n}")  # the braces go with their pairs
    nested = _pieces("json_nested")
    assert nested == [
        '{\n  "name": "billing",\n',
        '  "limits": {\n    "cpu": 2,\n',  # the line that opens an object goes with the next
        '    "memory": "4Gi"\n  },\n',  # the closing line with the one before
        '  "tags": ["a", "b"]\n}\n',
    ]
    assert len(_pieces("json_chunk")) == 4


def test_records_rows_and_log_lines_are_one_a_unit() -> None:
    assert _pieces("jsonl") == SAMPLES["jsonl"][0].splitlines(keepends=True)
    assert _pieces("csv")[-1] == 'A-3,"washer, steel",7,WH-2\n'
    assert len(_pieces("csv")) == 4 and len(_pieces("tsv")) == 3
    quoted = 'id,note\n1,"two\nlines"\n2,plain\n'
    assert _pieces_of(quoted) == ["id,note\n", '1,"two\nlines"\n', "2,plain\n"]  # a quoted newline
    logs = _pieces("logs")
    assert len(logs) == 3 and "Traceback" in logs[1] and logs[1].startswith("2024-03-05T12:34:57")


def _pieces_of(text: str) -> list[str]:
    return [text[a:b] for a, b in structural_spans(text)[1]]


def test_yaml_is_one_key_a_unit_and_keeps_block_scalars() -> None:
    pieces = _pieces("yaml")
    assert "  replicas: 3\n" in pieces
    assert "description: |\n  Handles invoices.\n  And refunds.\n" in pieces
    assert "service:\n  name: billing\n" in pieces  # "service:" opens a mapping: it goes with the next line


def test_markdown_goes_by_line_block() -> None:
    s = structure(SAMPLES["markdown"][0])
    pieces = [(SAMPLES["markdown"][0][a:b], r) for (a, b), r in zip(s.spans, s.roles, strict=True)]
    assert ("# Inventory\n\n", "text") in pieces
    assert ("The table lists the stock. ", "text") in pieces  # paragraphs in pysbd sentences
    assert ("| sku | name | qty |\n|---|---|---|\n", "table") in pieces  # the rule goes with the header
    assert ("| A-1 | bolt | 40 |\n", "table") in pieces
    assert ("- first item\n  continues here\n", "text") in pieces  # an item with its continuation
    fenced = structure(SAMPLES["markdown_fence"][0])
    code = [
        SAMPLES["markdown_fence"][0][a:b] for (a, b), r in zip(fenced.spans, fenced.roles, strict=True) if r == "code"
    ]
    assert code == ["```python\ndef f():\n    return 1\n\n", "x = f()\n```\n"]
    mixed = _pieces("prose_with_table")
    assert "| a | 0.91 |\n" in mixed and "The first model wins." in mixed


def test_code_is_blank_line_separated_blocks() -> None:
    assert _pieces("code") == [
        "import os\n\n\n",
        "def foo_bar(x):\n    y = x + 1\n    return 'amber-4821'\n\n\n",
        "class Thing:\n    def run(self):\n        return os.getcwd()\n",
    ]


@pytest.mark.parametrize("name", ["prose", "prose_colons", "single_line", "empty"])
def test_prose_gives_the_pysbd_sentences_unchanged(name: str) -> None:
    text = SAMPLES[name][0]
    s = structure(text)
    assert s.spans == sentence_spans(text) and set(s.roles) <= {"prose"}


def test_the_golden_documents_are_prose() -> None:
    from golden_cases import DOCS
    from tinymodels import TRAINING_TEXT

    assert {detect_kind(d) for d in DOCS} == {"prose"}
    assert detect_kind(TRAINING_TEXT) == "prose"


_LINES = st.sampled_from(
    [
        '  "k": "v",',
        "{",
        "},",
        "| a | b |",
        "|---|---|",
        "# Title",
        "- item",
        "```",
        "a,b,c",
        "x\ty",
        "key: value",
        "  - 3",
        "2024-01-01 00:00:00 INFO ok",
        "def f(x):",
        "    return x",
        "",
        "Plain words here. And more.",
        '1,"open quote',
    ]
)


@given(st.text(max_size=300))
def test_spans_partition_any_text(text: str) -> None:
    assert _partitions(text, structural_spans(text)[1])


@given(st.lists(_LINES, max_size=25), st.sampled_from(["\n", "\r\n"]))
def test_spans_partition_any_mix_of_structured_lines(lines: list[str], newline: str) -> None:
    text = newline.join(lines)
    s = structure(text)
    assert _partitions(text, s.spans) and len(s.roles) == len(s.spans)


# ---------------------------------------------------------------- cutting long units


def _run_inside(text: str, pos: int) -> bool:
    word = re.compile(r"[A-Za-z0-9_-]")
    return 0 < pos < len(text) and bool(word.match(text[pos - 1])) and bool(word.match(text[pos]))


def test_boundary_strength() -> None:
    text = '{"ab": "cd-12", "ef": 3}\n| x | y |'
    assert boundary_strength(text, 3, "json") == 0  # inside "ab"
    assert boundary_strength(text, 11, "json") == 0  # inside "cd-12": "-" is part of the identifier
    assert boundary_strength(text, 15, "json") == 3  # after the comma, between the pairs
    assert boundary_strength(text, 5, "json") == 1  # before the colon: punctuation
    assert boundary_strength(text, 6, "json") == 2  # after the colon: whitespace, not between pairs
    assert boundary_strength(text, 25, "table") == 4  # a line start
    assert boundary_strength(text, 28, "table") == 3  # between cells


def test_a_json_line_longer_than_the_piece_limit_stays_whole() -> None:
    text = '  "k": "' + "a" * 70 + '",\n'
    ends = [*range(1, len(text)), len(text)]  # one token a character: the line has 82 tokens
    assert cut_span(ends, text, 0, len(ends), "json", 64, 1000) == [(0, len(ends))]
    # past STRETCH x the limit it is cut, at whitespace, never inside the run
    assert STRETCH * 16 < len(ends)
    pieces = cut_span(ends, text, 0, len(ends), "json", 16, 1000)
    assert len(pieces) > 1 and not any(_run_inside(text, ends[a - 1]) for a, _ in pieces[1:])
    # a run longer than the budget is the one case cut inside: every piece still fits the budget
    pieces = cut_span(ends, text, 0, len(ends), "json", 16, 30)
    assert all(b - a <= 30 for a, b in pieces)


def test_compact_json_is_cut_between_pairs() -> None:
    ids = _uuids(6)
    text = "{" + ", ".join(f'"{k}": "{v}"' for k, v in zip(ids[::2], ids[1::2], strict=True)) + "}"
    ends = [m.end() for m in re.finditer(r"\w|\W", text)]  # one token a character
    pieces = cut_span(ends, text, 0, len(ends), "json", 40, 1000)
    texts = [text[ends[a - 1] if a else 0 : ends[b - 1]] for a, b in pieces]
    assert "".join(texts) == text
    assert all(len(UUID.findall(t)) == 2 for t in texts)  # one pair a piece, key and value together


@given(
    st.text(alphabet="ab1-_ ,:{}|\n", min_size=1, max_size=240),
    st.lists(st.integers(1, 6), min_size=1, max_size=240),
    st.integers(1, 20),
    st.integers(1, 50),
    st.sampled_from(["text", "json", "code", "table", "log"]),
)
def test_cut_units_partition_the_tokens_fit_the_budget_and_avoid_runs(
    text: str, widths: list[int], max_tokens: int, limit: int, role: str
) -> None:
    ends: list[int] = []
    for w in widths:  # tokens of 1 to 6 characters up to the end of the text
        if not ends or ends[-1] < len(text):
            ends.append(min(len(text), (ends[-1] if ends else 0) + w))
    units = cut_units(ends, text, [(0, len(text))], [role], 7, max_tokens, limit)
    local = [(a - 7, b - 7) for a, b in units]
    assert local[0][0] == 0 and local[-1][1] == len(ends)
    assert all(b > a for a, b in local) and all(local[i][1] == local[i + 1][0] for i in range(len(local) - 1))
    assert all(b - a <= limit for a, b in local)
    for a, b in local[:-1]:  # a cut inside a run only where the run alone is longer than the budget
        if _run_inside(text, ends[b - 1]):
            assert b - a == limit


@given(st.lists(st.integers(1, 5), min_size=0, max_size=80), st.integers(1, 12), st.data())
def test_prose_role_cuts_as_token_units(widths: list[int], max_tokens: int, data: Any) -> None:
    ends: list[int] = []
    for w in widths:
        ends.append((ends[-1] if ends else 0) + w)
    total = ends[-1] if ends else 0
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, total - 1)), max_size=6))) if total > 1 else []
    bounds = [0, *[c for c in cuts if 0 < c < total], total] if total else []
    spans = list(zip(bounds[:-1], bounds[1:], strict=True))
    text = "x" * total
    assert cut_units(ends, text, spans, ["prose"] * len(spans), 3, max_tokens, 1000) == token_units(
        ends, spans, 3, max_tokens
    )


# ---------------------------------------------------------------- through a real tokenizer


def _prompt(tokenizer: Any, docs: list[str]) -> Any:
    return build_prompt(
        tokenizer, docs, "What is the value?", separator="\n\n", template="{context}\n{query}", use_chat_template=False
    )


@pytest.mark.parametrize("budget", [2000, 120, 50])
def test_no_unit_boundary_falls_inside_a_uuid_of_the_75_pair_json(tokenizer: Any, budget: int) -> None:
    text = key_value_json(75, seed=3)
    prompt = _prompt(tokenizer, [SAMPLES["prose"][0], text])
    units = prompt_units(prompt, "sentence", budget)
    assert units.kinds == ["prose", "json"]
    doc, offset = prompt.documents[1], len(prompt.documents[0].ids)
    mine = units.per_document[1]
    assert mine[0][0] == offset and mine[-1][1] == offset + len(doc.ids)  # the units partition the tokens
    assert all(mine[i][1] == mine[i + 1][0] for i in range(len(mine) - 1))
    assert all(b - a <= budget for a, b in mine)
    inside = [(m.start(), m.end()) for m in UUID.finditer(text)]
    for a, _ in mine[1:]:
        cut = doc.ends[a - offset - 1]
        assert not any(s < cut < e for s, e in inside), f"a unit starts inside a UUID at {cut}"
    if budget >= 2000:
        lines = [unit_text(prompt, 1, u, offset) for u in mine]
        assert len(mine) == 75 and all(len(UUID.findall(t)) == 2 for t in lines)  # one pair a unit
        long = [b - a for a, b in mine if b - a > MAX_SENTENCE_TOKENS]
        assert long, "with this tokenizer a pair line is longer than the piece limit, and stays one unit"


def test_a_long_json_line_is_one_unit_where_the_sentence_cut_split_a_uuid(tokenizer: Any) -> None:
    text = key_value_json(3, seed=1)
    doc = tokenize_document(tokenizer, text)
    old = token_units(doc.ends, sentence_spans(text), 0, MAX_SENTENCE_TOKENS)  # before structure
    inside = [(m.start(), m.end()) for m in UUID.finditer(text)]
    assert any(any(s < doc.ends[a - 1] < e for s, e in inside) for a, _ in old[1:])  # the bug of issue 20
    s = structure(text)
    new = cut_units(doc.ends, text, s.spans, s.roles, 0, MAX_SENTENCE_TOKENS, 1000)
    assert not any(any(s < doc.ends[a - 1] < e for s, e in inside) for a, _ in new[1:])
    line = tokenize_document(tokenizer, text.splitlines(keepends=True)[1])
    assert len(line.ids) > MAX_SENTENCE_TOKENS  # ~71 with a real model's tokenizer, more with this one
    assert len(new) == 3


def test_prose_units_are_the_units_of_before(tokenizer: Any) -> None:
    from golden_cases import DOCS

    prompt = _prompt(tokenizer, DOCS)
    for budget in (5, 40, 300):
        units = prompt_units(prompt, "sentence", budget)
        start, before = 0, []
        for doc in prompt.documents:
            before.append(token_units(doc.ends, sentence_spans(doc.text), start, min(MAX_SENTENCE_TOKENS, budget)))
            start += len(doc.ids)
        assert units.per_document == before and set(units.kinds) == {"prose"}
    assert prompt_units(prompt, "token", 40).kinds == []


def test_every_document_is_accounted_for(tokenizer: Any) -> None:
    docs = [SAMPLES[n][0] for n in SAMPLES]
    prompt = _prompt(tokenizer, docs)
    units = prompt_units(prompt, "sentence", 30)
    assert len(units.per_document) == len(units.kinds) == len(docs)
    start = 0
    for doc, mine in zip(prompt.documents, units.per_document, strict=True):
        covered = [t for a, b in mine for t in range(a, b)]
        assert covered == list(range(start, start + len(doc.ids)))
        assert all(b - a <= 30 for a, b in mine)
        start += len(doc.ids)


# ---------------------------------------------------------------- context of a unit


def _context(name: str, piece: str) -> str | None:
    text, kind = SAMPLES[name]
    a = text.index(piece)
    return unit_context(kind, text, (a, a + len(piece)))


def test_unit_context_gives_the_header_or_key_path() -> None:
    assert _context("csv", "A-2,nut,12,WH-1\n") == "sku,name,qty,warehouse"
    assert _context("csv", "sku,name,qty,warehouse\n") is None  # the header itself
    assert _context("tsv", "A-2\tnut\t12\n") == "sku\tname\tqty"
    assert _context("markdown", "| A-2 | nut | 12 |\n") == "| sku | name | qty |"
    assert _context("markdown", "| sku | name | qty |\n") is None
    assert _context("markdown", "- second item\n") == "# Inventory"  # other units: the heading above
    assert _context("json_nested", '    "memory": "4Gi"') == "limits"
    assert _context("json_nested", '  "tags"') is None
    assert _context("yaml", "  replicas: 3\n") == "service"
    assert _context("yaml", "  - 9090\n") == "ports"
    assert _context("code", "    return 'amber-4821'\n") == "def foo_bar(x):"
    assert _context("code", "        return os.getcwd()\n") == "def run(self):"
    assert _context("logs", "2024-03-05T12:35:00.000Z WARN") is None
    assert _context("prose", "Founders") is None


def test_json_paths_name_keys_and_indices() -> None:
    text = '{"a": {"b": [{"c": 1}, {"d": 2, "e": "x,y"}]}, "f": 3}'
    positions = [text.index(k) for k in ('"a"', '"c"', '"e"', '"f"')]
    assert json_paths(text, positions) == [None, "a.b[0]", "a.b[1]", None]


def test_prompt_unit_contexts_are_data_beside_the_units(tokenizer: Any) -> None:
    prompt = _prompt(tokenizer, [SAMPLES["csv"][0], SAMPLES["prose"][0]])
    units = prompt_units(prompt, "sentence", 100)
    contexts = prompt_unit_contexts(prompt, units)
    assert [len(c) for c in contexts] == [len(u) for u in units.per_document]
    assert contexts[0] == [None, *["sku,name,qty,warehouse"] * 3] and set(contexts[1]) == {None}
    with pytest.raises(ValueError, match="granularity 'sentence'"):
        prompt_unit_contexts(prompt, prompt_units(prompt, "document", 100))
