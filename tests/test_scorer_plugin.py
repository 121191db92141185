"""A scorer from outside the package: registered by name or passed as an object, it runs through
``compress``, the windows of a long prompt and ``generate`` with no library file changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from tinymodels import SEED, TRAINING_TEXT, build_model, build_tokenizer, model_config

from gemfilter_rag import GemFilterCompressor
from gemfilter_rag.scorers import SEPARATOR, Scorer, Scores, Target, register_scorer, registered
from gemfilter_rag.selection import spread

DOCS = [p.replace("\n", " ") for p in TRAINING_TEXT.split("\n\n")[:4]]
QUERY = "What does Cambridge tell you?"


@dataclass(frozen=True)
class LastDocumentScorer:
    """Values every unit by its document's index: the last document first, separators never."""

    layer: int = 0
    attention: bool = False
    rows: str = "last"
    fuses_retriever: bool = False
    calls: list[int] | None = None

    def score(self, record: Any, target: Target, evidence: Any) -> Scores:
        assert record.query.shape[2] == 1  # rows="last": one scoring row
        if self.calls is not None:
            self.calls.append(int(target.positions.numel()))
        values = torch.tensor(
            [0.0 if d == SEPARATOR else float(d + 1) for d in target.documents], dtype=torch.float64
        )  # (U,)
        return Scores(spread(values, target.units, int(target.positions.numel())), values)


def _short_model() -> Any:
    from transformers import AutoModelForCausalLM

    cfg = model_config("llama", len(build_tokenizer()))
    cfg.max_position_embeddings = 160
    torch.manual_seed(SEED)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").float().eval()


def test_a_registered_scorer_runs_through_compress_windows_and_generate() -> None:
    calls: list[int] = []
    register_scorer("last-document", lambda model, config, layer: LastDocumentScorer(calls=calls), replace=True)
    assert "last-document" in registered()
    comp = GemFilterCompressor(build_model("llama"), build_tokenizer(), scorer="last-document")
    assert isinstance(comp.scorer, Scorer) and comp.filter_layer == 0 and comp.readouts is None
    res = comp.compress(DOCS, QUERY, top_k=40)
    assert calls  # the toy scorer did score
    # the last document's units come first; what of the budget they leave goes to the one before it
    assert not res.documents[0].kept and not res.documents[1].kept and res.documents[3].kept
    assert res.documents[3].kept_tokens == max(d.kept_tokens for d in res.documents)
    assert res.compressed_tokens <= 40 and res.filter_layer == 0

    gen = comp.generate(DOCS, QUERY, top_k=40, max_new_tokens=3)
    assert gen.compression.kept_token_indices == res.kept_token_indices

    calls.clear()
    long = GemFilterCompressor(_short_model(), build_tokenizer(), scorer="last-document")
    docs = [TRAINING_TEXT[:500], TRAINING_TEXT[500:1000]]
    windowed = long.compress(docs, QUERY, top_k=30)
    assert len(calls) >= 2 and max(calls) < 160  # several windows, each within the model's positions
    # the knockout's survivors of the last document rank first, so it holds most of the score
    assert windowed.documents[1].kept and windowed.documents[1].score_share > windowed.documents[0].score_share
    assert windowed.compressed_tokens <= 30


def test_a_scorer_object_is_taken_as_it_is_and_a_bad_one_is_refused() -> None:
    comp = GemFilterCompressor(build_model("qwen2"), build_tokenizer(), scorer=LastDocumentScorer(layer=1))
    assert comp.filter_layer == 1
    kept = comp.compress(DOCS, QUERY, top_k=20)
    assert [d.kept for d in kept.documents] == [False, False, False, True] and kept.compressed_tokens <= 20
    with pytest.raises(TypeError, match="scorer"):
        GemFilterCompressor(build_model("qwen2"), build_tokenizer(), scorer=object())
    with pytest.raises(ValueError, match="scorer"):
        GemFilterCompressor(build_model("qwen2"), build_tokenizer(), scorer=LastDocumentScorer(layer=9))
    with pytest.raises(ValueError, match="not registered"):
        GemFilterCompressor(build_model("qwen2"), build_tokenizer(), scorer="no-such-scorer")
    with pytest.raises(ValueError, match="name"):
        register_scorer("layer", lambda model, config, layer: LastDocumentScorer())


def test_single_layer_options_under_the_readout_are_an_error_that_names_them() -> None:
    from test_readout import readout_compressor

    comp = readout_compressor("llama")
    with pytest.raises(ValueError, match="softmax"):
        comp.with_options(softmax=False)
    assert comp.with_options(scorer="layer", softmax=False).config.scoring.softmax is False
