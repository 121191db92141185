"""Labelled training examples from public data: what a readout learns to find.

Every example is a question, its context documents, its accepted answers, and the character spans
of the text that answers it (``positives``: (document, start, end)). Each source covers a kind of
context a RAG chain meets:

* HotpotQA distractor (records in ``data.HOTPOT_TRAIN`` only, answers other than yes/no): 10
  paragraphs, two of them holding the supporting facts; positives are those sentences.
* NaturalQuestions (questions in ``data.NQ_TRAIN``): the gold Wikipedia passage at a random position
  among the 19 passages of the 2,000 most similar to the question (all-MiniLM-L6-v2), as a retriever
  would return them; positives are the answer strings inside the gold passage.
* SQuAD v2.0 (articles in ``data.SQUAD_TRAIN_ARTICLES``): consecutive paragraphs of the article up to
  a token cap; positives are the answer spans.
* Needles (``TRAIN_NEEDLES``, none of which the benchmarks use) at random depths of essay haystacks
  read in reverse order; the positive is the needle sentence.
* Structured lookups (``structured``, seeds of ``structured.TRAIN_SEEDS`` only; the benchmark draws
  ``EVAL_SEEDS``): JSON key/value objects of 25, 75 and 140 pairs, Markdown and CSV tables, logs and code,
  the gold item at a random depth; the positive is the gold item (``structured.gold_span``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..needles import Needle, make_probe
from .structured import TRAIN_SEEDS, gold_span, make_case

Span = tuple[int, int, int]  # (document index, start, end) character span


@dataclass(frozen=True)
class Example:
    """One labelled question: its documents, accepted answers and the spans that answer it."""

    id: str
    source: str
    question: str
    documents: list[str]
    answers: list[str]
    positives: list[Span]
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- HotpotQA


def hotpot_examples(records: Sequence[dict[str, Any]], indices: Sequence[int]) -> list[Example]:
    """HotpotQA distractor examples for ``indices`` (yes/no questions skipped)."""
    out = []
    for i in indices:
        r = records[i]
        if str(r["answer"]).strip().lower() in ("yes", "no"):
            continue
        support = {(t, int(k)) for t, k in r["supporting_facts"]}
        docs, positives = [], []
        for d, (title, sentences) in enumerate(r["context"]):
            text = f"{title}\n"
            for k, sentence in enumerate(sentences):
                if (title, k) in support and sentence.strip():
                    lead = len(sentence) - len(sentence.lstrip())
                    positives.append((d, len(text) + lead, len(text) + len(sentence.rstrip())))
                text += sentence
            docs.append(text)
        if positives:
            out.append(Example(f"hotpot-{i}", "hotpotqa", r["question"], docs, [str(r["answer"])], positives))
    return out


# ---------------------------------------------------------------- NaturalQuestions


def nq_passage(record: dict[str, Any]) -> str:
    """The gold passage of an NQ-open oracle record as ``title\\ntext``."""
    ctxs = record["ctxs"]
    gold = next((c for c in ctxs if c.get("isgold")), ctxs[0])
    return f"{gold.get('title', '')}\n{gold['text']}".strip()


def answer_spans(text: str, answers: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of every case-insensitive occurrence of an answer on word boundaries."""
    spans = []
    for a in answers:
        a = a.strip()
        if not a:
            continue
        for m in re.finditer(r"(?<!\w)" + re.escape(a) + r"(?!\w)", text, flags=re.IGNORECASE):
            spans.append((m.start(), m.end()))
    return sorted(set(spans))


def nq_examples(
    records: Sequence[dict[str, Any]],
    indices: Sequence[int],
    similarities: Callable[[int], Sequence[float]],
    n_docs: int = 20,
    seed: int = 0,
    positions: Sequence[int] | None = None,
) -> list[Example]:
    """NQ examples: the gold passage among the ``n_docs - 1`` passages most similar to the question.

    ``similarities(i)`` gives the retriever's similarity of question ``i`` to every passage of ``records``.
    The gold passage goes at a random position, or at each 1-based position of ``positions`` (one
    example per position).
    """
    corpus = [nq_passage(r) for r in records]
    rng = random.Random(seed)
    out = []
    for i in indices:
        answers = [str(a) for a in records[i]["answers"]]
        spans = answer_spans(corpus[i], answers)
        if not spans:
            continue
        sims = list(similarities(i))
        order = sorted(range(len(corpus)), key=lambda j: (-sims[j], j))
        others = [j for j in order if j != i][: n_docs - 1]
        for position in [p - 1 for p in positions] if positions else [rng.randrange(n_docs)]:
            chosen = others[:position] + [i] + others[position:]
            docs = [corpus[j] for j in chosen]
            positives = [(position, a, b) for a, b in spans]
            meta = {"position": position + 1, "similarities": [float(sims[j]) for j in chosen]}
            name = f"nq-{i}" if not positions else f"nq-{i}-p{position + 1}"
            out.append(Example(name, "nq", str(records[i]["question"]), docs, answers, positives, meta))
    return out


