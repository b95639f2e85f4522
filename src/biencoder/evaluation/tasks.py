"""Named evaluation tasks (``scifact``, ``wikiqa``, ``stsb`` ...) resolved against a data folder.

The data folder holds the layout described in ``../shared/data/README.md``: one sub-folder per
dataset. ``limit`` shrinks a task for quick checks (the first n queries with their judged
documents and 10 n others, the first n pairs, n texts per split); results on a limited task are
not comparable with published numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from biencoder.evaluation.base import Evaluator

if TYPE_CHECKING:
    from biencoder.data.beir import BeirDataset

Loader = Callable[[Path], "BeirDataset"]


@dataclass(frozen=True, kw_only=True)
class TaskOptions:
    limit: int | None = None
    batch_size: int = 32
    show_progress: bool | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"limit must be positive, got {self.limit}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")


@dataclass(frozen=True)
class Task:
    name: str
    path: str  # inside the data folder
    description: str
    shown: tuple[str, ...]  # the metrics a report leads with
    build: Callable[[Path, TaskOptions], Evaluator]
    # retrieval tasks: how to read the corpus, queries and qrels from ``path``, and their split
    load: Loader | None = None
    split: str | None = None


def _beir(split: str) -> Loader:
    def load(folder: Path) -> BeirDataset:
        from biencoder.data.beir import load_beir

        return load_beir(folder, split)

    return load


def _wikiqa(path: Path) -> BeirDataset:
    from biencoder.data.wikiqa import load_wikiqa

    return load_wikiqa(path)


def _retrieval(name: str, threshold: int, load: Loader) -> Callable[[Path, TaskOptions], Evaluator]:
    def build(path: Path, opts: TaskOptions) -> Evaluator:
        from biencoder.evaluation.retrieval import RetrievalEvaluator, subset

        ev = RetrievalEvaluator.from_dataset(
            load(path),
            name=name,
            relevance_threshold=threshold,
            batch_size=opts.batch_size,
            show_progress=opts.show_progress,
        )
        if opts.limit is not None:
            ev = subset(ev, ev.query_ids[: opts.limit], extra_docs=10 * opts.limit)
        return ev

    return build


def _retrieval_task(
    name: str, path: str, description: str, shown: tuple[str, ...], threshold: int, load: Loader, split: str
) -> Task:
    return Task(name, path, description, shown, _retrieval(name, threshold, load), load=load, split=split)


def _sts(name: str) -> Callable[[Path, TaskOptions], Evaluator]:
    def build(path: Path, opts: TaskOptions) -> Evaluator:
        from biencoder.evaluation.sts import StsEvaluator

        return StsEvaluator.from_file(
            path,
            name=name,
            max_pairs=opts.limit,
            batch_size=opts.batch_size,
            show_progress=opts.show_progress,
        )

    return build


def _sample(n: int, limit: int | None) -> list[int]:
    """Indices of a seeded random sample of ``limit`` of ``n`` items, in file order (all when no limit)."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(np.random.default_rng(0).choice(n, size=limit, replace=False).tolist())


def _banking77(folder: Path, opts: TaskOptions) -> Evaluator:
    from biencoder.evaluation.classification import ClassificationEvaluator, read_labelled_csv

    train_texts, train_labels = read_labelled_csv(folder / "train.csv")
    test_texts, test_labels = read_labelled_csv(folder / "test.csv")
    keep = _sample(len(test_texts), opts.limit)
    return ClassificationEvaluator(
        name="banking77",
        train_texts=train_texts,
        train_labels=train_labels,
        test_texts=[test_texts[i] for i in keep],
        test_labels=[test_labels[i] for i in keep],
        batch_size=opts.batch_size,
        show_progress=opts.show_progress,
    )


def _newsgroups(path: Path, opts: TaskOptions) -> Evaluator:
    from biencoder.evaluation.clustering import ClusteringEvaluator, read_newsgroups

    texts, labels = read_newsgroups(path, "test")
    keep = _sample(len(texts), opts.limit)
    return ClusteringEvaluator(
        name="20newsgroups",
        texts=[texts[i] for i in keep],
        labels=[labels[i] for i in keep],
        batch_size=opts.batch_size,
        show_progress=opts.show_progress,
    )


