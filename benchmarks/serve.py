"""Load and fault test of ``gemfilter serve`` on 127.0.0.1 (``make bench-serve``).

The server runs in its own process (``python -m gemfilter_rag.serve``, the embedded default model unless
``--model``); this process drives it with 1, 4, 16 and 64 concurrent clients (asyncio + httpx, a closed
loop: each client sends its requests one after the other). Every request is 10 essay chunks of about 150
tokens and a question, budget 256 tokens; half of them carry retriever scores. The same load runs
against the server with dynamic batching (``--max-batch 8``) and without (``--max-batch 1``). Then:

- load shedding: 64 clients at once against a queue of 8; every accepted request must equal the
  library's result, the rest must get 429 with Retry-After;
- faults, beside a background load: clients that disconnect mid-request, a request at the
  context-token limit (and one just over it: 413), and a burst of malformed requests; the requests
  around them must all succeed with the library's results.

Throughput (requests/s, context tokens/s), client-side latency percentiles, batch sizes (from
``/metrics``) and the server's resident memory are recorded with the load average of the machine.
Writes ``serve.json``, ``serve.md`` and ``serve.png`` under ``benchmarks/results``.

Usage: ``python -m benchmarks.serve [--quick] [--model DIR] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .machine import cpu_model

CLIENTS = (1, 4, 16, 64)
QUICK_CLIENTS = (1, 4)
DISTINCT = 16
DOCS_PER_REQUEST = 10
CHUNK_TOKENS = 150
BUDGET = 256
SHED_QUEUE = 8
FAULT_TOKEN_LIMIT = 8192
QUESTIONS = [
    "What does the author say is the most important thing for a startup?",
    "Why do founders build things nobody wants?",
    "What did the author learn from writing essays?",
    "What makes a city good for startups?",
]
RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------- requests


def essay_chunks(tokenizer: Any, n: int, tokens: int) -> list[str]:
    """``n`` consecutive chunks of the essays, each cut at a word boundary after about ``tokens`` tokens."""
    from gemfilter_rag.data import load_essays

    out: list[str] = []
    for _, essay in load_essays():
        enc = tokenizer(essay, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        start = 0
        while start + tokens < len(offsets) and len(out) < n:
            end_char = offsets[start + tokens][0]
            space = essay.rfind(" ", offsets[start][0], end_char)
            end_char = space if space > offsets[start][0] else end_char
            out.append(essay[offsets[start][0] : end_char].strip())
            while start < len(offsets) and offsets[start][0] < end_char:
                start += 1
        if len(out) >= n:
            return out
    return out


def build_requests(
    tokenizer: Any, distinct: int = DISTINCT, per_request: int = DOCS_PER_REQUEST
) -> list[dict[str, Any]]:
    """The fixed request mix: ``distinct`` requests of ``per_request`` chunks; every other one with retriever scores."""
    chunks = essay_chunks(tokenizer, distinct * per_request, CHUNK_TOKENS)
    bodies = []
    for j in range(distinct):
        docs = chunks[j * per_request : (j + 1) * per_request]
        body: dict[str, Any] = {"documents": docs, "query": QUESTIONS[j % len(QUESTIONS)], "top_k": BUDGET}
        if j % 2:
            body["document_scores"] = [round(0.8 - 0.05 * k, 3) for k in range(len(docs))]
        bodies.append(body)
    return bodies


def long_request(tokenizer: Any, limit: int) -> dict[str, Any]:
    """A request whose context is just under ``limit`` tokens (whole essay chunks)."""
    chunks = essay_chunks(tokenizer, 4 * limit // CHUNK_TOKENS, CHUNK_TOKENS)
    docs: list[str] = []
    total = 0
    for chunk in chunks:
        n = len(tokenizer(chunk, add_special_tokens=False)["input_ids"])
        if total + n > limit - 64:
            break
        docs.append(chunk)
        total += n
    return {"documents": docs, "query": QUESTIONS[0], "top_k": BUDGET}


def library_result(comp: Any, body: dict[str, Any]) -> Any:
    """What the library returns for a request body, called directly (the reference for every answer)."""
    return comp.compress(
        body["documents"], body["query"], top_k=body.get("top_k"), document_scores=body.get("document_scores")
    )


# ---------------------------------------------------------------- the server process


class ServerProcess:
    """``python -m gemfilter_rag.serve`` on 127.0.0.1:<free port>, stopped with SIGTERM."""

    def __init__(self, model: str | None, *flags: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "gemfilter_rag.serve", "--port", str(self.port), "--log-level", "warning"]
        cmd += ["--device", "cpu", *(["--model", model] if model else []), *flags]
        self.flags = list(flags)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait_ready(self, timeout: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.communicate()[0][-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise RuntimeError("the server did not come up")

    def memory_mb(self) -> dict[str, float]:
        """Resident memory now and its peak (VmRSS, VmHWM) in MB."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        kb = {k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M)}
        return {"rss_mb": round(kb.get("VmRSS", 0) / 1024, 1), "peak_rss_mb": round(kb.get("VmHWM", 0) / 1024, 1)}

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        return int(self.proc.returncode)


