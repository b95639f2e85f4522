"""int8 and binary embedding quantization, as sentence-transformers' ``quantize_embeddings`` defines them.

int8: per dimension, the calibrated range [min, max] is cut into 256 buckets; a value becomes
its bucket number minus 128. binary: one bit a dimension (value > 0), packed 8 to a byte.

Search on quantized vectors is *asymmetric*: the float32 query meets the dequantized corpus
(one matrix product per chunk), which ranks far better than comparing quantized codes with
each other. Rescoring then re-ranks the best candidates with the float32 vectors.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float32]


class Quantization(StrEnum):
    NONE = "none"
    INT8 = "int8"
    BINARY = "binary"

    @classmethod
    def parse(cls, value: str | Quantization | None) -> Quantization:
        if value is None:
            return cls.NONE
        try:
            return cls(str(value).lower())
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown quantization {value!r}; valid: {valid}") from None


def int8_ranges(calibration: Array) -> Array:
    """Per-dimension [min, max] of the calibration embeddings: shape [2, dim]."""
    if calibration.ndim != 2 or calibration.shape[0] < 2:
        raise ValueError(f"int8 calibration needs at least 2 embeddings, got shape {calibration.shape}")
    return np.vstack([calibration.min(axis=0), calibration.max(axis=0)]).astype(np.float32)


def _steps(ranges: Array) -> Array:
    steps = (ranges[1] - ranges[0]) / 255
    return np.where(steps == 0, 1, steps).astype(np.float32)


def quantize_int8(x: Array, ranges: Array) -> NDArray[np.int8]:
    """Bucket each value into 256 levels over its dimension's range, offset to int8."""
    buckets = np.clip(np.floor((x - ranges[0]) / _steps(ranges)), 0, 255)
    return (buckets - 128).astype(np.int8)


def dequantize_int8(codes: NDArray[np.int8], ranges: Array) -> Array:
    """The bucket's lower edge, as sentence-transformers dequantizes."""
    return ((codes.astype(np.float32) + 128) * _steps(ranges) + ranges[0]).astype(np.float32)


def quantize_binary(x: Array) -> NDArray[np.uint8]:
    """One bit a dimension (value > 0), packed big-endian 8 to a byte (``ubinary``)."""
    return np.packbits(x > 0, axis=-1)


def dequantize_binary(codes: NDArray[np.uint8], dim: int) -> Array:
    """Bits back to -1/+1 values [n, dim]."""
    bits = np.unpackbits(codes, axis=-1, count=dim)
    return (bits.astype(np.float32) * 2 - 1).astype(np.float32)


def int8_query_scorer(ranges: Array) -> tuple[Array, Array]:
    """(scale [dim], offset [dim]): query · dequant(c) == (query * scale) · (c + 128) + query · offset."""
    return _steps(ranges), ranges[0].astype(np.float32)
