"""Speed and memory of GemFilter on the default model, on CPU (``make bench-speed``).

(a) The filter pass (layers 0..r, the question's attention at each of them, the readout) against a
    full prefill of the same prompt (``logits_to_keep=1``, ``use_cache=False``), at 2K, 4K and 8K
    tokens; the time ratio is compared with the layer-fraction limit (r+1)/L. Beside it, a whole
    ``compress`` call with the shipped defaults (tokenizing, the pass, all-MiniLM-L6-v2 similarities
    of every sentence and document, selection): what a user waits for.
(b) End-to-end generation of 32 new tokens: full context against GemFilter (filter pass, then the
    full model over the kept tokens), at 1K, 2K, 4K and 8K: prompt-phase time, time to first
    token, total time, peak memory.

Every measurement runs in a fresh subprocess that loads the model, warms up on a short prompt,
resets the kernel's resident-set high-water mark (``/proc/self/clear_refs``) and reads ``VmHWM``
afterwards, so the peak belongs to that measurement alone and sees torch's allocations. The
model is converted once from GGUF to safetensors so that each subprocess loads it in seconds.

Usage: ``python -m benchmarks.speed [--quick] [--repeats N] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .machine import cpu_model

QUESTION = "What did the author say about the most important thing in a startup?"
PREFILL_LENGTHS = (2048, 4096, 8000)
GENERATION_LENGTHS = (1024, 2048, 4096, 8000)
STAGE_LENGTHS = (2048,)
QUICK_PREFILL = (512,)
QUICK_GENERATION = (512,)
NEW_TOKENS = 32
PAPER_BUDGET = 1024
RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------- worker (one measurement per process)


def _status_kb(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _load(model_dir: str, previous: bool = False) -> Any:
    """The default compressor on ``model_dir``; ``previous``: the default up to 0.1 on the same weights
    (``from_pretrained("smollm2-previous")``: float32, layers 0..15, all-MiniLM-L6-v2)."""
    from gemfilter_rag import GemFilterCompressor

    if not previous:
        return GemFilterCompressor.from_pretrained(model_dir, device="cpu")
    from gemfilter_rag.shipped import SHIPPED, profile_path

    spec = SHIPPED["smollm2-previous"]
    assert spec.profile is not None
    return GemFilterCompressor.from_pretrained(
        model_dir, device="cpu", profile=profile_path(spec.profile), quantize=spec.quantize
    )


STAGES = ("tokenize", "units", "pass", "features", "readout", "select", "assemble")
"""The stages of one ``compress`` call that ``stage_times`` times apart."""


def stage_times(comp: Any, docs: list[str], question: str, budget: int) -> dict[str, float]:
    """Seconds of each of ``STAGES`` in one ``compress`` call, the pipeline's own functions run one by one
    (checked against ``compress``: the same kept tokens). "features" are the readout's inputs (embedding
    similarities included, where the readout reads them) and "readout" the rest of the scorer's work."""
    import torch

    from gemfilter_rag.assemble import assemble
    from gemfilter_rag.pipeline import (
        build_prompts,
        evidence_for,
        key_rows,
        run_pass,
        scoring_rows,
        select,
        whole_target,
    )
    from gemfilter_rag.selection import spread
    from gemfilter_rag.units import prompt_units

    plan = comp.plan
    clock = [time.perf_counter()]
    out: dict[str, float] = {}

    def lap(name: str) -> None:
        now = time.perf_counter()
        out[name] = now - clock[0]
        clock[0] = now

    (prompt,) = build_prompts(plan, [(docs, question)])
    lap("tokenize")
    units = prompt_units(prompt, plan.config.granularity, budget)
    lap("units")
    (record,) = run_pass(plan, [(prompt.input_ids, scoring_rows(plan, prompt))], [key_rows(plan, prompt, question)])
    lap("pass")
    evidence = evidence_for(plan, prompt, question, None)
    target = whole_target(prompt, units)
    features = getattr(comp.scorer, "features", None)  # the readout's inputs, apart from its linear map
    if callable(features):
        readout, x, keep_units = features(record, target, evidence)
        lap("features")
        logits = readout.logits(x)
        spread(torch.exp(logits - logits.max()), [target.units[i] for i in keep_units], int(target.positions.numel()))
        lap("readout")
        scores = comp.scorer.score(record, target, evidence)  # the same values, for selection (not timed)
        clock[0] = time.perf_counter()
    else:
        lap("features")
        scores = comp.scorer.score(record, target, evidence)
        lap("readout")
    keep = select(plan, scores, units, budget, None)
    lap("select")
    result = assemble(prompt, question, keep, scores.tokens, comp.filter_layer, plan.config, {}, units.per_document)
    lap("assemble")
    real = comp.compress(docs, question, top_k=budget)
    if real.kept_token_indices != result.kept_token_indices:
        raise RuntimeError("stage_times: the stages kept other tokens than compress(); they measure something else")
    return out