def scrape(url: str) -> dict[str, float]:
    """Every sample of ``/metrics`` as {"name{labels}": value}."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=30).text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def batch_sizes(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Batches run between two scrapes: count, mean size and the histogram (upper bound -> batches)."""
    count = after["gemfilter_batch_size_count"] - before.get("gemfilter_batch_size_count", 0)
    total = after["gemfilter_batch_size_sum"] - before.get("gemfilter_batch_size_sum", 0)
    buckets: dict[str, float] = {}
    previous = 0.0
    for key in sorted(
        (k for k in after if k.startswith("gemfilter_batch_size_bucket")), key=lambda k: float(k.split("=")[1][:-1])
    ):
        cumulative = after[key] - before.get(key, 0)
        if cumulative - previous:
            buckets[f"<={float(key.split('=')[1][:-1]):g}"] = cumulative - previous
        previous = cumulative
    return {"batches": count, "mean": total / count if count else 0.0, "histogram": buckets}


# ---------------------------------------------------------------- load


@dataclass
class Sample:
    """One request as the client saw it."""

    index: int
    status: int
    seconds: float
    context_tokens: int = 0
    retry_after: str | None = None
    body: dict[str, Any] | None = None


async def drive(url: str, bodies: list[dict[str, Any]], clients: int, per_client: int) -> tuple[list[Sample], float]:
    """``clients`` concurrent clients, each sending ``per_client`` requests in turn (cycling the mix)."""
    import httpx

    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(timeout=900, limits=limits) as client:

        async def one_client(c: int) -> list[Sample]:
            out = []
            for r in range(per_client):
                index = (c * per_client + r) % len(bodies)
                t0 = time.perf_counter()
                response = await client.post(url + "/v1/compress", json=bodies[index])
                sample = Sample(index, response.status_code, time.perf_counter() - t0)
                if response.status_code == 200:
                    sample.body = response.json()
                    sample.context_tokens = int(sample.body["original_tokens"])
                sample.retry_after = response.headers.get("retry-after")
                out.append(sample)
            return out

        t0 = time.perf_counter()
        per = await asyncio.gather(*(one_client(c) for c in range(clients)))
        wall = time.perf_counter() - t0
    return [s for samples in per for s in samples], wall


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def check(samples: list[Sample], expected: list[Any]) -> dict[str, int]:
    """How many accepted answers equal the library's result (``same_result``), and how many bit for bit."""
    from gemfilter_rag import CompressionResult
    from gemfilter_rag.serve.testing import same_result, without_timings

    correct = identical = 0
    for s in samples:
        if s.body is None:
            continue
        got = CompressionResult.from_dict(s.body)
        correct += same_result(got, expected[s.index])
        identical += without_timings(got) == without_timings(expected[s.index])
    return {"accepted": sum(s.body is not None for s in samples), "correct": correct, "bit_identical": identical}


def summarize(samples: list[Sample], wall: float) -> dict[str, Any]:
    """Throughput, latency percentiles and answers by status of one run."""
    ok = [s for s in samples if s.status == 200]
    statuses: dict[str, int] = {}
    for s in samples:
        statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
    latencies = [s.seconds for s in ok]
    return {
        "requests": len(samples),
        "ok": len(ok),
        "statuses": statuses,
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(ok) / wall, 3),
        "context_tokens_per_s": round(sum(s.context_tokens for s in ok) / wall, 1),
        "p50_s": round(percentile(latencies, 50), 2),
        "p95_s": round(percentile(latencies, 95), 2),
        "p99_s": round(percentile(latencies, 99), 2),
    }


