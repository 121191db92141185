"""Shared fixtures: tiny random causal LMs of five architectures and a real fast tokenizer.

Nothing here downloads anything. The tokenizer is a byte-level BPE trained in memory on a few
paragraphs written for these tests; the models are built from a config with a fixed seed.

Fixtures:
    tokenizer                   fast tokenizer with a small chat template
    tokenizer_no_template       the same vocabulary, no chat template (BOS is prepended instead)
    tiny_model_factory          callable ``(arch, attn_implementation="sdpa") -> model`` (cached); arch is
                                one of ``ARCHS`` or "mistral_sliding" / "qwen2_sliding" (window 8)
    tiny_model                  a model, parametrised over ``ARCHS``
    arch                        an architecture name, parametrised over ``ARCHS``
    make_compressor             callable ``(arch, tokenizer=None, **options) -> GemFilterCompressor``

Hypothesis profiles: "ci" (few examples, the default) and "long" (many), chosen with
``GEMFILTER_HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("GEMFILTER_HYPOTHESIS_PROFILE", "ci"))

from tinymodels import ARCHS, build_model, build_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    return build_tokenizer(chat_template=True)


@pytest.fixture(scope="session")
def tokenizer_no_template() -> Any:
    return build_tokenizer(chat_template=False)


@pytest.fixture(scope="session")
def tiny_model_factory() -> Callable[..., Any]:
    return build_model


@pytest.fixture(params=ARCHS)
def arch(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def tiny_model(arch: str) -> Any:
    return build_model(arch)


@pytest.fixture(scope="session")
def make_compressor() -> Callable[..., Any]:
    from gemfilter_rag import GemFilterCompressor

    def make(
        arch: str = "llama", tokenizer: Any = None, attn_implementation: str = "sdpa", **options: Any
    ) -> GemFilterCompressor:
        return GemFilterCompressor(build_model(arch, attn_implementation), tokenizer or build_tokenizer(), **options)

    return make
