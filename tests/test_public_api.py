"""The public surface: ``__all__`` imports, and the core never pulls in LangChain or LlamaIndex."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import gemfilter_rag


def test_all_names_import() -> None:
    assert gemfilter_rag.__all__
    for name in gemfilter_rag.__all__:
        assert getattr(gemfilter_rag, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from gemfilter_rag import *", namespace)
    assert set(gemfilter_rag.__all__) <= set(namespace)


def test_core_names_are_exported() -> None:
    for name in ("GemFilterCompressor", "GemFilterConfig", "ScoringConfig", "CompressionResult", "DocumentResult"):
        assert name in gemfilter_rag.__all__
    assert isinstance(gemfilter_rag.__version__, str) and gemfilter_rag.__version__.count(".") >= 2


def test_public_names_have_docstrings() -> None:
    for name in gemfilter_rag.__all__:
        obj = getattr(gemfilter_rag, name)
        if not isinstance(obj, str):
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"


def test_core_does_not_import_integrations() -> None:
    code = (
        "import json, sys\n"
        "import gemfilter_rag\n"
        "from gemfilter_rag import GemFilterCompressor, GemFilterConfig, ScoringConfig\n"
        "import gemfilter_rag.compressor, gemfilter_rag.loading, gemfilter_rag.capture\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert "gemfilter_rag" in modules
    heavy = [
        m
        for m in modules
        if m.split(".")[0]
        in {
            "langchain",
            "langchain_core",
            "langchain_community",
            "llama_index",
            "langchain_gemfilter",
            "llama_index_postprocessor_gemfilter",
            "haystack",
            "haystack_integrations",
        }
    ]
    assert heavy == []


def test_importing_the_package_imports_no_test_tool_and_leaves_the_environment_alone() -> None:
    code = (
        "import json, os, sys\n"
        "before = dict(os.environ)\n"
        "import gemfilter_rag, gemfilter_rag.pipeline, gemfilter_rag.scorers, gemfilter_rag.cli\n"
        "print(json.dumps({'modules': sorted(sys.modules), 'env': dict(os.environ) == before}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120, env=env)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["env"] is True
    assert not [m for m in found["modules"] if m.split(".")[0] in {"pytest", "_pytest", "hypothesis"}]
