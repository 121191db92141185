"""What kind of text a document is, and the units it is selected in: one structural unit a span.

Rules only, line by line, no model: ``structure(text)`` says whether a document is prose, markdown,
code, json, jsonl, yaml, csv, tsv or logs and cuts it into character spans that partition it
exactly, as ``sentence_spans`` does for prose:

- prose: pysbd sentences (``sentence_spans``), exactly as before structure was detected;
- json: one key/value pair a line (opening lines such as ``"a": {`` go with the next line,
  closing lines such as ``},`` with the previous); a document on one line is one span;
- jsonl: one record a line; csv / tsv: one row a line (a quoted field may hold newlines);
- yaml: one key/value a line (``key:`` opening a mapping goes with the next line, a ``|`` or ``>``
  block scalar keeps its indented lines);
- logs: one log line (a timestamp or a level first) with the lines that continue it (tracebacks);
- code: blank-line-separated blocks;
- markdown: heading, list item (with its continuation lines), table row and fenced code block by
  line block; its paragraphs are pysbd sentences.

Each span also carries a role: the rules by which ``pieces.cut_units`` cuts it when it holds more
tokens than a unit may. Blank lines go with the span before them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

from .sentences import sentence_spans

Span = tuple[int, int]  # [start, end) in characters

KINDS = ("prose", "markdown", "code", "json", "jsonl", "yaml", "csv", "tsv", "logs")
"""Every kind ``structure`` detects."""


@dataclass(frozen=True)
class Structure:
    """A document's kind and its units as contiguous character spans, each with a role."""

    kind: str
    spans: list[Span]
    roles: list[str]
    """Per span: "prose", "text", "code", "json", "yaml", "csv", "tsv", "table" or "log"."""


# ---------------------------------------------------------------- line classes

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+\S")
_SETEXT = re.compile(r"^ {0,3}(=+|-{2,})\s*$")
_LIST = re.compile(r"^\s*([-*+]|\d{1,3}[.)])\s+\S")
TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?\s*$")
_TIME = (
    r"\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}"  # ISO date and time
    r"|\d{1,2}:\d{2}:\d{2}"  # a bare time
    r"|[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}"  # syslog
    r"|\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}"  # common log format
    r"|\d{10}(\.\d+)?\b"  # epoch seconds
)
_LEVEL = r"(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|FATAL|CRITICAL|CRIT)\b"
_LOG = re.compile(rf"^\s*\[?({_TIME}|{_LEVEL})")
_STRING = r'"(?:[^"\\]|\\.)*"'
_JSON_LINE = re.compile(
    rf"^\s*({_STRING}\s*:|[\[\]{{}}],?\s*$|[\]}}]+,?\s*$|({_STRING}|-?\d[\d.eE+-]*|true|false|null)\s*,?\s*$)"
)
_RECORD = re.compile(r"^\s*(\{.*\}|\[.*\])\s*,?\s*$")
YAML_KEY = re.compile(r"""^\s*(-\s+)?("[^"]*"|'[^']*'|[A-Za-z_][\w.\-/ ]{0,60}?)\s*:(\s|$)""")
_YAML_ITEM = re.compile(r"^\s*-(\s|$)")
_YAML_BLOCK = re.compile(r":\s*[|>][-+0-9]*\s*$")
_COMMENT = re.compile(r"^\s*(#|//|/\*|\*|--\s)")
_CODE_START = re.compile(
    r"^\s*(def|class|import|from\s+\S+\s+import|return|if|elif|else|for|while|try|except|finally|with|"
    r"async|await|raise|yield|function|const|let|var|public|private|protected|static|void|int|fn|pub|use|"
    r"package|func|struct|impl|switch|case|#include|#define|@\w+)\b"
)
_CODE_END = re.compile(r"[{};:(\[]\s*$|^\s*[)}\]]+[;,]?\s*$")
_ASSIGN = re.compile(r"^\s*[\w.\[\]'\"]+\s*(:\s*[\w\[\], .]+)?\s*[-+*/%|&]?=(?!=)\s*\S")
_CALL = re.compile(r"^\s*[\w.]+\(.*\)\s*;?\s*$")


def _lines(text: str) -> list[Span]:
    """Each line with its newline, so that the lines partition ``text``."""
    return [m.span() for m in re.finditer(r"[^\n]*\n|[^\n]+$", text)]


def _is_code(line: str) -> bool:
    return bool(_CODE_START.match(line) or _CODE_END.search(line) or _ASSIGN.match(line) or _CALL.match(line))


def _cells(row: str, delimiter: str) -> int:
    """How many cells ``row`` holds: delimiters outside double quotes, plus one."""
    count, quoted = 1, False
    for ch in row:
        if ch == '"':
            quoted = not quoted
        elif ch == delimiter and not quoted:
            count += 1
    return count


