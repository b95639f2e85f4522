"""A dev split carved out of a BEIR split by query: ``qrels/train.tsv`` and ``qrels/dev.tsv`` in a new folder.

The queries judged in ``split`` are shuffled with a seeded generator (numpy's ``default_rng``
over the sorted query ids) and the first ``dev_queries`` become the dev set; every judgement
of a query goes with it, so no dev query is trained on. ``corpus.jsonl`` and ``queries.jsonl``
are linked to the source files (copied where links cannot be made). The folder is written
aside and renamed into place.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biencoder.data.beir import load_qrels

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuerySplit:
    folder: Path
    train: tuple[str, ...]  # query ids
    dev: tuple[str, ...]


def split_queries(ids: list[str], dev_queries: int, seed: int) -> tuple[list[str], list[str]]:
    """(train, dev) query ids: a seeded permutation of the sorted ids, the first ``dev_queries`` for dev."""
    if not 0 < dev_queries < len(ids):
        raise ValueError(
            f"dev_queries must be in [1, {len(ids) - 1}] for {len(ids)} queries, got {dev_queries}"
        )
    ordered = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(ordered))
    dev = sorted(ordered[i] for i in order[:dev_queries])
    chosen = set(dev)
    return [q for q in ordered if q not in chosen], dev


def split_beir(
    folder: str | Path, output: str | Path, *, dev_queries: int = 100, seed: int = 0, split: str = "train"
) -> QuerySplit:
    """Write ``output``: a BEIR folder whose ``train`` and ``dev`` qrels partition ``folder``'s ``split``."""
    folder, output = Path(folder), Path(output)
    if not (folder / "corpus.jsonl").is_file():
        raise FileNotFoundError(f"{folder} is not a BEIR folder: corpus.jsonl is missing")
    qrels = load_qrels(folder / "qrels" / f"{split}.tsv")
    train, dev = split_queries(list(qrels), dev_queries, seed)
    write_split(folder, output, qrels, train, dev)
    logger.info("%s: %d train, %d dev queries (seed %d) of %s", output, len(train), len(dev), seed, folder)
    return QuerySplit(output, tuple(train), tuple(dev))


def write_split(
    folder: Path,
    output: Path,
    qrels: Mapping[str, Mapping[str, int]],
    train: Sequence[str],
    dev: Sequence[str],
) -> None:
    """``output``: ``folder``'s corpus and queries (linked) with ``train`` and ``dev`` qrels holding
    the judgements of those queries; written aside and renamed into place."""
    from biencoder.atomic import atomic_dir

    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} is not a BEIR folder: {name} is missing")
    with atomic_dir(output) as tmp:
        for name in ("corpus.jsonl", "queries.jsonl"):
            _link(folder / name, tmp / name)
        (tmp / "qrels").mkdir()
        for part, ids in (("train", train), ("dev", dev)):
            with (tmp / "qrels" / f"{part}.tsv").open("w", encoding="utf-8", newline="") as f:
                writer = csv.writer(f, delimiter="\t", lineterminator="\n")
                writer.writerow(["query-id", "corpus-id", "score"])
                for q in ids:
                    for doc, score in qrels[q].items():
                        writer.writerow([q, doc, score])


def _link(source: Path, target: Path) -> None:
    try:
        os.symlink(source.resolve(), target)
    except OSError:
        shutil.copyfile(source, target)
