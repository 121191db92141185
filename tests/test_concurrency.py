"""Concurrency: one shared model, many threads and asyncio tasks, results equal to the serial ones.

The thread-safety model under test (see docs/reliability.md, "Thread safety"): a filter pass arms its early exit
in a context variable of the calling thread or task only, and routes the model's attention
through a dispatcher for the duration of the pass; the dispatcher delegates to the configured
implementation whenever the caller has nothing armed. So compressions may run at once on one
model, and plain ``model(...)``/``generate`` calls on the same model meanwhile see it exactly as
configured.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import torch

from gemfilter_rag import CompressionResult, GemFilterCompressor

N_WORKERS = 8

TOPICS = [
    "Founders should talk to users. Building features nobody asked for wastes months. Dr. Smith agreed.",
    "Writing an essay shows you what you think. Ideas appear in the middle of a paragraph! Really?",
    "New York tells you to make more money. Cambridge tells you to be smarter. Both are loud.",
    "Servers were cheaper in 2005. Software was free. A few programmers could build a company.",
    "東京は日本の首都です。北京は中国の首都です。 🎉 The results were good, e.g. 90.5% kept.",
    'The question was whether it would work at 4,096 tokens. "We will see," she wrote. Then she left!',
]
QUERIES = [
    "What should founders do?",
    "Why write essays?",
    "What does New York tell you?",
    "What changed in 2005?",
    "What is the capital of Japan?",
    "What did she write?",
    "How much was kept?",
    "Who left?",
]


def workload(i: int) -> tuple[list[str], str, int]:
    """The i-th job: a rotation of the documents, a query and a budget, all different per job."""
    docs = TOPICS[i % len(TOPICS) :] + TOPICS[: i % len(TOPICS)]
    return docs, QUERIES[i % len(QUERIES)], 20 + 7 * i


def comparable(result: CompressionResult) -> dict[str, Any]:
    out = result.to_dict()
    out.pop("timings")
    return out


def run_threads(fn: Callable[[int], Any], n: int) -> list[Any]:
    """Run ``fn(0..n-1)`` on ``n`` threads released together; return results in order."""
    barrier = threading.Barrier(n)

    def job(i: int) -> Any:
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(job, range(n)))


@pytest.fixture(
    scope="module",
    params=[("llama", "sentence"), ("qwen2", "token"), ("gemma3", "document")],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def compressor(
    request: pytest.FixtureRequest, tiny_model_factory: Callable[..., Any], tokenizer: Any
) -> GemFilterCompressor:
    arch, granularity = request.param
    return GemFilterCompressor(tiny_model_factory(arch), tokenizer, filter_layer=2, granularity=granularity)


@pytest.fixture(scope="module")
def serial(compressor: GemFilterCompressor) -> list[dict[str, Any]]:
    return [comparable(compressor.compress(*workload(i)[:2], top_k=workload(i)[2])) for i in range(N_WORKERS)]


def test_threads_equal_serial(compressor: GemFilterCompressor, serial: list[dict[str, Any]]) -> None:
    def one(i: int) -> dict[str, Any]:
        docs, query, budget = workload(i)
        return comparable(compressor.compress(docs, query, top_k=budget))

    for _ in range(2):
        assert run_threads(one, N_WORKERS) == serial
    assert compressor.model.config._attn_implementation == "sdpa"  # routing undone after the passes


def test_asyncio_tasks_equal_serial(compressor: GemFilterCompressor, serial: list[dict[str, Any]]) -> None:
    async def main() -> list[dict[str, Any]]:
        async def one(i: int) -> dict[str, Any]:
            docs, query, budget = workload(i)
            result = await asyncio.to_thread(compressor.compress, docs, query, top_k=budget)
            return comparable(result)

        return list(await asyncio.gather(*(one(i) for i in range(N_WORKERS))))

    assert asyncio.run(main()) == serial


def test_sentence_splitting_is_thread_safe() -> None:
    """The sentence splitter is shared state; threads splitting different texts must not mix them."""
    from gemfilter_rag.sentences import sentence_spans

    texts = [" ".join([t] * 4) for t in TOPICS] + ["One. Two. Three.", "No boundary here at all"]
    expected = [sentence_spans(t) for t in texts]

    def one(i: int) -> bool:
        return all(sentence_spans(texts[(i + k) % len(texts)]) == expected[(i + k) % len(texts)] for k in range(40))

    assert all(run_threads(one, N_WORKERS))


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_plain_forward_and_generate_undisturbed(
    arch: str, tiny_model_factory: Callable[..., Any], tokenizer: Any
) -> None:
    """Plain forward passes and generation on the same model, while compressions run, are unchanged."""
    model = tiny_model_factory(arch)
    compressor = GemFilterCompressor(model, tokenizer, filter_layer=2, granularity="token")
    ids = torch.tensor([tokenizer("The most important thing in a young company is")["input_ids"]])
    with torch.inference_mode():
        ref_logits = model(input_ids=ids).logits
        ref_gen = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    stop = threading.Event()
    errors: list[BaseException] = []
    outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def plain() -> None:
        try:
            while not stop.is_set() or not outputs:
                with torch.inference_mode():
                    logits = model(input_ids=ids).logits
                    gen = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
                outputs.append((logits, gen))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=plain) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        results = run_threads(
            lambda i: comparable(compressor.compress(*workload(i)[:2], top_k=workload(i)[2])), N_WORKERS - 2
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert not errors, errors
    assert outputs
    for logits, gen in outputs:
        torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
        assert torch.equal(gen, ref_gen)
    assert results == [
        comparable(compressor.compress(*workload(i)[:2], top_k=workload(i)[2])) for i in range(N_WORKERS - 2)
    ]


def test_concurrent_compressors_on_one_model_with_different_layers(
    tiny_model_factory: Callable[..., Any], tokenizer: Any
) -> None:
    """Two compressors sharing one model but stopping at different layers never see each other's exit."""
    model = tiny_model_factory("qwen2")
    shallow = GemFilterCompressor(model, tokenizer, filter_layer=0, granularity="token")
    deep = GemFilterCompressor(model, tokenizer, filter_layer=3, granularity="token")
    pick = [shallow, deep]
    serial = [comparable(pick[i % 2].compress(*workload(i)[:2], top_k=workload(i)[2])) for i in range(N_WORKERS)]
    got = run_threads(lambda i: comparable(pick[i % 2].compress(*workload(i)[:2], top_k=workload(i)[2])), N_WORKERS)
    assert got == serial


