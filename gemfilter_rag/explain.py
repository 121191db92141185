"""An HTML page that shows what a compression kept and why: ``CompressionResult.to_html()``.

The whole context is shown; kept text is wrapped in ``<mark class="kept">`` elements shaded by
the filter's score, dropped text is grey. Every piece of text is HTML-escaped. The page is
self-contained (inline CSS, no scripts, no external resources).
"""

from __future__ import annotations

import html
from typing import Any

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin-top: 1.5em; }
.query { background: #eef4ff; padding: .6em; border-radius: 4px; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .2em .6em; text-align: right; }
.doc { white-space: pre-wrap; border: 1px solid #ddd; padding: .6em; margin: .5em 0; line-height: 1.5; }
.dropped { color: #999; }
mark.kept { color: #000; border-radius: 2px; }
.bar { display: inline-block; height: .8em; background: #f0a020; }
"""


def _shade(score: float) -> str:
    """Background colour for a kept span with normalised score 0..1 (pale to strong yellow)."""
    alpha = 0.25 + 0.75 * max(0.0, min(1.0, score))
    return f"rgba(255, 200, 0, {alpha:.2f})"


def _doc_html(text: str, spans: list[tuple[int, int]], span_scores: list[float]) -> str:
    parts: list[str] = []
    pos = 0
    for (a, b), s in zip(spans, span_scores, strict=True):
        if a > pos:
            parts.append(f'<span class="dropped">{html.escape(text[pos:a])}</span>')
        parts.append(
            f'<mark class="kept" data-score="{s:.3f}" style="background:{_shade(s)}">{html.escape(text[a:b])}</mark>'
        )
        pos = b
    if pos < len(text):
        parts.append(f'<span class="dropped">{html.escape(text[pos:])}</span>')
    return "".join(parts)


def span_scores(spans: list[tuple[int, int]], token_ends: list[int], scores: list[float]) -> list[float]:
    """Mean score of the tokens inside each character span (tokens own ``[end of previous, end)``)."""
    out = []
    for a, b in spans:
        vals = [
            s
            for i, (e, s) in enumerate(zip(token_ends, scores, strict=True))
            if e > a and (token_ends[i - 1] if i else 0) < b
        ]
        out.append(sum(vals) / len(vals) if vals else 0.0)
    return out


def render_html(result: Any) -> str:
    """The explain page of a ``CompressionResult`` as one HTML string."""
    details = result.details or {}
    texts: list[str] = details.get("documents") or [d.text for d in result.documents]
    ends: list[list[int]] = details.get("token_ends") or [[] for _ in texts]
    scores: list[float] = details.get("scores") or []
    per_doc_scores: list[list[float]] = []
    start = 0
    for e in ends:
        per_doc_scores.append(scores[start : start + len(e)] if scores else [0.0] * len(e))
        start += len(e)
    all_span_scores = [
        span_scores(d.spans, e, s) if e else [1.0] * len(d.spans)
        for d, e, s in zip(result.documents, ends, per_doc_scores, strict=True)
    ]
    flat = [x for xs in all_span_scores for x in xs]
    lo, hi = (min(flat), max(flat)) if flat else (0.0, 1.0)

    def norm(x: float) -> float:
        return (x - lo) / (hi - lo) if hi > lo else 1.0

    esc = html.escape
    rows = []
    for d in result.documents:
        kept_share = d.kept_tokens / d.original_tokens if d.original_tokens else 0.0
        rows.append(
            f"<tr><td>{d.index}</td><td>{d.kept_tokens}/{d.original_tokens}</td>"
            f"<td>{kept_share:.0%}</td><td>{d.score_share:.2f} "
            f'<span class="bar" style="width:{int(100 * d.score_share)}px"></span></td></tr>'
        )
    docs_html = []
    for d, text, ss in zip(result.documents, texts, all_span_scores, strict=True):
        body = _doc_html(text, list(d.spans), [norm(x) for x in ss])
        docs_html.append(
            f"<h2>Document {d.index} — kept {d.kept_tokens} of {d.original_tokens} tokens</h2>"
            f'<div class="doc" id="doc-{d.index}">{body}</div>'
        )
    timings = ", ".join(f"{esc(k)} {v:.3f} s" for k, v in result.timings.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>GemFilter: what was kept</title>
<style>{_CSS}</style></head><body>
<h1>GemFilter: what was kept</h1>
<p class="query"><b>Query:</b> {esc(result.query)}</p>
<p id="stats">Kept <b>{result.compressed_tokens}</b> of <b>{result.original_tokens}</b> context tokens
(ratio {result.ratio:.1f}x), filter layer {esc(str(result.filter_layer))}, granularity
{esc(result.granularity)}. {timings}</p>
<table><tr><th>document</th><th>kept tokens</th><th>kept share</th><th>score share</th></tr>
{"".join(rows)}</table>
{"".join(docs_html)}
</body></html>
"""
