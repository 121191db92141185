"""generate: filter pass, full model over the kept tokens, decoding; identity with plain generate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from tinymodels import fills_budget

from gemfilter_rag.generation import GenerationResult, GenerationStream, answer_input_ids
from gemfilter_rag.pipeline import build_prompts

DOCS = [
    "Cities send messages. New York tells you that you should make more money. Cambridge tells you "
    "that you should be smarter.",
    "Startups in 2005 could be started for far less money than in 1995. Servers were cheaper.",
    "When you write an essay, you find out what you think.",
]
QUERY = "What does New York tell you?"
NEW = 10


@pytest.fixture(scope="module")
def real_compressor() -> Any:
    from gemfilter_rag import GemFilterCompressor

    return GemFilterCompressor.from_pretrained()


def _plain_generate(
    compressor: Any, docs: list[str], query: str, max_new_tokens: int = NEW, **kwargs: Any
) -> list[int]:
    """Reference: the model's own generate on the full prompt, new tokens only."""
    prompt = build_prompts(compressor.plan, [(docs, query)])[0]
    ids = prompt.input_ids[None]  # (1, T)
    out = compressor.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        pad_token_id=compressor.tokenizer.pad_token_id,
        **kwargs,
    )
    return [int(t) for t in out[0, ids.shape[1] :]]


def test_full_budget_equals_plain_generate(make_compressor: Callable[..., Any], arch: str) -> None:
    comp = make_compressor(arch)
    res = comp.generate(DOCS, QUERY, max_new_tokens=NEW, top_k=10_000)
    assert isinstance(res, GenerationResult)
    expected = _plain_generate(comp, DOCS, QUERY, do_sample=False)
    assert res.token_ids == expected[: len(res.token_ids)]
    assert len(res.token_ids) == NEW or res.token_ids[-1] == comp.tokenizer.eos_token_id
    assert res.text == comp.tokenizer.decode(res.token_ids, skip_special_tokens=True)
    assert res.compression.compressed_tokens == res.compression.original_tokens
    assert res.prompt_tokens == build_prompts(comp.plan, [(DOCS, QUERY)])[0].length


def test_compressed_prompt_is_the_kept_tokens(make_compressor: Callable[..., Any], arch: str) -> None:
    comp = make_compressor(arch, granularity="token")
    res = comp.generate(DOCS, QUERY, max_new_tokens=3, top_k=12)
    assert isinstance(res, GenerationResult)
    prompt = build_prompts(comp.plan, [(DOCS, QUERY)])[0]
    kept = res.compression.kept_token_indices
    assert fills_budget(res.compression, 12) and res.compression.filter_layer == comp.filter_layer
    ids = answer_input_ids(prompt, kept)
    context = torch.cat([torch.tensor(d.ids, dtype=torch.long) for d in prompt.documents])
    # the answering prompt keeps the template around the context and the question untouched
    assert ids[: prompt.doc_offsets[0]].tolist() == prompt.input_ids[: prompt.doc_offsets[0]].tolist()
    tail = prompt.input_ids[prompt.doc_offsets[-1] + len(prompt.documents[-1].ids) :]
    assert ids[-tail.shape[0] :].tolist() == tail.tolist()
    assert res.prompt_tokens == ids.shape[0] < prompt.length
    # and every kept context token, in order, between them
    assert _is_subsequence(context[kept].tolist(), ids[prompt.doc_offsets[0] : ids.shape[0] - tail.shape[0]].tolist())
    # decoding from that prompt is plain generate on it
    out = comp.model.generate(
        input_ids=ids[None],
        attention_mask=torch.ones_like(ids[None]),
        max_new_tokens=3,
        do_sample=False,
        pad_token_id=comp.tokenizer.pad_token_id,
    )
    assert res.token_ids == out[0, ids.shape[0] :].tolist()[: len(res.token_ids)]


def _is_subsequence(small: list[int], big: list[int]) -> bool:
    it = iter(big)
    return all(any(x == y for y in it) for x in small)


