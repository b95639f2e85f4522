"""K-fold cross-validation of training settings over a BEIR folder's train queries.

One 100-query dev set has a standard error near 0.04 nDCG@10: it cannot tell apart settings
closer than that. Here every train query is held out once instead. The judged train queries are
cut into ``folds`` parts (a seeded permutation of the sorted ids, ``fold_seed``); for each part a
model is trained on the other parts' pairs and scores the held-out queries against the corpus.
Each setting thus gets a held-out nDCG@10 for *every* train query, and two settings are compared
by a paired randomisation test over all of them (``biencoder.evaluation.paired``), the same test
the main job applies to the test split.

A :class:`Setting` is the card's recipe (``TrainConfig``'s defaults) with some fields changed,
plus the document length read at evaluation and, optionally, a WiSE-FT merge with the base.
Settings that train alike (the same fields) share one fine-tune per fold and differ only in how
it is evaluated. ``general_dev`` (an STS file outside the domain) is scored by every fold model
too, and :func:`choose` counts it, so that a gain in the domain bought with a loss outside it
does not win on the domain alone. Each fold's scores are written to
``output/<setting>/fold-<i>.json`` as soon as they exist, so an interrupted run resumes where it
stopped; ``output/cv.json`` holds every setting's per-query scores, so the tests can be rerun.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biencoder.atomic import atomic_file

logger = logging.getLogger(__name__)

ST_CONFIG = "sentence_bert_config.json"


@dataclass(frozen=True, kw_only=True)
class Setting:
    """The card's recipe with ``train`` fields changed (``TrainConfig`` names); at evaluation,
    documents read at ``eval_max_seq_length`` tokens (None: as trained) and the fine-tune merged
    with the base as ``merge_alpha * tuned + (1 - merge_alpha) * base`` (WiSE-FT; None: not merged).
    ``extra_data``: training sources beside each fold's pairs (general pairs for rehearsal, a corpus's
    own title/text pairs), round-robin as in ``biencoder train``; ``train["dataset_losses"]`` can
    give them their own losses by name. They are never scored: the held-out queries are the fold's."""

    name: str
    train: Mapping[str, Any] = field(default_factory=dict)
    eval_max_seq_length: int | None = None
    merge_alpha: float | None = None
    extra_data: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"a setting's name must be letters, digits, '-' or '_', got {self.name!r}")
        fixed = {"data", "output_dir", "base_model", "seed", "eval_data", "device"} & set(self.train)
        if fixed:
            raise ValueError(
                f"setting {self.name}: {', '.join(sorted(fixed))} are set by the cross-validation"
            )
        if self.eval_max_seq_length is not None and not 0 < self.eval_max_seq_length <= 512:
            raise ValueError(
                f"setting {self.name}: eval_max_seq_length must be in [1, 512], "
                f"got {self.eval_max_seq_length}"
            )
        if self.merge_alpha is not None and not 0.0 <= self.merge_alpha <= 1.0:
            raise ValueError(f"setting {self.name}: merge_alpha must be in [0, 1], got {self.merge_alpha}")
        if isinstance(self.extra_data, str) or not all(isinstance(p, str) and p for p in self.extra_data):
            raise ValueError(
                f"setting {self.name}: extra_data must be a tuple of paths, got {self.extra_data!r}"
            )

    def training_key(self) -> str:
        """Settings with the same key share their fine-tunes."""
        key = {**self.train, **({"+data": list(self.extra_data)} if self.extra_data else {})}
        return json.dumps(key, sort_keys=True, default=str)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "train": dict(self.train),
            "eval_max_seq_length": self.eval_max_seq_length,
            "merge_alpha": self.merge_alpha,
            # only when given, so that a run recorded before extra_data existed still resumes
            **({"extra_data": list(self.extra_data)} if self.extra_data else {}),
        }


@dataclass(frozen=True, kw_only=True)
class CrossValidation:
    folds: int = 5
    fold_seed: int = 0  # fixed across settings and training seeds: the same folds for every choice
    seed: int = 42  # training seed
    extra_docs: int | None = None  # held-out corpus: the fold's judged documents and n others; None: all
    eval_backend: str = "onnx"
    split: str = "train"  # the qrels split whose queries are cut into folds
    general_dev: str | None = None  # an STS file outside the domain, also scored by every fold model

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if self.extra_docs is not None and self.extra_docs < 0:
            raise ValueError(f"extra_docs must be >= 0 or None, got {self.extra_docs}")