def context_documents(tokenizer: Any, n_tokens: int, chunk_chars: int = 1000) -> list[str]:
    """Essay chunks (whole lines, about ``chunk_chars`` each, like a retriever's) until ``n_tokens``
    context tokens; the last chunk is cut to fit."""
    from gemfilter_rag.data import load_essays

    docs: list[str] = []
    total = 0
    for _, essay in load_essays():
        for chunk in _chunks(essay, chunk_chars):
            enc = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
            n = len(enc["input_ids"])
            if total + n >= n_tokens:
                cut = n_tokens - total
                if cut > 0:
                    docs.append(chunk[: enc["offset_mapping"][cut - 1][1]])
                return docs
            docs.append(chunk)
            total += n
    return docs


def _chunks(text: str, size: int) -> list[str]:
    out: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        if current and len(current) + len(line) > size:
            out.append(current.strip())
            current = ""
        current += line
    if current.strip():
        out.append(current.strip())
    return [c for c in out if c]


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from gemfilter_rag.generation import GenerationResult, _Clock
    from gemfilter_rag.pipeline import build_prompts

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    comp = _load(spec["model_dir"], previous=bool(spec.get("previous")))
    docs = context_documents(comp.tokenizer, spec["tokens"])
    prompt = build_prompts(comp.plan, [(docs, QUESTION)])[0]
    ids = prompt.input_ids[None]  # (1, T)
    budget = int(spec["budget"])
    kind = spec["kind"]
    if not spec.get("previous") and spec.get("filter_layer") is not None and comp.filter_layer != spec["filter_layer"]:
        raise RuntimeError(
            f"filter_layer: the converted model filters at {comp.filter_layer}, "
            f"the default at {spec['filter_layer']}; delete {spec['model_dir']} and rerun."
        )
    # warm up every code path on a short prompt, then reset the peak
    short = context_documents(comp.tokenizer, 64)
    with torch.inference_mode():
        comp.model(input_ids=ids[:, :64], use_cache=False, logits_to_keep=1)
    comp.generate(short, QUESTION, max_new_tokens=2, top_k=16)
    out: dict[str, Any] = {
        "kind": kind,
        "tokens": spec["tokens"],
        "prompt_tokens": prompt.length,
        "context_tokens": prompt.context_tokens,
        "threads": torch.get_num_threads(),
    }
    base_kb = _status_kb("VmRSS")
    out["peak_reset"] = _reset_peak()
    t0 = time.perf_counter()
    if kind == "prefill":
        with torch.inference_mode():
            comp.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False, logits_to_keep=1)
        out["time"] = time.perf_counter() - t0
    elif kind == "filter":
        comp.with_embeddings(None).score_prompt(prompt)  # the pass and the readout, no embedding model
        out["time"] = time.perf_counter() - t0
    elif kind == "compress":
        comp.compress(docs, QUESTION, top_k=budget)  # the shipped default, end to end
        out["time"] = time.perf_counter() - t0
    elif kind == "stages":
        comp.compress(short, QUESTION, top_k=16)  # warm the embedding model too, where there is one
        out["stages"] = stage_times(comp, docs, QUESTION, budget)
        out["time"] = sum(out["stages"].values())
    elif kind == "full_generate":
        clock = _Clock(comp.tokenizer, stream=False)
        with torch.inference_mode():
            gen = comp.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=False,
                streamer=clock,
                pad_token_id=comp.tokenizer.pad_token_id,
            )
        end = time.perf_counter()
        first = clock.first or end
        out.update(
            prompt_phase=first - t0,
            first_token=first - t0,
            total=end - t0,
            new_tokens=int(gen.shape[1] - ids.shape[1]),
            read_tokens=prompt.length,
        )
    elif kind == "gemfilter_generate":
        res = comp.generate(docs, QUESTION, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, top_k=budget)
        assert isinstance(res, GenerationResult)
        out.update(
            prompt_phase=res.timings["prompt"],
            first_token=res.timings["first_token"],
            total=res.timings["total"],
            filter=res.compression.timings.get("filter", 0.0),
            new_tokens=res.new_tokens,
            read_tokens=res.prompt_tokens,
            budget=budget,
        )
    else:
        raise ValueError(f"kind: unknown measurement {kind!r}")
    peak_kb = _status_kb("VmHWM")
    out["peak_rss_mb"] = peak_kb / 1024
    out["peak_delta_mb"] = (peak_kb - base_kb) / 1024
    return out


