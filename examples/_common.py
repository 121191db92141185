"""Shared pieces of the examples: quiet offline setup, the planted facts, timing and printing helpers."""

from __future__ import annotations

import os
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


def quiet_offline() -> None:
    """Offline, and no progress bars or library chatter: call before importing transformers."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader uses tqdm directly
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")
    import logging

    for name in ("transformers", "sentence_transformers", "llama_index", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


@dataclass(frozen=True)
class Fact:
    """A made-up fact planted in one essay, with the question it answers."""

    essay: int
    """Index of the essay (in file-name order) that receives the fact."""
    depth: float
    """Where in the essay it goes, 0 (start) .. 1 (end)."""
    sentence: str
    question: str
    answers: tuple[str, ...]
    """Accepted answer strings (case-insensitive substrings of the reply)."""

    def is_right(self, reply: str) -> bool:
        """Whether the reply contains one of the accepted answers."""
        text = _fold(reply)
        return any(_fold(a) in text for a in self.answers)


FACTS = [
    Fact(
        1,
        0.15,
        "The secret ingredient in Aunt Mirela's famous plum dumplings is a pinch of smoked cardamom.",
        "What is the secret ingredient in Aunt Mirela's plum dumplings?",
        ("cardamom",),
    ),
    Fact(
        5,
        0.45,
        "The startup Quillfeather was founded in 2011 in the Norwegian town of Tromsø by a retired "
        "lighthouse engineer.",
        "In which town was the startup Quillfeather founded?",
        ("Tromsø", "Tromso"),
    ),
    Fact(
        9,
        0.7,
        "The best-selling product of the Zephyr Bicycle Company was a folding bike called the Marten 7.",
        "What was the best-selling bike of the Zephyr Bicycle Company called?",
        ("Marten",),
    ),
    Fact(
        14,
        0.9,
        "Professor Okonkwo's robot dog Biscuit needed exactly 38 days to learn to open the refrigerator.",
        "How many days did Professor Okonkwo's robot dog need to learn to open the refrigerator?",
        ("38",),
    ),
]


def _fold(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def plant(essays: list[tuple[str, str]], facts: list[Fact] = FACTS) -> list[tuple[str, str]]:
    """The essays with each fact inserted at a paragraph (or sentence) boundary near its depth."""
    out = list(essays)
    for fact in facts:
        if not 0 <= fact.essay < len(out):
            raise ValueError(f"fact.essay: {fact.essay} is outside the {len(out)} essays; pick a smaller index.")
        name, text = out[fact.essay]
        cut = _boundary(text, int(fact.depth * len(text)))
        out[fact.essay] = (name, text[:cut] + " " + fact.sentence + " " + text[cut:])
    return out


def _boundary(text: str, pos: int) -> int:
    """The end of the sentence at or after ``pos`` (or the end of the text)."""
    match = re.compile(r"[.!?][\"')\]]?\s").search(text, pos)
    return match.end() - 1 if match else len(text)


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Add the seconds spent in the block to ``timings[stage]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of ``text`` for the answering model."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def fit_budget(tokenizer: Any, texts: list[str], budget: int, separator: str = "\n\n") -> list[str]:
    """Plain RAG's context: chunks in rank order until ``budget`` tokens, the last one cut to fit."""
    out: list[str] = []
    left = budget
    for text in texts:
        if left <= 0:
            break
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) <= left:
            out.append(text)
            left -= len(enc["input_ids"])
        else:
            out.append(text[: enc["offset_mapping"][left - 1][1]])
            left = 0
    return out


def abridge(text: str, width: int = 300) -> str:
    """One line of at most ``width`` characters: the start and the end of ``text``."""
    flat = re.sub(r"\s+", " ", text).strip()
    if len(flat) <= width:
        return flat
    half = (width - 5) // 2
    return f"{flat[:half]} ... {flat[-half:]}"


def first_line(reply: str) -> str:
    """The reply on one line."""
    return re.sub(r"\s+", " ", reply).strip()


ANSWER_INSTRUCTION = "Answer the question using only the context. Reply with a short answer."
"""System-style instruction for the answering model, shared by both pipelines."""


def essay_chunks(n_essays: int, chunk_size: int, overlap: int, facts: list[Fact] = FACTS) -> list[Any]:
    """The first ``n_essays`` essays with ``facts`` planted, split into LangChain Documents with ids."""
    from langchain_core.documents import Document
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from gemfilter_rag.data import load_essays

    essays = plant(load_essays()[:n_essays], facts)
    splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=overlap)
    docs = []
    for name, text in essays:
        for i, piece in enumerate(splitter.split_text(text)):
            docs.append(Document(page_content=piece, metadata={"essay": name, "chunk": i}, id=f"{name}#{i}"))
    return docs


def prompt_tokens(tokenizer: Any, context: str, question: str) -> int:
    """Tokens of the whole answering prompt (chat template, instruction, context and question)."""
    messages = [
        {"role": "system", "content": ANSWER_INSTRUCTION},
        {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return count_tokens(tokenizer, text)


def set_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads: ``threads``, else every core, or 1 when other work already loads the machine.

    On a small shared machine several threads fighting over busy cores run many times slower
    than one thread (they spin waiting for each other).
    """
    import torch

    if threads is None:
        cores = os.cpu_count() or 1
        busy = hasattr(os, "getloadavg") and os.getloadavg()[0] >= cores
        threads = 1 if busy else min(cores, torch.get_num_threads())
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def snippet(text: str, answers: tuple[str, ...] | list[str], width: int = 90) -> str:
    """About ``width`` characters of ``text`` around the first accepted answer found in it (case-insensitive)."""
    flat = re.sub(r"\s+", " ", text)
    low = flat.lower()
    hits = [i for i in (low.find(a.lower()) for a in answers if a) if i >= 0]
    if not hits:
        return ""
    at = min(hits)
    a, b = max(0, at - width // 2), min(len(flat), at + width // 2)
    return ("..." if a else "") + flat[a:b].strip() + ("..." if b < len(flat) else "")
