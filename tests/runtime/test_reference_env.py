"""Our export loads in sentence-transformers' own ONNX backend (optimum-onnx, transformers<4.58).

That backend cannot share the project's environment, so it runs in .venv-ref
(`bash scripts/ref_onnx_env.sh`, about 2 minutes); the test skips when that venv is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from biencoder.runtime.export import ExportConfig, export
from biencoder.runtime.onnx_encoder import OnnxEncoder
from tests.tiny import build_tiny_encoder

REF_PY = Path(__file__).resolve().parents[2] / ".venv-ref" / "bin" / "python"
TEXTS = ["the cat and the dog", "what is a vector search model", "big green house", "a", "fish " * 40]

SCRIPT = """
import json, sys
from sentence_transformers import SentenceTransformer
folder, file_name, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
model = SentenceTransformer(folder, backend="onnx", device="cpu", model_kwargs={"file_name": file_name})
print(json.dumps(model.encode(texts, convert_to_numpy=True).tolist()))
"""


@pytest.mark.slow
@pytest.mark.reference
@pytest.mark.skipif(not REF_PY.is_file(), reason=".venv-ref absent (bash scripts/ref_onnx_env.sh)")
@pytest.mark.parametrize(
    "precision,file_name", [("fp32", "onnx/model.onnx"), ("int8", "onnx/model_qint8.onnx")]
)
def test_sentence_transformers_onnx_backend_loads_our_export(
    tmp_path: Path, precision: str, file_name: str
) -> None:
    folder = build_tiny_encoder(tmp_path / "tiny")
    export(folder, TEXTS * 2, ExportConfig(quantize="int8", min_mean_cosine_int8=-1, min_cosine_int8=-1))
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [str(REF_PY), "-c", SCRIPT, str(folder), file_name, json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    theirs = np.array(json.loads(out.stdout.strip().splitlines()[-1]), dtype=np.float32)
    ours = OnnxEncoder.load(folder, precision=precision, threads=1).encode(TEXTS)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
