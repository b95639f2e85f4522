"""Run several evaluators on one encoder, and cache results keyed by what they depend on."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from biencoder.evaluation.base import Evaluator
from biencoder.evaluation.report import read_json, write_json
from biencoder.protocol import Encoder

logger = logging.getLogger(__name__)

TaskResults = dict[str, dict[str, float]]
# Folders a model may carry that encoding with it does not read.
_SKIPPED_DIRS = frozenset({"onnx", "openvino", "checkpoints"})


def evaluate_all(encoder: Encoder, evaluators: Sequence[Evaluator], label: str = "") -> TaskResults:
    """Each evaluator's metrics under its name, in order; progress and timings are logged."""
    results: TaskResults = {}
    for number, evaluator in enumerate(evaluators, start=1):
        start = time.perf_counter()
        logger.info(
            "%s[%d/%d] evaluating %s", f"{label}: " if label else "", number, len(evaluators), evaluator.name
        )
        results[evaluator.name] = {k: float(v) for k, v in evaluator(encoder).items()}
        logger.info(
            "%s: %s %.4f (%.0f s)",
            evaluator.name,
            evaluator.primary_metric,
            results[evaluator.name][evaluator.primary_metric],
            time.perf_counter() - start,
        )
    return results


def _files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not p.name.startswith(".")
                and not _SKIPPED_DIRS.intersection(p.relative_to(path).parts[:-1])
            )
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"cannot fingerprint {path}: it does not exist")
    return out


def fingerprint(paths: Iterable[str | Path], settings: Mapping[str, Any] | None = None) -> str:
    """A short hash of the contents (and names) of the files under ``paths``, and of ``settings``."""
    digest = hashlib.sha256()
    for file in _files(Path(p) for p in paths):
        digest.update(file.name.encode() + b"\0" + str(file.stat().st_size).encode() + b"\0")
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    digest.update(json.dumps(settings or {}, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def cached_results(
    cache_file: Path, compute: Callable[[], TaskResults], use_cache: bool = True
) -> tuple[TaskResults, bool]:
    """(results, came_from_cache): read ``cache_file`` when present, else compute and store it."""
    if use_cache and cache_file.is_file():
        try:
            data = read_json(cache_file)
            results = {task: {k: float(v) for k, v in m.items()} for task, m in data["results"].items()}
            logger.info("using cached results from %s", cache_file)
            return results, True
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            logger.warning("ignoring unreadable cache %s (%s)", cache_file, exc)
    results = compute()
    write_json(cache_file, {"results": results})
    return results, False
