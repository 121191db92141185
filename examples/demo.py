"""``make demo``: plain RAG vs GemFilter RAG on the benchmark's three kinds of question, wins and losses shown.

One LangChain retriever (all-MiniLM-L6-v2 over a ``QdrantVectorStore`` in Qdrant's local mode, persisted
under the cache and built once: ``examples/_store.py``) indexes one corpus:

- 8 essays cut into 600-character chunks, with two made-up facts planted mid-essay
  (``gemfilter_rag.needles.NEEDLES[5]`` and ``[7]``: a fact inside a chunk about something else);
- the 10 paragraphs (2 supporting, 8 distractors) of 2 HotpotQA records (two-hop questions);
- 40 NaturalQuestions gold passages, 2 of whose questions are asked (easy, one passage).

The HotpotQA and NQ items come from the evaluation splits and were picked by a fixed rule and seed
(``examples/make_demo_data.py`` wrote ``examples/demo_data.json``) without running any pipeline on
them; the facts, essays and depths are fixed likewise. Both pipelines send the same answering model
(SmolLM2-135M-Instruct, ``ChatHuggingFace``) the same number of context tokens:

- plain RAG: the top retrieved chunks, in rank order, until the token budget is full;
- GemFilter RAG: the top 10 chunks, compressed to the same budget by ``GemFilterDocumentCompressor``
  with the retriever's similarities sharing out the budget (the shipped default).

Per question: what each pipeline sent (abridged), whether an accepted answer survived in it, and each
pipeline's answer; at the end a tally of wins, ties and losses. Six questions are a demonstration, not a
measurement: ``benchmarks/README.md`` holds the measured rates. Runs offline on a 2-core CPU in about a
minute once the store is on disk (the first run embeds the corpus into it). Options: ``--help``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # benchmarks.metrics: the benchmark's answer check
from _common import (  # noqa: E402
    ANSWER_INSTRUCTION,
    Fact,
    abridge,
    count_tokens,
    essay_chunks,
    first_line,
    fit_budget,
    quiet_offline,
    set_threads,
    snippet,
    timed,
)
from _store import default_store_dir, langchain_qdrant_store, minilm_name  # noqa: E402

RULE = "-" * 100
DATA = HERE / "demo_data.json"
NEEDLE_PLACES = ((5, 2, 0.5), (7, 5, 0.5))
"""(index in ``NEEDLES``, essay, depth) of the two planted facts."""


@dataclass(frozen=True)
class Question:
    kind: str
    source: str
    question: str
    answers: tuple[str, ...]


def corpus_and_questions(n_essays: int, chunk_size: int) -> tuple[list[Any], list[Question]]:
    """The demo's LangChain Documents (essay chunks, HotpotQA paragraphs, NQ passages) and its six questions."""
    from langchain_core.documents import Document

    from gemfilter_rag.needles import NEEDLES

    data = json.loads(DATA.read_text(encoding="utf-8"))
    facts = [
        Fact(essay, depth, NEEDLES[k].fact, NEEDLES[k].question, NEEDLES[k].answers)
        for k, essay, depth in NEEDLE_PLACES
    ]
    docs = essay_chunks(n_essays, chunk_size, chunk_size // 10, facts)
    for rec in data["two_hop"]:
        for j, p in enumerate(rec["paragraphs"]):
            docs.append(
                Document(
                    page_content=f"{p['title']}\n{p['text']}",
                    metadata={"source": f"hotpotqa-{rec['record']}", "title": p["title"]},
                    id=f"hotpot{rec['record']}#{j}",
                )
            )
    for p in data["nq_passages"]:
        docs.append(Document(page_content=p["text"], metadata={"source": f"nq-{p['line']}"}, id=f"nq{p['line']}"))
    questions = [Question("fact inside a chunk about something else", "essays", f.question, f.answers) for f in facts]
    questions += [
        Question("two-hop", f"HotpotQA {r['record']}", r["question"].replace("  ", " "), tuple(r["answers"]))
        for r in data["two_hop"]
    ]
    questions += [
        Question("single passage", f"NQ line {r['line']}", r["question"], tuple(r["answers"]))
        for r in data["single_passage"]
    ]
    return docs, questions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=256, help="context tokens sent to the LLM (both pipelines)")
    parser.add_argument("--retrieve", type=int, default=10, help="chunks retrieved for GemFilter RAG")
    parser.add_argument("--essays", type=int, default=8, help="how many essays to index (49 in all)")
    parser.add_argument("--chunk-size", type=int, default=600, help="characters per essay chunk")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--model", default=None, help="filter/answer model; default: the embedded SmolLM2")
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="directory of the persisted vector store (Qdrant local mode); default: <cache>/examples/qdrant-demo",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads; default: all cores, or 1 when the machine is already busy",
    )
    args = parser.parse_args(argv)
    quiet_offline()
    threads = set_threads(args.threads)
    t_start = time.perf_counter()
    setup: dict[str, float] = {}

    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_gemfilter import GemFilterDocumentCompressor
    from langchain_huggingface import ChatHuggingFace, HuggingFaceEmbeddings, HuggingFacePipeline
    from transformers import pipeline

    from benchmarks.metrics import answer_correct, contains_answer
    from gemfilter_rag import GemFilterCompressor
    from gemfilter_rag.embeddings import default_embedding_path

    print("GemFilter RAG demo: plain RAG vs GemFilter RAG, same retriever, same LLM, same token budget\n")
    with timed(setup, "load LLM"):
        core = GemFilterCompressor.from_pretrained(args.model, device="cpu")
    # One loaded model both filters and answers: the pipeline wraps the compressor's own weights.
    generator = pipeline(
        "text-generation",
        model=core.model,
        tokenizer=core.tokenizer,
        max_new_tokens=args.max_new_tokens,
        do_sample=False,
        return_full_text=False,
    )
    chat = ChatHuggingFace(llm=HuggingFacePipeline(pipeline=generator), tokenizer=core.tokenizer)
    gemfilter = GemFilterDocumentCompressor(compressor=core, top_k=args.budget, score_key="relevance_score")
    tok = core.tokenizer

    with timed(setup, "load embedder"):
        embeddings = HuggingFaceEmbeddings(model_name=str(default_embedding_path()), encode_kwargs={"batch_size": 32})
    with timed(setup, "vector store"):
        docs, questions = corpus_and_questions(args.essays, args.chunk_size)
        store, info = langchain_qdrant_store(docs, embeddings, args.store or default_store_dir("demo"), minilm_name())
    print(
        f"corpus: {len(docs)} chunks ({args.essays} essays with 2 planted facts, 2 HotpotQA records x 10 "
        f"paragraphs, 40 NQ passages); retriever all-MiniLM-L6-v2"
    )
    print(info.describe())
    print(
        f"LLM + filter: {type(core.model).__name__}, filter layer {core.filter_layer} of {core.num_layers}; "
        f"budget {args.budget} context tokens for both: plain RAG takes the top chunks, GemFilter RAG "
        f"compresses the top {args.retrieve}"
    )
    print("setup: " + ", ".join(f"{k} {v:.1f}s" for k, v in setup.items()) + f"; {threads} CPU thread(s)")

    def answer(context: str, question: str) -> str:
        messages = [SystemMessage(ANSWER_INSTRUCTION), HumanMessage(f"Context:\n{context}\n\nQuestion: {question}")]
        return first_line(str(chat.invoke(messages).content))

    rows: list[dict[str, Any]] = []
    for n, q in enumerate(questions, 1):
        print(f"\n{RULE}\n[{n}/{len(questions)}] {q.kind} ({q.source})")
        print(f"{q.question}   (accepted: {' / '.join(q.answers)})\n{RULE}")
        timings: dict[str, float] = {}
        with timed(timings, "retrieve"):
            hits = store.similarity_search_with_score(q.question, k=max(args.retrieve, 1))
        retrieved = [
            d.model_copy(update={"id": d.metadata["id"], "metadata": {**d.metadata, "relevance_score": s}})
            for d, s in hits
        ]
        holds = [i for i, d in enumerate(retrieved, 1) if contains_answer(d.page_content, q.answers)]
        print(
            "retrieved: "
            + "  ".join(
                f"#{i} {d.id}{'+' if i in holds else ''} ({d.metadata['relevance_score']:.2f})"
                for i, d in enumerate(retrieved, 1)
            )
        )
        print(
            f"  (+ = holds an accepted answer: {'rank ' + ', '.join(map(str, holds)) if holds else 'none retrieved'})"
        )

        plain_ctx = fit_budget(tok, [d.page_content for d in retrieved], args.budget)
        plain_text = "\n\n".join(plain_ctx)
        with timed(timings, "plain answer"):
            plain_reply = answer(plain_text, q.question)
        with timed(timings, "filter"):
            kept, result = gemfilter.compress_with_result(retrieved, q.question)
        gem_text = "\n\n".join(d.page_content for d in kept)
        with timed(timings, "gemfilter answer"):
            gem_reply = answer(gem_text, q.question)
        assert result is not None
        for name, text, reply, source in (
            ("plain RAG", plain_text, plain_reply, f"top {len(plain_ctx)} chunk(s)"),
            ("GemFilter RAG", gem_text, gem_reply, f"{len(kept)}/{len(retrieved)} chunks"),
        ):
            row = {
                "name": name,
                "question": n,
                "kind": q.kind,
                "kept": contains_answer(text, q.answers),
                "right": answer_correct(reply, q.answers),
                "tokens": count_tokens(tok, text),
            }
            rows.append(row)
            where = f' ("{snippet(text, q.answers)}")' if row["kept"] else ""
            print(f"{name:<14} sent {row['tokens']} tok from {source}; answer in sent text: "
                  f"{'yes' if row['kept'] else 'NO'}{where}")  # fmt: skip
            print(f"{'':<14} sent: {abridge(text, 240)}")
            print(f"{'':<14} answer [{'RIGHT' if row['right'] else 'wrong'}]: {abridge(reply, 120)}")
        print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))

    _print_summary(rows, questions, time.perf_counter() - t_start)
    return 0