# ---------------------------------------------------------------- driver


def machine() -> dict[str, Any]:
    """CPU model, cores, torch threads and library versions of this machine."""
    import torch
    import transformers

    cpu = cpu_model()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def prepare_model(source: str | None = None) -> tuple[str, dict[str, Any]]:
    """The model directory the workers load, and its facts (filter layer, layers).

    ``source`` None: the default model's cached safetensors directory (``loading.default_model_dir``),
    which each worker loads in seconds. Otherwise a transformers model directory, used as it is.
    """
    from gemfilter_rag.loading import default_model_dir

    model_dir = source if source is not None else str(default_model_dir())
    return model_dir, _facts(_load(model_dir))


def _facts(comp: Any) -> dict[str, Any]:
    return {
        "filter_layer": comp.filter_layer,
        "num_layers": comp.num_layers,
        "model": type(comp.model).__name__,
        "top_k": comp.config.top_k,
        "granularity": comp.config.granularity,
    }


def run_one(spec: dict[str, Any], repeats: int) -> dict[str, Any]:
    """Run a measurement ``repeats`` times, each in a fresh process; keep the fastest run."""
    best: dict[str, Any] | None = None
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.speed", "--worker", json.dumps(spec)],
            capture_output=True,
            text=True,
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            raise RuntimeError(f"measurement {spec['kind']} at {spec['tokens']} tokens failed:\n{proc.stderr[-2000:]}")
        got = json.loads(lines[-1])
        key = "time" if "time" in got else "total"
        if best is None or got[key] < best[key]:
            best = got
    assert best is not None
    return best