@dataclass(frozen=True)
class CVResult:
    setting: Setting
    per_query: dict[str, float]  # every train query's held-out nDCG@10
    fold_means: list[float]
    seconds: float
    general: list[float] = field(default_factory=list)  # each fold model's general_dev score

    @property
    def general_mean(self) -> float | None:
        return float(np.mean(self.general)) if self.general else None

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.per_query.values())))

    @property
    def standard_error(self) -> float:
        values = np.array(list(self.per_query.values()))
        return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def query_folds(ids: Sequence[str], folds: int, seed: int) -> list[list[str]]:
    """``folds`` disjoint parts of ``ids`` covering all of them: a seeded permutation of the sorted
    ids dealt out in turn (sizes differ by at most one)."""
    if not 2 <= folds <= len(ids):
        raise ValueError(f"folds must be in [2, {len(ids)}] for {len(ids)} queries, got {folds}")
    ordered = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(ordered))
    return [sorted(ordered[i] for i in order[f::folds]) for f in range(folds)]


def write_folds(folder: Path, output: Path, cv: CrossValidation) -> list[Path]:
    """One BEIR folder per fold under ``output``: ``qrels/train.tsv`` the other folds' judgements,
    ``qrels/dev.tsv`` the held-out fold's (corpus and queries linked, ``biencoder.data.splits``)."""
    from biencoder.data.beir import load_qrels
    from biencoder.data.splits import write_split

    qrels = load_qrels(folder / "qrels" / f"{cv.split}.tsv")
    parts = query_folds(list(qrels), cv.folds, cv.fold_seed)
    out = []
    for i, held_out in enumerate(parts):
        chosen = set(held_out)
        train = [q for q in sorted(qrels) if q not in chosen]
        target = output / f"fold-{i}"
        if not (target / "qrels" / "dev.tsv").is_file():
            write_split(folder, target, qrels, train, held_out)
        out.append(target)
    return out


def cross_validate(
    settings: Sequence[Setting],
    beir_folder: str | Path,
    output: str | Path,
    cv: CrossValidation = CrossValidation(),
    *,
    base_model: str,
    device: str | None = None,
    show_progress: bool | None = None,
) -> dict[str, CVResult]:
    """Every setting's held-out score for every train query; ``output/cv.json`` records them."""
    beir_folder, output = Path(beir_folder), Path(output)
    names = [s.name for s in settings]
    if not settings or len(set(names)) != len(names):
        raise ValueError(f"give one or more settings with distinct names, got {names}")
    _check_resumable(output, cv, settings)
    folders = write_folds(beir_folder, output / "folds", cv)
    per_query: dict[str, dict[str, float]] = {s.name: {} for s in settings}
    fold_means: dict[str, list[float]] = {s.name: [] for s in settings}
    general: dict[str, list[float]] = {s.name: [] for s in settings}
    seconds: dict[str, float] = {s.name: 0.0 for s in settings}
    for i, fold in enumerate(folders):
        for group in _by_training(settings):
            t0 = time.perf_counter()
            scores = _fold_scores(group, fold, output, i, cv, base_model, device, show_progress)
            share = (time.perf_counter() - t0) / len(group)
            for setting in group:
                record = scores[setting.name]
                per_query[setting.name].update(record["per_query"])
                fold_means[setting.name].append(float(np.mean(list(record["per_query"].values()))))
                if record.get("general") is not None:
                    general[setting.name].append(float(record["general"]))
                seconds[setting.name] += share
                logger.info(
                    "fold %d/%d, %s: held-out nDCG@10 %.4f over %d queries%s",
                    i + 1,
                    cv.folds,
                    setting.name,
                    fold_means[setting.name][-1],
                    len(record["per_query"]),
                    f", general dev {record['general']:.4f}" if record.get("general") is not None else "",
                )
    results = {
        s.name: CVResult(s, per_query[s.name], fold_means[s.name], seconds[s.name], general[s.name])
        for s in settings
    }
    write_results(output / "cv.json", results, cv)
    return results


def _check_resumable(output: Path, cv: CrossValidation, settings: Sequence[Setting]) -> None:
    """A run resumes only what it would compute again: the folds and each setting's records were
    made under ``output/cv-settings.json``; other cross-validation settings, or a setting of the
    same name that changed, are refused rather than mixed in."""
    path = output / "cv-settings.json"
    folds = dataclasses.asdict(cv)
    made: dict[str, Any] = {"settings": {}}
    if path.is_file():
        made = json.loads(path.read_text(encoding="utf-8"))
        if made.get("cross_validation") != folds:
            raise ValueError(
                f"{output} holds a cross-validation made with {made.get('cross_validation')}, not "
                f"{folds}: give another --output, or delete it to start again"
            )
        for s in settings:
            before = made.get("settings", {}).get(s.name)
            if before is not None and before != json.loads(json.dumps(s.to_dict())):
                raise ValueError(
                    f"{output}: setting {s.name!r} was {before} there and is {s.to_dict()} now; "
                    f"rename it, or delete {output / s.name} to score it again"
                )
    recorded = {**made.get("settings", {}), **{s.name: s.to_dict() for s in settings}}
    output.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        tmp.write_text(
            json.dumps({"cross_validation": folds, "settings": recorded}, indent=1), encoding="utf-8"
        )


