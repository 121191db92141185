"""The ``gemfilter`` command line: compress, explain, calibrate argument handling."""

from __future__ import annotations

import json
import re

import pytest
from tinymodels import TRAINING_TEXT, build_model, build_tokenizer

from gemfilter_rag import GemFilterCompressor, cli


@pytest.fixture
def tiny(monkeypatch):
    """Make from_pretrained return a tiny random compressor, recording its arguments."""
    seen: dict = {}

    def fake(model=None, **kwargs):
        seen.update(model=model, **kwargs)
        kwargs.pop("device", None)
        return GemFilterCompressor(build_model("llama"), build_tokenizer(), **kwargs)

    monkeypatch.setattr(GemFilterCompressor, "from_pretrained", staticmethod(fake))
    return seen


@pytest.fixture
def files(tmp_path):
    parts = TRAINING_TEXT.split("\n\n")
    out = []
    for i, p in enumerate(parts[:3]):
        f = tmp_path / f"doc{i}.txt"
        f.write_text(p)
        out.append(str(f))
    return out


def test_compress_prints_text_and_stats(tiny, files, capsys) -> None:
    code = cli.main(["compress", "--query", "What do cities send?", *files, "--top-k", "20", "--layer", "2"])
    out, err = capsys.readouterr()
    assert code == 0
    assert out.strip() and len(out) < sum(len(open(f).read()) for f in files)
    assert "kept 20/" in err and "doc0.txt" in err
    assert tiny["filter_layer"] == 2


def test_compress_window_option_reaches_the_compressor(tiny, files, capsys) -> None:
    args = ["compress", "--query", "What do cities send?", *files, "--top-k", "20", "--window", "96"]
    assert cli.main(args) == 0
    assert tiny["window"] == 96
    kept = re.search(r"kept (\d+)/", capsys.readouterr().err)
    assert kept is not None and 0 < int(kept.group(1)) <= 20


def test_compress_json(tiny, files, capsys) -> None:
    code = cli.main(
        [
            "compress",
            "-q",
            "Why?",
            *files,
            "--top-k",
            "15",
            "--granularity",
            "token",
            "--json",
            "--scores",
            "0.1,0.5,0.2",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["compressed_tokens"] + data["separator_tokens"] == 15 and data["granularity"] == "token"
    assert len(data["documents"]) == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compress", "--query", "q?", "missing.txt"], "does not exist"),
        (["compress", "--query", "   ", "FILE0"], "--query"),
        (["compress", "--query", "q?", "FILE0", "--scores", "1,2"], "--scores"),
        (["compress", "--query", "q?", "FILE0", "--scores", "a"], "--scores"),
        (["compress", "--query", "q?", "FILE0", "--profile", "nope.json"], "--profile"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tiny, files, capsys, argv, message) -> None:
    argv = [files[0] if a == "FILE0" else a for a in argv]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["compress", "--query", "q?", "f", "--top-k", "0"],
        ["compress", "f"],
        ["frobnicate"],
        ["calibrate", "--budget", "-3"],
    ],
)
def test_argparse_errors_exit_2(argv) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2


def test_explain_writes_html(tiny, files, tmp_path) -> None:
    out = tmp_path / "page.html"
    assert cli.main(["explain", "-q", "What do cities send?", *files, "--top-k", "20", "-o", str(out)]) == 0
    page = out.read_text()
    assert '<mark class="kept"' in page and "What do cities send?" in page


def test_calibrate_rejects_too_many_needles(capsys) -> None:
    assert cli.main(["calibrate", "--needles", "99"]) == 2
    assert "--needles" in capsys.readouterr().err


def test_compress_cache_file_keeps_chunks_for_the_next_call(monkeypatch, files, tmp_path, capsys) -> None:
    seen: list = []

    def fake(model=None, **kwargs):
        kwargs.pop("device", None)
        seen.append(kwargs["cache"])
        # the tiny model's profile has no cache-mode readout: "force" takes the cached path all the same
        return GemFilterCompressor(build_model("llama"), build_tokenizer(), cache_mode="force", **kwargs)

    monkeypatch.setattr(GemFilterCompressor, "from_pretrained", staticmethod(fake))
    store = tmp_path / "chunks.sqlite"
    args = ["compress", "-q", "What do cities send?", *files, "--top-k", "20", "--layer", "2"]
    args += ["--cache-file", str(store)]
    assert cli.main(args) == 0
    first = capsys.readouterr().out
    assert store.is_file() and seen[0].stats()["disk_entries"] == len(files) + 2  # documents, prefix, separator
    assert cli.main(args) == 0  # a new process would open the file as this call does
    assert capsys.readouterr().out == first
    stats = seen[1].stats()
    assert stats["misses"] == 0 and stats["disk_hits"] == len(files) + 2
    assert cli.main([*args[:-1], str(tmp_path)]) == 2
    assert "--cache-file" in capsys.readouterr().err
