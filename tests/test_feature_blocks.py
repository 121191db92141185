"""The readout's second set of features: maxima, context, the filter model's own hidden states, and the
int8 pass; each block against a computation written out here, and the pipeline with a readout that reads them."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from tinymodels import ARCHS, TRAINING_TEXT, build_model, build_tokenizer

from gemfilter_rag import GemFilterCompressor
from gemfilter_rag.features import (
    BLOCKS_V1,
    CHANNEL_BLOCKS,
    EPS,
    LAYER_BLOCKS,
    SHAPE,
    attention_features,
    block_columns,
    block_features,
    combine,
    derived_block,
    neighbours,
    raw_blocks,
    slice_layers,
    unit_features,
)
from gemfilter_rag.loading import load_model, quantize_int8
from gemfilter_rag.pipeline import build_prompts
from gemfilter_rag.profiles import Profile, fingerprint
from gemfilter_rag.readout import Readout, ReadoutSet, variant_extras
from gemfilter_rag.scoring import query_positions, token_similarity
from gemfilter_rag.selection import fit_joins
from gemfilter_rag.units import prompt_units

ALL = CHANNEL_BLOCKS + LAYER_BLOCKS
DOCS = [p.replace("\n", " ") for p in TRAINING_TEXT.split("\n\n")[:4]]
QUERY = "What does Cambridge tell you?"


def sample(layers: int = 3, heads: int = 2, n: int = 30, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    attention = torch.rand(layers, heads, n, generator=g) / n  # (L, H, N)
    similarity = torch.rand(layers, n, generator=g) * 2 - 1  # (L, N)
    return attention, similarity


UNITS = [(0, 5), (5, 6), (6, 14), (14, 22), (22, 30)]
DOCS_OF = torch.tensor([0, 0, 0, 1, 1])


# ---------------------------------------------------------------- blocks against loops written out here


def test_raw_blocks_against_loops() -> None:
    attention, similarity = sample()
    raw = raw_blocks(attention, similarity, UNITS, hidden=True)
    channels = attention.reshape(-1, attention.shape[-1])  # (C, N)
    for u, (a, b) in enumerate(UNITS):
        seg = channels[:, a:b]
        torch.testing.assert_close(raw["mass"][u], torch.log(seg.sum(1) + EPS))
        torch.testing.assert_close(raw["mean"][u], torch.log(seg.sum(1) / (b - a) + EPS))
        torch.testing.assert_close(raw["max"][u], torch.log(seg.max(1).values + EPS))
        torch.testing.assert_close(raw["sim_mean"][u], similarity[:, a:b].mean(1))
        torch.testing.assert_close(raw["sim_max"][u], similarity[:, a:b].max(1).values)
    with pytest.raises(ValueError, match="similarity"):
        raw_blocks(attention, None, UNITS, hidden=True)


def test_context_blocks_against_loops() -> None:
    attention, similarity = sample(seed=3)
    raw = raw_blocks(attention, similarity, UNITS, hidden=True)
    mass = raw["mass"]
    best = derived_block("doc_best", raw, UNITS, DOCS_OF)
    prev = derived_block("prev_mass", raw, UNITS, DOCS_OF)
    nxt = derived_block("next_mass", raw, UNITS, DOCS_OF)
    sim_doc = derived_block("sim_doc", raw, UNITS, DOCS_OF)
    lowest = mass.min(dim=0).values
    for u in range(len(UNITS)):
        mine = [i for i in range(len(UNITS)) if DOCS_OF[i] == DOCS_OF[u]]
        torch.testing.assert_close(best[u], mass[mine].max(dim=0).values)
        before = u - 1 if u - 1 in mine else None
        after = u + 1 if u + 1 in mine else None
        torch.testing.assert_close(prev[u], mass[before] if before is not None else lowest)
        torch.testing.assert_close(nxt[u], mass[after] if after is not None else lowest)
        tokens = torch.cat([torch.arange(*UNITS[i]) for i in mine])
        torch.testing.assert_close(sim_doc[u], similarity[:, tokens].mean(1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown block"):
        derived_block("nope", raw, UNITS, DOCS_OF)


def test_neighbours_never_cross_documents() -> None:
    x = torch.arange(5.0)[:, None]  # (U, 1)
    docs = torch.tensor([0, 1, 1, 2, 2])
    assert neighbours(x, docs, -1)[:, 0].tolist() == [0.0, 0.0, 1.0, 0.0, 3.0]
    assert neighbours(x, docs, 1)[:, 0].tolist() == [0.0, 2.0, 0.0, 4.0, 0.0]
    assert neighbours(x[:0], docs[:0], 1).shape == (0, 1)


def test_block_features_of_the_first_blocks_equal_combine() -> None:
    attention, similarity = sample(seed=5)
    raw = raw_blocks(attention, similarity, UNITS, hidden=False)
    old, names_old = combine(attention_features(attention, UNITS), UNITS, 30, DOCS_OF)
    new, names_new = block_features(raw, BLOCKS_V1, UNITS, 30, DOCS_OF)
    assert names_old == names_new == SHAPE
    torch.testing.assert_close(new, old)


def test_slice_layers_equals_blocks_of_fewer_layers() -> None:
    attention, similarity = sample(layers=5, heads=3)
    full = raw_blocks(attention, similarity, UNITS, hidden=True)
    fewer = raw_blocks(attention[:2], similarity[:2], UNITS, hidden=True)
    sliced = slice_layers(full, 3, 2)
    assert sliced.keys() == fewer.keys()
    for k in fewer:
        torch.testing.assert_close(sliced[k], fewer[k])
    with pytest.raises(ValueError, match="layers"):
        slice_layers(full, 3, 6)


def test_unit_features_columns_follow_the_blocks() -> None:
    attention, similarity = sample(layers=2, heads=3)
    x, names = unit_features(attention, UNITS, DOCS_OF, similarity=similarity, blocks=ALL)
    assert names == SHAPE and x.shape == (5, block_columns(ALL, 2, 3) + 2)
    assert block_columns(ALL, 2, 3) == 7 * 6 + 3 * 2
    columns = 0
    for b in ALL:  # each block standardised on its own, in order
        width = 6 if b in CHANNEL_BLOCKS else 2
        block = derived_block(b, raw_blocks(attention, similarity, UNITS, hidden=True), UNITS, DOCS_OF)
        std = block.double().std(0, unbiased=False)
        z = ((block.double() - block.double().mean(0)) / std.clamp_min(1e-12)).float()
        expected = torch.where(std > 1e-6, z, torch.zeros_like(z))
        torch.testing.assert_close(x[:, columns : columns + width], expected, rtol=1e-4, atol=1e-5)
        columns += width


# ---------------------------------------------------------------- the readout's format


def blocks_readouts(layer: int, heads: int, blocks: tuple[str, ...] = ALL, seed: int = 0) -> ReadoutSet:
    g = torch.Generator().manual_seed(seed)
    variants = {}
    for name in ("attention", "attention+retriever"):
        extras = variant_extras(name)
        w = torch.randn(block_columns(blocks, layer + 1, heads) + len(extras), generator=g, dtype=torch.float64)
        variants[name] = Readout(layer, heads, extras, tuple(w.tolist()), -0.2, blocks)
    return ReadoutSet(layer, heads, variants, {"test": True})


def test_readout_blocks_round_trip_and_validation() -> None:
    sets = blocks_readouts(2, 4)
    back = ReadoutSet.from_dict(sets.to_dict())
    assert back.to_dict() == sets.to_dict() and back.blocks == ALL and back.uses_hidden
    v1 = ReadoutSet.from_dict({k: v for k, v in blocks_readouts(1, 2, BLOCKS_V1).to_dict().items()})
    assert "blocks" not in blocks_readouts(1, 2, BLOCKS_V1).to_dict()  # old profiles stay byte for byte
    assert v1.blocks == BLOCKS_V1 and not v1.uses_hidden
    with pytest.raises(ValueError, match="expected"):
        Readout(1, 2, SHAPE, (0.0,) * 10, 0.0, ALL)
    with pytest.raises(ValueError, match="blocks"):
        Readout(1, 2, SHAPE, (0.0,) * 10, 0.0, ("mass", "wrong"))


# ---------------------------------------------------------------- the pass records the hidden states


@pytest.mark.parametrize("arch", ARCHS)
def test_recorded_similarity_equals_the_models_hidden_states(arch: str) -> None:
    """Layer l's recorded similarity is ``token_similarity`` of the hidden state entering layer l."""
    comp = GemFilterCompressor(build_model(arch), build_tokenizer(), filter_layer=2)
    (prompt,) = build_prompts(comp.plan, [(DOCS, QUERY)])
    rows = query_positions(prompt.length, prompt.query_start, "question")
    (item,) = comp.plan.model.run([(prompt.input_ids, rows)], 2, attention=True, hidden=True)
    with torch.inference_mode():
        out = build_model(arch)(input_ids=prompt.input_ids[None], output_hidden_states=True, use_cache=False)
    assert item.similarity is not None and item.similarity.shape == (3, prompt.length)
    for layer in range(3):
        expected = token_similarity(out.hidden_states[layer][0].float(), rows)
        torch.testing.assert_close(item.similarity[layer], expected, rtol=1e-4, atol=1e-5)
    (plain,) = comp.plan.model.run([(prompt.input_ids, rows)], 2, attention=True)
    assert plain.similarity is None
    batch = comp.plan.model.run([(prompt.input_ids, rows), (prompt.input_ids[:-3], rows - 3)], 2, True, True)
    torch.testing.assert_close(batch[0].similarity, item.similarity, rtol=1e-4, atol=1e-5)
    assert batch[1].similarity is not None and batch[1].similarity.shape == (3, prompt.length - 3)


