"""``GemFilterSynthesizer``: answer from the retrieved nodes with GemFilter's end-to-end path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any

from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import MockLLM
from llama_index.core.response_synthesizers import BaseSynthesizer
from llama_index.core.types import RESPONSE_TEXT_TYPE

from gemfilter_rag import GemFilterCompressor

_DONE = object()


class GemFilterSynthesizer(BaseSynthesizer):
    """A response synthesizer that answers with a local LM reading only the context GemFilter keeps.

    The filter pass picks the tokens of the retrieved nodes that an early layer attends to for the
    question; the same model then reads the kept tokens plus the question and generates the
    answer. Use it as ``RetrieverQueryEngine(retriever, response_synthesizer=GemFilterSynthesizer(...))``.

    Args:
        compressor: an existing ``GemFilterCompressor``; None loads ``model`` (None: the embedded default).
        model: what to load when no compressor is given.
        top_k: context token budget; None uses the compressor's.
        max_new_tokens: longest answer, in tokens.
        streaming: return a ``StreamingResponse`` whose ``response_gen`` yields text as it is produced.
        generation_kwargs: passed to ``model.generate`` (greedy by default).
        callback_manager: LlamaIndex callbacks.

    The LlamaIndex ``llm`` slot holds a ``MockLLM`` only to satisfy the base class: no remote or
    ``Settings.llm`` model is ever called.
    """

    def __init__(
        self,
        compressor: GemFilterCompressor | None = None,
        *,
        model: str | None = None,
        top_k: int | None = None,
        max_new_tokens: int = 256,
        streaming: bool = False,
        generation_kwargs: dict[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        if compressor is not None and not isinstance(compressor, GemFilterCompressor):
            raise TypeError(f"compressor: expected a GemFilterCompressor, got {type(compressor).__name__}.")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: expected a positive int, got {max_new_tokens!r}.")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k: expected a positive int or None, got {top_k!r}.")
        super().__init__(llm=MockLLM(), callback_manager=callback_manager, streaming=streaming)
        self._compressor = compressor or GemFilterCompressor.from_pretrained(model)
        self._top_k = top_k
        self._max_new_tokens = max_new_tokens
        self._generation_kwargs = dict(generation_kwargs or {})
        self._last_result: Any = None

    @property
    def compressor(self) -> GemFilterCompressor:
        """The wrapped compressor."""
        return self._compressor

    @property
    def last_result(self) -> Any:
        """The ``GenerationResult`` of the latest non-streaming answer (what was kept, timings)."""
        return self._last_result

    def _get_prompts(self) -> dict[str, Any]:
        return {}

    def _update_prompts(self, prompts_dict: dict[str, Any]) -> None:
        pass

    def get_response(self, query_str: str, text_chunks: Sequence[str], **response_kwargs: Any) -> RESPONSE_TEXT_TYPE:
        """The answer to ``query_str`` from ``text_chunks``: a str, or a generator of text when streaming."""
        if self._streaming:
            return self._stream(query_str, list(text_chunks))
        result = self._compressor.generate(
            list(text_chunks),
            query_str,
            max_new_tokens=self._max_new_tokens,
            top_k=self._top_k,
            **self._generation_kwargs,
        )
        self._last_result = result
        return result.text

    async def aget_response(
        self, query_str: str, text_chunks: Sequence[str], **response_kwargs: Any
    ) -> RESPONSE_TEXT_TYPE:
        """``get_response`` for asyncio: generation runs in a worker thread."""
        if self._streaming:
            return self._astream(query_str, list(text_chunks))
        return await asyncio.to_thread(self.get_response, query_str, text_chunks, **response_kwargs)

    def _stream(self, query_str: str, chunks: list[str]) -> Generator[str, None, None]:
        yield from self._compressor.generate(
            chunks,
            query_str,
            max_new_tokens=self._max_new_tokens,
            top_k=self._top_k,
            stream=True,
            **self._generation_kwargs,
        )

    async def _astream(self, query_str: str, chunks: list[str]) -> AsyncGenerator[str, None]:
        sync = self._stream(query_str, chunks)
        while (piece := await asyncio.to_thread(next, sync, _DONE)) is not _DONE:
            yield piece  # type: ignore[misc]