def _by_training(settings: Sequence[Setting]) -> list[list[Setting]]:
    groups: dict[str, list[Setting]] = {}
    for s in settings:
        groups.setdefault(s.training_key(), []).append(s)
    return list(groups.values())


def _fold_scores(
    group: Sequence[Setting],
    fold: Path,
    output: Path,
    index: int,
    cv: CrossValidation,
    base_model: str,
    device: str | None,
    show_progress: bool | None,
) -> dict[str, dict[str, Any]]:
    """Each setting of ``group`` (one fine-tune for all of them) on fold ``index``: its held-out
    per-query nDCG@10 and its general dev score. Records already on disk are read back; the
    fine-tune is deleted once all are written."""
    files = {s.name: output / s.name / f"fold-{index}.json" for s in group}
    records = {name: _read_record(f) for name, f in files.items() if f.is_file()}
    if len(records) == len(group):
        return records
    model_dir = output / "models" / f"{group[0].name}-fold-{index}"
    if not (model_dir / ST_CONFIG).is_file():
        _train_fold(group[0], fold, model_dir, cv, base_model, device, show_progress)
    trained_length = json.loads((model_dir / ST_CONFIG).read_text(encoding="utf-8"))["max_seq_length"]
    evaluators = [_held_out(fold, cv, show_progress), *_general(cv, show_progress)]
    for setting in group:
        if setting.name in records:
            continue
        folder = model_dir
        if setting.merge_alpha is not None:
            folder = output / "models" / f"{setting.name}-fold-{index}-merged"
            _save_merged(base_model, model_dir, setting.merge_alpha, folder)
        set_max_seq_length(folder, setting.eval_max_seq_length or trained_length)
        values = _evaluate(folder, evaluators, cv, device)
        if folder != model_dir:
            shutil.rmtree(folder, ignore_errors=True)
        records[setting.name] = {"per_query": values[0], "general": values[1] if len(values) > 1 else None}
        with atomic_file(files[setting.name]) as tmp:
            tmp.write_text(json.dumps(records[setting.name], indent=1, sort_keys=True), encoding="utf-8")
    shutil.rmtree(model_dir, ignore_errors=True)
    return records


def _save_merged(base_model: str, tuned: Path, alpha: float, folder: Path) -> None:
    """``alpha * tuned + (1 - alpha) * base`` saved to ``folder`` (WiSE-FT, ``training.merge``)."""
    from biencoder.encoder import SentenceEncoder
    from biencoder.training.merge import merged

    base = SentenceEncoder.load(base_model, device="cpu")
    model = SentenceEncoder.load(tuned, device="cpu")
    merged(base, model, alpha).save(folder)


def _train_fold(
    setting: Setting,
    fold: Path,
    model_dir: Path,
    cv: CrossValidation,
    base_model: str,
    device: str | None,
    show_progress: bool | None,
) -> None:
    from biencoder.training import TrainConfig, train

    values: dict[str, Any] = {
        "save_steps": 10**9,  # a fold's model is used once: no checkpoints but the last
        "save_total_limit": 1,
        **setting.train,
        "data": (str(fold), *setting.extra_data),
        "output_dir": str(model_dir),
        "base_model": base_model,
        "seed": cv.seed,
        "device": device,
    }
    config = TrainConfig.from_dict(values, source=f"setting {setting.name}")
    logger.info("fold %s: training %s on %s", fold.name, setting.name, fold)
    train(config, show_progress=show_progress)
    shutil.rmtree(model_dir / "checkpoints", ignore_errors=True)


def _held_out(fold: Path, cv: CrossValidation, show_progress: bool | None) -> Any:
    from biencoder.evaluation.retrieval import RetrievalEvaluator, subset

    evaluator = RetrievalEvaluator.from_beir(fold, "dev", name="held-out", show_progress=show_progress)
    if cv.extra_docs is not None:
        evaluator = subset(evaluator, evaluator.query_ids, extra_docs=cv.extra_docs, seed=cv.fold_seed)
    return evaluator