def _delimited(rows: list[str], delimiter: str) -> bool:
    """Whether nearly every row holds the same number (>= 1) of ``delimiter``-separated cells, with
    short cells (wrapped prose has commas too, but long runs of words between them)."""
    fields = [_cells(r, delimiter) for r in rows]
    common, count = Counter(fields).most_common(1)[0]
    if common < 2 or count < 0.8 * len(rows) or (common == 2 and (len(rows) < 3 or count < len(rows))):
        return False
    return sum(r.count(" ") for r in rows) <= 4 * common * len(rows)


def _parses(text: str) -> bool:
    try:
        return isinstance(json.loads(text), (dict, list))
    except ValueError:
        return False


def detect_kind(text: str) -> str:
    """The kind of ``text``, one of ``KINDS``, by rules over its lines.

    A line of text is prose unless it parses as JSON or is a log line; longer texts are tried as
    logs, jsonl, json, tsv, csv, fenced markdown, yaml, code and markdown, in that order, each by the
    share of lines that look like it.
    """
    rows = [text[a:b].rstrip("\r\n") for a, b in _lines(text)]
    full = [r for r in rows if r.strip()]
    if not full:
        return "prose"
    stripped = text.strip()
    if stripped[:1] in "{[" and _parses(stripped):
        return "json"
    if len(full) == 1:
        return "logs" if _LOG.match(full[0]) else "prose"
    n = len(full)
    logs = sum(bool(_LOG.match(r)) for r in full)
    if logs >= 2 and logs >= 0.5 * n:
        return "logs"
    records = sum(bool(_RECORD.match(r)) for r in full)
    if records >= 2 and records >= 0.6 * n:
        return "jsonl"
    if sum(bool(_JSON_LINE.match(r)) for r in full) >= 0.8 * n:
        return "json"
    table = [r for r in (text[a:b].strip("\r\n") for a, b in _rows(text, 0, len(text))) if r.strip()]
    if all("\t" in r for r in table[:-1]) and _delimited(table, "\t"):
        return "tsv"
    if _delimited(table, ","):  # rows, not lines: a quoted field may hold a newline
        return "csv"
    if any(_FENCE.match(r) for r in full):
        return "markdown"
    comments = sum(bool(_COMMENT.match(r)) for r in full)
    keys = sum(bool(YAML_KEY.match(r)) for r in full)
    items = sum(bool(_YAML_ITEM.match(r)) and not YAML_KEY.match(r) for r in full)
    tables = sum(bool(TABLE_ROW.match(r)) for r in full)
    sentences = sum(r.rstrip()[-1:] in ".!?" for r in full)  # prose "Note: see below." looks like yaml
    if keys >= 2 and keys >= 0.4 * (n - comments) and keys + items + comments >= 0.8 * n:
        if not tables and sentences < 0.5 * n:
            return "yaml"
    code = sum(_is_code(r) for r in full)
    if code >= 2 and code + comments >= 0.6 * n:
        return "code"
    headings = sum(bool(HEADING.match(r)) for r in full)
    lists = sum(bool(_LIST.match(r)) for r in full)
    if headings or tables >= 2 or lists >= 2:
        return "markdown"
    return "prose"


# ---------------------------------------------------------------- pieces to spans

# A piece: (start, end, role, attach); attach is "" (a unit of its own), "prev" (goes with the unit
# before it) or "next" (goes with the unit after it).
_Piece = tuple[int, int, str, str]


def _join(pieces: list[_Piece]) -> tuple[list[Span], list[str]]:
    """Merge attached pieces into the units they go with. Contiguous pieces give contiguous spans."""
    spans: list[Span] = []
    roles: list[str] = []
    pending: int | None = None  # start of the pieces waiting for the next unit
    for a, b, role, attach in pieces:
        if attach == "prev" and spans and pending is None:
            spans[-1] = (spans[-1][0], b)
        elif attach in ("next", "prev"):
            pending = a if pending is None else pending
        else:
            spans.append((a if pending is None else pending, b))
            roles.append(role)
            pending = None
    if pending is not None:  # pieces at the end that wait for a unit that never comes
        end = pieces[-1][1]
        if spans:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((pending, end))
            roles.append(pieces[-1][2])
    return spans, roles


def _blank(text: str, a: int, b: int) -> bool:
    return not text[a:b].strip()


def _json_pieces(text: str, lines: list[Span], openers: bool) -> list[_Piece]:
    """A line a unit; closing lines (``},``) go with the line before, and with ``openers`` lines that
    open an object or array (``"a": {``) with the line after."""
    out: list[_Piece] = []
    for a, b in lines:
        line = text[a:b].strip()
        if not line or re.fullmatch(r"[\]},]+", line):
            out.append((a, b, "json", "prev"))
        else:
            out.append((a, b, "json", "next" if openers and line[-1] in "{[" else ""))
    return out


