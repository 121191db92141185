"""Cut structural units that hold too many tokens into pieces, never inside a word, number or identifier.

A cut falls between two tokens, at the character where the second one starts. Its strength says how
good a place it is (``boundary_strength``): 0 inside a run of word characters (letters, digits, ``_``
and ``-``: a word, a number, a UUID), where no cut is made unless a run alone is longer than the budget;
4 at the start of a line; 3 at a structural boundary of the unit's role (between JSON pairs, after a
comma or brace, between table cells, after a clause's punctuation); 2 at whitespace; 1 at other
punctuation.
"""

from __future__ import annotations

from collections.abc import Sequence

Unit = tuple[int, int]  # [start, end) in context-token indices

STRETCH = 4
"""A structural unit with no structural boundary near its piece limit may grow to ``STRETCH`` times
that limit (never past the budget) before it is cut at a weaker boundary (whitespace, punctuation)."""

MIN_STRENGTH = {"text": 1, "code": 3, "json": 3, "yaml": 3, "csv": 3, "tsv": 3, "table": 3, "log": 3}
"""Per role, the weakest boundary a long unit is cut at before it may stretch (see ``STRETCH``).
Role "prose" is absent: prose is cut every ``max_tokens`` tokens, as ``selection.token_units`` does."""

_SPACE = " \t\r\n"


def _word(ch: str) -> bool:
    return ch.isalnum() or ch in "_-"


def _visible_before(text: str, pos: int) -> str:
    """The last character before ``pos`` that is not whitespace ("" if none)."""
    i = pos - 1
    while i >= 0 and text[i] in _SPACE:
        i -= 1
    return text[i] if i >= 0 else ""


def _visible_after(text: str, pos: int) -> str:
    """The first character from ``pos`` that is not whitespace ("" if none)."""
    i = pos
    while i < len(text) and text[i] in _SPACE:
        i += 1
    return text[i] if i < len(text) else ""


def _structural(text: str, pos: int, role: str) -> bool:
    before, after = _visible_before(text, pos), _visible_after(text, pos)
    if role in ("json", "yaml"):
        return before in ("{", "[", ",")
    if role == "csv":
        return before == ","
    if role == "tsv":
        return text[pos - 1] == "\t"
    if role == "table":
        return before == "|" or after == "|"
    if role == "code":
        return before in (";", "{", "}", ",")
    if role == "text":
        return text[pos - 1] in ".;:!?," and text[pos] in _SPACE
    return False


def boundary_strength(text: str, pos: int, role: str) -> int:
    """How good a cut at character ``pos`` (between ``text[pos - 1]`` and ``text[pos]``) is, 0 to 4."""
    if pos <= 0 or pos >= len(text):
        return 4
    before, after = text[pos - 1], text[pos]
    if _word(before) and _word(after):
        return 0
    if before == "\n":
        return 4
    if _structural(text, pos, role):
        return 3
    if before in _SPACE or after in _SPACE:
        return 2
    return 1


def _cuts(strength: list[int], lo: int, hi: int, minimum: int) -> list[int]:
    return [c for c in range(lo, hi + 1) if strength[c] >= minimum]


def _next_cut(strength: list[int], a: int, e: int, max_tokens: int, stretch: int, limit: int, minimum: int) -> int:
    """Where the piece that starts at token ``a`` of a unit that ends at token ``e`` ends.

    strength[c]: of the cut before token c (0 where no cut may fall). Per tier (the role's minimum
    strength and ``stretch``, then any boundary and ``limit``): the strongest cut in the second half of
    the ``max_tokens`` window (the latest of equals); else the first one past it, within reach; else the
    whole rest if it is within reach; else the strongest cut in the first half. Pieces come out neither
    tiny nor cut where a longer one would do.
    """
    if e - a <= max_tokens:
        return e
    top = a + max_tokens  # a cut at c <= top gives a piece of at most max_tokens
    half = a + max(1, max_tokens // 2)
    for floor, reach in ((minimum, stretch), (1, limit)):
        late = _cuts(strength, half, top, floor)
        if late:
            return max(late, key=lambda c: (strength[c], c))
        beyond = _cuts(strength, top + 1, min(e - 1, a + reach), floor)
        if beyond:
            return beyond[0]
        if e - a <= reach:
            return e
        early = _cuts(strength, a + 1, half - 1, floor)
        if early:
            return max(early, key=lambda c: (strength[c], c))
    return a + limit  # one run of word characters longer than the budget: cut inside it


def cut_span(
    token_ends: Sequence[int], text: str, first: int, end: int, role: str, max_tokens: int, limit: int
) -> list[Unit]:
    """Pieces ``[a, b)`` of the tokens ``[first, end)`` of ``text`` (one structural unit of ``role``).

    A unit of at most ``max_tokens`` tokens is one piece. A longer one is cut at its strongest
    boundaries into pieces of at most ``max_tokens``; where it has none of its role's strength
    (``MIN_STRENGTH``) a piece grows to the next one, up to ``STRETCH * max_tokens``, then it is cut at
    whitespace or punctuation; a run of word characters stays whole up to ``limit`` (the budget), and
    only a run longer than ``limit`` is cut inside, every ``limit`` tokens, so that a piece always fits
    the budget. Role "prose" is cut every ``max_tokens`` tokens, as ``selection.token_units`` does.
    token_ends[t]: the character where token t ends.
    """
    max_tokens = max(1, min(max_tokens, limit))
    if role not in MIN_STRENGTH:
        return [(a, min(a + max_tokens, end)) for a in range(first, end, max_tokens)]
    minimum = MIN_STRENGTH[role]
    stretch = min(limit, STRETCH * max_tokens) if minimum > 1 else limit
    n = end - first
    if n <= max_tokens:
        return [(first, end)]
    # strength[k]: of the cut before token first + k (k = 1 .. n - 1); 0 where the piece before or the
    # rest would hold no word character (a lone "}" or indentation stays with its line)
    lo, hi = token_ends[first - 1] if first else 0, token_ends[end - 1]
    first_word = next((i for i in range(lo, hi) if _word(text[i])), hi)
    last_word = next((i for i in range(hi - 1, lo - 1, -1) if _word(text[i])), lo)
    strength = [0] * (n + 1)
    for k in range(1, n):
        pos = token_ends[first + k - 1]
        if first_word < pos <= last_word:
            strength[k] = boundary_strength(text, pos, role)
    out: list[Unit] = []
    a = 0
    while a < n:
        b = _next_cut(strength, a, n, max_tokens, stretch, limit, minimum)
        out.append((first + a, first + b))
        a = b
    return out


def cut_units(
    token_ends: Sequence[int],
    text: str,
    spans: Sequence[tuple[int, int]],
    roles: Sequence[str],
    offset: int,
    max_tokens: int,
    limit: int,
) -> list[Unit]:
    """Group one document's tokens into units that follow its structural ``spans`` (with their
    ``roles``), cutting long ones with ``cut_span``. ``offset`` shifts indices into the global context.

    A token belongs to the span holding its last character, as in ``selection.token_units``.
    """
    units: list[Unit] = []
    t = 0
    n = len(token_ends)
    for (_, span_end), role in zip(spans, roles, strict=True):
        start = t
        while t < n and token_ends[t] <= span_end:
            t += 1
        if t > start:
            units += [
                (offset + a, offset + b) for a, b in cut_span(token_ends, text, start, t, role, max_tokens, limit)
            ]
    if t < n:  # tokens past the last span (cannot happen for partitioning spans)
        units.append((offset + t, offset + n))
    return units
