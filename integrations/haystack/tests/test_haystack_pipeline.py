"""GemFilterDocumentCompressor in real Haystack pipelines: BM25 retrieval, prompt builders, async, YAML round trip."""

import asyncio
from pathlib import Path
from typing import Any

import pytest
from haystack import Document, Pipeline
from haystack.components.builders import ChatPromptBuilder, PromptBuilder
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.core.errors import SerializationError
from haystack.dataclasses import ChatMessage
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.utils import ComponentDevice
from haystack_integrations.components.rankers.gemfilter import GemFilterDocumentCompressor

TEXTS = [
    "The lighthouse keeper counted forty ships. The storm arrived at the harbour. Nobody slept that night.",
    "Bananas ripen faster next to apples. Store them in a paper bag. Eat them within a week.",
    "The secret password for the vault is marmalade. The night guard said so. He was very tired.",
    "A quiet river runs through the valley. The old mill still stands. Children play by the water.",
    "The committee approved the new budget for the vault repairs. The secret was kept for a week.",
]
QUERY = "What is the secret password for the vault?"
TEMPLATE = (
    "Context:\n{% for doc in documents %}[{{ doc.id }}] {{ doc.content }}\n{% endfor %}Question: {{ query }}\nAnswer:"
)
KEY = "haystack_integrations.components.rankers.gemfilter.compressor.GemFilterDocumentCompressor"


def make_store() -> InMemoryDocumentStore:
    store = InMemoryDocumentStore()
    store.write_documents([Document(content=t, meta={"source": f"doc{i}"}, id=f"d{i}") for i, t in enumerate(TEXTS)])
    return store


def rag_pipeline(
    store: InMemoryDocumentStore, compressor: GemFilterDocumentCompressor, chat: bool = False, cls: Any = Pipeline
) -> Any:
    pipe = cls()
    pipe.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=4))
    pipe.add_component("compressor", compressor)
    if chat:
        pipe.add_component("prompt_builder", ChatPromptBuilder(template=[ChatMessage.from_user(TEMPLATE)]))
    else:
        pipe.add_component("prompt_builder", PromptBuilder(template=TEMPLATE, required_variables=["query"]))
    pipe.connect("retriever.documents", "compressor.documents")
    pipe.connect("compressor.documents", "prompt_builder.documents")
    return pipe


def inputs(query: str = QUERY) -> dict[str, Any]:
    return {"retriever": {"query": query}, "compressor": {"query": query}, "prompt_builder": {"query": query}}


def check_run(out: dict[str, Any], prompt: str, store: InMemoryDocumentStore, budget: int) -> None:
    """The prompt holds exactly the kept text of each kept document, and every retrieved document is accounted for."""
    kept, dropped = out["compressor"]["documents"], out["compressor"]["dropped"]
    by_id = {d.id: d for d in store.filter_documents()}
    assert kept, "nothing kept: the test would check nothing"
    assert len(kept) + len(dropped) == 4, "the retriever's four documents must all come out"
    assert sum(d.meta["gemfilter"]["kept_tokens"] for d in kept) <= budget
    body = prompt.split("Question:")[0]
    assert body == "Context:\n" + "".join(f"[{d.id}] {d.content}\n" for d in kept)
    for d in kept:
        original = by_id[d.id].content or ""
        assert d.content == "".join(original[a:b] for a, b in d.meta["gemfilter"]["spans"])
        assert d.meta["source"] == by_id[d.id].meta["source"] and d.score is not None
    for d in dropped:
        assert f"[{d.id}]" not in prompt and d.content == by_id[d.id].content
    assert prompt.rstrip().endswith(f"Question: {QUERY}\nAnswer:")


def test_bm25_pipeline_with_prompt_builder(core: Any) -> None:
    store = make_store()
    pipe = rag_pipeline(store, GemFilterDocumentCompressor(compressor=core, top_k=24, granularity="token"))
    out = pipe.run(inputs(), include_outputs_from={"compressor"})
    check_run(out, out["prompt_builder"]["prompt"], store, 24)


def test_bm25_pipeline_with_chat_prompt_builder(core: Any) -> None:
    store = make_store()
    pipe = rag_pipeline(store, GemFilterDocumentCompressor(compressor=core, top_k=24), chat=True)
    out = pipe.run(inputs(), include_outputs_from={"compressor"})
    (message,) = out["prompt_builder"]["prompt"]
    check_run(out, message.text, store, 24)


