"""LangChain: plain RAG vs GemFilter RAG on the same corpus, questions, retriever and chat model.

- plain RAG: ``vector_store.as_retriever(k=...)`` with k chosen so the chunks fill the token budget;
- GemFilter RAG: ``ContextualCompressionRetriever(GemFilterDocumentCompressor(top_k=budget),
  retriever with k=10)``: ten chunks retrieved, the budget's worth of tokens kept across them.

Both feed the same LCEL answer chain (``ChatPromptTemplate | ChatHuggingFace | StrOutputParser``),
where the chat model is SmolLM2 through ``langchain_huggingface``, reusing the weights the
compressor already loaded. Prints per question the tokens sent to the LLM, seconds per stage
and the answers, side by side.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    ANSWER_INSTRUCTION,
    FACTS,
    abridge,
    count_tokens,
    essay_chunks,
    first_line,
    prompt_tokens,
    quiet_offline,
    set_threads,
)
from _store import default_store_dir, langchain_qdrant_store, minilm_name  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=256, help="context tokens sent to the LLM")
    parser.add_argument("--retrieve", type=int, default=10, help="chunks retrieved for GemFilter RAG")
    parser.add_argument("--essays", type=int, default=16)
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="directory of the persisted vector store (Qdrant local mode); default: <cache>/examples/qdrant-langchain",
    )
    parser.add_argument("--chunk-size", type=int, default=600, help="characters per chunk")
    args = parser.parse_args(argv)
    quiet_offline()
    set_threads()

    from langchain_classic.retrievers.contextual_compression import ContextualCompressionRetriever
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_gemfilter import GemFilterDocumentCompressor
    from langchain_huggingface import ChatHuggingFace, HuggingFaceEmbeddings, HuggingFacePipeline
    from transformers import pipeline

    from gemfilter_rag import GemFilterCompressor
    from gemfilter_rag.embeddings import default_embedding_path

    core = GemFilterCompressor.from_pretrained(device="cpu")
    tok = core.tokenizer
    generator = pipeline(
        "text-generation", model=core.model, tokenizer=tok, max_new_tokens=32, do_sample=False, return_full_text=False
    )
    chat = ChatHuggingFace(llm=HuggingFacePipeline(pipeline=generator), tokenizer=tok)
    prompt = ChatPromptTemplate.from_messages(
        [("system", ANSWER_INSTRUCTION), ("human", "Context:\n{context}\n\nQuestion: {question}")]
    )
    answer_chain = prompt | chat | StrOutputParser()

    embeddings = HuggingFaceEmbeddings(model_name=str(default_embedding_path()))
    docs = essay_chunks(args.essays, args.chunk_size, args.chunk_size // 10)
    store, info = langchain_qdrant_store(docs, embeddings, args.store or default_store_dir("langchain"), minilm_name())
    print(info.describe())
    mean_chunk = sum(count_tokens(tok, d.page_content) for d in docs) / len(docs)
    plain_k = max(1, round(args.budget / mean_chunk))
    plain = store.as_retriever(search_kwargs={"k": plain_k})
    gemfilter = GemFilterDocumentCompressor(compressor=core, top_k=args.budget)
    compressed = ContextualCompressionRetriever(
        base_compressor=gemfilter, base_retriever=store.as_retriever(search_kwargs={"k": args.retrieve})
    )
    print(
        f"{len(docs)} chunks (~{mean_chunk:.0f} tokens each); plain RAG: top {plain_k} chunks; "
        f"GemFilter RAG: top {args.retrieve} chunks compressed to {args.budget} tokens\n"
    )

    for fact in FACTS:
        print(f"Q: {fact.question}  (expected: {fact.answers[0]})")
        for name, retriever in (("plain", plain), ("gemfilter", compressed)):
            t0 = time.perf_counter()
            found = retriever.invoke(fact.question)
            t1 = time.perf_counter()
            context = "\n\n".join(d.page_content for d in found)
            reply = first_line(answer_chain.invoke({"context": context, "question": fact.question}))
            t2 = time.perf_counter()
            sent = prompt_tokens(tok, context, fact.question)
            filtered = gemfilter.last_result.timings["total"] if name == "gemfilter" and gemfilter.last_result else 0
            stages = f"retrieve {t1 - t0 - filtered:.2f}s" + (f" + filter {filtered:.2f}s" if filtered else "")
            mark = "RIGHT" if fact.is_right(reply) else "wrong"
            print(
                f"  {name:<10} {sent:>4} tokens to the LLM | {stages} + generate {t2 - t1:.2f}s | "
                f"[{mark}] {abridge(reply, 80)}"
            )
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
