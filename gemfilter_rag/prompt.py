"""Build the filter prompt ``[prefix; documents; middle; query; suffix]`` as token ids.

Each piece is tokenized on its own, so every context token belongs to exactly one document and
carries an exact character span of it (from the tokenizer's offsets, never from decoding).
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

_CTX = "\x00GEMFILTER_CONTEXT\x00"
_QRY = "\x00GEMFILTER_QUERY\x00"


@dataclass(frozen=True)
class TokenizedDocument:
    """A document's tokens and the character span each one owns.

    The spans partition the document: span i is ``[starts[i], ends[i])``, consecutive spans touch,
    the first starts at 0 and the last ends at ``len(text)``, so keeping every token keeps the
    text byte for byte.
    """

    text: str
    ids: list[int]
    starts: list[int]
    ends: list[int]


@dataclass(frozen=True)
class FilterPrompt:
    """The token ids of one filter pass and where each part sits."""

    input_ids: torch.Tensor  # (T,)
    documents: list[TokenizedDocument]
    doc_offsets: list[int]  # position of each document's first token in input_ids
    query_start: int  # position of the query's first token
    context_tokens: int

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def join_tokens(self) -> int:
        """Tokens of the separator between two documents (0 with fewer than two documents)."""
        if len(self.documents) < 2:
            return 0
        return self.doc_offsets[1] - self.doc_offsets[0] - len(self.documents[0].ids)

    def context_positions(self) -> torch.Tensor:
        """Positions in ``input_ids`` of every context token, document by document. (N,)"""
        parts = [torch.arange(o, o + len(d.ids)) for o, d in zip(self.doc_offsets, self.documents, strict=True)]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)


def prompt_frame(tokenizer: Any, template: str, use_chat_template: bool) -> tuple[str, str, str]:
    """Split the full prompt text into (prefix, middle, suffix) around context and query."""
    user = template.replace("{context}", _CTX).replace("{query}", _QRY)
    text = user
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
    prefix, rest = text.split(_CTX)
    middle, suffix = rest.split(_QRY)
    if not (use_chat_template and getattr(tokenizer, "chat_template", None)) and tokenizer.bos_token:
        prefix = tokenizer.bos_token + prefix
    return prefix, middle, suffix


TOKENIZED_TOKENS = 1 << 18
"""Tokens of documents remembered per tokenizer (about 100 bytes each; least recently used out first), so that
chunks that come back query after query, as in RAG, are not tokenized again. A document of more than an eighth
of it is not remembered."""


@dataclass
class _Memo:
    size: int  # the tokenizer's vocabulary size when the memo was made
    docs: OrderedDict[str, TokenizedDocument] = field(default_factory=OrderedDict)
    tokens: int = 0


_TOKENIZED: weakref.WeakKeyDictionary[Any, _Memo] = weakref.WeakKeyDictionary()
_TOKENIZED_LOCK = threading.Lock()


def tokenize_document(tokenizer: Any, text: str) -> TokenizedDocument:
    """Tokenize one document and give each token a contiguous span of it (documents seen recently are
    remembered per tokenizer, ``TOKENIZED_TOKENS``: the result is shared, so never change its lists)."""
    if not text:
        return TokenizedDocument(text, [], [], [])
    try:
        size = len(tokenizer)  # a token added to the vocabulary makes what was remembered stale
        with _TOKENIZED_LOCK:
            memo = _TOKENIZED.get(tokenizer)
            if memo is None or memo.size != size:
                memo = _TOKENIZED[tokenizer] = _Memo(size)
            found = memo.docs.get(text)
            if found is not None:
                memo.docs.move_to_end(text)
                return found
    except TypeError:  # a tokenizer without len() or that cannot be weakly referenced: nothing remembered
        return _tokenize(tokenizer, text)
    doc = _tokenize(tokenizer, text)
    n = len(doc.ids)
    if n <= TOKENIZED_TOKENS // 8:
        with _TOKENIZED_LOCK:
            if text not in memo.docs:
                memo.docs[text] = doc
                memo.tokens += n
            while memo.tokens > TOKENIZED_TOKENS:
                memo.tokens -= len(memo.docs.popitem(last=False)[1].ids)
    return doc


def _tokenize(tokenizer: Any, text: str) -> TokenizedDocument:
    """``tokenize_document``'s work, for a text that is not empty."""
    plain = _plain_text_backend(tokenizer, text)
    if plain is not None:  # the text holds a special token's string, e.g. "<|im_end|>": keep it plain text
        encoding = plain.encode(text, add_special_tokens=False)
        ids, offsets = list(encoding.ids), encoding.offsets
    else:
        try:
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        except (NotImplementedError, TypeError, ValueError) as err:
            raise ValueError(
                "tokenizer: it cannot return character offsets (return_offsets_mapping); GemFilter needs a "
                "fast tokenizer: load it with AutoTokenizer.from_pretrained(..., use_fast=True)."
            ) from err
        ids = list(enc["input_ids"])
        offsets = enc["offset_mapping"]
    # Token i owns [end of token i-1, end of token i): whitespace that the tokenizer leaves out of
    # its offsets goes to the next token, and byte tokens that share one character stay monotone.
    ends: list[int] = []
    last = 0
    for _, end in offsets:
        last = max(last, min(int(end), len(text)))
        ends.append(last)
    if ends:
        ends[-1] = len(text)
    starts = [0, *ends[:-1]]
    return TokenizedDocument(text, ids, starts, ends)