def test_dropped_documents_are_a_pipeline_output(core: Any) -> None:
    pipe = rag_pipeline(make_store(), GemFilterDocumentCompressor(compressor=core, top_k=3, granularity="document"))
    out = pipe.run(inputs())
    assert set(out) == {"compressor", "prompt_builder"} and set(out["compressor"]) == {"dropped"}
    assert [d.meta["gemfilter"]["kept_tokens"] for d in out["compressor"]["dropped"]] == [0, 0, 0, 0]


def test_retriever_scores_reach_the_compressor(core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    real = core.compress

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("document_scores"))
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "compress", spy)
    store = make_store()
    out = rag_pipeline(store, GemFilterDocumentCompressor(compressor=core, top_k=24)).run(
        inputs(), include_outputs_from={"retriever"}
    )
    retrieved = out["retriever"]["documents"]
    assert seen == [[d.score for d in retrieved]] and all(isinstance(s, float) for s in seen[0])


def test_async_pipeline_gives_the_sync_result(core: Any) -> None:
    store = make_store()
    pipe = rag_pipeline(store, GemFilterDocumentCompressor(compressor=core, top_k=24, granularity="token"))
    expected = pipe.run(inputs(), include_outputs_from={"compressor"})
    if hasattr(Pipeline, "run_async"):
        apipe = rag_pipeline(store, GemFilterDocumentCompressor(compressor=core, top_k=24, granularity="token"))
    else:  # Haystack 2.x runs async in AsyncPipeline
        from haystack import AsyncPipeline

        comp = GemFilterDocumentCompressor(compressor=core, top_k=24, granularity="token")
        apipe = rag_pipeline(store, comp, cls=AsyncPipeline)
    result = asyncio.run(apipe.run_async(inputs(), include_outputs_from={"compressor"}))
    assert result == expected


def test_to_dict_lists_every_init_parameter() -> None:
    comp = GemFilterDocumentCompressor(
        model="/models/tiny", top_k=64, granularity="sentence", options={"pool": "avg"}, device="cpu"
    )
    data = comp.to_dict()
    assert data["type"] == KEY
    params = data["init_parameters"]
    assert params == {
        "model": "/models/tiny",
        "top_k": 64,
        "granularity": "sentence",
        "filter_layer": None,
        "options": {"pool": "avg"},
        "device": ComponentDevice.from_str("cpu").to_dict(),
        "dtype": None,
        "embeddings": "auto",
        "use_document_scores": True,
        "meta_key": "gemfilter",
        "endpoint": None,
        "timeout": 60.0,
        "max_retries": 3,
    }
    again = GemFilterDocumentCompressor.from_dict(data)
    assert again.to_dict() == data
    assert again.device == ComponentDevice.from_str("cpu") and again.compressor is None
    assert data["init_parameters"]["device"] == ComponentDevice.from_str("cpu").to_dict(), "from_dict mutated data"


def test_objects_that_a_file_cannot_hold_refuse_to_serialize(core: Any) -> None:
    with pytest.raises(SerializationError, match="^compressor: .*model="):
        GemFilterDocumentCompressor(compressor=core).to_dict()
    with pytest.raises(SerializationError, match="^embeddings: "):
        GemFilterDocumentCompressor(embeddings=lambda texts: [[1.0] for _ in texts]).to_dict()


def test_yaml_round_trip_loads_and_runs(tiny_dir: Path) -> None:
    store = make_store()
    comp = GemFilterDocumentCompressor(
        model=str(tiny_dir), filter_layer=1, top_k=24, granularity="token", device="cpu", dtype="float32"
    )
    pipe = rag_pipeline(store, comp)
    text = pipe.dumps()
    assert KEY in text and str(tiny_dir) in text
    loaded = Pipeline.loads(text)
    saved, again = pipe.to_dict(), loaded.to_dict()
    assert again["components"] == saved["components"]
    assert sorted(map(str, again["connections"])) == sorted(map(str, saved["connections"]))
    loaded_comp = loaded.get_component("compressor")
    assert isinstance(loaded_comp, GemFilterDocumentCompressor) and loaded_comp.compressor is None
    assert loaded.get_component("retriever").document_store.count_documents() == len(TEXTS)  # the same index
    out = loaded.run(inputs(), include_outputs_from={"compressor"})
    assert loaded_comp.compressor is not None, "the pipeline warms the component up"
    check_run(out, out["prompt_builder"]["prompt"], store, 24)
    assert out == pipe.run(inputs(), include_outputs_from={"compressor"})
