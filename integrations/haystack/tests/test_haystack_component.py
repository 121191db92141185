"""GemFilterDocumentCompressor on tiny random models: package layout, provenance, budget, scores, warm-up, async."""

import asyncio
import dataclasses
import importlib
import threading
from pathlib import Path
from typing import Any

import pytest
from haystack import Document
from haystack_integrations.components.rankers.gemfilter import GemFilterDocumentCompressor
from tinymodels import fills_kept

from gemfilter_rag import GemFilterCompressor

TEXTS = [
    "The lighthouse keeper counted forty ships. The storm arrived at the harbour. Nobody slept that night.",
    "Bananas ripen faster next to apples. Store them in a paper bag. Eat them within a week.",
    "The secret password for the vault is marmalade. The night guard said so. He was very tired.",
    "A quiet river runs through the valley. The old mill still stands. Children play by the water.",
]
QUERY = "What is the secret password for the vault?"


def make_docs(texts: list[str] = TEXTS, scores: bool = True) -> list[Document]:
    return [
        Document(
            content=t,
            meta={"source": f"doc{i}.txt", "tags": ["a", "b"]},
            id=f"id-{i}",
            score=0.9 - 0.1 * i if scores else None,
        )
        for i, t in enumerate(texts)
    ]


def test_exports() -> None:
    import haystack_integrations.components.rankers.gemfilter as package

    assert package.__all__ == ["GemFilterCacheWarmer", "GemFilterDocumentCompressor", "__version__"]
    for name in package.__all__:
        assert getattr(package, name) is not None


@pytest.mark.parametrize(
    "name", ["haystack_integrations", "haystack_integrations.components", "haystack_integrations.components.rankers"]
)
def test_shared_levels_are_namespace_packages(name: str) -> None:
    module = importlib.import_module(name)
    assert getattr(module, "__file__", None) is None, f"{name} has an __init__.py; other integrations share it"
    assert not isinstance(module.__path__, list), f"{name} is a regular package, not a namespace package"


def test_component_sockets() -> None:
    comp = GemFilterDocumentCompressor()
    inputs = comp.__haystack_input__._sockets_dict  # type: ignore[attr-defined]
    outputs = comp.__haystack_output__._sockets_dict  # type: ignore[attr-defined]
    assert set(inputs) == {"documents", "query", "top_k"}
    assert inputs["documents"].is_mandatory and inputs["query"].is_mandatory and not inputs["top_k"].is_mandatory
    assert set(outputs) == {"documents", "dropped"}
    assert comp.compressor is None, "__init__ must not load a model"


def test_provenance_kept(core: Any) -> None:
    docs = make_docs()
    before = [dataclasses.replace(d, meta=dict(d.meta)) for d in docs]
    out = GemFilterDocumentCompressor(compressor=core, top_k=40, granularity="token").run(docs, QUERY)
    assert docs == before, "input documents were mutated"
    kept = out["documents"]
    assert kept
    indices = [d.meta["gemfilter"]["index"] for d in kept]
    assert indices == sorted(indices), "output is not in input order"
    for d in kept:
        src = docs[d.meta["gemfilter"]["index"]]
        assert (d.id, d.score) == (src.id, src.score)
        assert {k: v for k, v in d.meta.items() if k != "gemfilter"} == src.meta
        stats = d.meta["gemfilter"]
        assert d.content == "".join(src.content[a:b] for a, b in stats["spans"])  # type: ignore[index]
        assert 0 < stats["kept_tokens"] <= stats["original_tokens"]
        assert stats["ratio"] == pytest.approx(stats["original_tokens"] / stats["kept_tokens"])
        assert 0.0 <= stats["score_share"] <= 1.0
        assert stats["filter_layer"] == core.filter_layer


def test_budget_is_global_and_run_top_k_overrides(core: Any) -> None:
    comp = GemFilterDocumentCompressor(compressor=core, top_k=30, granularity="token")
    out = comp.run(make_docs(), QUERY)["documents"]
    assert fills_kept([d.meta["gemfilter"]["kept_tokens"] for d in out], 30, core)
    assert fills_kept(
        [d.meta["gemfilter"]["kept_tokens"] for d in comp.run(make_docs(), QUERY, top_k=12)["documents"]], 12, core
    )
    assert comp.top_k == 30, "a run's top_k must not change the component"