def test_token_similarity_ignores_scale_and_finds_the_rows() -> None:
    g = torch.Generator().manual_seed(0)
    states = torch.randn(20, 16, generator=g)
    rows = torch.tensor([17, 18, 19])
    states[4] = states[rows].mean(0) * 50  # a token like the question's, with a huge norm
    sims = token_similarity(states, rows)
    assert sims.shape == (20,) and float(sims.abs().max()) <= 1.0 + 1e-6
    assert int(sims[:17].argmax()) == 4
    torch.testing.assert_close(token_similarity(states * 3.0, rows), sims)


# ---------------------------------------------------------------- the pipeline with such a readout


def blocks_compressor(arch: str, **options: Any) -> GemFilterCompressor:
    model = build_model(arch)
    heads = model.config.num_attention_heads
    sets = blocks_readouts(2, heads)
    profile = Profile("tiny", fingerprint(model.config), {"filter_layer": 2}, readout=sets.to_dict())
    return GemFilterCompressor(model, build_tokenizer(), profile=profile, **options)


@pytest.mark.parametrize("arch", ["llama", "phi3", "gemma3"])
def test_a_readout_over_every_block_keeps_what_its_logits_rank_first(arch: str) -> None:
    comp = blocks_compressor(arch)
    assert comp.scorer.hidden  # type: ignore[attr-defined]
    res = comp.compress(DOCS, QUERY, top_k=40)
    (prompt,) = build_prompts(comp.plan, [(DOCS, QUERY)])
    units = prompt_units(prompt, "sentence", 40)
    rows = query_positions(prompt.length, prompt.query_start, "question")
    (item,) = comp.plan.model.run([(prompt.input_ids, rows)], 2, attention=True, hidden=True)
    assert item.attention is not None and item.similarity is not None
    positions = prompt.context_positions()
    x, _ = unit_features(
        item.attention[:, :, positions],
        units.units,
        torch.tensor(units.documents),
        similarity=item.similarity[:, positions],
        blocks=ALL,
    )
    logits = comp.readouts.variants["attention"].logits(x)  # type: ignore[union-attr]

    def greedy(left: int) -> torch.Tensor:
        kept: list[int] = []
        for u in torch.argsort(logits, descending=True, stable=True).tolist():
            a, b = units.units[u]
            if b - a <= left:
                kept += list(range(a, b))
                left -= b - a
        return torch.tensor(sorted(kept), dtype=torch.long)

    # within the budget less the separators between the documents kept
    kept = fit_joins(greedy, 40, units.doc_ends, units.join).tolist()
    assert res.kept_token_indices == kept
    batched = comp.compress_batch([(DOCS, QUERY), (DOCS[:2], "Who left?")], top_k=40)
    assert batched[0].kept_token_indices == res.kept_token_indices


