"""Lexical evidence for a readout: the question's rare terms and how each unit matches them.

Attention finds what a unit is about; an exact lookup ("the value of key 3f2a...", "error E-12345")
also needs the unit that holds the very string. ``rare_terms`` picks the strings of a question worth
looking up, by rules and no model; ``match_features`` says, per unit, how it holds them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch

FEATURES = ("contains_any", "contains_count", "longest_match", "as_key")
"""The columns of ``match_features``: whether a unit holds a rare term exactly and whole (0 or 1, max
over the terms; "E-1234" is not held by "E-12345"); how many of the terms it holds; the longest run
of characters it shares with a term, over that term's length (max over the terms); whether it holds
a term as a key (followed by ``"``, ``:``, ``=``, or a cell separator ``|``, ``,`` or a tab)."""

_RULES = (  # in order: a later rule never matches inside what an earlier one took
    re.compile(r"\"([^\"]{1,200})\"|“([^”]{1,200})”|(?<![\w])'([^']{1,200})'(?![\w])"),  # quoted
    re.compile(r"\b[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\b"),  # UUID
    re.compile(r"\b(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[A-Za-z0-9]+(?:[-_.:/][A-Za-z0-9]+)+\b"),  # E-12345, v1.2-rc
    re.compile(r"\b(?=\w*\d)(?=\w*[A-Za-z])\w{3,}\b"),  # ABC123, sha 3f2a9c
    re.compile(r"\b[A-Za-z]+(?:_[A-Za-z0-9]+)+\b"),  # snake_case
    re.compile(r"\b[a-z]+(?:[A-Z][a-z0-9]*)+\b|\b[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+\b"),  # camelCase, CamelCase
    re.compile(r"(?<![\w.])-?\d+(?:[.,]\d+)*(?![\w])"),  # numbers
    re.compile(r"\b[A-Za-z]{9,}\b"),  # long words
)

_COMMON = frozenset(
    "according following different important something everything information question questions "
    "described describes including themselves otherwise sometimes difference character characters "
    "therefore beginning happening".split()
)
"""Long words too common to be worth a lookup."""


def term_spans(question: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of every rare term of ``question``, in order, repeats included
    (``rare_terms`` gives each term once): where the question names what it looks up."""
    return [(a, b) for a, b, _ in _found(question)]


def rare_terms(question: str) -> list[str]:
    """The strings of ``question`` worth an exact lookup, in order of appearance, each once: quoted
    strings, UUIDs, IDs and codes (``E-12345``, ``ABC123``), snake_case and CamelCase identifiers,
    numbers, and long words (9 letters or more) that are not common."""
    out: list[str] = []
    for _, _, term in _found(question):
        if term not in out:
            out.append(term)
    return out


def _found(question: str) -> list[tuple[int, int, str]]:
    """(start, end, term) of every match of the rules, in order of start; a term is stripped of spaces."""
    taken = [False] * len(question)
    found: list[tuple[int, int, str]] = []
    for rule in _RULES:
        for m in rule.finditer(question):
            group = next((g for g in range(1, (m.lastindex or 0) + 1) if m.group(g)), 0)
            a, b = m.span(group)
            term = question[a:b].strip()
            if not term or any(taken[a:b]) or term.lower() in _COMMON:
                continue
            taken[a:b] = [True] * (b - a)
            lead = len(question[a:b]) - len(question[a:b].lstrip())
            found.append((a + lead, a + lead + len(term), term))
    return sorted(found)


def token_hits(token_spans: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[int]:
    """Indices of the tokens (character spans ``token_spans``, in order) that overlap any of ``spans``."""
    return [i for i, (a, b) in enumerate(token_spans) if any(a < e and s < b for s, e in spans)]


def _longest_common(term: str, text: str) -> int:
    """Length of the longest substring of ``term`` that ``text`` holds (binary search on the length)."""
    lo, hi = 0, len(term)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if any(term[i : i + mid] in text for i in range(len(term) - mid + 1)):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _pattern(term: str) -> str:
    """``term`` as a whole: not inside a longer word, number or ID ("E-1234" is not in "E-12345")."""
    head = r"(?<![\w-])" if re.match(r"[\w-]", term) else ""
    tail = r"(?![\w-])" if re.search(r"[\w-]$", term) else ""
    return head + re.escape(term) + tail


def _holds(term: str, text: str) -> bool:
    return re.search(_pattern(term), text) is not None


def _as_key(term: str, text: str) -> bool:
    return re.search(_pattern(term) + r"(?:\"|'?\s*[:=|,\t])", text) is not None


def match_features(question: str, unit_texts: Sequence[str]) -> torch.Tensor:
    """How each unit matches the rare terms of ``question`` (``FEATURES``). -> (U, F) float32.

    Matching ignores case. A question without rare terms gives zeros.
    """
    terms = [t.casefold() for t in rare_terms(question)]  # (K,)
    out = torch.zeros(len(unit_texts), len(FEATURES), dtype=torch.float32)  # (U, F)
    if not terms:
        return out
    for u, raw in enumerate(unit_texts):
        text = raw.casefold()
        held = [_holds(t, text) for t in terms]  # (K,)
        out[u, 0] = float(any(held))
        out[u, 1] = float(sum(held))
        out[u, 2] = max(_longest_common(t, text) / len(t) for t in terms)
        out[u, 3] = float(any(h and _as_key(t, text) for t, h in zip(terms, held, strict=True)))
    return out


OVERLAP = ("overlap_unit", "overlap_doc")
"""The columns of ``overlap_features``: the share of the question's content words (weighted by their idf over
the prompt's documents) that the unit holds, and that its document holds."""

STOPWORDS = frozenset(
    "a an the of in on at to for from by with and or is are was were be been being who what when where which "
    "why how did does do whose whom that this these those it its as his her their there has have had not no yes "
    "i you he she they we us me my your our name named called first last about into than then so if can will".split()
)
"""Words that say nothing about what a question is about."""

_WORD = re.compile(r"[a-z0-9]+")


def content_words(text: str) -> list[str]:
    """Lower-case words of ``text`` (letters and digits), a plural "s" dropped from words over 3 letters."""
    return [w[:-1] if len(w) > 3 and w.endswith("s") else w for w in _WORD.findall(text.lower())]


def overlap_features(question: str, unit_texts: Sequence[str], unit_docs: Sequence[int]) -> torch.Tensor:
    """How much of what the question is about each unit's text, and its document's, mentions.

    The question's content words (``content_words`` less ``STOPWORDS``, each once) are weighted by their
    inverse document frequency over the prompt's documents (``log((D + 1) / (df + 0.5))``: a word every
    document has counts little). Per unit: the weighted share of those words its text holds, and the
    share its whole document holds (the document's units together). Returns (U, 2) float64 in [0, 1],
    columns ``OVERLAP``; zeros for a question without content words.
    """
    n = len(unit_texts)
    if n == 0:
        return torch.zeros(0, len(OVERLAP), dtype=torch.float64)
    wanted = [w for w in dict.fromkeys(content_words(question)) if w not in STOPWORDS]
    docs = list(unit_docs)
    unit_words = [set(content_words(t)) for t in unit_texts]
    doc_words: dict[int, set[str]] = {}
    for u, d in enumerate(docs):
        doc_words.setdefault(d, set()).update(unit_words[u])
    n_docs = len(doc_words)
    idf = {w: math.log((n_docs + 1) / (sum(w in s for s in doc_words.values()) + 0.5)) for w in wanted}
    total = sum(idf.values())
    if not wanted or total <= 0:
        return torch.zeros(n, len(OVERLAP), dtype=torch.float64)
    unit = [sum(idf[w] for w in wanted if w in s) / total for s in unit_words]  # (U,)
    doc = [sum(idf[w] for w in wanted if w in doc_words[d]) / total for d in docs]  # (U,)
    return torch.tensor([unit, doc], dtype=torch.float64).T  # (U, 2)
