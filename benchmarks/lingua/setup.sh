#!/usr/bin/env bash
# Create benchmarks/lingua/.venv: a side environment for LongLLMLingua (llmlingua 0.2.2), which needs
# transformers 4.x (it indexes past_key_values as tuples, which transformers 5 no longer returns).
# Usage: bash benchmarks/lingua/setup.sh   (idempotent; PYTHON and TORCH_SPEC may be overridden)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
VENV="$HERE/.venv"
STAMP="$VENV/.installed"
if [ -f "$STAMP" ]; then exit 0; fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
"$VENV/bin/python" -m pip install -q -r "$HERE/requirements.txt"
touch "$STAMP"
