"""torch -> ONNX export, BERT graph fusion, optional int8, with measured fidelity to torch fp32.

Writes ``onnx/model.onnx`` (and ``onnx/model_qint8.onnx``) into a sentence-transformers model
folder: the layout ``SentenceTransformer(path, backend="onnx")`` loads (graph input
``input_ids``/``attention_mask``/``token_type_ids``, output ``last_hidden_state``). The export
uses torch's TorchScript exporter on the eager attention path, whose graph onnxruntime's
transformer optimizer fuses fully (EmbedLayerNormalization, Attention, SkipLayerNormalization,
BiasGelu). No ``optimum`` needed. This module imports torch; the runtime that reads its output
does not.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder.atomic import atomic_file
from biencoder.runtime.onnx_encoder import FILE_NAMES, ONNX_DIR, OnnxEncoder, RuntimeSettings, make_session
from biencoder.runtime.pooling import load_head
from biencoder.runtime.quantize import Int8Recipe, quantize_int8
from biencoder.runtime.tokenizer import TextTokenizer

logger = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "last_hidden_state"
PARITY_FILE = "PARITY.md"
_FUSABLE = ("bert",)  # model types onnxruntime's "bert" optimizer fuses


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """What to export and the fidelity it must keep (cosine of final embeddings to torch fp32)."""

    quantize: str | None = None  # None or "int8"
    optimize: bool = True  # fuse attention, layer norm, GELU (onnxruntime transformer optimizer)
    opset: int = 17
    min_cosine_fp32: float = 0.9999  # the fp32 graph must match torch: a failed export, not a trade-off
    min_mean_cosine_int8: float = 0.995
    min_cosine_int8: float = 0.98
    force: bool = False  # write the int8 graph even below its thresholds
    recipe: Int8Recipe = field(default_factory=Int8Recipe)
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.quantize not in (None, "int8"):
            raise ValueError(f"quantize must be None or 'int8', got {self.quantize!r}")
        for name in ("min_cosine_fp32", "min_mean_cosine_int8", "min_cosine_int8"):
            value = getattr(self, name)
            if not -1.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [-1, 1], got {value}")
        if self.opset < 14:
            raise ValueError(f"opset must be >= 14, got {self.opset}")


@dataclass(frozen=True, slots=True)
class Fidelity:
    """Cosine of each embedding to its torch fp32 counterpart, summarised."""

    mean: float
    min: float
    n: int

    @classmethod
    def of(cls, ref: NDArray[np.float32], emb: NDArray[np.float32]) -> Fidelity:
        a = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12)
        b = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        cos = (a.astype(np.float64) * b).sum(axis=1)
        return cls(mean=float(cos.mean()), min=float(cos.min()), n=len(cos))


@dataclass(frozen=True, slots=True)
class ExportResult:
    folder: Path
    files: dict[str, Path]  # precision -> graph file
    fidelity: dict[str, Fidelity]  # precision -> cosine to torch fp32
    fused: dict[str, int]  # fused operator -> count
    recipe: str | None = None


class FidelityError(ValueError):
    """The exported graph's embeddings drift from torch fp32 beyond the threshold."""


def export(
    model: str | Path,
    calibration: Sequence[str],
    config: ExportConfig | None = None,
    output: str | Path | None = None,
) -> ExportResult:
    """Export ``model`` to ONNX under ``<folder>/onnx/``; ``output`` saves a full copy there first."""
    import torch

    from biencoder.encoder import SentenceEncoder
    from biencoder.resolve import resolve_model_path

    config = config or ExportConfig()
    texts = [t for t in calibration if t.strip()]
    if len(texts) < 8:
        raise ValueError(f"need at least 8 non-empty calibration texts to measure fidelity, got {len(texts)}")
    encoder = SentenceEncoder.load(resolve_model_path(model), device="cpu")
    folder = Path(output) if output is not None else resolve_model_path(model)
    if output is not None:
        encoder.save(folder)
    transformer = encoder.transformer
    if transformer.tokenizer.padding_side != "right" and config.optimize:
        raise ValueError(
            "the fused BERT graph reads sequence lengths from the mask and needs right padding; "
            "this tokenizer pads left: export with optimize=False (--no-optimize)"
        )
    with torch.inference_mode():
        reference = encoder.encode(texts, batch_size=config.batch_size, show_progress=False)
    files: dict[str, Path] = {}
    fidelity: dict[str, Fidelity] = {}
    with tempfile.TemporaryDirectory(prefix="biencoder-export-") as tmp_name:
        tmp = Path(tmp_name)
        raw = tmp / "raw.onnx"
        _torch_export(transformer, raw, config.opset)
        fp32 = tmp / FILE_NAMES["fp32"]
        fused = _optimize(raw, fp32, transformer.model.config) if config.optimize else {}
        if not config.optimize:
            raw.replace(fp32)
        fidelity["fp32"] = _measure(fp32, folder, texts, reference, config.batch_size)
        _check("fp32", fidelity["fp32"], config.min_cosine_fp32, config.min_cosine_fp32, force=False)
        graphs = {"fp32": fp32}
        if config.quantize == "int8":
            int8 = tmp / FILE_NAMES["int8"]
            quantize_int8(fp32, int8, config.recipe)
            fidelity["int8"] = _measure(int8, folder, texts, reference, config.batch_size)
            _check(
                "int8", fidelity["int8"], config.min_mean_cosine_int8, config.min_cosine_int8, config.force
            )
            graphs["int8"] = int8
        for precision, graph in graphs.items():
            target = folder / ONNX_DIR / FILE_NAMES[precision]
            with atomic_file(target) as staged:
                staged.write_bytes(graph.read_bytes())
                staged.chmod(0o644)
            files[precision] = target
    result = ExportResult(
        folder, files, fidelity, fused, config.recipe.describe() if config.quantize else None
    )
    with atomic_file(folder / ONNX_DIR / PARITY_FILE) as staged:
        staged.write_text(parity_table(result), encoding="utf-8")
        staged.chmod(0o644)
    return result