def test_answer_ids_drop_empty_documents_with_their_separator(make_compressor: Callable[..., Any]) -> None:
    comp = make_compressor("llama")
    prompt = build_prompts(comp.plan, [(DOCS, QUERY)])[0]
    n0, n1 = len(prompt.documents[0].ids), len(prompt.documents[1].ids)
    everything = list(range(prompt.context_tokens))
    assert torch.equal(answer_input_ids(prompt, everything), prompt.input_ids)
    without_middle = [i for i in everything if not n0 <= i < n0 + n1]
    ids = answer_input_ids(prompt, without_middle)
    gap = prompt.doc_offsets[1] - (prompt.doc_offsets[0] + n0)  # separator length
    assert ids.shape[0] == prompt.length - n1 - gap
    reference = build_prompts(comp.plan, [([DOCS[0], DOCS[2]], QUERY)])[0].input_ids
    assert torch.equal(ids, reference)


def test_stream_yields_the_same_text(make_compressor: Callable[..., Any]) -> None:
    comp = make_compressor("qwen2")
    stream = comp.generate(DOCS, QUERY, max_new_tokens=NEW, top_k=16, stream=True)
    assert isinstance(stream, GenerationStream)
    with pytest.raises(RuntimeError, match="not finished"):
        _ = stream.result
    chunks = list(stream)
    plain = comp.generate(DOCS, QUERY, max_new_tokens=NEW, top_k=16)
    assert isinstance(plain, GenerationResult)
    assert "".join(chunks) == stream.result.text == plain.text
    assert stream.result.token_ids == plain.token_ids
    assert len(chunks) >= 2  # it really streamed, token by token


def test_sampling_options_pass_through(make_compressor: Callable[..., Any]) -> None:
    comp = make_compressor("llama")
    runs = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        res = comp.generate(DOCS, QUERY, max_new_tokens=NEW, top_k=10_000, do_sample=True, temperature=5.0)
        assert isinstance(res, GenerationResult)
        runs.append(res.token_ids)
    torch.manual_seed(1)
    assert _plain_generate(comp, DOCS, QUERY, do_sample=True, temperature=5.0)[: len(runs[0])] == runs[0]
    assert len({tuple(r) for r in runs}) > 1  # hot sampling with different seeds differs


def test_timings_are_ordered(make_compressor: Callable[..., Any]) -> None:
    res = make_compressor("mistral").generate(DOCS, QUERY, max_new_tokens=4, top_k=8)
    assert isinstance(res, GenerationResult)
    t = res.timings
    assert 0 < t["compress"] <= t["prompt"] <= t["first_token"] + 1e-6 <= t["total"] + 2e-6
    assert t["prefill"] > 0


def test_errors_name_the_argument(make_compressor: Callable[..., Any]) -> None:
    comp = make_compressor("llama")
    with pytest.raises(ValueError, match="max_new_tokens"):
        comp.generate(DOCS, QUERY, max_new_tokens=0)
    with pytest.raises(TypeError, match="streamer"):
        comp.generate(DOCS, QUERY, streamer=object())
    with pytest.raises(TypeError, match="documents"):
        comp.generate("one text", QUERY)
    with pytest.raises(ValueError, match="query"):
        comp.generate(DOCS, "  ")


def test_stream_reraises_generation_errors(make_compressor: Callable[..., Any]) -> None:
    comp = make_compressor("llama")
    stream = comp.generate(DOCS, QUERY, max_new_tokens=2, top_k=8, stream=True, num_beams=2)
    with pytest.raises(ValueError):
        list(stream)


@pytest.mark.real
def test_real_model_identity_and_compressed_answer(real_compressor: Any) -> None:
    from gemfilter_rag.data import load_essays

    essay = load_essays()[0][1]
    docs = [essay[:1500], "The secret passcode of the lighthouse is 4172.", essay[1500:3000]]
    query = "What is the secret passcode of the lighthouse?"
    full = real_compressor.generate(docs, query, max_new_tokens=16, top_k=100_000)
    expected = _plain_generate(real_compressor, docs, query, max_new_tokens=16, do_sample=False)
    # the same tokens as the model's own generate, up to 16 or to its end of turn (where an int8 model on this
    # CPU ends its answer depends on the CPU's int8 kernels; on one machine it stopped after 9 tokens)
    assert full.token_ids == expected and len(full.token_ids) >= 4
    assert len(full.token_ids) == 16 or full.token_ids[-1] == real_compressor.tokenizer.eos_token_id
    small = real_compressor.generate(docs, query, max_new_tokens=16, top_k=96)
    assert small.prompt_tokens < full.prompt_tokens
    assert "4172" in small.compression.text