def _yaml_pieces(text: str, lines: list[Span]) -> list[_Piece]:
    out: list[_Piece] = []
    block: int | None = None  # indentation of a key whose block scalar is running
    for a, b in lines:
        row = text[a:b].rstrip("\r\n")
        indent = len(row) - len(row.lstrip())
        if not row.strip() or row.strip() in ("---", "..."):
            out.append((a, b, "yaml", "prev"))
            continue
        if block is not None and indent > block:
            out.append((a, b, "yaml", "prev"))
            continue
        block = None
        if _COMMENT.match(row):
            out.append((a, b, "yaml", "next"))
        elif YAML_KEY.match(row) or _YAML_ITEM.match(row):
            if _YAML_BLOCK.search(row):
                block = indent
            opens = row.rstrip().endswith(":") and not _YAML_ITEM.match(row)
            out.append((a, b, "yaml", "next" if opens else ""))
        else:
            out.append((a, b, "yaml", "prev"))  # a plain scalar continued on the next line
    return out


def _rows(text: str, a: int, b: int) -> list[Span]:
    """Rows of delimited text in ``[a, b)``: a newline inside a quoted field does not end its row."""
    out: list[Span] = []
    start, quoted = a, False
    for i in range(a, b):
        ch = text[i]
        if ch == '"':
            quoted = not quoted
        elif ch == "\n" and not quoted:
            out.append((start, i + 1))
            start = i + 1
    if start < b:
        out.append((start, b))
    return out


def _code_pieces(text: str, lines: list[Span]) -> list[_Piece]:
    """Blank-line-separated blocks: a line goes with the one before it unless a blank line parts them."""
    out: list[_Piece] = []
    after_blank = True
    for a, b in lines:
        blank = _blank(text, a, b)
        out.append((a, b, "code", "prev" if blank or not after_blank else ""))
        after_blank = blank
    return out


def _prose_pieces(text: str, a: int, b: int, role: str) -> list[_Piece]:
    return [(a + s, a + e, role, "") for s, e in sentence_spans(text[a:b])]


def _markdown_pieces(text: str, lines: list[Span]) -> list[_Piece]:
    out: list[_Piece] = []
    i = 0
    while i < len(lines):
        a, b = lines[i]
        row = text[a:b].rstrip("\r\n")
        if _FENCE.match(row):  # the fence, its code (blocks), the closing fence
            j = i + 1
            while j < len(lines) and not _FENCE.match(text[lines[j][0] : lines[j][1]]):
                j += 1
            out.append((a, b, "code", "next"))
            out += _code_pieces(text, lines[i + 1 : j])
            if j < len(lines):
                out.append((*lines[j], "code", "prev"))
            i = j + 1
            continue
        if not row.strip() or (_SETEXT.match(row) and out) or TABLE_RULE.match(row):
            out.append((a, b, "text", "prev"))
        elif TABLE_ROW.match(row):
            out.append((a, b, "table", ""))
        elif HEADING.match(row):
            out.append((a, b, "text", ""))
        elif _LIST.match(row):  # the item and the lines that continue it
            j = i + 1
            while j < len(lines) and not _markdown_block(text[lines[j][0] : lines[j][1]]):
                j += 1
            out.append((a, lines[j - 1][1], "text", ""))
            i = j
            continue
        else:  # a paragraph: its lines up to the next block, in sentences
            j = i + 1
            while j < len(lines) and not _markdown_block(text[lines[j][0] : lines[j][1]]):
                j += 1
            out += _prose_pieces(text, a, lines[j - 1][1], "text")
            i = j
            continue
        i += 1
    return out


def _markdown_block(row: str) -> bool:
    """Whether ``row`` starts a markdown block (or is blank), i.e. ends a paragraph or list item."""
    r = row.rstrip("\r\n")
    return not r.strip() or any(p.match(r) for p in (_FENCE, HEADING, _LIST, TABLE_ROW, TABLE_RULE))


def _log_pieces(text: str, lines: list[Span]) -> list[_Piece]:
    return [(a, b, "log", "" if _LOG.match(text[a:b]) else "prev") for a, b in lines]


def structure(text: str) -> Structure:
    """The kind of ``text`` and its structural units: contiguous spans that cover it exactly.

    Prose gives ``sentence_spans(text)`` unchanged, every span with the role "prose".
    """
    kind = detect_kind(text)
    if kind == "prose":
        spans = sentence_spans(text)
        return Structure(kind, spans, ["prose"] * len(spans))
    lines = _lines(text)
    if kind in ("json", "jsonl"):
        pieces = _json_pieces(text, lines, openers=kind == "json")
    elif kind == "yaml":
        pieces = _yaml_pieces(text, lines)
    elif kind in ("csv", "tsv"):
        pieces = [(a, b, kind, "prev" if _blank(text, a, b) else "") for a, b in _rows(text, 0, len(text))]
    elif kind == "logs":
        pieces = _log_pieces(text, lines)
    elif kind == "code":
        pieces = _code_pieces(text, lines)
    else:
        pieces = _markdown_pieces(text, lines)
    spans, roles = _join(pieces)
    return Structure(kind, spans, roles)


def structural_spans(text: str) -> tuple[str, list[Span]]:
    """``(kind, spans)``: the kind of ``text`` and its units as contiguous ``(start, end)`` spans
    covering it exactly (pysbd sentences for prose, as ``sentence_spans``)."""
    s = structure(text)
    return s.kind, s.spans
