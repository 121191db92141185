"""Test helpers for code built on gemfilter-rag: tiny random causal LMs and an in-memory tokenizer.

Nothing here downloads anything. ``tiny_tokenizer()`` trains a byte-level BPE fast tokenizer in
memory; ``tiny_model(arch, vocab_size)`` builds a 3-layer random Llama or Qwen2 with a fixed seed.
The pytest fixtures ``tokenizer``, ``core`` (a ``GemFilterCompressor`` over each tiny model) and
``real_core`` (the real default model, skipped when it cannot be fetched) can be imported into a
``conftest.py``: ``from gemfilter_rag.testing import core, real_core, tokenizer``. The LangChain and
LlamaIndex integration packages test with them. Needs pytest (the ``dev`` extra).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CORPUS = [
    "The lighthouse keeper counted forty ships before the storm arrived at the harbour.",
    "Bananas ripen faster when they are stored next to apples in a paper bag.",
    "The committee approved the new budget for the public library on Tuesday.",
    "A quiet river runs through the valley where the old mill still stands.",
    "Engineers measured the bridge and found that the steel cables were sound.",
    "The secret password for the vault is marmalade, said the night guard.",
    "Children played football in the park until the street lamps came on.",
    "Question: what is the answer? Context: documents, sentences and words.",
]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer() -> Any:
    """A byte-level BPE fast tokenizer trained in memory on ``CORPUS`` (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_model(arch: str, vocab_size: int) -> Any:
    """A 3-layer random causal LM of the given architecture, fixed seed."""
    import transformers

    shape = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    configs = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    }
    config_cls, model_cls = configs[arch]
    torch.manual_seed(0)
    config = config_cls(**shape)
    config._attn_implementation = "sdpa"
    return model_cls(config).eval()


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    return tiny_tokenizer()


@pytest.fixture(scope="session", params=["llama", "qwen2"])
def core(request: pytest.FixtureRequest, tokenizer: Any) -> Any:
    """A ``GemFilterCompressor`` over a tiny random model (one per architecture)."""
    from gemfilter_rag import GemFilterCompressor

    return GemFilterCompressor(tiny_model(request.param, len(tokenizer)), tokenizer, filter_layer=1)


@pytest.fixture(scope="module")
def real_core() -> Any:
    """The real default model (SmolLM2-135M-Instruct), loaded once per test module."""
    from gemfilter_rag import GemFilterCompressor

    try:
        return GemFilterCompressor.from_pretrained(device="cpu")
    except RuntimeError as err:  # the packaged model could not be fetched (no package index)
        pytest.skip(f"default model unavailable: {err}")
