"""``gemfilter serve`` and ``python -m gemfilter_rag.serve``: options, and a real process with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gemfilter_rag import CompressionResult, GemFilterCompressor, cli
from gemfilter_rag.serve import ServeSettings
from gemfilter_rag.serve.command import settings_from
from gemfilter_rag.serve.testing import without_timings

DOCS = [
    "Cities send messages. New York tells you that you should make more money.",
    "Startups in 2005 could be started for far less money than in 1995. Servers were cheaper.",
]
QUERY = "What does New York tell you?"


def test_help_lists_every_limit_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    defaults = ServeSettings()
    for flag, value in [
        ("--max-batch", defaults.max_batch),
        ("--max-wait-ms", defaults.max_wait_ms),
        ("--max-queue", defaults.max_queue),
        ("--max-request-bytes", defaults.max_request_bytes),
        ("--max-documents", defaults.max_documents),
        ("--max-context-tokens", defaults.max_context_tokens),
        ("--drain-timeout", defaults.drain_timeout_s),
    ]:
        assert flag in text and f"(default {value})" in text
    for flag in ("--model", "--profile", "--host", "--port", "--ray", "--replicas", "--num-gpus", "--ray-address"):
        assert flag in text


def test_flags_become_settings() -> None:
    args = cli.build_parser().parse_args(["serve", "--max-batch", "16", "--max-queue", "5", "--max-wait-ms", "2.5"])
    assert settings_from(args) == ServeSettings(max_batch=16, max_queue=5, max_wait_ms=2.5)


def test_bad_settings_exit_2_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--max-batch", "0"]) == 2
    assert "--max-batch" in capsys.readouterr().err
    assert cli.main(["serve", "--profile", "/no/such/profile.json"]) == 2
    assert "--profile" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_real_server_process_answers_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    from tinymodels import build_model, build_tokenizer

    model_dir = tmp_path / "tiny"
    build_model("llama").save_pretrained(model_dir)
    build_tokenizer().save_pretrained(model_dir)
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gemfilter_rag.serve", "--model", str(model_dir), "--device", "cpu"]
        + ["--port", str(port), "--max-batch", "4", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600  # seconds here; minutes on a machine busy with other jobs
        while True:  # the process loads torch and the model first
            assert proc.poll() is None, proc.communicate()[0]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up within 600 s"
            time.sleep(0.2)
        response = httpx.post(url + "/v1/compress", json={"documents": DOCS, "query": QUERY, "top_k": 8}, timeout=60)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert response.status_code == 200, response.text
    local: Any = GemFilterCompressor.from_pretrained(str(model_dir), device="cpu").compress(DOCS, QUERY, top_k=8)
    assert without_timings(CompressionResult.from_dict(response.json())) == without_timings(local)
    assert proc.returncode == 0, output
    assert "Traceback" not in output


def test_the_core_and_the_cli_work_without_the_serve_extras() -> None:
    code = (
        "import sys\n"
        "BLOCKED = {'fastapi', 'uvicorn', 'ray', 'prometheus_client', 'starlette'}\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import gemfilter_rag, gemfilter_rag.serve, gemfilter_rag.remote, gemfilter_rag.serve.command\n"
        "from gemfilter_rag import cli\n"
        "try:\n"
        "    from gemfilter_rag.serve import create_app\n"
        "except ImportError as err:\n"
        "    print('create_app:', err)\n"
        "print('exit', cli.main(['serve', '--port', '1']))\n"
        "print('loaded', sorted({m.split('.')[0] for m in sys.modules} & BLOCKED))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "create_app: gemfilter serve needs fastapi" in out.stdout
    assert "pip install 'gemfilter-rag[serve]'" in out.stdout and "pip install 'gemfilter-rag[serve]'" in out.stderr
    assert "exit 1" in out.stdout and "loaded []" in out.stdout


def test_the_remote_client_says_what_to_install_without_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    from gemfilter_rag import RemoteGemFilterCompressor

    monkeypatch.setitem(sys.modules, "httpx", None)  # import httpx now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'gemfilter-rag\[serve\]'"):
        RemoteGemFilterCompressor("http://127.0.0.1:1").compress(DOCS, QUERY)