def _import_or_skip(module: str, attr: str) -> Any:
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        pytest.skip(f"{module}.{attr} is not importable yet ({err}); install integrations/ to run this test")


def test_langchain_async_path_concurrent(tiny_model_factory: Callable[..., Any], tokenizer: Any) -> None:
    cls = _import_or_skip("langchain_gemfilter", "GemFilterDocumentCompressor")
    from langchain_core.documents import Document

    compressor = GemFilterCompressor(tiny_model_factory("llama"), tokenizer, filter_layer=2, granularity="sentence")
    lc = cls(compressor=compressor, top_k=40)

    def docs(i: int) -> list[Any]:
        return [Document(page_content=t, metadata={"i": k}) for k, t in enumerate(workload(i)[0])]

    def key(out: Any) -> list[tuple[str, Any]]:
        return [(d.page_content, d.metadata.get("i")) for d in out]

    serial = [key(lc.compress_documents(docs(i), workload(i)[1])) for i in range(N_WORKERS)]

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(lc.acompress_documents(docs(i), workload(i)[1]) for i in range(N_WORKERS))))

    assert [key(out) for out in asyncio.run(main())] == serial
    assert all(0 < sum(len(text) for text, _ in out) < sum(map(len, TOPICS)) for out in serial)  # a real cut


def test_llama_index_async_path_concurrent(tiny_model_factory: Callable[..., Any], tokenizer: Any) -> None:
    cls = _import_or_skip("llama_index.postprocessor.gemfilter", "GemFilterNodePostprocessor")
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    compressor = GemFilterCompressor(tiny_model_factory("llama"), tokenizer, filter_layer=2, granularity="sentence")
    post = cls(compressor=compressor, top_k=40)

    def nodes(i: int) -> list[Any]:
        return [
            NodeWithScore(node=TextNode(text=t, id_=f"n{k}"), score=1.0 - k / 10) for k, t in enumerate(workload(i)[0])
        ]

    def key(out: Any) -> list[tuple[str, str]]:
        return [(n.node.get_content(), n.node.node_id) for n in out]

    serial = [key(post.postprocess_nodes(nodes(i), query_bundle=QueryBundle(workload(i)[1]))) for i in range(N_WORKERS)]

    async def main() -> list[Any]:
        return list(
            await asyncio.gather(
                *(post.apostprocess_nodes(nodes(i), query_bundle=QueryBundle(workload(i)[1])) for i in range(N_WORKERS))
            )
        )

    assert [key(out) for out in asyncio.run(main())] == serial
    assert all(0 < sum(len(text) for text, _ in out) < sum(map(len, TOPICS)) for out in serial)  # a real cut