def test_a_readout_over_every_block_scores_long_prompts_in_windows() -> None:
    comp = blocks_compressor("llama", window=160)
    docs = DOCS * 3
    res = comp.compress(docs, QUERY, top_k=50)
    assert 0 < res.compressed_tokens <= 50 and len(res.documents) == len(docs)


# ---------------------------------------------------------------- the int8 pass


def test_quantize_int8_replaces_the_linear_layers_but_the_head() -> None:
    model = copy.deepcopy(build_model("llama"))
    quantize_int8(model)
    linear = [m for m in model.modules() if type(m) is torch.nn.Linear]
    assert linear == [model.get_output_embeddings()]  # only the head stays float
    assert any("quantized" in type(m).__module__ for m in model.modules())
    assert model.gemfilter_quantized == "int8"


def test_the_int8_pass_keeps_nearly_what_the_float_pass_keeps() -> None:
    float_comp = GemFilterCompressor(build_model("qwen2"), build_tokenizer(), filter_layer=2, granularity="token")
    int8 = quantize_int8(copy.deepcopy(build_model("qwen2")))
    int8_comp = GemFilterCompressor(int8, build_tokenizer(), filter_layer=2, granularity="token")
    a = set(float_comp.compress(DOCS, QUERY, top_k=60).kept_token_indices)
    b = set(int8_comp.compress(DOCS, QUERY, top_k=60).kept_token_indices)
    assert len(a & b) / 60 >= 0.7


