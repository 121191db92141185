"""GemFilter's end-to-end path: filter pass, then the full model over the kept tokens, then decoding.

The answering prompt is the filter prompt with the dropped context tokens taken out (and the
separator of a document that lost every token), so with a budget at or above the context length
its token ids are exactly those of the full prompt and the answer is plain ``model.generate``'s.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .pipeline import Plan, build_prompts, compress_prompts
from .prompt import FilterPrompt
from .result import CompressionResult
from .validation import DEFAULT_BATCH_SIZE, check_batch_size, check_items

DEFAULT_MAX_NEW_TOKENS = 256
_RESERVED = ("input_ids", "attention_mask", "streamer", "inputs")


@dataclass(frozen=True)
class GenerationResult:
    """An answer generated from the kept context, with what was kept and how long each phase took."""

    text: str
    """The generated answer (special tokens removed)."""
    compression: CompressionResult
    """What the filter pass kept."""
    prompt_tokens: int
    """Tokens the full model read: kept context plus the template and question."""
    token_ids: list[int] = field(default_factory=list)
    """The generated token ids (up to and including an end-of-sequence token)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds: ``compress`` (tokenize + filter pass + selection), ``prefill`` (full model over the
    kept prompt, up to the first new token), ``prompt`` (compress + prefill: the prompt phase),
    ``first_token`` (wall time from the call to the first new token), ``total``."""

    @property
    def new_tokens(self) -> int:
        """Number of generated tokens."""
        return len(self.token_ids)


def answer_input_ids(prompt: FilterPrompt, kept: Sequence[int]) -> torch.Tensor:
    """The filter prompt's ids with only the kept context tokens. (T',) long.

    ``kept`` indexes the concatenated context tokens (``CompressionResult.kept_token_indices``),
    ascending. A document that had tokens and kept none is dropped with its separator; keeping
    every token gives back ``prompt.input_ids`` exactly.
    """
    ids = prompt.input_ids  # (T,)
    if not prompt.documents:
        return ids.clone()
    kept_t = torch.as_tensor(list(kept), dtype=torch.long)  # (K,)
    ends = [o + len(d.ids) for o, d in zip(prompt.doc_offsets, prompt.documents, strict=True)]
    parts = [ids[: prompt.doc_offsets[0]]]
    start = 0
    present = False
    for i, (offset, doc) in enumerate(zip(prompt.doc_offsets, prompt.documents, strict=True)):
        n = len(doc.ids)
        mine = kept_t[(kept_t >= start) & (kept_t < start + n)] - start + offset  # (K_i,) prompt positions
        start += n
        if n and not mine.numel():
            continue
        if present:
            parts.append(ids[ends[i - 1] : offset])  # the separator (every gap holds the same one)
        parts.append(ids[mine])
        present = True
    parts.append(ids[ends[-1] :])
    return torch.cat(parts)


class _Clock:
    """A transformers streamer that timestamps the first new token and, optionally, streams text."""

    def __init__(self, tokenizer: Any, stream: bool) -> None:
        self.tokenizer = tokenizer
        self.stream = stream
        self.first: float | None = None
        self.calls = 0
        self.tokens: list[int] = []
        self.emitted = ""
        self.queue: queue.Queue[object] = queue.Queue()

    def put(self, value: torch.Tensor) -> None:
        self.calls += 1
        if self.calls == 1:  # generate pushes the prompt first
            return
        if self.first is None:
            self.first = time.perf_counter()
        if self.stream:
            self.tokens += value.reshape(-1).tolist()
            text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
            # hold back text that ends inside a multi-byte character, or that a later token rewrites
            if text.startswith(self.emitted) and not text.endswith("\ufffd") and len(text) > len(self.emitted):
                self.queue.put(text[len(self.emitted) :])
                self.emitted = text

    def end(self) -> None:
        pass


class GenerationStream:
    """Iterator over the answer's text chunks as they are generated; ``result`` once exhausted."""

    def __init__(self, clock: _Clock, worker: threading.Thread) -> None:
        self._clock = clock
        self._worker = worker
        self._result: GenerationResult | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._result is not None:
            raise StopIteration
        item = self._clock.queue.get()
        if isinstance(item, str):
            return item
        self._worker.join()
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, GenerationResult)
        self._result = item
        tail = item.text[len(self._clock.emitted) :] if item.text.startswith(self._clock.emitted) else ""
        if tail:
            return tail
        raise StopIteration

    @property
    def result(self) -> GenerationResult:
        """The full result; available after the iterator is exhausted."""
        if self._result is None:
            raise RuntimeError("result: the stream is not finished; iterate over it to the end first.")
        return self._result


def check_answer_length(plan: Plan, prompt_tokens: int, max_new_tokens: int) -> None:
    """Raise a ValueError naming ``top_k`` when the kept prompt plus the answer exceeds the model's positions."""
    limit = plan.model.max_positions
    if limit is not None and prompt_tokens + max_new_tokens > limit:
        raise ValueError(
            f"top_k: the kept prompt has {prompt_tokens} tokens and max_new_tokens is {max_new_tokens}, more than "
            f"the {limit} positions this model accepts; pass a smaller top_k (or max_new_tokens)."
        )


