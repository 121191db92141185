"""``GemFilterAnswer``: GemFilter's end-to-end path (filter, then answer with the same model) as a Runnable."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from langchain_core.documents import Document
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, Field, PrivateAttr

from gemfilter_rag import GemFilterCompressor

_DONE = object()


class GemFilterAnswer(RunnableSerializable[dict[str, Any], str]):
    """Answer a question from retrieved documents with a local LM, reading only what GemFilter keeps.

    Input: ``{"documents": [Document | str, ...], "question": str}`` (``"query"`` is accepted
    too). Output: the answer text. ``.stream()`` yields it chunk by chunk as it is generated;
    ``.batch()`` runs batched filter passes and batched decoding over the inputs.

    Args:
        compressor: an existing ``GemFilterCompressor`` (one loaded model can compress and answer);
            without it, one is loaded from ``model`` on first use.
        **data: the pydantic fields below.

    Example::

        answer = GemFilterAnswer(top_k=512, max_new_tokens=64)
        chain = {"documents": retriever, "question": RunnablePassthrough()} | answer
        chain.invoke("What did the author work on?")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str | None = Field(
        default=None,
        description="Model to load when no `compressor` is given: None for the "
        "embedded default, a local directory, a .gguf file, or a locally cached hub id.",
    )
    top_k: int | None = Field(default=None, gt=0, description="Context token budget; None uses the compressor's.")
    max_new_tokens: int = Field(default=256, gt=0, description="Longest answer, in tokens.")
    batch_size: int = Field(default=8, gt=0, description="Inputs per batched pass in `batch`.")
    generation_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Passed to `model.generate` (greedy by default; e.g. {'do_sample': True, 'temperature': 0.7}).",
    )

    _compressor: GemFilterCompressor | None = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, compressor: GemFilterCompressor | None = None, **data: Any) -> None:
        super().__init__(**data)
        if compressor is not None and not isinstance(compressor, GemFilterCompressor):
            raise TypeError(f"compressor: expected a GemFilterCompressor, got {type(compressor).__name__}.")
        self._compressor = compressor

    @property
    def compressor(self) -> GemFilterCompressor:
        """The wrapped compressor, loaded on first use when none was given."""
        if self._compressor is None:
            with self._lock:
                if self._compressor is None:
                    self._compressor = GemFilterCompressor.from_pretrained(self.model)
        return self._compressor

    def invoke(self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any) -> str:
        """Answer one ``{"documents", "question"}`` input."""
        return self._call_with_config(self._answer, input, config)

    def stream(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any | None
    ) -> Iterator[str]:
        """Yield the answer's text chunks as the model produces them."""
        yield from self._transform_stream_with_config(iter([input]), self._stream_answer, config)

    async def astream(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any | None
    ) -> AsyncIterator[str]:
        """``stream`` for asyncio: generation runs in a worker thread, chunks arrive as produced."""
        chunks = self.stream(input, config, **kwargs)
        while (chunk := await asyncio.to_thread(next, chunks, _DONE)) is not _DONE:
            yield chunk  # type: ignore[misc]

    def batch(
        self,
        inputs: list[dict[str, Any]],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[str]:
        """Answer several inputs with batched filter passes and batched decoding."""
        return self._batch_with_config(self._answer_batch, inputs, config, return_exceptions=return_exceptions)

    async def abatch(
        self,
        inputs: list[dict[str, Any]],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[str]:
        """``batch`` in a worker thread."""
        return await asyncio.to_thread(self.batch, inputs, config, return_exceptions=return_exceptions)

    def _answer(self, input: dict[str, Any]) -> str:
        docs, question = _parse(input)
        result = self.compressor.generate(
            docs, question, max_new_tokens=self.max_new_tokens, top_k=self.top_k, **self.generation_kwargs
        )
        return result.text

    def _stream_answer(self, inputs: Iterator[dict[str, Any]]) -> Iterator[str]:
        for input in inputs:
            docs, question = _parse(input)
            yield from self.compressor.generate(
                docs,
                question,
                max_new_tokens=self.max_new_tokens,
                top_k=self.top_k,
                stream=True,
                **self.generation_kwargs,
            )

    def _answer_batch(self, inputs: list[dict[str, Any]]) -> list[Exception | str]:
        items = [_parse(x) for x in inputs]
        results = self.compressor.generate_batch(
            items,
            max_new_tokens=self.max_new_tokens,
            top_k=self.top_k,
            batch_size=self.batch_size,
            **self.generation_kwargs,
        )
        return [r.text for r in results]


def _parse(input: Any) -> tuple[list[str], str]:
    """(document texts, question) from ``{"documents": [...], "question": ...}``."""
    if not isinstance(input, Mapping):
        raise TypeError(f"input: expected a dict with 'documents' and 'question', got {type(input).__name__}.")
    question = input.get("question", input.get("query"))
    if not isinstance(question, str):
        raise TypeError(
            f"input['question']: expected str, got {type(question).__name__}; pass "
            "{'documents': [...], 'question': '...'}."
        )
    docs = input.get("documents")
    if docs is None or isinstance(docs, (str, Document)):
        raise TypeError("input['documents']: expected a list of Document or str (the retriever's output).")
    texts: list[str] = []
    for i, d in enumerate(docs):
        if isinstance(d, Document):
            texts.append(d.page_content)
        elif isinstance(d, str):
            texts.append(d)
        else:
            raise TypeError(f"input['documents'][{i}]: expected a Document or str, got {type(d).__name__}.")
    return texts, question
