"""The readout's lexical block and the copy-head block (``key_mass``): each against a computation written out
here, the recorded key rows' attention against eager attention, and the pipeline with a readout that reads them."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tinymodels import ARCHS, TRAINING_TEXT, build_model, build_tokenizer

from gemfilter_rag import GemFilterCompressor
from gemfilter_rag.evidence import Evidence
from gemfilter_rag.features import (
    ALL_BLOCKS,
    BLOCKS_V1,
    EPS,
    KEY_BLOCKS,
    LEXICAL,
    SHAPE,
    TEXT_BLOCKS,
    block_columns,
    block_features,
    derived_block,
    raw_blocks,
    slice_layers,
    standardise,
    unit_features,
)
from gemfilter_rag.lexical import match_features, term_spans
from gemfilter_rag.pipeline import build_prompts, key_rows
from gemfilter_rag.profiles import Profile, fingerprint
from gemfilter_rag.readout import Readout, ReadoutSet, variant_extras
from gemfilter_rag.scorers import ReadoutScorer, records_key_attention
from gemfilter_rag.scoring import query_positions
from gemfilter_rag.selection import fit_joins
from gemfilter_rag.units import prompt_units, unit_text

DOCS = [p.replace("\n", " ") for p in TRAINING_TEXT.split("\n\n")[:4]]
QUERY = "What does Cambridge tell you in 2005?"  # rare terms: "Cambridge", "2005"
PLAIN = "What does it tell you?"  # no rare terms
UNITS = [(0, 5), (5, 6), (6, 14), (14, 22), (22, 30)]
DOCS_OF = torch.tensor([0, 0, 0, 1, 1])
NEW = (*BLOCKS_V1, "max", *KEY_BLOCKS, *TEXT_BLOCKS)


def sample(layers: int = 3, heads: int = 2, n: int = 30, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    attention = torch.rand(layers, heads, n, generator=g) / n  # (L, H, N)
    key = torch.rand(layers, heads, n, generator=g) / n  # (L, H, N)
    lexical = torch.tensor([[0, 0, 0.25, 0], [1, 2, 1, 1], [0, 0, 0.5, 0], [1, 1, 1, 0], [0, 0, 0, 0]])  # (U, F)
    return attention, key, lexical


# ---------------------------------------------------------------- blocks against loops written out here


def test_key_mass_and_lexical_blocks_against_loops() -> None:
    attention, key, lexical = sample()
    raw = raw_blocks(attention, None, UNITS, hidden=False, key_attention=key, lexical=lexical)
    channels = key.reshape(-1, key.shape[-1])  # (C, N)
    for u, (a, b) in enumerate(UNITS):
        torch.testing.assert_close(raw["key_mass"][u], torch.log(channels[:, a:b].sum(1) + EPS))
    assert torch.equal(raw["lexical"], lexical.float())
    plain = raw_blocks(attention, None, UNITS, hidden=False, key_attention=attention)
    torch.testing.assert_close(plain["key_mass"], plain["mass"])  # no rare terms: the key rows are the rows
    with pytest.raises(ValueError, match="lexical"):
        raw_blocks(attention, None, UNITS, hidden=False, lexical=lexical[:, :2])
    bare = raw_blocks(attention, None, UNITS, hidden=False)
    for name, given in (("key_mass", "key_attention"), ("lexical", "lexical")):
        with pytest.raises(ValueError, match=given):
            derived_block(name, bare, UNITS, DOCS_OF)


def test_the_lexical_block_stays_raw_and_key_mass_is_standardised() -> None:
    attention, key, lexical = sample(layers=2, heads=3)
    x, names = unit_features(attention, UNITS, DOCS_OF, blocks=NEW, key_attention=key, lexical=lexical)
    assert names == SHAPE and x.shape == (5, block_columns(NEW, 2, 3) + 2)
    assert block_columns(NEW, 2, 3) == 5 * 6 + len(LEXICAL) and block_columns(TEXT_BLOCKS, 9, 9) == len(LEXICAL)
    raw = raw_blocks(attention, None, UNITS, hidden=False, key_attention=key, lexical=lexical)
    torch.testing.assert_close(x[:, 24:30], standardise(raw["key_mass"]))
    assert torch.equal(x[:, 30:34], lexical.float())  # 0/1 matches as they are: no z-score
    again, _ = block_features(raw, NEW, UNITS, 30, DOCS_OF)
    torch.testing.assert_close(again, x)


def test_slice_layers_keeps_the_lexical_block_whole() -> None:
    attention, key, lexical = sample(layers=4, heads=2)
    full = raw_blocks(attention, None, UNITS, hidden=False, key_attention=key, lexical=lexical)
    fewer = raw_blocks(attention[:2], None, UNITS, hidden=False, key_attention=key[:2], lexical=lexical)
    sliced = slice_layers(full, 2, 2)
    assert sliced.keys() == fewer.keys()
    for k in fewer:
        torch.testing.assert_close(sliced[k], fewer[k])


def test_a_readout_with_the_new_blocks_round_trips_and_validates() -> None:
    sets = new_readouts(2, 4)
    back = ReadoutSet.from_dict(sets.to_dict())
    assert back.to_dict() == sets.to_dict() and back.blocks == NEW
    assert back.uses_key_attention and not back.uses_hidden
    assert back.variants["attention"].uses_lexical and back.variants["attention"].uses_key_attention
    v1 = new_readouts(1, 2, BLOCKS_V1)
    assert not v1.uses_key_attention and not v1.variants["attention"].uses_lexical
    assert set(ALL_BLOCKS) >= set(NEW)
    with pytest.raises(ValueError, match="expected"):
        Readout(1, 2, SHAPE, (0.0,) * (block_columns(NEW, 2, 2) + 1), 0.0, NEW)
    with pytest.raises(ValueError, match="blocks"):
        Readout(0, 1, SHAPE, (0.0,) * 8, 0.0, ("lexical", "lexical"))


# ---------------------------------------------------------------- the key rows and what the pass records


def test_key_rows_are_the_question_tokens_of_its_rare_terms() -> None:
    comp = GemFilterCompressor(build_model("llama"), build_tokenizer(), filter_layer=2)
    (prompt,) = build_prompts(comp.plan, [(DOCS, QUERY)])
    rows = key_rows(comp.plan, prompt, QUERY)
    assert rows.numel() and bool((rows >= prompt.query_start).all()) and bool((rows < prompt.length).all())
    text = comp.tokenizer.decode(prompt.input_ids[rows])
    assert "Cambridge" in text.replace(" ", "") and "2005" in text
    assert "What" not in text and "tell" not in text  # the other question tokens are not key rows
    assert [QUERY[a:b] for a, b in term_spans(QUERY)] == ["Cambridge", "2005"]
    (plain,) = build_prompts(comp.plan, [(DOCS, PLAIN)])
    assert key_rows(comp.plan, plain, PLAIN).numel() == 0


@pytest.mark.parametrize("arch", [*ARCHS, "mistral_sliding"])
def test_recorded_key_attention_equals_eager_attention(arch: str) -> None:
    """Every layer 0..r: the key rows' mean softmax attention equals the eager implementation's; an item
    without key rows records the rows' attention there."""
    comp = GemFilterCompressor(build_model(arch), build_tokenizer(), filter_layer=2)
    (prompt,) = build_prompts(comp.plan, [(DOCS, QUERY)])
    rows = query_positions(prompt.length, prompt.query_start, "question")
    keys = key_rows(comp.plan, prompt, QUERY)
    (item,) = comp.plan.model.run([(prompt.input_ids, rows)], 2, attention=True, key_rows=[keys])
    eager = build_model(arch, "eager")
    with torch.inference_mode():
        out = eager(input_ids=prompt.input_ids[None], output_attentions=True, use_cache=False)
    assert item.key_attention is not None and item.key_attention.shape == (3, 4, prompt.length)
    for layer in range(3):
        expected = out.attentions[layer][0, :, keys, :].mean(dim=1)  # (H, T)
        torch.testing.assert_close(item.key_attention[layer], expected.float(), rtol=1e-4, atol=1e-5)
    none = torch.empty(0, dtype=torch.long)
    batch = comp.plan.model.run(
        [(prompt.input_ids, rows), (prompt.input_ids[:-3], rows[:-3])], 2, attention=True, key_rows=[keys, none]
    )
    torch.testing.assert_close(batch[0].key_attention, item.key_attention, rtol=1e-4, atol=1e-5)
    assert batch[1].key_attention is not None and torch.equal(batch[1].key_attention, batch[1].attention)
    (plain,) = comp.plan.model.run([(prompt.input_ids, rows)], 2, attention=True)
    assert plain.key_attention is None
    with pytest.raises(ValueError, match="key_rows"):
        comp.plan.model.run([(prompt.input_ids, rows)], 2, attention=False, key_rows=[keys])


