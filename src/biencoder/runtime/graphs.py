"""ONNX graphs on demand: a model folder without one is exported once, then reused.

Into the folder when it is writable, else into a cached copy under ``$BIENCODER_CACHE``
(default ``~/.cache/biencoder``). ``precision="int8"`` exports the int8 graph with the export's
fidelity guard. A file lock keeps processes that start together (server replicas, a main job
and its miner) from exporting twice. Exporting needs torch; loading a graph that exists does not.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from biencoder.runtime.onnx_encoder import FILE_NAMES, ONNX_DIR

logger = logging.getLogger(__name__)


def cache_root() -> Path:
    return Path(os.environ.get("BIENCODER_CACHE", Path.home() / ".cache" / "biencoder")).expanduser()


def ensure_onnx(folder: Path, precision: str) -> Path:
    """A folder holding ``onnx/<graph>`` for ``precision``: ``folder`` itself, or a cached export."""
    if precision not in FILE_NAMES:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(FILE_NAMES)}")
    if (folder / ONNX_DIR / FILE_NAMES[precision]).is_file():
        return folder
    cached = cache_root() / "onnx" / _folder_key(folder)
    if (cached / ONNX_DIR / FILE_NAMES[precision]).is_file():
        return cached
    writable = os.access(folder, os.W_OK) and (
        not (folder / ONNX_DIR).exists() or os.access(folder / ONNX_DIR, os.W_OK)
    )
    target = folder if writable else cached
    lock_dir = target if writable else cached.parent
    lock_dir.mkdir(parents=True, exist_ok=True)
    with _locked(lock_dir / f".{_folder_key(folder)}.export.lock"):
        if (target / ONNX_DIR / FILE_NAMES[precision]).is_file():  # another replica did it meanwhile
            return target
        _export(folder, precision, output=None if writable else target)
    return target


def _export(folder: Path, precision: str, output: Path | None) -> None:
    try:
        from biencoder.runtime.export import ExportConfig, export, readme_sentences
    except ImportError as exc:
        raise ImportError(
            f"{folder} has no ONNX graph and exporting one needs torch and onnx ({exc}); "
            f"run `biencoder export --model {folder}` where they are installed, or use --backend torch"
        ) from None
    where = output or folder
    logger.info("no ONNX %s graph in %s: exporting one into %s (once)", precision, folder, where)
    texts = readme_sentences(folder, 512)
    if len(texts) < 8:
        texts = texts + list(_FALLBACK_CALIBRATION)
    config = ExportConfig(quantize="int8" if precision == "int8" else None)
    export(folder, texts, config, output=output)


def _folder_key(folder: Path) -> str:
    resolved = folder.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    return f"{resolved.name}-{digest}"


@contextlib.contextmanager
def _locked(file: Path) -> Iterator[None]:
    with file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# Used only when a model folder has no README prose to measure export fidelity on.
_FALLBACK_CALIBRATION = (
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "what is the boiling point of water at altitude",
    "Colectomy is a surgical procedure to remove all or part of the colon.",
)


@contextlib.contextmanager
def onnx_twin(encoder: object, precision: str = "fp32") -> Iterator[object]:
    """The ONNX runtime of a live PyTorch encoder's current weights, for the length of the block.

    The weights are saved to a temporary folder and exported there (the export's fidelity guard
    holds: fp32 cosine to torch >= 0.9999 on the calibration texts); the folder is removed
    afterwards. Evaluating through it gives the torch model's metrics about twice as fast on CPU.
    """
    import shutil
    import tempfile

    from biencoder.runtime.export import ExportConfig, export
    from biencoder.runtime.onnx_encoder import OnnxEncoder

    if precision not in FILE_NAMES:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(FILE_NAMES)}")
    folder = Path(tempfile.mkdtemp(prefix="biencoder-twin-"))
    try:
        encoder.save_to(folder)  # type: ignore[attr-defined]
        config = ExportConfig(quantize="int8" if precision == "int8" else None)
        export(folder, list(_FALLBACK_CALIBRATION), config)
        yield OnnxEncoder.load(folder, precision=precision)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