# ---------------------------------------------------------------- SQuAD


def squad_examples(
    data: dict[str, Any],
    articles: Sequence[int],
    count_tokens: Callable[[str], int],
    max_tokens: int = 2500,
    per_article: int = 10,
    seed: int = 0,
) -> list[Example]:
    """SQuAD v2.0 answerable questions over consecutive paragraphs of their article (at most ``max_tokens``)."""
    rng = random.Random(seed)
    out = []
    for a in articles:
        art = data["data"][a]
        paragraphs = [p["context"] for p in art["paragraphs"]]
        lengths = [count_tokens(t) + 2 for t in paragraphs]
        qas = [(p, q) for p, par in enumerate(art["paragraphs"]) for q in par["qas"] if q["answers"]]
        for p, qa in rng.sample(qas, min(per_article, len(qas))):
            lo, hi, total = p, p + 1, lengths[p]
            while True:  # grow around the question's paragraph, after first, while it fits
                if hi < len(paragraphs) and total + lengths[hi] <= max_tokens:
                    total += lengths[hi]
                    hi += 1
                elif lo > 0 and total + lengths[lo - 1] <= max_tokens:
                    lo -= 1
                    total += lengths[lo]
                else:
                    break
            positives = [(p - lo, x["answer_start"], x["answer_start"] + len(x["text"])) for x in qa["answers"]]
            answers = sorted({x["text"] for x in qa["answers"]})
            meta = {"article": art["title"]}
            out.append(
                Example(f"squad-{qa['id']}", "squad", qa["question"], paragraphs[lo:hi], answers, positives, meta)
            )
    return out


# ---------------------------------------------------------------- needles

TRAIN_NEEDLES: tuple[Needle, ...] = (
    Needle(
        "The harbour master of Quillport keeps a pet tortoise named Biscuit.",
        "What is the name of the harbour master of Quillport's pet tortoise?",
        ("biscuit",),
    ),
    Needle(
        "The Orrin Street bakery sells its rye bread only on Thursdays.",
        "On which day does the Orrin Street bakery sell rye bread?",
        ("thursday", "thursdays"),
    ),
    Needle(
        "Dr. Amsel's first telescope was a gift from her uncle in Lisbon.",
        "Who gave Dr. Amsel her first telescope?",
        ("her uncle", "uncle"),
    ),
    Needle(
        "The Hollow Pines hiking trail is exactly eleven kilometres long.",
        "How long is the Hollow Pines hiking trail?",
        ("eleven kilometres", "11 kilometres", "eleven"),
    ),
    Needle(
        "In the town of Brevik, the mayor is chosen by a rowing race.",
        "How is the mayor of Brevik chosen?",
        ("rowing race",),
    ),
    Needle(
        "The violinist Tomasz Wren practises every morning in a disused lighthouse.",
        "Where does the violinist Tomasz Wren practise?",
        ("lighthouse", "disused lighthouse"),
    ),
    Needle(
        "The code word for the surprise party was pineapple.",
        "What was the code word for the surprise party?",
        ("pineapple",),
    ),
    Needle(
        "Aunt Delphine's garden is famous for its blue tulips.",
        "What is Aunt Delphine's garden famous for?",
        ("blue tulips", "tulips"),
    ),
    Needle(
        "The Saltmarsh Railway closed in 1962 after a flood destroyed its bridge.",
        "When did the Saltmarsh Railway close?",
        ("1962",),
    ),
    Needle(
        "Inspector Kallio solved the museum theft by noticing a muddy umbrella.",
        "What clue helped Inspector Kallio solve the museum theft?",
        ("muddy umbrella", "umbrella"),
    ),
    Needle(
        "The fastest runner in the Alder school relay team is a girl called Noor.",
        "Who is the fastest runner in the Alder school relay team?",
        ("noor",),
    ),
    Needle(
        "The Greywater ferry carries exactly forty cars on each crossing.",
        "How many cars does the Greywater ferry carry on each crossing?",
        ("forty", "40"),
    ),
    Needle(
        "Chef Ombretta flavours her famous soup with smoked paprika.",
        "What does Chef Ombretta flavour her famous soup with?",
        ("smoked paprika", "paprika"),
    ),
    Needle(
        "The abandoned mine near Carrow Hill was once rich in tin.",
        "What was the abandoned mine near Carrow Hill once rich in?",
        ("tin",),
    ),
    Needle(
        "The lost ring was finally found inside a hollow oak tree.",
        "Where was the lost ring finally found?",
        ("hollow oak tree", "oak tree"),
    ),
    Needle(
        "The Bellamy twins learned to juggle from a travelling circus clown.",
        "Who taught the Bellamy twins to juggle?",
        ("circus clown", "clown"),
    ),
)
"""Made-up facts for training only; the benchmarks' needles are ``gemfilter_rag.needles.NEEDLES``."""


