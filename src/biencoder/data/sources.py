"""One entry point for training data: a path -> a :class:`PairDataset`, whatever its layout.

- a pair file (.jsonl/.csv/.tsv/.parquet), MS MARCO ``triples.train.small.tsv`` included; a
  ``score`` or ``label`` column is each row's score (scored pairs, for CoSENTLoss);
- STS Benchmark's ``sts-train.csv``: (sentence1, sentence2) with the gold score;
- an MS MARCO folder (``collection.tsv`` + ``queries.train.tsv`` + ``qrels.train.tsv``);
- a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/train.tsv``): one
  (query, "title text") pair per qrel with score > 0, in qrels file order;
- a Hugging Face ``datasets`` dataset saved with ``save_to_disk`` (its ``train`` split for a
  DatasetDict).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

from biencoder.data import DataFormatError
from biencoder.data.beir import load_corpus, load_queries
from biencoder.data.msmarco import is_msmarco_folder, read_msmarco_folder
from biencoder.data.pairs import (
    PairDataset,
    RowCollector,
    choose_columns,
    read_pairs,
    rows_to_dataset,
    score_column,
)

logger = logging.getLogger(__name__)


def load_training_data(path: str | Path, split: str = "train", skip_invalid: bool = False) -> PairDataset:
    """Read one training source; see the module docstring for the layouts recognised."""
    path = Path(path)
    if path.is_file():
        return read_sts_pairs(path, skip_invalid) if is_sts_file(path) else read_pairs(path, skip_invalid)
    if not path.is_dir():
        raise FileNotFoundError(f"training data not found: {path}")
    if (path / "corpus.jsonl").is_file():
        return read_beir_pairs(path, split, skip_invalid)
    if is_msmarco_folder(path):
        return read_msmarco_folder(path, split, skip_invalid)
    if any((path / n).is_file() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
        return read_saved_dataset(path, split, skip_invalid)
    raise DataFormatError(
        f"{path}: not a recognised training folder (expected a BEIR folder with corpus.jsonl, an MS MARCO "
        "folder with collection.tsv, or a Hugging Face dataset saved with save_to_disk)"
    )


def load_all(
    paths: Sequence[str | Path], split: str = "train", skip_invalid: bool = False
) -> list[PairDataset]:
    datasets = [load_training_data(p, split, skip_invalid) for p in paths]
    widths = {d.num_columns for d in datasets}
    if len(widths) > 1:
        logger.info("datasets mix pairs and triplets: each batch comes from one dataset, so this is fine")
    return datasets


def read_beir_pairs(folder: Path, split: str = "train", skip_invalid: bool = False) -> PairDataset:
    qrels_file = folder / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        raise FileNotFoundError(f"{folder} is a BEIR folder without qrels/{split}.tsv")
    queries = load_queries(folder / "queries.jsonl")
    corpus = load_corpus(folder / "corpus.jsonl")
    names = ["query", "passage"]
    collector = RowCollector(qrels_file, 2, skip_invalid)
    with qrels_file.open(encoding="utf-8", newline="") as f:
        for number, row in enumerate(csv.reader(f, delimiter="\t"), start=1):
            if not row or (number == 1 and not row[-1].lstrip("-").isdigit()):
                continue
            if len(row) < 3:
                raise DataFormatError(f"{qrels_file}:{number}: expected query-id, corpus-id, score")
            try:
                score = int(row[-1])
            except ValueError:
                raise DataFormatError(f"{qrels_file}:{number}: score {row[-1]!r} is not an integer") from None
            if score <= 0:
                continue
            qid, did = row[0], row[-2]
            if qid not in queries or did not in corpus:
                if not skip_invalid:
                    what = f"query {qid!r}" if qid not in queries else f"document {did!r}"
                    raise DataFormatError(f"{qrels_file}:{number}: unknown {what}")
                collector.skipped += 1
                continue
            collector.add(number, [queries[qid], corpus[did]], names)
    return collector.build(folder.name, names, str(folder))


def read_saved_dataset(folder: Path, split: str = "train", skip_invalid: bool = False) -> PairDataset:
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(
            "reading a saved Hugging Face dataset needs datasets: pip install 'biencoder[data]'"
        ) from exc
    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataFormatError(f"{folder}: the saved DatasetDict has no {split!r} split ({list(loaded)})")
        loaded = loaded[split]
    text_cols = [
        name
        for name, feature in loaded.features.items()
        if getattr(feature, "dtype", None) in ("string", "large_string")
    ]
    names = choose_columns(folder, loaded.column_names, text_cols)
    score_name = score_column(loaded.column_names)
    scores = loaded[score_name] if score_name else None
    return rows_to_dataset(folder, folder.name, names, [loaded[n] for n in names], skip_invalid, scores)


def is_sts_file(path: Path) -> bool:
    """STS Benchmark's release (``sts-train.csv``): tab-separated despite its suffix, the score in
    column 5 and the sentences in 6 and 7, no header."""
    if path.suffix.lower() != ".csv":
        return False
    with path.open(encoding="utf-8", errors="replace") as f:
        first = f.readline().rstrip("\r\n").split("\t")
    if len(first) < 7:
        return False
    try:
        float(first[4])
    except ValueError:
        return False
    return True


def read_sts_pairs(path: Path, skip_invalid: bool = False) -> PairDataset:
    """STSb pairs with their gold scores (0-5) as each row's score: (sentence1, sentence2, score)."""
    names = ["sentence1", "sentence2"]
    collector = RowCollector(path, 2, skip_invalid, scored=True)
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            row = line.rstrip("\r\n").split("\t")
            if len(row) < 7:
                if not skip_invalid:
                    raise DataFormatError(
                        f"{path}:{number}: expected 7+ tab-separated columns (STSb), got {len(row)}"
                    )
                collector.skipped += 1
                continue
            collector.add(number, row[5:7], names, row[4])
    return collector.build(path.stem, names, str(path))
