"""Fixtures: tiny random causal LMs (in memory and saved as a local model directory) and the real default model.

Haystack's anonymous telemetry is switched off before Haystack is imported: the tests make no outside requests.
"""

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

from gemfilter_fixtures import core, real_core, tokenizer  # noqa: E402
from tinymodels import build_model, build_tokenizer  # noqa: E402

__all__ = ["core", "real_core", "tiny_dir", "tokenizer"]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama of the ``core`` fixture, saved as a local model directory (what a pipeline file names)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tok: Any = build_tokenizer()
    build_model("llama").save_pretrained(path)
    tok.save_pretrained(path)
    return path
