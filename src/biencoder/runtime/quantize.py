"""int8 quantization of an exported BERT graph, and how close it stays to fp32.

The recipe was chosen by measuring on MiniLM (SciFact passages and queries, batches of 32,
cosine of the final embeddings to fp32; see benchmarks/runtime.py and the runtime notes):

- weights per output channel (per-tensor weights lose far more: mean cosine 0.938 vs 0.995);
- the fused QKV projection (``Attention`` -> ``QAttention``), the attention output and the FFN
  input projections: dynamic int8 (activations per tensor, uint8; weights per channel, int8);
- the FFN output projection, whose input is the GELU output with its long tail, is the one that
  per-tensor activation scales hurt most (leaving it in fp32 alone lifts the mean cosine from
  0.9950 to 0.9979). It is quantized blockwise instead (``MatMulNBits``, 8-bit weights in blocks
  of 128 along K, int8 compute with per-row activation blocks), which keeps 0.9977 at int8 speed;
- the embedding tables stay fp32 (quantizing them costs fidelity and buys no speed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_GELU_OPS = ("Gelu", "BiasGelu", "FastGelu", "QuickGelu")
_EMBEDDING_OPS = ("EmbedLayerNormalization", "Gather")


class FfnOutput(StrEnum):
    """How to treat the FFN output projection (the MatMul fed by the GELU)."""

    BLOCKWISE = "blockwise"  # MatMulNBits, 8-bit, int8 compute with per-row activation blocks
    DYNAMIC = "dynamic"  # like the other MatMuls: per-tensor activations
    FP32 = "fp32"  # not quantized


@dataclass(frozen=True, kw_only=True)
class Int8Recipe:
    """What to quantize, and how. The defaults are the measured choice (module docstring)."""

    per_channel: bool = True
    attention: bool = True  # the fused QKV projection
    ffn_output: FfnOutput = FfnOutput.BLOCKWISE
    block_size: int = 128
    embeddings: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.ffn_output, FfnOutput):
            try:
                object.__setattr__(self, "ffn_output", FfnOutput(self.ffn_output))
            except ValueError:
                valid = ", ".join(m.value for m in FfnOutput)
                raise ValueError(f"unknown ffn_output {self.ffn_output!r}; valid: {valid}") from None
        if self.block_size not in (16, 32, 64, 128, 256):
            raise ValueError(f"block_size must be one of 16, 32, 64, 128, 256, got {self.block_size}")

    def describe(self) -> str:
        weights = "per-channel" if self.per_channel else "per-tensor"
        parts = [
            f"dynamic int8 MatMuls ({weights} int8 weights, per-tensor uint8 activations)",
            "QKV projection (QAttention)" if self.attention else "QKV projection kept fp32",
            {
                FfnOutput.BLOCKWISE: (
                    f"FFN output blockwise 8-bit (MatMulNBits, block {self.block_size}, int8 compute)"
                ),
                FfnOutput.DYNAMIC: "FFN output dynamic int8",
                FfnOutput.FP32: "FFN output kept fp32",
            }[self.ffn_output],
            "embeddings int8" if self.embeddings else "embeddings fp32",
        ]
        return "; ".join(parts)


def ffn_output_nodes(model: object) -> list[str]:
    """Names of the MatMul nodes whose input is a GELU's output (the FFN output projections)."""
    graph = model.graph  # type: ignore[attr-defined]
    gelu_outputs = {out for node in graph.node if node.op_type in _GELU_OPS for out in node.output}
    return [node.name for node in graph.node if node.op_type == "MatMul" and node.input[0] in gelu_outputs]


def quantize_int8(fp32_graph: Path, output: Path, recipe: Int8Recipe | None = None) -> None:
    """Write the int8 graph of ``fp32_graph`` to ``output`` (not atomic: the caller renames)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    recipe = recipe or Int8Recipe()
    model = onnx.load(str(fp32_graph))
    named = output.with_name(output.name + ".named.tmp")
    if _name_nodes(model):  # nodes are chosen by name: give every node a unique one
        onnx.save(model, str(named))
        fp32_graph = named
    exclude = [] if recipe.embeddings else [n.name for n in model.graph.node if n.op_type in _EMBEDDING_OPS]
    ffn_out = ffn_output_nodes(model)
    if recipe.ffn_output is not FfnOutput.DYNAMIC:
        exclude += ffn_out
    op_types = [
        "MatMul",
        *(["Attention"] if recipe.attention else []),
        *(["EmbedLayerNormalization"] if recipe.embeddings else []),
    ]
    logger.info("int8: %s (%d FFN output projections found)", recipe.describe(), len(ffn_out))
    dynamic = output.with_name(output.name + ".dynamic.tmp")
    try:
        quantize_dynamic(
            str(fp32_graph),
            str(dynamic),
            weight_type=QuantType.QInt8,
            per_channel=recipe.per_channel,
            op_types_to_quantize=op_types,
            nodes_to_exclude=exclude,
            # Fused contrib ops (Attention, SkipLayerNormalization) defeat shape inference: float by default.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        if recipe.ffn_output is FfnOutput.BLOCKWISE and ffn_out:
            _blockwise(dynamic, output, ffn_out, recipe.block_size)
        else:
            dynamic.replace(output)
    finally:
        dynamic.unlink(missing_ok=True)
        named.unlink(missing_ok=True)


def _name_nodes(model: Any) -> bool:
    """Name unnamed or duplicate-named nodes ``<op>_<index>``; True when any changed."""
    seen: set[str] = set()
    changed = False
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}_auto"
            changed = True
        seen.add(node.name)
    return changed


def _blockwise(graph: Path, output: Path, nodes: list[str], block_size: int) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(graph)),
        bits=8,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=4,  # int8 compute: activations quantized per row and block
        nodes_to_include=nodes,
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(output))
