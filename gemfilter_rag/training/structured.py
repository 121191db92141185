"""Structured-data lookup cases (issue 20): JSON key/value, Markdown and CSV tables, logs, code.

Each case is a document cut into chunks as a retriever would hand them over (whole lines, no overlap),
a question whose answer is one exact string that appears once in the chunks, and that answer:

- ``key_value_json``: a JSON object of UUID keys and UUID values, one pair a line; "What is the
  value of the key "<uuid>"?";
- ``markdown_table`` / ``csv_table``: a table of unique cells (the header repeated in every chunk,
  as table-aware splitters do); "What is the <column> of <row key>?";
- ``log_lines``: timestamped service logs with a few errors; "Which service logged error E-12345?"
  or "What is the message of the error with code E-12345?";
- ``code_functions``: a Python module of small functions, each returning a literal; "What does
  function foo_bar return?".

The gold item (pair, row, error, function) sits at a requested depth, 0 (first) to 1 (last). Every
function is pure: the same seed gives the same case. Training and evaluation draw their seeds from
the disjoint ``TRAIN_SEEDS`` and ``EVAL_SEEDS``; ``make_case`` refuses a seed of the other split.
Imports nothing else from gemfilter_rag: readout training draws its examples from ``TRAIN_SEEDS``
(``examples.structured_examples``), the benchmark (``benchmarks.structured_data``, ``benchmarks.structured``)
from ``EVAL_SEEDS``.
"""

from __future__ import annotations

import datetime
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

_T = TypeVar("_T")

TRAIN_SEEDS = range(0, 10_000)
EVAL_SEEDS = range(100_000, 110_000)
SPLITS = {"train": TRAIN_SEEDS, "eval": EVAL_SEEDS}
CHUNKS = 8
JSON_PAIRS = (25, 75, 140)
"""The sizes of the key/value benchmark."""


@dataclass(frozen=True)
class StructuredCase:
    """One lookup: the chunks, the question, its one exact answer, and where the gold item sits."""

    kind: str
    seed: int
    documents: list[str]
    question: str
    answer: str
    depth: float
    """The requested depth of the gold item, 0 (first) to 1 (last)."""
    gold_item: int
    """The gold item's index among the items (pairs, rows, log lines, functions)."""
    gold_document: int
    """The index of the chunk that holds the answer."""