def readme_sentences(folder: Path, limit: int) -> list[str]:
    """Prose lines of a model card (no code, tables or headings): a fallback calibration set."""
    file = folder / "README.md"
    if not file.is_file():
        return []
    out: list[str] = []
    in_code = False
    for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", line).strip(" -*>")
        if in_code or len(text) < 25 or text.startswith(("#", "|", "<", "{", "!")):
            continue
        out.append(text)
    return out[:limit]


def _torch_export(transformer: Any, path: Path, opset: int) -> None:
    """TorchScript export of the backbone on its eager attention path (the one the optimizer fuses)."""
    import torch

    model = transformer.model
    previous = getattr(model.config, "_attn_implementation", None)
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    example = transformer.tokenize(["a first example sentence for tracing", "a second one"])
    names = [n for n in INPUT_NAMES if n in example]

    class Backbone(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state

    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in [*names, OUTPUT_NAME]}
    try:
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                Backbone().eval(),
                tuple(example[n] for n in names),
                str(path),
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
                do_constant_folding=True,
            )
    finally:
        if previous is not None and hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(previous)


def _optimize(raw: Path, output: Path, config: Any) -> dict[str, int]:
    """Fuse BERT subgraphs with onnxruntime's transformer optimizer; returns fused-op counts."""
    model_type = str(getattr(config, "model_type", ""))
    if model_type not in _FUSABLE:
        logger.warning("model type %r: no BERT fusion, the plain graph is written", model_type)
        raw.replace(output)
        return {}
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(raw),
        model_type="bert",
        num_heads=int(config.num_attention_heads),
        hidden_size=int(config.hidden_size),
        optimization_options=FusionOptions("bert"),
        opt_level=0,
        use_gpu=False,
    )
    stats = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    layers = int(config.num_hidden_layers)
    if stats.get("Attention", 0) != layers:
        logger.warning(
            "only %d of %d attention blocks were fused: the graph is correct but slower",
            stats.get("Attention", 0),
            layers,
        )
    optimized.save_model_to_file(str(output))
    logger.info("fused operators: %s", stats)
    return stats


def _measure(
    graph: Path, folder: Path, texts: list[str], reference: NDArray[np.float32], batch_size: int
) -> Fidelity:
    session = make_session(graph, RuntimeSettings())
    encoder = OnnxEncoder(session, TextTokenizer.load(folder), load_head(folder), path=graph)
    return Fidelity.of(reference, encoder.encode(texts, batch_size=batch_size, show_progress=False))


def _check(precision: str, fid: Fidelity, min_mean: float, min_each: float, force: bool) -> None:
    logger.info(
        "%s: cosine to torch fp32 over %d texts: mean %.6f, min %.6f", precision, fid.n, fid.mean, fid.min
    )
    if fid.mean >= min_mean and fid.min >= min_each:
        return
    message = (
        f"{precision} graph: cosine to torch fp32 mean {fid.mean:.6f} (threshold {min_mean}), "
        f"min {fid.min:.6f} (threshold {min_each}) over {fid.n} calibration texts"
    )
    if force:
        logger.warning("%s; written anyway (forced)", message)
        return
    raise FidelityError(message + ("; pass --force to write it anyway" if precision == "int8" else ""))


def parity_table(result: ExportResult) -> str:
    """Markdown: fidelity of each backend and precision to torch fp32, for the model card."""
    n = next(iter(result.fidelity.values())).n if result.fidelity else 0
    lines = [
        "## Parity of the runtimes",
        "",
        f"Cosine similarity of each runtime's embeddings to PyTorch fp32, over {n} calibration texts.",
        "",
        "| backend | precision | file | size (MB) | mean cosine | min cosine |",
        "|---|---|---|---:|---:|---:|",
        "| PyTorch | fp32 | model.safetensors | {} | 1.000000 | 1.000000 |".format(
            _size(result.folder / "model.safetensors")
        ),
    ]
    for precision, fid in result.fidelity.items():
        file = result.files[precision]
        lines.append(
            f"| ONNX Runtime | {precision} | {ONNX_DIR}/{file.name} | {_size(file)} | "
            f"{fid.mean:.6f} | {fid.min:.6f} |"
        )
    if result.fused:
        lines += [
            "",
            "Fused operators: " + ", ".join(f"{k} x{v}" for k, v in sorted(result.fused.items())) + ".",
        ]
    if result.recipe:
        lines += ["", f"int8 recipe: {result.recipe}."]
    return "\n".join(lines) + "\n"


def _size(file: Path) -> str:
    return f"{file.stat().st_size / 1e6:.1f}" if file.is_file() else "-"
