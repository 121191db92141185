"""LangChain against the compression service: a ContextualCompressionRetriever whose compressor is remote.

The application process loads no filter model: ``GemFilterDocumentCompressor(endpoint=...)`` sends the
retrieved chunks to ``gemfilter serve`` and maps the answer back to LangChain Documents (ids, metadata
and the kept spans), as the local compressor does.

    make serve                                                    # terminal 1: the service on :8000
    .venv/bin/python examples/langchain_remote.py --endpoint http://127.0.0.1:8000   # terminal 2

Without ``--endpoint`` the example starts the service itself (embedded default model, a free port on
127.0.0.1) and stops it at the end, so ``.venv/bin/python examples/langchain_remote.py`` runs alone.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FACTS, abridge, essay_chunks, quiet_offline  # noqa: E402
from _store import default_store_dir, langchain_qdrant_store, minilm_name  # noqa: E402


@contextmanager
def service(endpoint: str | None) -> Iterator[str]:
    """The given endpoint, or a ``gemfilter serve`` started here for the duration of the block."""
    if endpoint:
        yield endpoint
        return
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "gemfilter_rag.serve", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600  # the first run on a machine fetches the model once
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"gemfilter serve exited with code {proc.returncode}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("gemfilter serve did not start within 10 minutes")
            time.sleep(0.5)
        print(f"started gemfilter serve at {url}\n")
        yield url
    finally:
        proc.terminate()  # SIGTERM: the service drains, then exits
        proc.wait(timeout=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", default=None, help="a running service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--budget", type=int, default=256, help="context tokens kept across the retrieved chunks")
    parser.add_argument("--retrieve", type=int, default=10, help="chunks retrieved per question")
    parser.add_argument("--essays", type=int, default=16)
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="directory of the persisted vector store (Qdrant local mode); default: <cache>/examples/qdrant-langchain",
    )
    args = parser.parse_args(argv)
    quiet_offline()

    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_gemfilter import GemFilterDocumentCompressor
    from langchain_huggingface import HuggingFaceEmbeddings

    from gemfilter_rag.embeddings import default_embedding_path

    embeddings = HuggingFaceEmbeddings(model_name=str(default_embedding_path()))
    docs = essay_chunks(args.essays, 600, 60)
    store, info = langchain_qdrant_store(docs, embeddings, args.store or default_store_dir("langchain"), minilm_name())
    print(info.describe())
    with service(args.endpoint) as url:
        retriever = ContextualCompressionRetriever(
            base_compressor=GemFilterDocumentCompressor(endpoint=url, top_k=args.budget, timeout=600),
            base_retriever=store.as_retriever(search_kwargs={"k": args.retrieve}),
        )
        for fact in FACTS:
            t0 = time.perf_counter()
            found = retriever.invoke(fact.question)
            seconds = time.perf_counter() - t0
            kept = sum(d.metadata["gemfilter"]["kept_tokens"] for d in found)
            context = " ".join(d.page_content for d in found)
            has = any(a.lower() in context.lower() for a in fact.answers)
            print(f"Q: {fact.question}")
            print(
                f"   {len(found)} of {args.retrieve} chunks kept text, {kept} tokens, {seconds:.1f} s; "
                f"answer in the kept text: {has}"
            )
            for d in found:
                stats = d.metadata["gemfilter"]
                print(
                    f"   [{d.metadata['id']}] spans {stats['spans'][:3]}{'...' if len(stats['spans']) > 3 else ''}: "
                    f"{abridge(d.page_content, 100)}"
                )
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