def gold_index(depth: float, count: int) -> int:
    """The item at ``depth`` (0..1) of ``count`` items."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth: {depth} is outside [0, 1]; pass 0 for the first item, 1 for the last.")
    if count < 1:
        raise ValueError(f"count: {count}; a case needs at least one item.")
    return round(depth * (count - 1))


def chunk_lines(lines: Sequence[_T], chunks: int) -> list[list[_T]]:
    """``lines`` (or any items) cut into ``chunks`` contiguous groups of nearly equal size (fewer if there
    are fewer)."""
    if chunks < 1:
        raise ValueError(f"chunks: {chunks}; pass 1 or more.")
    n = min(chunks, len(lines))
    bounds = [round(i * len(lines) / n) for i in range(n + 1)]
    return [list(lines[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def _rng(kind: str, seed: int, attempt: int) -> random.Random:
    return random.Random(f"structured:{kind}:{seed}:{attempt}")  # str seeds are hashed the same everywhere


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _distinct(rng: random.Random, count: int, make: Callable[[random.Random], str]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < count:
        v = make(rng)
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def _case(
    kind: str, seed: int, depth: float, build: Callable[[random.Random, int], tuple[list[str], str, str, int]]
) -> StructuredCase:
    """Run ``build(rng, attempt)`` -> (documents, question, answer, gold item) until the answer appears
    exactly once in the documents (a draw where a value shows up inside another is redrawn)."""
    for attempt in range(100):
        docs, question, answer, item = build(_rng(kind, seed, attempt), attempt)
        counts = [d.count(answer) for d in docs]
        if sum(counts) == 1:
            return StructuredCase(kind, seed, docs, question, answer, depth, item, counts.index(1))
    raise RuntimeError(f"{kind} seed {seed}: no draw with a unique answer in 100 attempts")


def key_value_json(seed: int, pairs: int = 75, depth: float = 0.5, chunks: int = CHUNKS) -> StructuredCase:
    """A JSON object of ``pairs`` UUID keys and values, one pair a line, in ``chunks`` chunks."""
    gold = gold_index(depth, pairs)

    def build(rng: random.Random, _: int) -> tuple[list[str], str, str, int]:
        keys = _distinct(rng, pairs, _uuid)
        values = _distinct(rng, pairs, _uuid)
        body = [
            f'  "{k}": "{v}"' + ("," if i < pairs - 1 else "")
            for i, (k, v) in enumerate(zip(keys, values, strict=True))
        ]
        docs = ["\n".join(c) for c in chunk_lines(["{", *body, "}"], chunks)]
        return docs, f'What is the value of the key "{keys[gold]}"?', values[gold], gold

    return _case("json", seed, depth, build)


_FIRST = "Ada Bruno Chen Dara Emil Farah Goran Hana Ivo Jun Kofi Lena Mira Nils Omar Pia Quinn Rosa Sami Tove".split()
_LAST = "Abbott Brandt Costa Dahl Eriksen Fuentes Gill Horvat Ibsen Jovanovic Kato Lindqvist Moreau Novak".split()
_LAST += "Okafor Petrov Quist Rahman Sato Tanaka".split()
_COLUMNS = ("sku", "owner", "bin", "lot", "price")


def _table(rng: random.Random, rows: int) -> list[list[str]]:
    """``rows`` rows of unique cells, one column of each format: sku (the row key), owner, bin, lot, price."""
    if rows > len(_FIRST) * len(_LAST):
        raise ValueError(f"rows: {rows}; at most {len(_FIRST) * len(_LAST)} rows have distinct owners.")
    columns = [
        _distinct(rng, rows, lambda r: f"SKU-{r.randrange(10_000, 100_000)}"),
        _distinct(rng, rows, lambda r: f"{r.choice(_FIRST)} {r.choice(_LAST)}"),
        _distinct(rng, rows, lambda r: f"B{r.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}{r.randrange(100, 1000)}"),
        _distinct(rng, rows, lambda r: f"L{r.getrandbits(32):08x}"),
        _distinct(rng, rows, lambda r: f"${r.randrange(100, 10_000)}.{r.randrange(100):02d}"),
    ]
    return [list(row) for row in zip(*columns, strict=True)]


def _table_case(kind: str, seed: int, rows: int, depth: float, chunks: int) -> StructuredCase:
    gold = gold_index(depth, rows)

    def build(rng: random.Random, _: int) -> tuple[list[str], str, str, int]:
        table = _table(rng, rows)
        column = rng.randrange(1, len(_COLUMNS))
        if kind == "markdown":
            header = [f"| {' | '.join(_COLUMNS)} |", "|" + "---|" * len(_COLUMNS)]
            lines = [f"| {' | '.join(row)} |" for row in table]
        else:
            header = [",".join(_COLUMNS)]
            lines = [",".join(row) for row in table]
        docs = ["\n".join([*header, *c]) for c in chunk_lines(lines, chunks)]
        return docs, f"What is the {_COLUMNS[column]} of {table[gold][0]}?", table[gold][column], gold

    return _case(kind, seed, depth, build)


def markdown_table(seed: int, rows: int = 60, depth: float = 0.5, chunks: int = CHUNKS) -> StructuredCase:
    """A Markdown table of ``rows`` rows, its header in every chunk; the question asks for one cell."""
    return _table_case("markdown", seed, rows, depth, chunks)


def csv_table(seed: int, rows: int = 60, depth: float = 0.5, chunks: int = CHUNKS) -> StructuredCase:
    """A CSV table of ``rows`` rows, its header in every chunk; the question asks for one cell."""
    return _table_case("csv", seed, rows, depth, chunks)


_SERVICES = "auth-api billing-worker catalog-svc checkout-api gateway inventory-svc ledger mailer search-api".split()
_INFO = (
    "request served in {n} ms",
    "cache hit ratio {p}%",
    "user session refreshed (req {h})",
    "scheduled job finished, {n} items",
    "connection pool size {n}",
)
_WARN = ("slow query took {n} ms", "retrying upstream call (attempt {d})", "queue depth {n} above target")
_ERROR = (
    "upstream {svc} timed out after {n} ms",
    "failed to write batch {h} to disk",
    "payment {h} rejected by processor",
    "schema mismatch on topic orders-{d}",
)


def log_lines(seed: int, lines: int = 120, depth: float = 0.5, chunks: int = CHUNKS) -> StructuredCase:
    """``lines`` timestamped log lines of a few services, about one in ten an error with a code; the
    gold line is an error whose service (logged by no other line) or message the question asks for."""
    gold = gold_index(depth, lines)

    def build(rng: random.Random, _: int) -> tuple[list[str], str, str, int]:
        codes = iter(_distinct(rng, lines, lambda r: f"E-{r.randrange(10_000, 100_000)}"))
        gold_service = f"{rng.choice(['audit', 'export', 'fraud', 'pricing'])}-{rng.getrandbits(16):04x}"
        t = 1_715_933_000.0 + rng.randrange(100_000)
        out: list[str] = []
        question = answer = ""

        def fill(template: str) -> str:
            n, p, d = rng.randrange(2, 10_000), rng.randrange(101), rng.randrange(10)
            return template.format(n=n, p=p, d=d, h=f"{rng.getrandbits(24):06x}", svc=rng.choice(_SERVICES))

        for i in range(lines):
            t += rng.uniform(0.01, 3.0)
            stamp = _timestamp(t)
            if i == gold:
                code, message = next(codes), fill(rng.choice(_ERROR)) + f" (trace {rng.getrandbits(32):08x})"
                out.append(f"{stamp} ERROR [{gold_service}] {code} {message}")
                if rng.random() < 0.5:
                    question, answer = f"Which service logged error {code}?", gold_service
                else:
                    question, answer = f"What is the message of the error with code {code}?", message
                continue
            level = rng.choices(["INFO", "WARN", "ERROR"], weights=[7, 2, 1])[0]
            service = rng.choice(_SERVICES)
            if level == "ERROR":
                out.append(f"{stamp} ERROR [{service}] {next(codes)} {fill(rng.choice(_ERROR))}")
            else:
                out.append(f"{stamp} {level:<5} [{service}] {fill(rng.choice(_INFO if level == 'INFO' else _WARN))}")
        return ["\n".join(c) for c in chunk_lines(out, chunks)], question, answer, gold

    return _case("logs", seed, depth, build)


def _timestamp(t: float) -> str:
    moment = datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_VERBS = "build check compute fetch find load merge parse read render resolve scan send split store sync".split()
_NOUNS = "batch cache config entry event header index key ledger order page queue record report route token".split()
_WORDS = "amber birch cobalt delta ember fjord garnet harbor indigo juniper kestrel lumen maple nimbus".split()


def _function(rng: random.Random, name: str, literal: str) -> list[str]:
    arg = rng.choice(["items", "path", "limit", "payload", "user_id"])
    body = [
        f"def {name}({arg}, retries={rng.randrange(1, 6)}):",
        f'    """{name.replace("_", " ").capitalize()} for the given {arg.replace("_", " ")}."""',
    ]
    for _ in range(rng.randrange(1, 4)):
        var = rng.choice(["count", "total", "offset", "size", "step"])
        body.append(f"    {var} = len(str({arg})) * {rng.randrange(2, 50)} + retries")
    if rng.random() < 0.5:
        body += [f"    if not {arg}:", "        return None"]
    return [*body, f"    return {literal}"]


def code_functions(seed: int, functions: int = 24, depth: float = 0.5, chunks: int = CHUNKS) -> StructuredCase:
    """A Python module of ``functions`` small functions, each returning its own literal (a string or a
    number); the question asks what one of them returns, the answer is its literal (strings unquoted)."""
    gold = gold_index(depth, functions)
    if functions > len(_VERBS) * len(_NOUNS):
        raise ValueError(f"functions: {functions}; at most {len(_VERBS) * len(_NOUNS)} have distinct names.")

    def build(rng: random.Random, _: int) -> tuple[list[str], str, str, int]:
        names = _distinct(rng, functions, lambda r: f"{r.choice(_VERBS)}_{r.choice(_NOUNS)}")
        values = _distinct(rng, functions, lambda r: f"{r.choice(_WORDS)}-{r.randrange(1000, 10_000)}")
        literals = [f'"{v}"' if rng.random() < 0.6 else str(rng.randrange(100_000, 1_000_000)) for v in values]
        blocks = [_function(rng, n, lit) for n, lit in zip(names, literals, strict=True)]
        header = ['"""Helpers of the order service."""', "", "import os", ""]
        grouped = chunk_lines(blocks, chunks)
        docs = ["\n\n\n".join("\n".join(b) for b in group) for group in grouped]
        docs[0] = "\n".join(header) + "\n\n" + docs[0]
        return docs, f"What does function {names[gold]} return?", literals[gold].strip('"'), gold

    return _case("code", seed, depth, build)


GENERATORS: dict[str, Callable[..., StructuredCase]] = {
    "json": key_value_json,
    "markdown": markdown_table,
    "csv": csv_table,
    "logs": log_lines,
    "code": code_functions,
}
"""Every generator by the kind of its cases."""


def make_case(kind: str, seed: int, split: str, **options: Any) -> StructuredCase:
    """The case of ``kind`` for ``seed`` of ``split`` ("train" or "eval"); ``options`` go to the generator
    (size, ``depth``, ``chunks``). Refuses a seed outside the split's range, so that no evaluation case
    is ever drawn from a training seed (or the other way round)."""
    if kind not in GENERATORS:
        raise ValueError(f"kind: {kind!r} is not one of {sorted(GENERATORS)}.")
    if split not in SPLITS:
        raise ValueError(f"split: {split!r}; pass 'train' or 'eval'.")
    seeds = SPLITS[split]
    if seed not in seeds:
        other = next((s for s, r in SPLITS.items() if seed in r), None)
        used = f"it is a {other} seed" if other else "it is in no split"
        raise ValueError(f"seed: {seed} cannot make a {split} case ({used}); {split} seeds are {seeds}.")
    return GENERATORS[kind](seed, **options)


def gold_span(case: StructuredCase) -> tuple[int, int]:
    """Character span ``[start, end)`` of the gold item in ``case.documents[case.gold_document]``: the line that
    holds the answer (the JSON pair, the table row, the log line); for code, the gold function from its ``def``
    line through the line it returns the answer on. The span a readout should keep."""
    text = case.documents[case.gold_document]
    at = text.index(case.answer)
    start = text.rfind("\n", 0, at) + 1
    if case.kind == "code":
        start = text.rfind("def ", 0, at)
    end = text.find("\n", at + len(case.answer))
    return start, len(text) if end < 0 else end