def test_default_budget_comes_from_the_compressor(core: Any) -> None:
    small = core.with_options(top_k=12, granularity="token")
    out = GemFilterDocumentCompressor(compressor=small).run(make_docs(), QUERY)
    assert fills_kept([d.meta["gemfilter"]["kept_tokens"] for d in out["documents"]], 12, core)


def test_every_document_accounted_for(core: Any) -> None:
    docs = make_docs()
    longest = max(len(core.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS)
    comp = GemFilterDocumentCompressor(compressor=core, top_k=longest, granularity="document")  # room for one
    out = comp.run(docs, QUERY)
    kept, dropped = out["documents"], out["dropped"]
    assert len(kept) == 1, "the budget has room for exactly one whole document"
    assert sorted(d.meta["gemfilter"]["index"] for d in kept + dropped) == list(range(len(docs)))
    assert [d.meta["gemfilter"]["index"] for d in dropped] == sorted(d.meta["gemfilter"]["index"] for d in dropped)
    for d in dropped:
        src = docs[d.meta["gemfilter"]["index"]]
        assert (d.id, d.content, d.score) == (src.id, src.content, src.score)
        assert d.meta["gemfilter"]["kept_tokens"] == 0 and d.meta["gemfilter"]["spans"] == []
        assert d.meta["gemfilter"]["original_tokens"] > 0
    assert kept[0].content == docs[kept[0].meta["gemfilter"]["index"]].content  # a whole document


def test_identical_texts_keep_their_own_provenance(core: Any) -> None:
    docs = [Document(content=TEXTS[2], meta={"n": n}, id=f"dup-{n}") for n in range(3)]
    out = GemFilterDocumentCompressor(compressor=core, top_k=10_000).run(docs, QUERY)
    assert [(d.id, d.meta["n"], d.content) for d in out["documents"]] == [(f"dup-{n}", n, TEXTS[2]) for n in range(3)]
    assert out["dropped"] == []


def test_matches_the_core(core: Any) -> None:
    docs = make_docs(scores=False)
    expected = core.with_options(granularity="sentence").compress(TEXTS, QUERY, top_k=25)
    out = GemFilterDocumentCompressor(compressor=core, top_k=25, granularity="sentence").run(docs, QUERY)
    assert [d.content for d in out["documents"]] == [r.text for r in expected.documents if r.kept]
    assert [d.meta["gemfilter"] for d in out["documents"] + out["dropped"]] == sorted(
        (r.stats(expected.filter_layer) for r in expected.documents), key=lambda s: (s["kept_tokens"] == 0, s["index"])
    )


def _record_scores(core: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    real = core.compress

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("document_scores"))
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "compress", spy)
    return seen