def budget_for(tokens: int) -> int:
    """The paper's 1024-token budget, or a quarter of the context when that is smaller."""
    return min(PAPER_BUDGET, tokens // 4)


def run(quick: bool, repeats: int, threads: int | None, out_dir: Path, model: str | None = None) -> dict[str, Any]:
    """All measurements; returns the report dict (also written as JSON/Markdown/PNG under ``out_dir``)."""
    model_dir, facts = prepare_model(model)
    r, layers = facts["filter_layer"], facts["num_layers"]
    limit = (r + 1) / layers
    base = {"model_dir": model_dir, "threads": threads, "filter_layer": r}
    prefill_rows = []
    for n in QUICK_PREFILL if quick else PREFILL_LENGTHS:
        full = run_one({**base, "kind": "prefill", "tokens": n, "budget": n}, repeats)
        filt = run_one({**base, "kind": "filter", "tokens": n, "budget": budget_for(n)}, repeats)
        comp_row = run_one({**base, "kind": "compress", "tokens": n, "budget": budget_for(n)}, repeats)
        prev_row = (
            run_one({**base, "kind": "compress", "tokens": n, "budget": budget_for(n), "previous": True}, repeats)
            if model is None  # the previous default exists for the default model only
            else None
        )
        prefill_rows.append(
            {
                "tokens": full["prompt_tokens"],
                "context_tokens": n,
                "prefill_s": full["time"],
                "filter_s": filt["time"],
                "compress_s": comp_row["time"],
                **(
                    {
                        "previous_compress_s": prev_row["time"],
                        "compress_vs_previous": comp_row["time"] / prev_row["time"],
                    }
                    if prev_row is not None
                    else {}
                ),
                "ratio": filt["time"] / full["time"],
                "limit": limit,
                "prefill_peak_mb": full["peak_rss_mb"],
                "filter_peak_mb": filt["peak_rss_mb"],
                "prefill_delta_mb": full["peak_delta_mb"],
                "filter_delta_mb": filt["peak_delta_mb"],
            }
        )
        print(f"  prefill vs filter at {n}: {full['time']:.2f}s vs {filt['time']:.2f}s", flush=True)
        if prev_row is not None:
            print(f"  compress at {n}: {comp_row['time']:.2f}s, previous default {prev_row['time']:.2f}s", flush=True)
    stage_rows = []
    for n in QUICK_PREFILL if quick else STAGE_LENGTHS:
        for previous in (False, True) if model is None else (False,):
            spec = {**base, "kind": "stages", "tokens": n, "budget": budget_for(n), "previous": previous}
            got = run_one(spec, repeats)
            stage_rows.append({"context_tokens": n, "previous": previous, **got["stages"], "total": got["time"]})
    gen_rows = []
    for n in QUICK_GENERATION if quick else GENERATION_LENGTHS:
        full = run_one({**base, "kind": "full_generate", "tokens": n, "budget": n}, repeats)
        gem = run_one({**base, "kind": "gemfilter_generate", "tokens": n, "budget": budget_for(n)}, repeats)
        gen_rows.append(
            {
                "context_tokens": n,
                "budget": budget_for(n),
                "full": full,
                "gemfilter": gem,
                "speedup_total": full["total"] / gem["total"],
                "speedup_prompt": full["prompt_phase"] / gem["prompt_phase"],
            }
        )
        print(f"  generation at {n}: full {full['total']:.2f}s, gemfilter {gem['total']:.2f}s", flush=True)
    worker_threads = gen_rows[0]["full"]["threads"] if gen_rows else None
    report = {
        "machine": {**machine(), "torch_threads": worker_threads},
        "model": facts,
        "filter_layer": r,
        "num_layers": layers,
        "layer_fraction_limit": limit,
        "new_tokens": NEW_TOKENS,
        "repeats": repeats,
        "quick": quick,
        "prefill": prefill_rows,
        "stages": stage_rows,
        "generation": gen_rows,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    write(report, out_dir)
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables, machine named."""
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} with {m['torch_threads']} threads, "
        f"transformers {m['transformers']}; model {report['model']['model']} "
        f"({report['num_layers']} layers), filter layer {report['filter_layer']}; {report['date']}; "
        f"best of {report['repeats']} run(s), each in a fresh process.",
        "",
        f"Filter pass vs full prefill (logits_to_keep=1, no cache); layer-fraction limit (r+1)/L = "
        f"{report['layer_fraction_limit']:.3f}",
        "",
        "| prompt tokens | full prefill (s) | filter pass (s) | ratio | limit | compress, defaults (s) "
        "| compress, previous default (s) | default / previous "
        "| peak RSS prefill, above start (MB) | peak RSS filter, above start (MB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["prefill"]:
        compress = f"{row['compress_s']:.2f}" if "compress_s" in row else "-"
        previous = f"{row['previous_compress_s']:.2f}" if "previous_compress_s" in row else "-"
        versus = f"{row['compress_vs_previous']:.3f}" if "compress_vs_previous" in row else "-"
        lines.append(
            f"| {row['tokens']} | {row['prefill_s']:.2f} | {row['filter_s']:.2f} | {row['ratio']:.3f} "
            f"| {row['limit']:.3f} | {compress} | {previous} | {versus} "
            f"| {row['prefill_peak_mb']:.0f}, {row['prefill_delta_mb']:.0f} "
            f"| {row['filter_peak_mb']:.0f}, {row['filter_delta_mb']:.0f} |"
        )
    if report.get("stages"):
        lines += [
            "",
            "Where one `compress` call's time goes (s): the default and the previous default (float32, "
            "layers 0..15, all-MiniLM-L6-v2), the pipeline's own functions timed one by one",
            "",
            "| context tokens | compressor | " + " | ".join(STAGES) + " | total |",
            "|---:|---|" + "---:|" * (len(STAGES) + 1),
        ]
        for row in report["stages"]:
            name = "previous default" if row["previous"] else "default"
            cells = " | ".join(f"{row[s]:.3f}" for s in STAGES)
            lines.append(f"| {row['context_tokens']} | {name} | {cells} | {row['total']:.3f} |")
    lines += [
        "",
        f"Generation of {report['new_tokens']} new tokens, greedy: full context vs GemFilter "
        "(filter pass, then the full model over the kept tokens)",
        "",
        "| context tokens | budget | method | tokens read | prompt phase (s) | first token (s) | total (s) "
        "| peak RSS, above start (MB) | speed-up (total) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["generation"]:
        for name in ("full", "gemfilter"):
            r = row[name]
            speed = f"{row['speedup_total']:.2f}x" if name == "gemfilter" else ""
            lines.append(
                f"| {row['context_tokens']} | {row['budget'] if name == 'gemfilter' else '-'} | {name} "
                f"| {r['read_tokens']} | {r['prompt_phase']:.2f} | {r['first_token']:.2f} | {r['total']:.2f} "
                f"| {r['peak_rss_mb']:.0f}, {r['peak_delta_mb']:.0f} | {speed} |"
            )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Time and memory against context length, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gen = report["generation"]
    xs = [row["context_tokens"] for row in gen]
    pre = report["prefill"]
    px = [row["context_tokens"] for row in pre]
    paths = []
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, style in (("full", "o-"), ("gemfilter", "s-")):
        ax.plot(xs, [row[name]["total"] for row in gen], style, label=f"{name}: total ({report['new_tokens']} tokens)")
        ax.plot(xs, [row[name]["first_token"] for row in gen], style.replace("-", "--"), label=f"{name}: first token")
    ax.plot(px, [row["prefill_s"] for row in pre], "^:", label="full prefill")
    ax.plot(px, [row["filter_s"] for row in pre], "v:", label="filter pass")
    ax.set(xlabel="context tokens", ylabel="seconds", title="Time against context length (CPU)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    paths.append(out_dir / "speed_time.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, style in (("full", "o-"), ("gemfilter", "s-")):
        ax.plot(xs, [row[name]["peak_rss_mb"] for row in gen], style, label=f"{name} generation")
    ax.plot(px, [row["prefill_peak_mb"] for row in pre], "^:", label="full prefill")
    ax.plot(px, [row["filter_peak_mb"] for row in pre], "v:", label="filter pass")
    ax.set(xlabel="context tokens", ylabel="peak RSS (MB)", title="Peak memory against context length (CPU)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    paths.append(out_dir / "speed_memory.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def write(report: dict[str, Any], out_dir: Path) -> None:
    """speed.json, speed.md and the PNG plots under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "speed.json").write_text(json.dumps(report, indent=2))
    (out_dir / "speed.md").write_text(markdown(report))
    plot(report, out_dir)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small lengths only (a smoke run)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per measurement, fastest kept (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"output folder (default {RESULTS})")
    parser.add_argument("--model", default=None, help="a transformers model directory (default: the embedded model)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))), flush=True)
        return 0
    if args.repeats < 1:
        parser.error(f"--repeats: expected a positive int, got {args.repeats}")
    report = run(args.quick, args.repeats, args.threads, args.out, args.model)
    print(markdown(report))
    print(f"written: {args.out / 'speed.json'}, {args.out / 'speed.md'}, speed_time.png, speed_memory.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