_PLAIN_LOCK = threading.Lock()
_PLAIN_ATTR = "_gemfilter_plain_text_backend"


def _plain_text_backend(tokenizer: Any, text: str) -> Any | None:
    """A private copy of a fast tokenizer's backend that reads special-token strings as plain text,
    or None when ``text`` holds no such string (or the tokenizer has no backend).

    Documents are data: a retrieved page that quotes "<|im_end|>" must not become the control token
    that closes the chat turn (for the filter, and for the answer built from the same ids). The
    shared tokenizer is left alone: its ``split_special_tokens`` switch is state shared by threads.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    cached = getattr(tokenizer, _PLAIN_ATTR, None)
    if cached is None or cached[0] is not backend or cached[1] != backend.get_vocab_size(with_added_tokens=True):
        with _PLAIN_LOCK:
            decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
            specials = tuple(t.content for t in decoder.values() if getattr(t, "special", False) and t.content)
            plain = copy.deepcopy(backend)
            plain.encode_special_tokens = True
            plain.no_truncation()
            plain.no_padding()
            cached = (backend, backend.get_vocab_size(with_added_tokens=True), specials, plain)
            setattr(tokenizer, _PLAIN_ATTR, cached)
    if not any(s in text for s in cached[2]):
        return None
    return cached[3]


def query_token_spans(tokenizer: Any, query: str) -> list[tuple[int, int]]:
    """The character span of each token of ``query`` as ``build_prompt`` tokenizes it (the same call, with
    offsets): token i of the query sits at position ``query_start + i`` of the prompt."""
    if not query:
        return []
    try:
        enc = tokenizer(query, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError) as err:
        raise ValueError(
            "tokenizer: it cannot return character offsets (return_offsets_mapping); GemFilter needs a "
            "fast tokenizer: load it with AutoTokenizer.from_pretrained(..., use_fast=True)."
        ) from err
    return [(int(a), int(b)) for a, b in enc["offset_mapping"]]


def frame_ids(tokenizer: Any, *, separator: str, template: str, use_chat_template: bool) -> tuple[list[int], list[int]]:
    """The token ids of the prompt's prefix (everything before the first document) and of the separator
    between documents, exactly as ``build_prompt`` tokenizes them: the shared start of every cached chunk."""
    prefix, _, _ = prompt_frame(tokenizer, template, use_chat_template)

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    return ids(prefix), ids(separator)


def build_prompt(
    tokenizer: Any, documents: Sequence[str], query: str, *, separator: str, template: str, use_chat_template: bool
) -> FilterPrompt:
    """Token ids of the whole filter prompt, with the position of every document and the query."""
    prefix, middle, suffix = prompt_frame(tokenizer, template, use_chat_template)

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    sep_ids = ids(separator)
    out: list[int] = ids(prefix)
    docs: list[TokenizedDocument] = []
    offsets: list[int] = []
    for i, text in enumerate(documents):
        if i:
            out += sep_ids
        doc = tokenize_document(tokenizer, text)
        offsets.append(len(out))
        out += doc.ids
        docs.append(doc)
    out += ids(middle)
    query_start = len(out)
    out += ids(query) + ids(suffix)
    return FilterPrompt(torch.tensor(out, dtype=torch.long), docs, offsets, query_start, sum(len(d.ids) for d in docs))
