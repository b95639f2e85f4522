"""int8 and binary quantization against sentence-transformers' quantize_embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from biencoder.index.quantize import (
    dequantize_binary,
    dequantize_int8,
    int8_ranges,
    quantize_binary,
    quantize_int8,
)

st_quant = pytest.importorskip("sentence_transformers.util.quantization")


def test_int8_equals_sentence_transformers() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 24)).astype(np.float32)
    calib = rng.standard_normal((500, 24)).astype(np.float32)
    ranges = int8_ranges(calib)
    ref = st_quant.quantize_embeddings(x, "int8", calibration_embeddings=calib)
    np.testing.assert_array_equal(quantize_int8(x, ranges), ref)
    ref_deq = st_quant._dequantize_embeddings(ref, "int8", ranges)
    np.testing.assert_allclose(dequantize_int8(ref, ranges), ref_deq, rtol=1e-5, atol=1e-6)


def test_binary_equals_sentence_transformers_ubinary() -> None:
    x = np.random.default_rng(1).standard_normal((50, 20)).astype(np.float32)  # 20 bits: padded
    np.testing.assert_array_equal(quantize_binary(x), st_quant.quantize_embeddings(x, "ubinary"))
    np.testing.assert_array_equal(dequantize_binary(quantize_binary(x), 20), np.where(x > 0, 1.0, -1.0))


def test_int8_needs_two_calibration_rows() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        int8_ranges(np.zeros((1, 3), dtype=np.float32))
