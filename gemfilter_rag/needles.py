"""Needle-in-a-haystack probes: a made-up fact hidden at a chosen depth of a long real text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Needle:
    """A made-up fact, the question that asks for it, and strings that count as its answer."""

    fact: str
    question: str
    answers: tuple[str, ...]


NEEDLES: tuple[Needle, ...] = (
    Needle(
        "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.",
        "What is the best thing to do in San Francisco?",
        ("sandwich", "dolores park"),
    ),
    Needle(
        "The secret ingredient in Grandma Ilse's apple cake is a spoonful of cardamom.",
        "What is the secret ingredient in Grandma Ilse's apple cake?",
        ("cardamom",),
    ),
    Needle(
        "The lighthouse on Varnholm Island was painted bright orange in 1987.",
        "What color was the lighthouse on Varnholm Island painted?",
        ("orange",),
    ),
    Needle(
        "The password to the Blue Fern book club is periwinkle42.",
        "What is the password to the Blue Fern book club?",
        ("periwinkle42",),
    ),
    Needle(
        "Captain Oduya's ship, the Marlowe, carried a cargo of copper bells.",
        "What cargo did Captain Oduya's ship carry?",
        ("copper bells", "bells"),
    ),
    Needle(
        "The annual Kestrel Valley chess tournament is always held in the old granary.",
        "Where is the Kestrel Valley chess tournament held?",
        ("granary",),
    ),
    Needle(
        "Professor Lindqvist's favourite instrument is the bassoon.",
        "What is Professor Lindqvist's favourite instrument?",
        ("bassoon",),
    ),
    Needle(
        "The quiet village of Tremaine gets its drinking water from a glacier called Solvik.",
        "Where does the village of Tremaine get its drinking water?",
        ("solvik", "glacier"),
    ),
    Needle(
        "The robot named Pemberton was built to sort seashells by size.",
        "What was the robot named Pemberton built to do?",
        ("seashells", "sort seashells"),
    ),
    Needle(
        "Mira's lucky number is seventy-three, because she was born on the seventh of March.",
        "What is Mira's lucky number?",
        ("seventy-three", "73"),
    ),
)
"""Ten made-up facts: none of them can be answered from the essays or from general knowledge."""


@dataclass(frozen=True)
class Probe:
    """One haystack with a needle inside, as the compressor sees it."""

    context: str
    question: str
    answers: tuple[str, ...]
    needle_span: tuple[int, int]
    """Character span of the needle sentence inside ``context``."""
    length: int
    """Target context length in tokens."""
    depth: float
    """Where the needle sits, as a fraction of the context (0 = start, 1 = end)."""


def make_probe(tokenizer: Any, haystack: str, needle: Needle, length: int, depth: float) -> Probe:
    """Cut ``haystack`` to about ``length`` tokens and insert ``needle`` at ``depth``.

    The needle goes at the sentence boundary nearest to the depth, so it stays one whole
    sentence; the returned span covers exactly the inserted fact.
    """
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth: {depth!r} must be within 0..1.")
    if length <= 0:
        raise ValueError(f"length: {length!r} must be a positive number of tokens.")
    enc = tokenizer(haystack, add_special_tokens=False, return_offsets_mapping=True)
    fact_tokens = len(tokenizer(" " + needle.fact, add_special_tokens=False)["input_ids"])
    keep = max(1, min(len(enc["input_ids"]), length - fact_tokens - 1))
    text = haystack[: int(enc["offset_mapping"][keep - 1][1])]
    at = _boundary_near(text, int(depth * len(text)))
    before, after = text[:at], text[at:]
    glue = "" if not before or before.endswith((" ", "\n")) else " "
    insert = glue + needle.fact + ("" if after.startswith((" ", "\n")) or not after else " ")
    start = len(before) + len(glue)
    context = before + insert + after
    return Probe(context, needle.question, needle.answers, (start, start + len(needle.fact)), length, depth)


def _boundary_near(text: str, pos: int) -> int:
    """The sentence end ('. ', '? ', '! ' or a newline) nearest to ``pos``, as an insertion point."""
    if pos <= 0 or not text:
        return 0
    if pos >= len(text):
        return len(text)
    best = 0
    for i in range(len(text) - 1):
        if text[i] in ".?!\n" and text[i + 1] in " \n":
            if abs(i + 1 - pos) < abs(best - pos):
                best = i + 1
            elif i + 1 > pos:
                break
    return best


def make_probes(
    tokenizer: Any, haystack: str, lengths: Sequence[int], depths: Sequence[float], needles: Sequence[Needle] = NEEDLES
) -> list[Probe]:
    """Every (length, depth, needle) combination; the haystack rotates per needle so texts differ."""
    probes: list[Probe] = []
    for i, needle in enumerate(needles):
        shift = (i * len(haystack)) // max(1, len(needles))
        rotated = haystack[shift:] + haystack[:shift]
        nl = rotated.find("\n")
        rotated = rotated[nl + 1 :] if 0 <= nl < 2000 else rotated
        rotated = rotated[: 12 * max(lengths, default=0) + 1000]  # plenty of characters; keeps tokenizing cheap
        for length in lengths:
            for depth in depths:
                probes.append(make_probe(tokenizer, rotated, needle, length, depth))
    return probes


def answer_found(text: str, answers: Sequence[str]) -> bool:
    """Whether any answer string occurs in ``text`` (case-insensitive)."""
    low = text.lower()
    return any(a.lower() in low for a in answers)