def _print_summary(rows: list[dict[str, Any]], questions: list[Question], total: float) -> None:
    print(f"\n{RULE}\nsummary ({len(questions)} questions: a demonstration, not a measurement)\n{RULE}")
    print(f"{'pipeline':<14} {'answer in sent text':>20} {'answer right':>13} {'tokens sent/q':>14}")
    for name in ("plain RAG", "GemFilter RAG"):
        mine = [r for r in rows if r["name"] == name]
        n = len(mine)
        print(
            f"{name:<14} {sum(r['kept'] for r in mine):>18}/{n} {sum(r['right'] for r in mine):>11}/{n} "
            f"{sum(r['tokens'] for r in mine) / n:>14.0f}"
        )
    for metric, what in (("kept", "answer in sent text"), ("right", "answer right")):
        wins, ties, losses = [], [], []
        for k in range(1, len(questions) + 1):
            p = next(r[metric] for r in rows if r["name"] == "plain RAG" and r["question"] == k)
            g = next(r[metric] for r in rows if r["name"] == "GemFilter RAG" and r["question"] == k)
            (wins if g and not p else losses if p and not g else ties).append(k)
        print(
            f"GemFilter RAG vs plain RAG, {what}: {len(wins)} win(s) {wins}, {len(ties)} tie(s), "
            f"{len(losses)} loss(es) {losses}"
        )
    print(f"\ntotal run time: {total:.0f}s")


if __name__ == "__main__":
    raise SystemExit(main())
