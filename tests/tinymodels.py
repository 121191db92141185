"""Tiny random causal LMs of five architectures and a real fast tokenizer, built without downloads.

Plain helpers (no fixtures) shared by the test files; the fixtures in ``conftest.py`` wrap them.
The module has its own name so that it never collides with the integration packages' conftest files.
The tokenizer is a byte-level BPE trained in memory on a few paragraphs written for these tests; the
models are built from a config with a fixed seed.
"""

from __future__ import annotations

import os
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ARCHS = ("llama", "qwen2", "mistral", "phi3", "gemma3")
SEED = 1234
NUM_LAYERS = 4
MAX_POSITIONS = 1024
GEMMA3_WINDOW = 8
GEMMA3_LAYER_TYPES = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]

TRAINING_TEXT = """\
The most important thing in a young company is to make something people want. Founders often
spend months building features nobody asked for, when a week spent talking to users would have
told them what to build. It is easy to mistake activity for progress.

When you write an essay, you find out what you think. The act of putting ideas into sentences
forces you to notice the gaps in them. Most of the good ideas in an essay were not there when
the writer started; they appeared in the middle of a paragraph, as a surprise.

Cities send messages. New York tells you that you should make more money. Cambridge tells you
that you should be smarter. Silicon Valley tells you that you should be more powerful. The
message of a place is hard to resist, because you hear it all the time, quietly.

Startups in 2005 could be started for far less money than in 1995. Servers were cheaper, the
software was free, and a few programmers could build in months what had taken a large team
years. That changed who could start a company, and when.

Dr. Smith said the results were good, e.g. the model kept 90.5% of the answers. The question
was whether it would still work at 4,096 tokens. "We will see," she wrote. Then she left!
"""


def _train_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TRAINING_TEXT.split("\n\n"), trainer=trainer)
    return tok


_TOKENIZERS: dict[bool, Any] = {}


def build_tokenizer(chat_template: bool = True) -> Any:
    """A ``PreTrainedTokenizerFast`` over the in-memory BPE (cached per session)."""
    if chat_template not in _TOKENIZERS:
        from transformers import PreTrainedTokenizerFast

        fast = PreTrainedTokenizerFast(
            tokenizer_object=_train_tokenizer(), bos_token="<s>", eos_token="</s>", pad_token="<pad>"
        )
        if chat_template:
            fast.chat_template = CHAT_TEMPLATE
        _TOKENIZERS[chat_template] = fast
    return _TOKENIZERS[chat_template]


def model_config(arch: str, vocab_size: int) -> Any:
    """A tiny config: 4 layers, hidden 64, 4 heads, 2 KV heads (GQA)."""
    from transformers import Gemma3TextConfig, LlamaConfig, MistralConfig, Phi3Config, Qwen2Config

    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        initializer_range=0.2,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "mistral":
        return MistralConfig(**common, sliding_window=None)
    if arch == "mistral_sliding":  # every layer slides (not in ARCHS: used by the sliding-window tests)
        return MistralConfig(**common, sliding_window=GEMMA3_WINDOW)
    if arch == "qwen2_sliding":  # layers 0-1 full, 2-3 sliding (max_window_layers=2)
        return Qwen2Config(**common, use_sliding_window=True, sliding_window=GEMMA3_WINDOW, max_window_layers=2)
    if arch == "phi3":
        return Phi3Config(**common)
    if arch == "gemma3":
        return Gemma3TextConfig(
            **common,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=GEMMA3_WINDOW,
            layer_types=list(GEMMA3_LAYER_TYPES),
        )
    raise ValueError(f"unknown arch {arch!r}")


_MODELS: dict[tuple[str, str], Any] = {}


def build_model(arch: str, attn_implementation: str = "sdpa") -> Any:
    """A tiny random causal LM (fixed seed, eval mode), cached per (arch, attention)."""
    key = (arch, attn_implementation)
    if key not in _MODELS:
        from transformers import AutoModelForCausalLM

        cfg = model_config(arch, len(build_tokenizer()))
        torch.manual_seed(SEED)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn_implementation)
        _MODELS[key] = model.float().eval()
    return _MODELS[key]


def fills_budget(result: Any, budget: int, join: int | None = None) -> bool:
    """Whether ``result``'s text (kept tokens plus separators) fits ``budget`` and holds as many tokens as fit
    the way token selection fills it: short of ``budget`` by less than one token and one separator (``join``:
    the separator's tokens, read from the result where it holds one; a token of another document needs one)."""
    joins = sum(1 for d in result.documents if d.text) - 1
    if join is None:
        join = result.separator_tokens // joins if joins > 0 else 0
    return bool(budget - join <= result.output_tokens <= budget)


def separator_tokens(compressor: Any) -> int:
    """Tokens of ``compressor``'s separator between two documents (``config.separator``)."""
    return len(compressor.tokenizer(compressor.config.separator, add_special_tokens=False)["input_ids"])


def fills_kept(kept: list[int], budget: int, compressor: Any) -> bool:
    """``fills_budget`` for an adapter's output: ``kept`` holds the kept tokens of each document handed on;
    a separator of ``compressor``'s (``config.separator``) is counted between every two of them."""
    join = separator_tokens(compressor)
    used = sum(kept) + join * max(0, sum(1 for k in kept if k) - 1)
    return bool(budget - join <= used <= budget)
