"""Needle benchmark of the selection options on the default model (issue: selection on every model).

Every probe is an essay haystack of a given length with one made-up fact (``gemfilter_rag.needles``)
at a given depth, cut into chunks of at most 128 tokens of whole sentences (what a text splitter
hands a retriever) and passed as documents. For each probe, one filter pass (or one knockout over
windows, beyond the model's positions) per scoring option gives token scores; from them every granularity
keeps a selection at every budget, exactly as ``GemFilterCompressor.compress`` would:

- needle recall: the whole needle sentence is in the kept tokens;
- answer kept: an accepted answer string survives in the compressed text;
- accuracy (at ``--answer-budget`` only, and for the full context up to the model's positions):
  the default model, greedy, answers from that text and its answer contains an accepted answer.

Plain RAG ranks the same chunks with all-MiniLM-L6-v2 and keeps the best whole chunks that fit.
Rows go to a JSON-lines file as they are measured (a cut-off run keeps them; a rerun skips probes
already there); ``--report`` turns them into the tables of ``benchmarks/README.md`` and a heatmap.

    python -m benchmarks.needle                           # 5 needles x 10 depths x 2K/4K/8K/32K
    python -m benchmarks.needle --lengths 4096 --depths 3 --needles 2 --out /tmp/n.jsonl
    python -m benchmarks.needle --report
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gemfilter_rag import GemFilterCompressor, capture
from gemfilter_rag.assemble import assemble
from gemfilter_rag.calibration import SCORING_OPTIONS, query_rows, span_tokens
from gemfilter_rag.config import ScoringConfig
from gemfilter_rag.data import essays_haystack
from gemfilter_rag.needles import NEEDLES, Probe, answer_found, make_probes
from gemfilter_rag.pipeline import keep_tokens
from gemfilter_rag.prompt import FilterPrompt, build_prompt
from gemfilter_rag.scoring import token_scores
from gemfilter_rag.windows import score_in_windows

from .datasets import chunk_probe
from .machine import cpu_model
from .metrics import answer_correct

GRANULARITIES = ("token", "sentence", "document")
RESULTS = Path("benchmarks/results")


class Scorer:
    """Token scores of a prompt per scoring option, one capture per distinct window (memoised)."""

    def __init__(self, comp: GemFilterCompressor) -> None:
        self.comp = comp
        self.memo: dict[bytes, Any] = {}

    def __call__(self, prompt: FilterPrompt, option: ScoringConfig) -> torch.Tensor:
        def score(ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            key = ids.numpy().tobytes()
            if key not in self.memo:
                self.memo[key] = capture.capture_layer(self.comp.model, ids[None], self.comp.filter_layer)
            cap = self.memo[key]
            return token_scores(cap.query[:, :, rows], cap.key, rows, option, cap.scaling, cap.sliding_window)[0]

        limit = self.comp.max_positions
        if limit is not None and prompt.length > limit:
            return score_in_windows(prompt, self.comp.window_size or limit, option.query, score)
        rows = query_rows(prompt, option.query)
        return score(prompt.input_ids, rows).float()[prompt.context_positions()]


class Reader:
    """The default model's greedy short answer to a question from a context (memoised)."""

    def __init__(self, comp: GemFilterCompressor, max_new_tokens: int = 16) -> None:
        self.comp, self.max_new_tokens = comp, max_new_tokens
        self.memo: dict[tuple[str, str], str] = {}

    def __call__(self, context: str, question: str) -> str:
        from .readers import greedy_answer

        key = (context, question)
        if key not in self.memo:
            self.memo[key] = greedy_answer(self.comp.tokenizer, self.comp.model, context, question, self.max_new_tokens)
        return self.memo[key]


def plain_rag(embedder: Any, tokenizer: Any, chunks: Sequence[str], question: str, budget: int) -> list[int]:
    """Indices of the chunks that all-MiniLM-L6-v2 ranks best, whole, within ``budget`` tokens, in order."""
    vecs = embedder.encode([question, *chunks], normalize_embeddings=True, convert_to_tensor=True)
    sims = (vecs[1:] @ vecs[0]).tolist()
    kept, left = [], budget
    for i in sorted(range(len(chunks)), key=lambda i: -sims[i]):
        n = len(tokenizer(chunks[i], add_special_tokens=False)["input_ids"])
        if n <= left:
            kept.append(i)
            left -= n
    return sorted(kept)