def _generation_kwargs(plan: Plan, max_new_tokens: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected a positive int, got {max_new_tokens!r}.")
    for name in _RESERVED:
        if name in kwargs:
            raise TypeError(f"{name}: is set by GemFilterCompressor.generate; remove it from the generation options.")
    tok = plan.model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return {"max_new_tokens": max_new_tokens, "do_sample": False, "pad_token_id": pad, **kwargs}


def _new_tokens(row: torch.Tensor, eos: Any) -> list[int]:
    """Generated ids of one row, cut after the first end-of-sequence token (padding follows it)."""
    ids = row.tolist()
    stops = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
    for i, t in enumerate(ids):
        if t in stops:
            return ids[: i + 1]
    return ids


def _eos(plan: Plan, kwargs: dict[str, Any]) -> Any:
    if "eos_token_id" in kwargs:
        return kwargs["eos_token_id"]
    cfg = getattr(plan.model.model, "generation_config", None)
    eos = getattr(cfg, "eos_token_id", None)
    return eos if eos is not None else plan.model.tokenizer.eos_token_id


def generate(
    plan: Plan,
    documents: Sequence[str],
    query: str,
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    top_k: int | None = None,
    stream: bool = False,
    **generation_kwargs: Any,
) -> GenerationResult | GenerationStream:
    """Filter pass, then the full model over the kept tokens plus the question, then ``model.generate``.

    Greedy unless ``generation_kwargs`` say otherwise (``do_sample=True, temperature=...`` pass
    through). With ``stream=True`` returns a ``GenerationStream`` of text chunks (generation runs
    in a thread); otherwise a ``GenerationResult``.
    """
    t0 = time.perf_counter()
    ((docs, q),) = check_items([(documents, query)])
    options = _generation_kwargs(plan, max_new_tokens, generation_kwargs)
    prompt = build_prompts(plan, [(docs, q)])[0]
    t_tok = time.perf_counter() - t0
    compression = compress_prompts(plan, [prompt], [q], top_k=top_k)[0]
    compression.timings["tokenize"] = t_tok
    compression.timings["total"] += t_tok
    ids = answer_input_ids(prompt, compression.kept_token_indices)[None]  # (1, T')
    check_answer_length(plan, int(ids.shape[1]), max_new_tokens)
    t1 = time.perf_counter()
    device = plan.model.device
    clock = _Clock(plan.model.tokenizer, stream)
    eos = _eos(plan, options)

    def run() -> GenerationResult:
        t2 = time.perf_counter()
        with torch.inference_mode():
            model: Any = plan.model.model
            out = model.generate(
                input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device), streamer=clock, **options
            )  # (1, T' + new)
        end = time.perf_counter()
        new = _new_tokens(out[0, ids.shape[1] :].cpu(), eos)
        text = plan.model.tokenizer.decode(new, skip_special_tokens=True)
        first = clock.first if clock.first is not None else end
        timings = {
            "compress": t1 - t0,
            "prefill": first - t2,
            "prompt": (t1 - t0) + (first - t2),
            "first_token": first - t0,
            "total": end - t0,
        }
        return GenerationResult(
            text=text, compression=compression, prompt_tokens=int(ids.shape[1]), token_ids=new, timings=timings
        )

    if not stream:
        return run()

    def worker() -> None:
        try:
            clock.queue.put(run())
        except BaseException as err:  # handed to the consumer, raised there
            clock.queue.put(err)

    thread = threading.Thread(target=worker, name="gemfilter-generate", daemon=True)
    thread.start()
    return GenerationStream(clock, thread)


def generate_batch(
    plan: Plan,
    items: Sequence[tuple[Sequence[str], str]],
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    top_k: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    **generation_kwargs: Any,
) -> list[GenerationResult]:
    """``generate`` over several (documents, query) pairs: batched filter passes, then left-padded
    batched ``model.generate`` (``batch_size`` items at a time). Results in input order; timings
    of an item are those of the batch it shared.
    """
    checked = check_items(items)
    options = _generation_kwargs(plan, max_new_tokens, generation_kwargs)
    check_batch_size(batch_size)
    device = plan.model.device
    eos = _eos(plan, options)
    pad = int(options["pad_token_id"]) if options["pad_token_id"] is not None else 0
    results: list[GenerationResult | None] = [None] * len(checked)
    for s in range(0, len(checked), batch_size):
        group = checked[s : s + batch_size]
        t0 = time.perf_counter()
        prompts = build_prompts(plan, group)
        compressions = compress_prompts(plan, prompts, [q for _, q in group], top_k=top_k, batch_size=batch_size)
        rows = [answer_input_ids(p, c.kept_token_indices) for p, c in zip(prompts, compressions, strict=True)]
        for r in rows:
            check_answer_length(plan, int(r.shape[0]), max_new_tokens)
        longest = max(r.shape[0] for r in rows)
        ids = torch.full((len(rows), longest), pad, dtype=torch.long)  # (B, T) left padded
        mask = torch.zeros((len(rows), longest), dtype=torch.long)  # (B, T)
        for i, r in enumerate(rows):
            ids[i, longest - r.shape[0] :] = r
            mask[i, longest - r.shape[0] :] = 1
        t1 = time.perf_counter()
        clock = _Clock(plan.model.tokenizer, stream=False)
        model: Any = plan.model.model
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), streamer=clock, **options
            )  # (B, T + new)
        end = time.perf_counter()
        first = clock.first if clock.first is not None else end
        for i, (r, c) in enumerate(zip(rows, compressions, strict=True)):
            new = _new_tokens(out[i, longest:].cpu(), eos)
            results[s + i] = GenerationResult(
                text=plan.model.tokenizer.decode(new, skip_special_tokens=True),
                compression=c,
                prompt_tokens=int(r.shape[0]),
                token_ids=new,
                timings={
                    "compress": t1 - t0,
                    "prefill": first - t1,
                    "prompt": first - t0,
                    "first_token": first - t0,
                    "total": end - t0,
                },
            )
    return [r for r in results if r is not None]
