"""The header line or key path a structural unit sits under: context for a scorer, never output.

A CSV row means little without the header that names its columns, a JSON pair without the keys of
the objects around it. ``unit_context(kind, text, span)`` gives that context for one unit of a
document of ``kind`` (see ``structure.KINDS``), or None where there is none:

- csv / tsv: the document's first row, for every later row;
- markdown: for a table row, the table's header row; for other units, the nearest heading above;
- json: the key path of the objects and arrays around the unit, e.g. ``"limits"`` or ``"items[3]"``;
- yaml: the keys of the mappings around the unit, e.g. ``"service.ports"``;
- code: the nearest ``def`` / ``class`` / ``function`` line that encloses the unit (less indented);
- prose, jsonl, logs: None.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .structure import HEADING, TABLE_ROW, TABLE_RULE, YAML_KEY, Span

_DEFINITION = re.compile(r"^\s*(async\s+)?(def|class|function|fn|func|pub\s+fn|impl|struct|interface)\b")


def _line_at(text: str, pos: int) -> Span:
    """The line holding ``pos``, without its newline."""
    a = text.rfind("\n", 0, pos) + 1
    b = text.find("\n", pos)
    return a, len(text) if b < 0 else b


def _lines_above(text: str, pos: int) -> list[str]:
    """The lines before the line holding ``pos``, nearest first."""
    a = text.rfind("\n", 0, pos) + 1
    return text[:a].splitlines()[::-1] if a else []


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _first_line(text: str, span: Span, skip: re.Pattern[str] | None = None) -> str:
    """The first non-blank line of ``span`` (and, with ``skip``, not matching it)."""
    for line in text[span[0] : span[1]].splitlines():
        if line.strip() and not (skip and skip.match(line)):
            return line
    return ""


def _table_header(text: str, pos: int) -> str | None:
    a, b = _line_at(text, pos)
    row = text[a:b]
    if not TABLE_ROW.match(row) or TABLE_RULE.match(row):
        return None
    above = []
    for line in _lines_above(text, pos):
        if not (TABLE_ROW.match(line) or TABLE_RULE.match(line)):
            break
        above.append(line)
    block = [*above[::-1], row]  # the table's rows down to this one
    if len(block) >= 3 and TABLE_RULE.match(block[1]):
        return block[0].strip()
    return None


def _markdown_context(text: str, span: Span) -> str | None:
    a, b = _line_at(text, span[0])
    if TABLE_ROW.match(text[a:b]):
        return _table_header(text, span[0])
    return next((line.strip() for line in _lines_above(text, span[0]) if HEADING.match(line)), None)


def _csv_context(text: str, span: Span) -> str | None:
    if span[0] == 0:
        return None
    quoted = False
    for i, ch in enumerate(text):  # the first row ends at the first newline outside quotes
        if ch == '"':
            quoted = not quoted
        elif ch == "\n" and not quoted:
            return text[:i].strip() or None
    return None


def _yaml_context(text: str, span: Span) -> str | None:
    depth = _indent(_first_line(text, span, re.compile(r"^\s*#")))
    keys = []
    for line in _lines_above(text, span[0]):
        m = YAML_KEY.match(line)
        if line.strip() and _indent(line) < depth and m:
            keys.append(m.group(2).strip("\"'"))
            depth = _indent(line)
        if depth == 0:
            break
    return ".".join(keys[::-1]) or None


def _code_context(text: str, span: Span) -> str | None:
    depth = _indent(_first_line(text, span))
    for line in _lines_above(text, span[0]):
        if line.strip() and _indent(line) < depth:
            if _DEFINITION.match(line):
                return line.strip()
            depth = _indent(line)
    return None


def json_paths(text: str, positions: Sequence[int]) -> list[str | None]:
    """The key path at each of ``positions`` (ascending) of JSON ``text``, in one pass: the keys (and
    array indices) of the containers around it, outermost first, without the innermost container's
    own key; None at the top level. Containers closed before they open (a chunk) are ignored."""
    out: list[str | None] = []
    stack: list[list[Any]] = []  # per open container: [is_object, key of the current member or array index]
    last = ""  # the last string read (a key when a ":" follows)
    i, n = 0, len(text)
    for pos in positions:
        while i < pos:
            ch = text[i]
            if ch == '"':
                j = i + 1
                while j < n and text[j] != '"':
                    j += 2 if text[j] == "\\" else 1
                last, i = text[i + 1 : j], j + 1
                continue
            if ch == ":" and stack and stack[-1][0]:
                stack[-1][1] = last
            elif ch in "{[":
                stack.append([ch == "{", None if ch == "{" else 0])
            elif ch in "}]" and stack:
                stack.pop()
            elif ch == "," and stack:
                stack[-1][1] = None if stack[-1][0] else stack[-1][1] + 1
            i += 1
        parts = [(f".{key}" if obj else f"[{key}]") for obj, key in stack[:-1] if key is not None]
        out.append("".join(parts).lstrip(".") or None)
    return out


def unit_context(kind: str, text: str, span: Span) -> str | None:
    """The header line or key path that the unit ``span`` of ``text`` (a document of ``kind``) sits
    under, or None; see the module's docstring for each kind."""
    return unit_contexts(kind, text, [span])[0]


def unit_contexts(kind: str, text: str, spans: Sequence[Span]) -> list[str | None]:
    """``unit_context`` of each of ``spans`` (in document order); JSON paths come from one pass."""
    if kind == "json":
        return json_paths(text, [a for a, _ in spans])
    rule = {"csv": _csv_context, "tsv": _csv_context, "markdown": _markdown_context}
    rule |= {"yaml": _yaml_context, "code": _code_context}
    if kind not in rule:
        return [None] * len(spans)
    return [rule[kind](text, s) for s in spans]
