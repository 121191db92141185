"""The explain view: escaped HTML with the kept spans highlighted, rendered in headless Chromium."""

from __future__ import annotations

import html
import re
import shutil
import subprocess

import pytest

from gemfilter_rag.explain import span_scores

DOCS = [
    "Cities send messages. New York tells you to make <b>more</b> money & more.",
    "Startups in 2005 were cheap. Servers were cheaper, and software was free.",
]


@pytest.fixture
def result(make_compressor):
    comp = make_compressor("llama", filter_layer=2, granularity="sentence")
    return comp.compress(DOCS, "What does New York tell you?", top_k=14)


def test_html_escapes_and_marks_every_kept_span(result) -> None:
    page = result.to_html()
    assert page.startswith("<!DOCTYPE html>")
    assert "<b>more" not in page and "more</b>" not in page  # the document's own markup never gets through
    text_only = re.sub(r"<[^>]+>", "", page)  # kept and dropped pieces, tags removed: each document whole
    for doc in DOCS:
        assert html.escape(doc, quote=False) in text_only
    assert page.count('<mark class="kept"') == sum(len(d.spans) for d in result.documents) > 0
    for d in result.documents:
        for a, b in d.spans:
            assert DOCS[d.index][a:b].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in page
    assert "What does New York tell you?" in page
    assert f"<b>{result.compressed_tokens}</b> of <b>{result.original_tokens}</b>" in page
    assert "details" not in result.to_dict()


def test_span_scores_average_the_tokens_inside() -> None:
    ends = [2, 4, 6, 8]
    scores = [1.0, 3.0, 5.0, 7.0]
    assert span_scores([(0, 4), (4, 8), (2, 3)], ends, scores) == pytest.approx([2.0, 6.0, 3.0])


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed")
def test_page_renders_in_headless_chromium(result, tmp_path) -> None:
    page = tmp_path / "explain.html"
    page.write_text(result.to_html(), encoding="utf-8")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [_chromium(), *flags, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 1000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = subprocess.run(
        [_chromium(), *flags, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    assert dom.count('class="kept"') == sum(len(d.spans) for d in result.documents) > 0
    assert "What does New York tell you?" in dom
