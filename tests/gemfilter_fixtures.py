"""Pytest fixtures for the integration packages' tests: compressors over the tiny models of ``tinymodels``.

Nothing here downloads anything. ``tokenizer`` is the in-memory BPE of ``tinymodels``; ``core`` is a
``GemFilterCompressor`` over a tiny random Llama and Qwen2 (one per parameter); ``real_core`` is the real
default model, skipped when it cannot be fetched. A ``conftest.py`` imports them:
``from gemfilter_fixtures import core, real_core, tokenizer`` (the repository's root ``conftest.py`` puts
this folder on the path). Not part of the installed package: importing ``gemfilter_rag`` never imports
pytest or changes the environment.
"""

from __future__ import annotations

from typing import Any

import pytest
from tinymodels import build_model, build_tokenizer


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """The tiny models' fast tokenizer (with a chat template)."""
    return build_tokenizer()


@pytest.fixture(scope="session", params=["llama", "qwen2"])
def core(request: pytest.FixtureRequest, tokenizer: Any) -> Any:
    """A ``GemFilterCompressor`` over a tiny random model (one per architecture)."""
    from gemfilter_rag import GemFilterCompressor

    return GemFilterCompressor(build_model(request.param), tokenizer, filter_layer=1)


@pytest.fixture(scope="module")
def real_core() -> Any:
    """The real default model (SmolLM2-135M-Instruct), loaded once per test module."""
    from gemfilter_rag import GemFilterCompressor

    try:
        return GemFilterCompressor.from_pretrained(device="cpu")
    except RuntimeError as err:  # the packaged model could not be fetched (no package index)
        pytest.skip(f"default model unavailable: {err}")