def chunk_paragraphs(text: str, span: tuple[int, int], max_chars: int = 1200) -> tuple[list[str], list[Span]]:
    """Cut a probe's context into chunks of whole paragraphs (as a text splitter would), keeping the
    needle ``span`` inside one chunk. Returns the chunks and the needle's span within its chunk."""
    chunks: list[str] = []
    starts: list[int] = []
    pos = 0
    while pos < len(text):
        end = min(len(text), pos + max_chars)
        if end < len(text):
            cut = text.rfind("\n\n", pos + max_chars // 3, end)
            if cut < 0:
                cut = text.rfind(". ", pos + max_chars // 3, end)
                cut = cut + 1 if cut >= 0 else end
            end = cut if cut > pos else end
        if span[0] < end < span[1]:  # never split the needle
            end = span[1]
        starts.append(pos)
        chunks.append(text[pos:end])
        pos = end
    d = max(i for i, s in enumerate(starts) if s <= span[0])
    return chunks, [(d, span[0] - starts[d], span[1] - starts[d])]


def needle_examples(tokenizer: Any, haystack: str, count: int, lengths: Sequence[int], seed: int = 0) -> list[Example]:
    """``count`` needle probes: a random training needle at a random depth of a random length and place."""
    rng = random.Random(seed)
    out = []
    for k in range(count):
        needle = TRAIN_NEEDLES[k % len(TRAIN_NEEDLES)]
        length = lengths[rng.randrange(len(lengths))]
        start = rng.randrange(max(1, len(haystack) - 8 * length))
        para = haystack.find("\n", start)
        piece = haystack[para + 1 if 0 <= para < start + 2000 else start :][: 8 * length]
        probe = make_probe(tokenizer, piece, needle, length, rng.random())
        chunks, positives = chunk_paragraphs(probe.context, probe.needle_span)
        meta = {"length": length, "depth": round(probe.depth, 3)}
        out.append(Example(f"needle-{k}", "needle", needle.question, chunks, list(needle.answers), positives, meta))
    return out


# ---------------------------------------------------------------- structured lookups

STRUCTURED_KINDS: tuple[tuple[str, dict[str, int]], ...] = (
    ("json", {"pairs": 25}),
    ("json", {"pairs": 75}),
    ("json", {"pairs": 140}),
    ("markdown", {}),
    ("csv", {}),
    ("logs", {}),
    ("code", {}),
)
"""The structured cases training draws in turn: (generator kind, its size option)."""


def structured_examples(n: int, seed: int = 0) -> list[Example]:
    """``n`` structured lookups, the kinds of ``STRUCTURED_KINDS`` in turn, each from its own seed of
    ``structured.TRAIN_SEEDS`` (drawn with ``seed``, never an evaluation seed) at a random depth."""
    if not 0 <= n <= len(TRAIN_SEEDS):
        raise ValueError(f"n: {n}; draw between 0 and {len(TRAIN_SEEDS)} structured examples.")
    rng = random.Random(f"structured-examples:{seed}")
    out = []
    for k, case_seed in enumerate(rng.sample(TRAIN_SEEDS, n)):
        kind, options = STRUCTURED_KINDS[k % len(STRUCTURED_KINDS)]
        depth = round(rng.random(), 3)
        case = make_case(kind, case_seed, "train", depth=depth, **options)
        start, end = gold_span(case)
        name = f"{kind}-{options['pairs']}" if "pairs" in options else kind
        meta = {"kind": name, "seed": case_seed, "depth": depth, "gold_document": case.gold_document}
        out.append(
            Example(
                f"structured-{name}-{case_seed}",
                "structured",
                case.question,
                list(case.documents),
                [case.answer],
                [(case.gold_document, start, end)],
                meta,
            )
        )
    return out