def load_runs(
    model: str | None,
    bodies: list[dict[str, Any]],
    expected: list[Any],
    clients: tuple[int, ...],
    quick: bool,
    report: dict[str, Any],
    save: Any,
) -> None:
    """The client sweep with batching and without, into ``report["load"]`` and ``report["memory"]``
    (saved after every row)."""
    rows = report.setdefault("load", [])
    memory = report.setdefault("memory", {})
    modes = {"batching": ["--max-batch", "8"], "one at a time": ["--max-batch", "1"]}
    servers = {
        mode: ServerProcess(model, *flags, "--max-wait-ms", "5", "--max-queue", "64") for mode, flags in modes.items()
    }
    try:
        for mode, server in servers.items():
            server.wait_ready()
            memory[f"idle, {mode}"] = server.memory_mb()
            asyncio.run(drive(server.url, bodies[:2], 1, 1))  # warm-up
        for n in clients:  # both servers at each level, so that a run cut short still compares them
            per_client = 2 if quick else max(1, {1: 8, 4: 4, 16: 2}.get(n, 1))
            for mode, server in servers.items():  # one server works at a time; the other one idles
                load0 = os.getloadavg()[0]
                before = scrape(server.url)
                samples, wall = asyncio.run(drive(server.url, bodies, n, per_client))
                row = {"mode": mode, "clients": n, **summarize(samples, wall), **check(samples, expected)}
                row["batch"] = batch_sizes(before, scrape(server.url))
                row["load_avg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
                rows.append(row)
                memory[f"after load, {mode}"] = server.memory_mb()
                save()
                print(json.dumps(row), flush=True)
    finally:
        for server in servers.values():
            server.stop()


def shedding_run(model: str | None, bodies: list[dict[str, Any]], expected: list[Any], clients: int) -> dict[str, Any]:
    """``clients`` requests at once against a queue of ``SHED_QUEUE``: 429s, and correct accepted answers."""
    server = ServerProcess(model, "--max-batch", "8", "--max-wait-ms", "5", "--max-queue", str(SHED_QUEUE))
    server.wait_ready()
    try:
        before = scrape(server.url)
        samples, wall = asyncio.run(drive(server.url, bodies, clients, 1))
        after = scrape(server.url)
    finally:
        server.stop()
    shed = [s for s in samples if s.status == 429]
    row = {"clients": clients, "max_queue": SHED_QUEUE, **summarize(samples, wall), **check(samples, expected)}
    row["rejected_429"] = len(shed)
    row["retry_after"] = sorted({s.retry_after for s in shed if s.retry_after})
    row["rejected_in_s_p95"] = round(percentile([s.seconds for s in shed], 95), 3)
    row["batch"] = batch_sizes(before, after)
    row["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(row), flush=True)
    return row


# ---------------------------------------------------------------- faults


MALFORMED = [
    b"{",
    b"[]",
    b"null",
    b'{"documents": "not a list", "query": "q"}',
    b'{"documents": ["a"], "query": ""}',
    b'{"documents": ["a"], "query": "q", "top_k": -1}',
    b'{"documents": ["a"], "query": "q", "options": {"granularity": "paragraph"}}',
    b"\xff\xfe\x00garbage",
]


async def _disconnecting_client(port: int, body: dict[str, Any], after_s: float) -> None:
    """Send a whole request, then close the connection before the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = json.dumps(body).encode()
    writer.write(
        b"POST /v1/compress HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()
    await asyncio.sleep(after_s)
    writer.close()


async def _faults(
    url: str, port: int, bodies: list[dict[str, Any]], big: dict[str, Any], over: dict[str, Any], quick: bool
) -> dict[str, Any]:
    import httpx

    async with httpx.AsyncClient(timeout=900) as client:

        async def bad(i: int) -> int:
            r = await client.post(
                url + "/v1/compress",
                content=MALFORMED[i % len(MALFORMED)],
                headers={"content-type": "application/json"},
            )
            return r.status_code

        async def post(body: dict[str, Any]) -> httpx.Response:
            return await client.post(url + "/v1/compress", json=body)

        background = asyncio.ensure_future(drive(url, bodies, 2 if quick else 8, 2))
        disconnects = [_disconnecting_client(port, bodies[i % len(bodies)], 0.05 + 0.1 * i) for i in range(3)]
        big_task = asyncio.ensure_future(post(big))
        over_status = (await post(over)).status_code
        bad_statuses = await asyncio.gather(*(bad(i) for i in range(24 if quick else 96)))
        await asyncio.gather(*disconnects)
        big_response = await big_task
        samples, _ = await background
    return {
        "background": samples,
        "big": big_response,
        "over_status": over_status,
        "malformed_statuses": bad_statuses,
    }


def fault_run(model: str | None, bodies: list[dict[str, Any]], expected: list[Any], comp: Any, quick: bool) -> dict:
    """Disconnects, a request at the token limit, a malformed burst, beside normal requests."""
    import httpx

    from gemfilter_rag import CompressionResult
    from gemfilter_rag.serve.testing import same_result

    limit = 1024 if quick else FAULT_TOKEN_LIMIT
    big = long_request(comp.tokenizer, limit)
    over = {**big, "documents": big["documents"] * 2}
    server = ServerProcess(model, "--max-batch", "8", "--max-wait-ms", "5", "--max-context-tokens", str(limit))
    server.wait_ready()
    try:
        got = asyncio.run(_faults(server.url, server.port, bodies, big, over, quick))
        after = scrape(server.url)
        health = httpx.get(server.url + "/health", timeout=30).json()
        exit_code = server.stop()
    finally:
        if server.proc.poll() is None:
            server.stop()
    background = got["background"]
    big_expected = library_result(comp, big)
    big_ok = got["big"].status_code == 200 and same_result(CompressionResult.from_dict(got["big"].json()), big_expected)
    row = {
        "background_requests": len(background),
        "background_ok": sum(s.status == 200 for s in background),
        **{f"background_{k}": v for k, v in check(background, expected).items()},
        "disconnecting_clients": 3,
        "disconnects_seen": after["gemfilter_errors_total{kind=client_disconnected,route=/v1/compress}"],
        "max_size_context_tokens": big_expected.original_tokens,
        "max_size_limit": limit,
        "max_size_ok_and_correct": big_ok,
        "over_limit_status": got["over_status"],
        "malformed": len(got["malformed_statuses"]),
        "malformed_422": sum(s == 422 for s in got["malformed_statuses"]),
        "health_after": health["status"],
        "exit_code_after_sigterm": exit_code,
    }
    print(json.dumps(row), flush=True)
    return row


# ---------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    """CPU, cores, library versions and the load average when the run started."""
    import platform

    import fastapi
    import torch
    import transformers
    import uvicorn

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
        "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def markdown(report: dict[str, Any]) -> str:
    """The report's tables."""
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']}, transformers {m['transformers']}, "
        f"fastapi {m['fastapi']}, uvicorn {m['uvicorn']}; model {report['model']}; {report['date']}. "
        f"Load average at start {m['load_avg_at_start']} (other jobs on the machine count here).",
        "",
        f"Each request: {report['documents_per_request']} essay chunks of ~{CHUNK_TOKENS} tokens "
        f"(~{report['mean_context_tokens']:.0f} context tokens) and a question, budget {BUDGET}; "
        "half carry retriever scores. Closed loop: each client sends its next request when the last one is answered.",
        "",
        "| server | clients | requests | ok | errors | req/s | context tokens/s | p50 (s) | p95 (s) | p99 (s) "
        "| batches (mean size) | correct | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in report["load"]:
        errors = r["requests"] - r["ok"]
        lines.append(
            f"| {r['mode']} | {r['clients']} | {r['requests']} | {r['ok']} | {errors} | {r['requests_per_s']:.2f} "
            f"| {r['context_tokens_per_s']:.0f} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['p99_s']:.2f} "
            f"| {r['batch']['batches']:.0f} ({r['batch']['mean']:.1f}) | {r['correct']}/{r['accepted']} "
            f"| {r['load_avg_1m'][0]}-{r['load_avg_1m'][1]} |"
        )
    lines += [
        "",
        "Server memory (one process = one replica, MB): "
        + "; ".join(f"{k}: RSS {v['rss_mb']:.0f}, peak {v['peak_rss_mb']:.0f}" for k, v in report["memory"].items()),
    ]
    if "shedding" not in report:
        return "\n".join(lines + ["", "(the run stopped before the load-shedding and fault stages)"]) + "\n"
    s = report["shedding"]
    lines += [
        "",
        f"Load shedding: {s['clients']} clients at once, --max-queue {s['max_queue']}: {s['ok']} accepted, "
        f"{s['rejected_429']} answered 429 (Retry-After {', '.join(s['retry_after']) or '-'} s; p95 time to the "
        f"429: {s['rejected_in_s_p95']} s); accepted answers equal to the library's: {s['correct']}/{s['accepted']} "
        f"({s['bit_identical']} bit for bit; the rest differ in score_share below 1e-4 relative).",
    ]
    if "faults" not in report:
        return "\n".join(lines + ["", "(the run stopped before the fault stage)"]) + "\n"
    f = report["faults"]
    lines += [
        "",
        f"Faults beside {f['background_requests']} normal requests ({f['background_ok']} ok, "
        f"{f['background_correct']} equal to the library's): {f['disconnecting_clients']} clients disconnected "
        f"mid-request ({f['disconnects_seen']:.0f} seen by the server); a request of "
        f"{f['max_size_context_tokens']} context tokens at a {f['max_size_limit']}-token limit "
        f"{'answered correctly' if f['max_size_ok_and_correct'] else 'FAILED'}, one over it got "
        f"{f['over_limit_status']}; {f['malformed_422']}/{f['malformed']} malformed requests got 422; "
        f"health afterwards: {f['health_after']}; exit code after SIGTERM: {f['exit_code_after_sigterm']}.",
    ]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """Throughput and p50/p95 latency against concurrent clients, batching vs one at a time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, colour in (("batching", "tab:blue"), ("one at a time", "tab:orange")):
        rows = [r for r in report["load"] if r["mode"] == mode]
        xs = [r["clients"] for r in rows]
        a.plot(xs, [r["context_tokens_per_s"] for r in rows], "o-", color=colour, label=mode)
        b.plot(xs, [r["p50_s"] for r in rows], "o-", color=colour, label=f"{mode}, p50")
        b.plot(xs, [r["p95_s"] for r in rows], "s--", color=colour, label=f"{mode}, p95")
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.grid(alpha=0.3)
        ax.legend()
    a.set_ylabel("context tokens / s")
    b.set_ylabel("latency (s)")
    a.set_title("throughput")
    b.set_title("latency")
    fig.suptitle(f"gemfilter serve on {report['machine']['cores']} CPU cores, {report['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 and 4 clients, few requests (a smoke test)")
    parser.add_argument("--model", default=None, help="model directory (default: the embedded SmolLM2-135M)")
    parser.add_argument("--out", default=str(RESULTS), help="output folder")
    parser.add_argument("--report", action="store_true", help="only write serve.md and serve.png from serve.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers (finally blocks) when stopped
    if args.report:
        report = json.loads((Path(args.out) / "serve.json").read_text())
        (Path(args.out) / "serve.md").write_text(markdown(report))
        plot(report, Path(args.out) / "serve.png")
        print(markdown(report))
        return 0
    started = time.time()
    report: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    from gemfilter_rag import GemFilterCompressor

    comp = GemFilterCompressor.from_pretrained(args.model, device="cpu")
    bodies = build_requests(comp.tokenizer, 4, 4) if args.quick else build_requests(comp.tokenizer)
    expected = [library_result(comp, b) for b in bodies]
    report["model"] = (
        f"{type(comp.model).__name__} ({args.model or 'SmolLM2-135M-Instruct'}), layer {comp.filter_layer}"
    )
    report["mean_context_tokens"] = sum(e.original_tokens for e in expected) / len(expected)
    report["documents_per_request"] = len(bodies[0]["documents"])
    clients = QUICK_CLIENTS if args.quick else CLIENTS
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every stage, so that a long run leaves what it measured
        report["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        report["minutes"] = round((time.time() - started) / 60, 1)
        (out / "serve.json").write_text(json.dumps(report, indent=2, default=lambda o: asdict(o)) + "\n")

    load_runs(args.model, bodies, expected, clients, args.quick, report, save)
    report["shedding"] = shedding_run(args.model, bodies, expected, 16 if args.quick else 64)
    save()
    report["faults"] = fault_run(args.model, bodies, expected, comp, args.quick)
    save()
    (out / "serve.md").write_text(markdown(report))
    plot(report, out / "serve.png")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