def test_document_scores_are_passed_when_every_document_has_one(core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _record_scores(core, monkeypatch)
    comp = GemFilterDocumentCompressor(compressor=core, top_k=30)
    comp.run(make_docs(), QUERY)
    partial = make_docs()
    partial[1] = dataclasses.replace(partial[1], score=None)
    comp.run(partial, QUERY)
    comp.run(make_docs(scores=False), QUERY)
    GemFilterDocumentCompressor(compressor=core, top_k=30, use_document_scores=False).run(make_docs(), QUERY)
    assert seen == [[pytest.approx(0.9 - 0.1 * i) for i in range(len(TEXTS))], None, None, None]


def test_empty_documents_do_not_load_a_model() -> None:
    comp = GemFilterDocumentCompressor(model="/nonexistent/model.gguf")
    assert comp.run([], QUERY) == {"documents": [], "dropped": []}
    assert comp.run([], "") == {"documents": [], "dropped": []}
    assert comp.compressor is None


def test_run_before_warm_up_loads_the_model(tiny_dir: Path) -> None:
    comp = GemFilterDocumentCompressor(model=str(tiny_dir), filter_layer=1, top_k=20, device="cpu")
    assert comp.compressor is None
    out = comp.run(make_docs(), QUERY)
    loaded = comp.compressor
    assert isinstance(loaded, GemFilterCompressor) and loaded.filter_layer == 1
    assert sum(d.meta["gemfilter"]["kept_tokens"] for d in out["documents"]) <= 20
    comp.warm_up()
    assert comp.compressor is loaded, "warm_up must not load a second copy"


def test_warm_up_loads_once_under_concurrency(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str | None] = []
    real = GemFilterCompressor.from_pretrained

    def counting(model: str | None = None, **kwargs: Any) -> GemFilterCompressor:
        calls.append(model)
        return real(model, **kwargs)

    monkeypatch.setattr(GemFilterCompressor, "from_pretrained", staticmethod(counting))
    comp = GemFilterDocumentCompressor(model=str(tiny_dir), filter_layer=1)
    threads = [threading.Thread(target=comp.warm_up) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [str(tiny_dir)]


def test_model_load_error_names_the_model() -> None:
    comp = GemFilterDocumentCompressor(model="/nonexistent/model-dir")
    with pytest.raises(Exception, match="nonexistent"):
        comp.warm_up()


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_query_is_an_error(core: Any, query: str) -> None:
    with pytest.raises(ValueError, match="^query: "):
        GemFilterDocumentCompressor(compressor=core).run(make_docs(), query)


def test_bad_documents(core: Any) -> None:
    comp = GemFilterDocumentCompressor(compressor=core)
    with pytest.raises(TypeError, match=r"^documents\[1\]: "):
        comp.run([make_docs()[0], "text"], QUERY)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="^documents: "):
        comp.run("just a string", QUERY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^documents\[0\]: has no text"):
        comp.run([Document(id="img", content=None)], QUERY)
    with pytest.raises(ValueError, match="^top_k: "):
        comp.run(make_docs(), QUERY, top_k=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"top_k": 0}, ValueError, "^top_k: "),
        ({"top_k": True}, ValueError, "^top_k: "),
        ({"granularity": "paragraph"}, ValueError, "^granularity: "),
        ({"filter_layer": -1}, ValueError, "^filter_layer: "),
        ({"options": ["pool"]}, TypeError, "^options: "),
        ({"meta_key": ""}, ValueError, "^meta_key: "),
        ({"device": "gpu0"}, ValueError, "^device: "),
        ({"device": 0}, ValueError, "^device: "),
        ({"timeout": 0}, ValueError, "^timeout: "),
        ({"max_retries": -1}, ValueError, "^max_retries: "),
        ({"model": "/some/model", "endpoint": "http://127.0.0.1:1"}, ValueError, "^model: .*endpoint"),
        ({"embeddings": "default", "endpoint": "http://127.0.0.1:1"}, ValueError, "^embeddings: "),
        ({"compressor": "not a compressor"}, TypeError, "^compressor: "),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        GemFilterDocumentCompressor(**kwargs)


def test_compressor_with_model_or_endpoint_is_an_error(core: Any) -> None:
    with pytest.raises(ValueError, match="^model: "):
        GemFilterDocumentCompressor(compressor=core, model="some/model")
    with pytest.raises(ValueError, match="^endpoint: "):
        GemFilterDocumentCompressor(compressor=core, endpoint="http://127.0.0.1:1")


def test_options_share_the_model(core: Any) -> None:
    comp = GemFilterDocumentCompressor(compressor=core, granularity="document", options={"pool": "avg"})
    inner = comp.compressor
    assert isinstance(inner, GemFilterCompressor)
    assert inner.model is core.model and inner.tokenizer is core.tokenizer
    assert inner.config.granularity == "document" and inner.config.scoring.pool == "avg"


def test_run_async_does_not_block_the_event_loop(core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    comp = GemFilterDocumentCompressor(compressor=core, top_k=20, granularity="token")
    expected = comp.run(make_docs(), QUERY)
    released = threading.Event()
    real = comp.compressor.compress  # type: ignore[union-attr]

    def gated(*args: Any, **kwargs: Any) -> Any:
        assert released.wait(5), "the event loop was blocked while compressing"
        return real(*args, **kwargs)

    monkeypatch.setattr(comp.compressor, "compress", gated)

    async def main() -> dict[str, list[Document]]:
        task = asyncio.create_task(comp.run_async(make_docs(), QUERY))
        await asyncio.sleep(0.05)  # runs only if the loop is free
        released.set()
        return await task

    assert asyncio.run(main()) == expected