def _quora(path: Path, opts: TaskOptions) -> Evaluator:
    from biencoder.evaluation.mining import ParaphraseMiningEvaluator

    return ParaphraseMiningEvaluator.from_file(
        path, name="quora", max_pairs=opts.limit, batch_size=opts.batch_size, show_progress=opts.show_progress
    )


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        _retrieval_task(
            "scifact",
            "scifact",
            "BEIR SciFact test: claims against abstracts",
            ("ndcg@10", "mrr@10", "recall@10", "map@100"),
            1,
            _beir("test"),
            "test",
        ),
        _retrieval_task(
            "trec-dl19",
            "trec-dl19-mini",
            "TREC DL 2019 passages (mini corpus); relevant = grade >= 2",
            ("ndcg@10", "mrr@10", "recall@100"),
            2,
            _beir("test"),
            "test",
        ),
        _retrieval_task(
            "wikiqa",
            "wikiqa/test.tsv",
            "WikiQA test as retrieval: 243 questions against the split's 5,951 sentences",
            ("ndcg@10", "mrr@10", "recall@10"),
            1,
            _wikiqa,
            "test",
        ),
        _retrieval_task(
            "wikiqa-dev",
            "wikiqa/dev.tsv",
            "WikiQA dev as retrieval: 126 questions against the split's 2,707 sentences",
            ("ndcg@10", "mrr@10", "recall@10"),
            1,
            _wikiqa,
            "dev",
        ),
        Task(
            "stsb",
            "stsb/sts-test.csv",
            "STS Benchmark test: Spearman of cosine vs gold",
            ("spearman", "pearson"),
            _sts("stsb"),
        ),
        Task("stsb-dev", "stsb/sts-dev.csv", "STS Benchmark dev", ("spearman", "pearson"), _sts("stsb-dev")),
        Task(
            "banking77",
            "banking77",
            "Banking77 intents: logistic regression (MTEB)",
            ("accuracy", "f1"),
            _banking77,
        ),
        Task(
            "20newsgroups",
            "20newsgroups/20ng_bydate.jsonl.gz",
            "20 Newsgroups subjects: k-means (MTEB)",
            ("v_measure",),
            _newsgroups,
        ),
        Task(
            "quora",
            "quora-duplicates/dev.tsv",
            "Quora duplicates: paraphrase mining",
            ("average_precision", "f1"),
            _quora,
        ),
    )
}


def resolve_task(name: str) -> Task:
    try:
        return TASKS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def retrieval_data(name: str, data_dir: str | Path) -> tuple[BeirDataset, Task]:
    """A retrieval task's corpus, queries and qrels (its ``split``), read from ``data_dir``."""
    task = resolve_task(name)
    if task.load is None:
        retrieval = ", ".join(t.name for t in TASKS.values() if t.load is not None)
        raise ValueError(f"{task.name} is not a retrieval task; retrieval tasks: {retrieval}")
    path = Path(data_dir) / task.path
    if not path.exists():
        raise FileNotFoundError(f"data for task {task.name} is missing: {path} (set the data folder)")
    return task.load(path), task


def build_tasks(
    names: Sequence[str], data_dir: str | Path, options: TaskOptions | None = None
) -> list[Evaluator]:
    """Evaluators for the named tasks; a missing data folder or file is a clear FileNotFoundError."""
    options = options or TaskOptions()
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"data folder {data_dir} not found: it should hold the evaluation datasets (scifact/, "
            f"trec-dl19-mini/, stsb/ ...); pass its location with --data"
        )
    tasks = [resolve_task(n) for n in names]
    missing = [f"{t.name} ({data_dir / t.path})" for t in tasks if not (data_dir / t.path).exists()]
    if missing:
        raise FileNotFoundError(f"data for these tasks is missing in {data_dir}: {'; '.join(missing)}")
    return [t.build(data_dir / t.path, options) for t in tasks]
