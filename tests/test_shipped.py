"""Short model names in ``from_pretrained``, the previous default's profile, and a profile's embeddings choice."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from tinymodels import build_model, build_tokenizer

from gemfilter_rag import GemFilterCompressor, shipped
from gemfilter_rag.profiles import Profile, find_profile, fingerprint, shipped_profiles
from gemfilter_rag.readout import ReadoutSet


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    build_model("llama").save_pretrained(tmp_path / "tiny")
    build_tokenizer().save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def test_short_names_resolve_to_their_directory_and_defaults(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {name: shipped.ShippedModel(lambda: tiny_dir, None, spec.quantize) for name, spec in shipped.SHIPPED.items()}
    monkeypatch.setattr(shipped, "SHIPPED", fake)
    comp = GemFilterCompressor.from_pretrained("smollm2", device="cpu")
    assert getattr(comp.model, "gemfilter_quantized", None) == "int8"  # int8 on the CPU by default
    prev = GemFilterCompressor.from_pretrained("smollm2-previous", device="cpu")
    assert getattr(prev.model, "gemfilter_quantized", None) is None  # the previous default ran in float32
    plain = GemFilterCompressor.from_pretrained("smollm2", device="cpu", quantize=None)
    assert getattr(plain.model, "gemfilter_quantized", None) is None
    assert shipped.shipped("no-such-name") is None and shipped.shipped(None) is None
    assert shipped.shipped(str(tiny_dir)) is None  # a path is a path


def test_a_local_directory_named_like_a_short_name_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "smollm2").mkdir()
    monkeypatch.chdir(tmp_path)
    assert shipped.shipped("smollm2") is None


def test_every_short_name_has_its_files() -> None:
    assert set(shipped.SHIPPED) == {"smollm2", "smollm2-previous", "smollm2-onepass", "gemma3-270m"}
    for spec in shipped.SHIPPED.values():
        if spec.profile is not None:
            profile = Profile.load(shipped.profile_path(spec.profile))
            assert profile.readouts() is not None
    previous = Profile.load(shipped.profile_path("previous/smollm2-135m-instruct-0.1.json"))
    readouts = previous.readouts()
    assert isinstance(readouts, ReadoutSet) and readouts.layer == 15 and previous.embeddings == "default"
    assert all(p.name != previous.name for p in shipped_profiles())  # never matched automatically
    onepass = Profile.load(shipped.profile_path("previous/smollm2-135m-instruct-onepass.json")).readouts()
    assert isinstance(onepass, ReadoutSet) and onepass.layer == 5 and onepass.cached is None
    assert all(p.name != "SmolLM2-135M-Instruct" or p.readouts() != onepass for p in shipped_profiles())


def test_the_profile_says_whether_to_load_the_embedding_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from test_readout import tiny_readouts

    import gemfilter_rag.embeddings as embeddings

    monkeypatch.setattr(embeddings, "minilm", lambda: embeddings.Embedder(lambda t: [[1.0, float(len(x))] for x in t]))
    model = build_model("llama")
    sets = tiny_readouts()  # has embedding variants

    def opened(choice: str) -> Any:
        profile = Profile(
            "t", fingerprint(model.config), {"filter_layer": 2}, readout=sets.to_dict(), embeddings=choice
        )
        import gemfilter_rag.loading as loading

        monkeypatch.setattr(loading, "load_model", lambda *a, **k: (copy.deepcopy(model), build_tokenizer()))
        return GemFilterCompressor.from_pretrained("x", profile=profile)

    assert opened("none").embedder is None
    assert opened("default").embedder is not None
    assert opened("auto").embedder is not None  # the readout reads it: profiles before 0.2
    with pytest.raises(ValueError, match="embeddings"):
        Profile("t", {}, embeddings="sometimes")


def test_the_shipped_default_profile_loads_one_model_and_exits_early() -> None:
    cfg = type("C", (), {})()
    profile = next(p for p in shipped_profiles() if p.name == "SmolLM2-135M-Instruct")
    for k, v in profile.match.items():
        setattr(cfg, k, v)
    assert find_profile(cfg) == profile
    assert profile.embeddings == "none"  # from_pretrained() loads no embedding model
    readouts = profile.readouts()
    assert readouts is not None and readouts.uses_hidden
    assert (readouts.layer + 1) / profile.match["num_hidden_layers"] <= 0.35