def measure_probe(
    comp: GemFilterCompressor,
    scorer: Scorer,
    reader: Reader,
    embedder: Any,
    probe: Probe,
    needle_no: int,
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """All rows of one probe: every (scoring, granularity, budget), plain RAG and the full context."""
    chunks, at, (na, nb) = chunk_probe(comp.tokenizer, probe)
    cfg = comp.config
    prompt = build_prompt(
        comp.tokenizer, chunks, probe.question, separator=cfg.separator, template=cfg.template,
        use_chat_template=cfg.use_chat_template,
    )  # fmt: skip
    doc = prompt.documents[at]
    first = sum(len(d.ids) for d in prompt.documents[:at])
    needle = span_tokens(doc.starts, doc.ends, (na, nb)) + first  # (M,) context-token indices
    base = {"length": probe.length, "depth": probe.depth, "needle": needle_no, "tokens": prompt.context_tokens}
    rows: list[dict[str, Any]] = []

    def row(
        method: str, scoring: str, granularity: str, budget: int | None, text: str, seconds: float, **kw: Any
    ) -> None:
        r = {**base, "method": method, "scoring": scoring, "granularity": granularity, "budget": budget, **kw}
        r["answer_kept"] = answer_found(text, probe.answers)
        if budget in (args.answer_budget, None):
            r["answer"] = reader(text, probe.question)
            r["correct"] = answer_correct(r["answer"], probe.answers)
        r["seconds"] = round(seconds, 2)
        rows.append(r)

    for name in args.scorings:
        option = SCORING_OPTIONS[name]
        t0 = time.perf_counter()
        scores = scorer(prompt, option)  # (N,)
        scored = time.perf_counter() - t0
        for granularity in GRANULARITIES:
            sib = comp.with_options(scoring=option, granularity=granularity)
            for budget in args.budgets:
                keep = keep_tokens(sib.plan, prompt, scores, budget)
                res = assemble(prompt, probe.question, keep, scores, comp.filter_layer, sib.config, {})
                kept = bool(torch.isin(needle, keep).all())
                row("gemfilter", name, granularity, budget, res.text, scored, needle_kept=kept, sent=len(keep))
    scorer.memo.clear()  # the options share the captures of one probe's windows
    for budget in args.budgets:
        t0 = time.perf_counter()
        idx = plain_rag(embedder, comp.tokenizer, chunks, probe.question, budget)
        text = cfg.separator.join(chunks[i] for i in idx)
        row("plain_rag", "minilm", "document", budget, text, time.perf_counter() - t0, needle_kept=at in idx)
    limit = min(args.full_max, comp.max_positions or args.full_max)
    if prompt.context_tokens <= limit and prompt.length + 64 <= (comp.max_positions or prompt.length + 64):
        row("full", "-", "-", None, cfg.separator.join(chunks), 0.0, needle_kept=True)
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[4096, 2048, 8192, 32768])
    ap.add_argument("--depths", type=int, default=10)
    ap.add_argument("--needles", type=int, default=5)
    ap.add_argument("--budgets", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--answer-budget", type=int, default=256)
    ap.add_argument("--full-max", type=int, default=8192, help="answer from the full context up to this length")
    ap.add_argument("--scorings", nargs="+", default=["question_softmax_max7", "paper"], choices=list(SCORING_OPTIONS))
    ap.add_argument("--out", type=Path, default=RESULTS / "needle.jsonl")
    ap.add_argument("--report", action="store_true", help="only write the report from --out")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report:
        from .needle_report import write_report

        write_report(args.out)
        return
    torch.manual_seed(0)
    comp = GemFilterCompressor.from_pretrained()
    from .methods import load_minilm

    embedder = load_minilm()
    scorer, reader = Scorer(comp), Reader(comp)
    done = set()
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            r = json.loads(line)
            if "method" in r:
                done.add((r["length"], r["depth"], r["needle"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    depths = [round((i + 0.5) / args.depths, 4) for i in range(args.depths)]
    haystack = essays_haystack()
    with args.out.open("a") as f:
        header = {"run": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_model(), "threads": torch.get_num_threads()}
        header.update(filter_layer=comp.filter_layer, window=comp.window_size, torch=torch.__version__)
        f.write(json.dumps(header) + "\n")
        for length in args.lengths:
            probes = make_probes(comp.tokenizer, haystack, [length], depths, NEEDLES[: args.needles])
            for i, probe in enumerate(probes):
                k = i // len(depths)  # make_probes: needle by needle, every depth
                if (length, probe.depth, k) not in done:
                    t0 = time.perf_counter()
                    rows = measure_probe(comp, scorer, reader, embedder, probe, k, args)
                    for r in rows:
                        f.write(json.dumps(r) + "\n")
                    f.flush()
                    best = next(r for r in rows if r["granularity"] == "sentence" and r["budget"] == args.answer_budget)
                    print(f"L={length} needle={k} depth={probe.depth}: default kept={best['needle_kept']} "
                          f"({time.perf_counter() - t0:.1f}s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