def _general(cv: CrossValidation, show_progress: bool | None) -> list[Any]:
    if cv.general_dev is None:
        return []
    from biencoder.evaluation.sts import StsEvaluator

    return [StsEvaluator.from_file(Path(cv.general_dev), name="general", show_progress=show_progress)]


def _evaluate(
    model_dir: Path, evaluators: Sequence[Any], cv: CrossValidation, device: str | None
) -> list[Any]:
    """The held-out evaluator's per-query scores, then each other evaluator's primary metric."""
    from biencoder.loading import load_encoder

    encoder = load_encoder(model_dir, cv.eval_backend, device=device)
    held_out, *others = evaluators
    held_out(encoder)
    per_query = {q: float(m[held_out.primary_metric]) for q, m in held_out.last_per_query.items()}
    return [per_query, *(float(e(encoder)[e.primary_metric]) for e in others)]


def set_max_seq_length(model_dir: Path, length: int) -> None:
    """Rewrite the saved model's input length (the ONNX graph does not depend on it), capped at
    the model's position embeddings."""
    path = model_dir / ST_CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    model_config = model_dir / "config.json"
    if model_config.is_file():
        positions = json.loads(model_config.read_text(encoding="utf-8")).get("max_position_embeddings")
        length = min(length, positions) if isinstance(positions, int) else length
    if config.get("max_seq_length") == length:
        return
    config["max_seq_length"] = length
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(config, indent=2), encoding="utf-8")


def _read_record(path: Path) -> dict[str, Any]:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        per_query = {str(q): float(v) for q, v in values["per_query"].items()}
        general = None if values.get("general") is None else float(values["general"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"{path}: not a fold record ({exc!r}); delete it to score the fold again") from None
    return {"per_query": per_query, "general": general}


def write_results(path: Path, results: Mapping[str, CVResult], cv: CrossValidation) -> None:
    """Every setting's per-query scores and summary, so the paired tests can be rerun."""
    payload = {
        "cross_validation": cv.__dict__,
        "settings": {
            name: {
                **r.setting.to_dict(),
                "mean": r.mean,
                "standard_error": r.standard_error,
                "fold_means": r.fold_means,
                "general_dev": r.general_mean,
                "seconds": r.seconds,
                "per_query": r.per_query,
            }
            for name, r in results.items()
        },
    }
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")


def compare_to(results: Mapping[str, CVResult], baseline: str) -> list[dict[str, Any]]:
    """Each setting against ``baseline`` over every train query: mean, gain, wins/ties/losses, p."""
    from biencoder.evaluation.paired import compare

    if baseline not in results:
        raise ValueError(f"baseline {baseline!r} is not among the settings {sorted(results)}")
    base = results[baseline].per_query
    rows = []
    for name, r in results.items():
        row: dict[str, Any] = {"setting": name, "mean": r.mean, "standard_error": r.standard_error}
        row["general_dev"] = r.general_mean
        if name != baseline:
            paired = compare(base, r.per_query)
            row |= {"gain": paired.mean_difference, "wins": paired.wins, "ties": paired.ties}
            row |= {"losses": paired.losses, "p_value": paired.p_value}
        rows.append(row)
    return rows


def choose(results: Mapping[str, CVResult], baseline: str, significance: float = 0.05) -> str:
    """Among the settings that beat ``baseline`` on the held-out queries with p below
    ``significance``, the best by held-out nDCG@10 plus the general dev score (when measured, so
    that a gain in the domain is not bought with a loss outside it); else the baseline."""
    rows = compare_to(results, baseline)
    winners = [r for r in rows if r["setting"] != baseline and r["gain"] > 0 and r["p_value"] < significance]
    if not winners:
        return baseline
    return str(max(winners, key=lambda r: r["mean"] + (r["general_dev"] or 0.0))["setting"])


def markdown_table(results: Mapping[str, CVResult], baseline: str) -> list[str]:
    lines = [
        f"| setting | held-out nDCG@10 (± s.e.) | general dev | gain over {baseline} | "
        "wins / ties / losses | p |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in compare_to(results, baseline):
        general = "" if row["general_dev"] is None else f"{row['general_dev']:.4f}"
        cells = f"| {row['setting']} | {row['mean']:.4f} ± {row['standard_error']:.4f} | {general} |"
        if row["setting"] == baseline:
            lines.append(cells + " | | |")
        else:
            lines.append(
                cells + f" {row['gain']:+.4f} | {row['wins']} / {row['ties']} / {row['losses']} | "
                f"{row['p_value']:.3g} |"
            )
    return lines