# ---------------------------------------------------------------- the pipeline with such a readout


def new_readouts(layer: int, heads: int, blocks: tuple[str, ...] = NEW, seed: int = 0) -> ReadoutSet:
    g = torch.Generator().manual_seed(seed)
    variants = {}
    for name in ("attention", "attention+retriever"):
        extras = variant_extras(name)
        w = torch.randn(block_columns(blocks, layer + 1, heads) + len(extras), generator=g, dtype=torch.float64)
        if "lexical" in blocks:  # make the lexical columns count, so that a wrong match would show
            start = block_columns(blocks[: blocks.index("lexical")], layer + 1, heads)
            w[start : start + len(LEXICAL)] = 3.0
        variants[name] = Readout(layer, heads, extras, tuple(w.tolist()), -0.2, blocks)
    return ReadoutSet(layer, heads, variants, {"test": True})


def new_compressor(arch: str, **options: Any) -> GemFilterCompressor:
    model = build_model(arch)
    sets = new_readouts(2, model.config.num_attention_heads)
    profile = Profile("tiny", fingerprint(model.config), {"filter_layer": 2}, readout=sets.to_dict())
    return GemFilterCompressor(model, build_tokenizer(), profile=profile, **options)


def expected_kept(comp: GemFilterCompressor, query: str, budget: int) -> list[int]:
    """The selection recomputed here: features from a pass with the key rows, texts matched, greedy fill."""
    (prompt,) = build_prompts(comp.plan, [(DOCS, query)])
    units = prompt_units(prompt, "sentence", budget)
    rows = query_positions(prompt.length, prompt.query_start, "question")
    keys = key_rows(comp.plan, prompt, query)
    (item,) = comp.plan.model.run([(prompt.input_ids, rows)], 2, attention=True, key_rows=[keys])
    assert item.attention is not None and item.key_attention is not None
    positions = prompt.context_positions()
    starts = [0]
    for d in prompt.documents:
        starts.append(starts[-1] + len(d.ids))
    texts = [unit_text(prompt, d, u, starts[d]) for u, d in zip(units.units, units.documents, strict=True)]
    x, _ = unit_features(
        item.attention[:, :, positions],
        units.units,
        torch.tensor(units.documents),
        blocks=NEW,
        key_attention=item.key_attention[:, :, positions],
        lexical=match_features(query, texts),
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
    kept = fit_joins(greedy, budget, units.doc_ends, units.join).tolist()
    return kept


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_a_readout_with_the_new_blocks_keeps_what_its_logits_rank_first(arch: str) -> None:
    comp = new_compressor(arch)
    assert isinstance(comp.scorer, ReadoutScorer) and records_key_attention(comp.scorer)
    for query in (QUERY, PLAIN):
        res = comp.compress(DOCS, query, top_k=40)
        assert res.kept_token_indices == expected_kept(comp, query, 40)
    batched = comp.compress_batch([(DOCS, QUERY), (DOCS[:2], "Who left?"), (DOCS, PLAIN)], top_k=40)
    assert batched[0].kept_token_indices == comp.compress(DOCS, QUERY, top_k=40).kept_token_indices
    assert batched[2].kept_token_indices == comp.compress(DOCS, PLAIN, top_k=40).kept_token_indices


def test_the_lexical_block_keeps_the_unit_that_holds_the_term() -> None:
    comp = new_compressor("llama")
    res = comp.compress(DOCS, "What happened to startups in 2005?", top_k=30)
    assert "2005" in res.text  # the lexical weights (3.0 each) outweigh the random attention weights here


def test_a_readout_with_the_new_blocks_scores_long_prompts_in_windows() -> None:
    comp = new_compressor("llama", window=160)
    docs = DOCS * 3
    res = comp.compress(docs, QUERY, top_k=50)
    assert 0 < res.compressed_tokens <= 50 and len(res.documents) == len(docs)


def test_evidence_matches_unit_texts_once() -> None:
    comp = GemFilterCompressor(build_model("llama"), build_tokenizer(), filter_layer=2)
    (prompt,) = build_prompts(comp.plan, [(DOCS, QUERY)])
    units = prompt_units(prompt, "sentence", 64)
    evidence = Evidence(prompt, QUERY, None, None)
    got = evidence.lexical(units.units, units.documents)
    starts = [0]
    for d in prompt.documents:
        starts.append(starts[-1] + len(d.ids))
    texts = [unit_text(prompt, d, u, starts[d]) for u, d in zip(units.units, units.documents, strict=True)]
    assert torch.equal(got, match_features(QUERY, texts)) and float(got[:, 0].sum()) >= 1
    assert torch.equal(evidence.lexical(units.units[:2], units.documents[:2]), got[:2])  # cached rows
    assert evidence.lexical([], []).shape == (0, len(LEXICAL))
