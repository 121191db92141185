"""``make demo``: plain RAG vs GemFilter RAG over the essays, with planted facts as ground truth.

Both pipelines use the same LangChain retriever (all-MiniLM-L6-v2 over an ``InMemoryVectorStore``)
and the same answering model (SmolLM2-135M-Instruct through ``ChatHuggingFace``), and send the LLM
the same number of context tokens:

- plain RAG: the top retrieved chunks, in rank order, until the token budget is full;
- GemFilter RAG: more chunks retrieved, then ``GemFilterDocumentCompressor`` keeps the budget's
  worth of tokens across all of them, chosen by an early layer of the same model.

Runs offline on a 2-core CPU in well under three minutes (about 70 s of CPU time, most of it
embedding the chunks on the first run; the index is cached for later runs). Options: ``--help``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    ANSWER_INSTRUCTION,
    FACTS,
    Fact,
    abridge,
    count_tokens,
    essay_chunks,
    first_line,
    fit_budget,
    langchain_store,
    prompt_tokens,
    quiet_offline,
    set_threads,
    timed,
)

RULE = "-" * 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=256, help="context tokens sent to the LLM (both pipelines)")
    parser.add_argument("--retrieve", type=int, default=10, help="chunks retrieved for GemFilter RAG")
    parser.add_argument("--essays", type=int, default=16, help="how many essays to index (49 in all)")
    parser.add_argument("--chunk-size", type=int, default=600, help="characters per chunk")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--model", default=None, help="filter/answer model; default: the embedded SmolLM2")
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
    # the retriever's similarities (put in each chunk's metadata below) share out the budget across
    # chunks, and GemFilter picks the sentences inside each: the measured default (benchmarks/README.md)
    gemfilter = GemFilterDocumentCompressor(compressor=core, top_k=args.budget, score_key="relevance_score")
    tok = core.tokenizer

    with timed(setup, "load embedder"):
        embeddings = HuggingFaceEmbeddings(model_name=str(default_embedding_path()), encode_kwargs={"batch_size": 32})
    with timed(setup, "chunk + index"):
        docs = essay_chunks(args.essays, args.chunk_size, args.chunk_size // 10)
        store, cached = langchain_store(docs, embeddings, f"minilm-{args.chunk_size}")
    print(
        f"LLM + filter: {type(core.model).__name__}, {core.num_layers} layers, filter layer {core.filter_layer} "
        f"(one copy in memory)"
    )
    print(
        f"corpus: {args.essays} essays -> {len(docs)} chunks of <= {args.chunk_size} chars, "
        f"{len(FACTS)} planted facts; retriever all-MiniLM-L6-v2{' (index from cache)' if cached else ''}"
    )
    print(
        f"budget: {args.budget} context tokens for both; plain RAG takes the top chunks, "
        f"GemFilter RAG compresses the top {args.retrieve}"
    )
    print("setup: " + ", ".join(f"{k} {v:.1f}s" for k, v in setup.items()) + f"; {threads} CPU thread(s)")

    def answer(context: str, question: str) -> tuple[str, int]:
        messages = [SystemMessage(ANSWER_INSTRUCTION), HumanMessage(f"Context:\n{context}\n\nQuestion: {question}")]
        return first_line(str(chat.invoke(messages).content)), prompt_tokens(tok, context, question)

    rows: list[dict[str, Any]] = []
    for n, fact in enumerate(FACTS, 1):
        print(f"\n{RULE}\n[{n}/{len(FACTS)}] {fact.question}   (expected: {fact.answers[0]})\n{RULE}")
        t_plain: dict[str, float] = {}
        t_gem: dict[str, float] = {}
        with timed(t_gem, "retrieve"):
            hits = store.similarity_search_with_score(fact.question, k=max(args.retrieve, 1))
        t_plain["retrieve"] = t_gem["retrieve"]
        retrieved = [d.model_copy(update={"metadata": {**d.metadata, "relevance_score": s}}) for d, s in hits]
        print(
            "retrieved: "
            + "  ".join(
                f"#{i} {d.id}{'*' if fact.sentence in d.page_content else ''} ({s:.2f})"
                for i, (d, s) in enumerate(hits, 1)
            )
        )
        where = [i for i, d in enumerate(retrieved, 1) if fact.sentence in d.page_content]
        print(f"  (* = the chunk holding the planted fact: {'rank ' + str(where[0]) if where else 'not retrieved'})")

        # plain RAG: top chunks until the budget is full
        plain_ctx = fit_budget(tok, [d.page_content for d in retrieved], args.budget)
        with timed(t_plain, "generate"):
            plain_reply, plain_prompt = answer("\n\n".join(plain_ctx), fact.question)
        rows.append(
            _row(
                "plain RAG",
                fact,
                plain_reply,
                "\n\n".join(plain_ctx),
                plain_prompt,
                t_plain,
                tok,
                f"top {len(plain_ctx)} chunk(s)",
            )
        )

        # GemFilter RAG: the same budget, spread over all retrieved chunks
        with timed(t_gem, "filter"):
            kept, result = gemfilter.compress_with_result(retrieved, fact.question)
        gem_ctx = "\n\n".join(d.page_content for d in kept)
        with timed(t_gem, "generate"):
            gem_reply, gem_prompt = answer(gem_ctx, fact.question)
        assert result is not None
        rows.append(
            _row(
                "GemFilter RAG",
                fact,
                gem_reply,
                gem_ctx,
                gem_prompt,
                t_gem,
                tok,
                f"{result.original_tokens} -> {result.compressed_tokens} tok from {len(kept)}/{len(retrieved)} chunks",
            )
        )
        for row in rows[-2:]:
            _print_row(row)
        print(f"kept by GemFilter: {abridge(gem_ctx, 400)}")

    _print_summary(rows, time.perf_counter() - t_start)
    return 0


def _row(
    name: str,
    fact: Fact,
    reply: str,
    context: str,
    prompt_tokens: int,
    timings: dict[str, float],
    tok: Any,
    source: str,
) -> dict[str, Any]:
    return {
        "name": name,
        "reply": reply,
        "right": fact.is_right(reply),
        "fact_in_context": fact.sentence in context,
        "context_tokens": count_tokens(tok, context),
        "prompt_tokens": prompt_tokens,
        "timings": dict(timings),
        "source": source,
    }


def _print_row(row: dict[str, Any]) -> None:
    secs = " + ".join(f"{k} {v:.2f}s" for k, v in row["timings"].items())
    mark = "RIGHT" if row["right"] else "wrong"
    print(
        f"{row['name']:<14} context {row['context_tokens']:>4} tok ({row['source']}), prompt {row['prompt_tokens']} "
        f"tok, fact in context: {'yes' if row['fact_in_context'] else 'no'}"
    )
    print(f"{'':<14} {secs}")
    print(f"{'':<14} answer [{mark}]: {abridge(row['reply'], 120)}")


def _print_summary(rows: list[dict[str, Any]], total: float) -> None:
    print(f"\n{RULE}\nsummary\n{RULE}")
    print(
        f"{'pipeline':<14} {'right':>6} {'fact in ctx':>12} {'ctx tok/q':>10} {'prompt tok/q':>13} "
        f"{'retrieve s':>11} {'filter s':>9} {'generate s':>11}"
    )
    for name in ("plain RAG", "GemFilter RAG"):
        mine = [r for r in rows if r["name"] == name]
        n = len(mine)

        def mean(stage: str, rows: list[dict[str, Any]] = mine, n: int = n) -> float:
            return sum(r["timings"].get(stage, 0.0) for r in rows) / n

        print(
            f"{name:<14} {sum(r['right'] for r in mine):>4}/{n} {sum(r['fact_in_context'] for r in mine):>10}/{n} "
            f"{sum(r['context_tokens'] for r in mine) / n:>10.0f} {sum(r['prompt_tokens'] for r in mine) / n:>13.0f} "
            f"{mean('retrieve'):>11.2f} {mean('filter'):>9.2f} {mean('generate'):>11.2f}"
        )
    print(f"\ntotal run time: {total:.0f}s")


if __name__ == "__main__":
    raise SystemExit(main())