def test_load_model_refuses_an_unknown_quantize() -> None:
    with pytest.raises(ValueError, match="quantize"):
        load_model("/nonexistent", quantize="int4")


# ---------------------------------------------------------------- embedding vectors by content hash


def test_embedder_embeds_each_text_once_and_bounds_its_cache() -> None:
    from gemfilter_rag.embeddings import Embedder

    calls: list[list[str]] = []

    def embed(texts: list[str]) -> list[list[float]]:
        calls.append(list(texts))
        return [[float(len(t)), float(t.count("a")) + 1.0] for t in texts]

    emb = Embedder(embed, name="toy", cache_size=3)
    first = emb.embed(["aa", "b", "aa"])
    assert calls == [["aa", "b"]] and first.shape == (3, 2) and first[0].tolist() == first[2].tolist()
    again = emb.embed(["b", "aa", "ccc"])
    assert calls[-1] == ["ccc"] and again[1].tolist() == first[0].tolist() and emb.embedded == 3
    emb.embed(["dddd"])  # the cache holds 3: "b" is now the oldest and goes
    emb.embed(["b"])
    assert calls[-1] == ["b"]
    plain = Embedder(embed, cache_size=0)
    plain.embed(["aa"])
    plain.embed(["aa"])
    assert calls[-2:] == [["aa"], ["aa"]]
    assert emb.embed([]).shape[0] == 0
    with pytest.raises(ValueError, match="cache_size"):
        Embedder(embed, cache_size=-1)
    sims = emb.similarities("aa", ["aa", "b"])
    assert sims.shape == (2,) and float(sims[0]) == pytest.approx(1.0)


def test_sentence_spans_split_a_text_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import gemfilter_rag.sentences as sentences

    calls: list[str] = []
    real = sentences._split

    def counting(text: str) -> list[tuple[int, int]]:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(sentences, "_split", counting)
    sentences._cached_spans.cache_clear()
    text = "One sentence here. Another one there! A third?"
    first = sentences.sentence_spans(text)
    first.append((0, 0))  # the caller's list is its own
    again = sentences.sentence_spans(text)
    assert calls == [text] and again == first[:-1] and again[-1][1] == len(text)


# ---------------------------------------------------------------- the question's content words in the text


def test_overlap_features_weigh_rare_words_and_cover_documents() -> None:
    from gemfilter_rag.lexical import overlap_features

    texts = ["Paris is the capital.", "It has many museums.", "Berlin is a city.", "Paris again."]
    docs = [0, 0, 1, 2]
    got = overlap_features("Which museums are in Paris?", texts, docs)
    assert got.shape == (4, 2) and float(got.min()) >= 0.0 and float(got.max()) <= 1.0
    # "museums" is in one document of three, "paris" in two: the rarer word weighs more
    assert got[1, 0] > got[0, 0] > 0.0 and got[2, 0] == 0.0
    assert got[0, 1] == got[1, 1] == pytest.approx(1.0)  # document 0 holds both words
    assert got[3, 1] == pytest.approx(float(got[3, 0]))  # a one-unit document covers what its unit does
    assert overlap_features("what is it?", texts, docs).abs().sum() == 0  # no content words
    assert overlap_features("Paris?", [], []).shape == (0, 2)


def test_the_overlap_block_is_z_scores_then_shares() -> None:
    attention, similarity = sample()
    share = torch.tensor([[0.0, 0.5], [1.0, 0.5], [0.0, 0.5], [0.5, 1.0], [0.5, 1.0]])
    x, _ = unit_features(attention, UNITS, DOCS_OF, blocks=("mass", "overlap"), overlap=share)
    assert x.shape == (5, 6 + 4 + 2)
    torch.testing.assert_close(x[:, 8:10], share)  # the raw shares
    z = x[:, 6:8]
    torch.testing.assert_close(z.mean(0), torch.zeros(2), atol=1e-6, rtol=0)
    assert block_columns(("overlap",), 3, 2) == 4
    with pytest.raises(ValueError, match="overlap"):
        unit_features(attention, UNITS, DOCS_OF, blocks=("mass", "overlap"))


def test_an_int8_model_runs_each_prompt_alone_so_a_batch_equals_single_calls() -> None:
    int8 = quantize_int8(copy.deepcopy(build_model("llama")))
    comp = GemFilterCompressor(int8, build_tokenizer(), filter_layer=2)
    items = [(DOCS, QUERY), (DOCS[:2], "Who left?"), (DOCS[1:], "When were startups cheap?")]
    batched = comp.compress_batch(items, top_k=30)
    single = [comp.compress(d, q, top_k=30) for d, q in items]
    assert [b.kept_token_indices for b in batched] == [s.kept_token_indices for s in single]
    assert [b.documents[0].score_share for b in batched] == [s.documents[0].score_share for s in single]
