"""The learned readout: its features against independent computations, its model, and the pipeline with it."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from tinymodels import ARCHS, TRAINING_TEXT, build_model, build_tokenizer

from gemfilter_rag import GemFilterCompressor
from gemfilter_rag.features import (
    EMBEDDING,
    RETRIEVER,
    SHAPE,
    attention_features,
    document_mass,
    relative_scores,
    select_layers,
    standardise,
    unit_features,
)
from gemfilter_rag.pipeline import build_prompts
from gemfilter_rag.profiles import Profile, fingerprint
from gemfilter_rag.readout import Readout, ReadoutSet, variant_extras, variant_name
from gemfilter_rag.scoring import query_positions
from gemfilter_rag.selection import fit_joins

HEADS = 4
LAYER = 2
DOCS = [p.replace("\n", " ") for p in TRAINING_TEXT.split("\n\n")[:4]]
QUERY = "What does Cambridge tell you?"


def tiny_readouts(layer: int = LAYER, heads: int = HEADS, seed: int = 0) -> ReadoutSet:
    """A readout of every variant with random weights (the pipeline must apply whatever it is given)."""
    g = torch.Generator().manual_seed(seed)
    variants = {}
    for name in ("attention", "attention+retriever", "attention+embedding", "attention+embedding+retriever"):
        extras = variant_extras(name)
        w = torch.randn(3 * (layer + 1) * heads + len(extras), generator=g, dtype=torch.float64)
        variants[name] = Readout(layer, heads, extras, tuple(w.tolist()), 0.1)
    return ReadoutSet(layer, heads, variants, {"test": True})


def readout_compressor(arch: str, readouts: ReadoutSet | None = None, **options: Any) -> GemFilterCompressor:
    model = build_model(arch)
    sets = readouts or tiny_readouts()
    profile = Profile("tiny", fingerprint(model.config), {"filter_layer": sets.layer}, readout=sets.to_dict())
    return GemFilterCompressor(model, build_tokenizer(), profile=profile, **options)


# ---------------------------------------------------------------- features, against manual values


def test_attention_features_against_manual_sums() -> None:
    attention = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.0, 0.5, 0.25, 0.25]]])  # (L=1, H=2, N=4)
    units = [(0, 1), (1, 4)]
    got = attention_features(attention, units)  # (U, 2C): [mass h0, mass h1, mean h0, mean h1]
    expected = torch.tensor(
        [
            [math.log(0.1 + 1e-8), math.log(0.0 + 1e-8), math.log(0.1 + 1e-8), math.log(0.0 + 1e-8)],
            [math.log(0.9 + 1e-8), math.log(1.0 + 1e-8), math.log(0.3 + 1e-8), math.log(1 / 3 + 1e-8)],
        ]
    )
    torch.testing.assert_close(got, expected.float(), rtol=1e-5, atol=1e-6)


def test_select_layers_equals_features_of_fewer_layers() -> None:
    g = torch.Generator().manual_seed(0)
    attention = torch.rand(5, 3, 40, generator=g)  # (L, H, N)
    units = [(0, 7), (7, 20), (20, 33), (33, 40)]
    full = attention_features(attention, units)
    torch.testing.assert_close(select_layers(full, 3, 2), attention_features(attention[:2], units))
    with pytest.raises(ValueError, match="layers"):
        select_layers(full, 3, 6)


def test_standardise_is_a_per_column_z_score_and_zero_for_constants() -> None:
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    z = standardise(x)
    torch.testing.assert_close(z[:, 0], torch.tensor([-1.2247449, 0.0, 1.2247449]))
    assert z[:, 1].tolist() == [0.0, 0.0, 0.0]
    assert standardise(x[:1]).tolist() == [[0.0, 0.0]]


def test_relative_scores_never_amplify_small_differences() -> None:
    near = relative_scores([1.00, 0.99, 0.98, 0.97, 0.96, 0.95])
    assert near[0] == 0.0 and float(near.min()) == pytest.approx(-0.05)  # z-scores would span about 3.4
    torch.testing.assert_close(relative_scores([10.0, 5.0]), relative_scores([1.0, 0.5]))  # unit-free
    assert relative_scores([-0.3, -0.5]).tolist() == pytest.approx([0.0, -0.4])  # negated distances
    assert relative_scores([2.0, 2.0]).tolist() == [0.0, 0.0]
    assert bool((relative_scores([3.0, -7.0, 1.0]) >= -2.0).all())


def test_unit_features_columns_and_names() -> None:
    g = torch.Generator().manual_seed(1)
    attention = torch.rand(2, 2, 12, generator=g)
    units = [(0, 4), (4, 8), (8, 12)]
    docs = torch.tensor([0, 0, 1])
    x, names = unit_features(attention, units, docs)
    assert names == SHAPE and x.shape == (3, 3 * 2 * 2 + 2)  # unit block 2C, document block C, shape
    x, names = unit_features(
        attention,
        units,
        docs,
        retriever=relative_scores([0.9, 0.3]),
        sim_unit=torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64),
        sim_doc=torch.tensor([0.5, 0.6], dtype=torch.float64),
    )
    assert names == SHAPE + RETRIEVER + EMBEDDING and x.shape == (3, 12 + 2 + 1 + 2)
    torch.testing.assert_close(x[:, 14], torch.tensor([0.0, 0.0, -2 / 3]))  # the document's relative score
    torch.testing.assert_close(x[:, 12], torch.log(torch.tensor([4.0, 4.0, 4.0])))  # log length
    torch.testing.assert_close(x[:, 13], torch.tensor([2 / 12, 6 / 12, 10 / 12]))  # position of the middle
    assert x[0, 8:12].tolist() == x[1, 8:12].tolist()  # units of one document share its document block


def test_document_mass_sums_the_units_of_each_document() -> None:
    attention = torch.tensor([[[0.1, 0.2, 0.3, 0.4]]])  # (L=1, H=1, N=4)
    units = [(0, 1), (1, 2), (2, 4)]
    raw = attention_features(attention, units)
    got = document_mass(raw, torch.tensor([0, 0, 1]))  # documents: units {0, 1} and {2}
    expected = torch.log(torch.tensor([[0.3 + 2e-8], [0.3 + 2e-8], [0.7 + 1e-8]]))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the readout model


def test_readout_logits_and_validation() -> None:
    r = Readout(0, 1, SHAPE, (1.0, 2.0, 3.0, 4.0, 5.0), -1.0)
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0, 1.0]])
    assert r.logits(x).tolist() == [0.0, 13.0]
    with pytest.raises(ValueError, match="weights"):
        Readout(1, 4, SHAPE, (1.0,), 0.0)
    with pytest.raises(ValueError, match="columns"):
        r.logits(torch.zeros(2, 3))


def test_readout_set_round_trip_and_choice() -> None:
    sets = tiny_readouts()
    again = ReadoutSet.from_dict(sets.to_dict())
    assert again.layer == sets.layer and set(again.variants) == set(sets.variants)
    for name, r in sets.variants.items():
        assert again.variants[name].weights == pytest.approx(r.weights, abs=1e-6)
    assert sets.choose(retriever=True, embeddings=True).extras == SHAPE + RETRIEVER + EMBEDDING
    assert sets.choose(retriever=True, embeddings=False).extras == SHAPE + RETRIEVER
    only = ReadoutSet(LAYER, HEADS, {"attention": sets.variants["attention"]})
    assert only.choose(retriever=True, embeddings=True).extras == SHAPE  # falls back to what exists
    assert variant_name(True, True) == "attention+embedding+retriever"
    with pytest.raises(ValueError, match="variant"):
        variant_extras("embedding")
    bad = sets.to_dict()
    bad["variants"]["attention"]["extras"] = list(SHAPE + RETRIEVER)
    with pytest.raises(ValueError, match="extras"):
        ReadoutSet.from_dict(bad)


# ---------------------------------------------------------------- the pass records what the model computes


@pytest.mark.parametrize("arch", [*ARCHS, "mistral_sliding"])
def test_recorded_attention_equals_eager_attention(arch: str) -> None:
    """Every layer 0..r: the question rows' mean softmax attention equals the eager implementation's."""
    tok = build_tokenizer()
    comp = GemFilterCompressor(build_model(arch), tok, filter_layer=LAYER)
    (prompt,) = build_prompts(comp.plan, [(DOCS, QUERY)])
    rows = query_positions(prompt.length, prompt.query_start, "question")
    (item,) = comp.plan.model.run([(prompt.input_ids, rows)], comp.filter_layer, attention=True)
    eager = build_model(arch, "eager")
    with torch.inference_mode():
        out = eager(input_ids=prompt.input_ids[None], output_attentions=True, use_cache=False)
    assert item.attention is not None and item.attention.shape == (LAYER + 1, 4, prompt.length)
    for layer in range(LAYER + 1):
        expected = out.attentions[layer][0, :, rows, :].mean(dim=1)  # (H, T)
        torch.testing.assert_close(item.attention[layer], expected.float(), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- the pipeline with a readout


def test_readout_is_used_only_for_its_layer() -> None:
    comp = readout_compressor("llama")
    assert comp.readouts is not None and comp.filter_layer == LAYER
    assert comp.with_options(filter_layer=1).readouts is None  # another layer: single-layer scoring
    assert comp.with_options(scorer="layer").readouts is None
    with pytest.raises(ValueError, match="scorer"):
        comp.with_options(filter_layer=1, scorer="readout")
    with pytest.raises(ValueError, match="train-readout"):
        GemFilterCompressor(build_model("llama"), build_tokenizer(), scorer="readout")


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_readout_keeps_the_units_its_logits_rank_first(arch: str) -> None:
    comp = readout_compressor(arch)
    res = comp.compress(DOCS, QUERY, top_k=40)
    assert res.filter_layer == LAYER and res.compressed_tokens <= 40
    # recompute independently: features from the recorded attention, logits, greedy fill in rank order
    from gemfilter_rag.units import prompt_units

    (prompt,) = build_prompts(comp.plan, [(DOCS, QUERY)])
    units = prompt_units(prompt, "sentence", 40)
    rows = query_positions(prompt.length, prompt.query_start, "question")
    (item,) = comp.plan.model.run([(prompt.input_ids, rows)], comp.filter_layer, attention=True)
    assert item.attention is not None
    x, _ = unit_features(item.attention[:, :, prompt.context_positions()], units.units, torch.tensor(units.documents))
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


def test_readout_batch_and_generate_equal_one_by_one() -> None:
    comp = readout_compressor("qwen2")
    items = [(DOCS, QUERY), (DOCS[:2], "Who left?"), (DOCS[2:], "When were startups cheap?")]
    batched = comp.compress_batch(items, top_k=30)
    single = [comp.compress(d, q, top_k=30) for d, q in items]
    assert [b.kept_token_indices for b in batched] == [s.kept_token_indices for s in single]
    gen = comp.generate(DOCS, QUERY, max_new_tokens=4, top_k=30)
    assert gen.compression.kept_token_indices == single[0].kept_token_indices


def fake_embeddings(texts: list[str]) -> list[list[float]]:
    """A deterministic bag-of-letters embedding: similar texts get similar vectors."""
    return [[t.lower().count(c) + 0.01 for c in "aeiou cmbrdg"] for t in texts]


def test_retriever_and_embedding_variants_are_chosen_by_what_is_given() -> None:
    comp = readout_compressor("llama", embeddings=fake_embeddings)
    scores = [0.2, 0.9, 0.4, 0.3]
    both = comp.compress(DOCS, QUERY, top_k=30, document_scores=scores)
    emb_only = comp.compress(DOCS, QUERY, top_k=30)
    plain = comp.with_options(prior="none").compress(DOCS, QUERY, top_k=30, document_scores=scores)
    assert plain.kept_token_indices == emb_only.kept_token_indices  # prior="none": the scores are ignored
    assert both.compressed_tokens <= 30 and emb_only.compressed_tokens <= 30
    # the retriever variant's weight on its feature decides: with a huge weight, the best document wins
    sets = tiny_readouts()
    r = sets.variants["attention+embedding+retriever"]
    heavy = list(r.weights)
    heavy[3 * (LAYER + 1) * HEADS + 2] = 1e4  # attention blocks, SHAPE, then RETRIEVER
    sets.variants["attention+embedding+retriever"] = Readout(r.layer, r.heads, r.extras, tuple(heavy), r.bias)
    ruled = readout_compressor("llama", sets, embeddings=fake_embeddings)
    res = ruled.compress(DOCS, QUERY, top_k=30, document_scores=scores)
    from gemfilter_rag.selection import unit_scores
    from gemfilter_rag.units import prompt_units

    (prompt,) = build_prompts(ruled.plan, [(DOCS, QUERY)])
    units = prompt_units(prompt, "sentence", 30)
    values = unit_scores(torch.tensor(res.details["scores"]), units.units)  # type: ignore[index]
    favourite = [v for v, d in zip(values.tolist(), units.documents, strict=True) if d == 1]
    others = [v for v, d in zip(values.tolist(), units.documents, strict=True) if d != 1]
    assert min(favourite) > max(others)  # every unit of the retriever's favourite ranks first
    assert res.documents[1].kept_tokens == max(d.kept_tokens for d in res.documents)


def test_near_equal_retriever_scores_change_little() -> None:
    """Near-equal retriever scores are near-equal features: the selection is that of equal scores."""
    comp = readout_compressor("llama")
    equal = comp.compress(DOCS, QUERY, top_k=30, document_scores=[1.0, 1.0, 1.0, 1.0])
    near = comp.compress(DOCS, QUERY, top_k=30, document_scores=[1.0, 0.9999, 0.9998, 0.9997])
    assert near.kept_token_indices == equal.kept_token_indices


def test_readout_scores_long_prompts_in_windows(tiny_model_factory: Callable[..., Any]) -> None:
    from tinymodels import SEED, model_config
    from transformers import AutoModelForCausalLM

    tok = build_tokenizer()
    cfg = model_config("llama", len(tok))
    cfg.max_position_embeddings = 160
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").float().eval()
    sets = tiny_readouts()
    profile = Profile("tiny", fingerprint(model.config), {"filter_layer": LAYER}, readout=sets.to_dict())
    comp = GemFilterCompressor(model, tok, profile=profile)
    docs = [TRAINING_TEXT[:500], TRAINING_TEXT[500:1000]]
    (prompt,) = build_prompts(comp.plan, [(docs, QUERY)])
    assert prompt.length > 160 and comp.readouts is not None
    res = comp.compress(docs, QUERY, top_k=30)
    assert 0 < res.compressed_tokens <= 30 and res.filter_layer == LAYER
    for d, doc in zip(res.documents, docs, strict=True):
        assert all(doc[a:b] in doc for a, b in d.spans)


def test_siblings_share_the_model_and_keep_the_profile() -> None:
    comp = readout_compressor("llama")
    strict = comp.with_options(scorer="readout", top_k=50)
    assert strict.model is comp.model and strict.readouts == comp.readouts and strict.config.top_k == 50
    embedded = comp.with_embeddings(fake_embeddings)
    assert embedded.embedder is not None and comp.embedder is None and embedded.readouts == comp.readouts
    assert embedded.with_embeddings(None).embedder is None
    with pytest.raises(TypeError, match="embeddings"):
        comp.with_embeddings(42)
    with pytest.raises(ValueError, match="embeddings"):
        comp.with_embeddings("minilm")


def test_embeddings_no_readout_variant_reads_are_named_in_a_warning() -> None:
    """The shipped default's readout has only the attention variant: an embedding model given to it changes no
    score, and the user is told so (and where a readout that reads one is)."""
    full = tiny_readouts()
    attention_only = ReadoutSet(full.layer, full.heads, {"attention": full.variants["attention"]}, {"test": True})
    assert full.uses_embeddings and not attention_only.uses_embeddings
    plain = readout_compressor("llama", attention_only)
    with pytest.warns(UserWarning, match="embeddings: .*no variant.*smollm2-previous"):
        plain.with_embeddings(fake_embeddings)
    with pytest.warns(UserWarning, match="embeddings: "):
        readout_compressor("llama", attention_only, embeddings=fake_embeddings)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        readout_compressor("llama").with_embeddings(fake_embeddings)  # a variant reads them: no warning
        plain.with_embeddings(None)


def test_embeddings_prefilter_long_prompts_before_any_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """With an embedding model, a prompt beyond the model's positions keeps only one window's worth of its
    best units (by similarity) for the passes: fewer passes, all within the window."""
    from tinymodels import SEED, model_config
    from transformers import AutoModelForCausalLM

    from gemfilter_rag.filter_model import FilterModel

    tok = build_tokenizer()
    cfg = model_config("llama", len(tok))
    cfg.max_position_embeddings = 160
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").float().eval()
    profile = Profile("tiny", fingerprint(model.config), {"filter_layer": LAYER}, readout=tiny_readouts().to_dict())
    plain = GemFilterCompressor(model, tok, profile=profile)
    embedded = plain.with_embeddings(fake_embeddings)
    docs = [TRAINING_TEXT[:700], TRAINING_TEXT[700:1400]]
    lengths: list[int] = []
    real = FilterModel.run

    def counting(self: FilterModel, inputs: Any, exit_layer: int, attention: bool, hidden: bool = False) -> Any:
        lengths.extend(int(ids.shape[0]) for ids, _ in inputs)
        return real(self, inputs, exit_layer, attention, hidden)

    monkeypatch.setattr(FilterModel, "run", counting)
    plain.compress(docs, QUERY, top_k=30)
    without = list(lengths)
    lengths.clear()
    res = embedded.compress(docs, QUERY, top_k=30)
    assert 0 < res.compressed_tokens <= 30
    assert len(lengths) == 1 < len(without) and max(lengths) <= 160
