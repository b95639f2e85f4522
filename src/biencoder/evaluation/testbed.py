"""The retrieval test bed: every data set in ``../shared/data`` read as a retrieval task, each with a
split for choosing settings and a split for reporting them.

Paired sets become retrieval as follows: each first text of a positive pair is a query, the
distinct second texts of the split (positive or not) are the corpus, and a query's relevant
documents are the second texts it is paired with positively. A text that is the query itself is
never a document of that query (:func:`pairs_as_retrieval` drops such a hit from the corpus only
when it is the same string). Banking77 is a text against the other texts of its intent.

============= ======================================= ===================== =====================
name          queries, corpus                         choose                report
============= ======================================= ===================== =====================
scifact       claims, abstracts (BEIR)                train qrels           test qrels
trec-dl19     DL19 queries, 5,000 MS MARCO passages   half of the queries   the other half
wikiqa        questions, the split's sentences        dev                   test
wiki-articles questions, WikiQA's article summaries   train                 dev and test
quora         a question, its duplicates' texts       half of the pairs     the other half
snli          a premise, its entailed hypotheses      dev                   test
mrpc          a sentence, its paraphrase              train                 test
stsb          sentence 1, sentence 2 scored >= 4      train                 test
banking77     a text, the other texts of its intent   train                 test
============= ======================================= ===================== =====================

WikiQA's candidate sentences for a question are one Wikipedia article's summary, in order: joined,
they are the article's abstract (``wiki-articles``), web queries against whole abstracts, a task
like entity search. Splits that come from one file (DL19's queries, Quora's pairs) are halved by a
seeded shuffle of the queries (DL19) or of the distinct first texts (Quora), so no query is on both
sides. Large
splits keep a seeded sample of ``max_queries`` queries; the corpus stays whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biencoder.data import DataFormatError
from biencoder.data.beir import BeirDataset, load_beir
from biencoder.data.wikiqa import load_wikiqa, load_wikiqa_articles

logger = logging.getLogger(__name__)

SEED = 0
MAX_QUERIES = 1000
SPLITS = ("choose", "report")
Pair = tuple[str, str, bool]  # first text, second text, positive


@dataclass(frozen=True, kw_only=True, slots=True)
class TestbedTask:
    """One corpus of the test bed: where it lies in the data folder and how each split is read."""

    name: str
    path: str  # inside the data folder
    description: str
    load: Callable[[Path, str, int], BeirDataset]  # (path, split, max_queries) -> the split


def _sample_queries(data: BeirDataset, max_queries: int, seed: int = SEED) -> BeirDataset:
    """At most ``max_queries`` of the queries (a seeded sample, in their order); the corpus whole."""
    if len(data.queries) <= max_queries:
        return data
    ids = list(data.queries)
    keep = sorted(np.random.default_rng(seed).choice(len(ids), size=max_queries, replace=False))
    chosen = [ids[i] for i in keep]
    return BeirDataset(
        corpus=data.corpus,
        queries={q: data.queries[q] for q in chosen},
        qrels={q: data.qrels[q] for q in chosen},
    )


def _halves(keys: Iterable[str], seed: int = SEED) -> tuple[set[str], set[str]]:
    """The distinct ``keys`` cut in two by a seeded shuffle: (choose, report)."""
    distinct = sorted(set(keys))
    order = np.random.default_rng(seed).permutation(len(distinct))
    cut = len(distinct) // 2
    return {distinct[i] for i in order[:cut]}, {distinct[i] for i in order[cut:]}


def pairs_as_retrieval(pairs: list[Pair]) -> BeirDataset:
    """Pairs as retrieval: first texts of positive pairs are queries, the distinct second texts the
    corpus, a query's positive partners its relevant documents (grade 1). Ids follow first
    appearance (``d00000``, ``q00000``), so string order is file order."""
    docs: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for first, second, positive in pairs:
        doc = docs.setdefault(second, f"d{len(docs):05d}")
        if positive and first != second:
            qid = queries.setdefault(first, f"q{len(queries):05d}")
            qrels.setdefault(qid, {})[doc] = 1
    return BeirDataset(
        corpus={i: t for t, i in docs.items()},
        queries={i: t for t, i in queries.items()},
        qrels=qrels,
    )


def _split_file(path: Path, split: str, names: dict[str, str]) -> Path:
    if split not in names:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(names)}")
    file = path / names[split]
    if not file.is_file():
        raise FileNotFoundError(f"test bed file not found: {file}")
    return file


def _tsv_rows(path: Path, columns: int, skip_bom: bool = False) -> Iterable[tuple[int, list[str]]]:
    with path.open(encoding="utf-8-sig" if skip_bom else "utf-8", newline="") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            row = line.rstrip("\r\n").split("\t")
            if len(row) < columns:
                raise DataFormatError(
                    f"{path}:{number}: expected {columns} tab-separated columns, got {len(row)}"
                )
            yield number, row


def _label(path: Path, number: int, value: str) -> bool:
    if value.strip() not in ("0", "1"):
        raise DataFormatError(f"{path}:{number}: label {value!r} is not 0 or 1")
    return value.strip() == "1"


def read_quora(path: Path) -> list[Pair]:
    """``q1 \\t q2 \\t label`` lines (label 1: duplicates)."""
    return [(r[0], r[1], _label(path, n, r[2])) for n, r in _tsv_rows(path, 3)]


def read_snli(path: Path) -> list[Pair]:
    """``id \\t premise \\t hypothesis \\t label`` lines (label 1: entailment, 0: contradiction)."""
    return [(r[1].strip(), r[2].strip(), _label(path, n, r[3])) for n, r in _tsv_rows(path, 4)]


def read_mrpc(path: Path) -> list[Pair]:
    """MRPC's ``Quality \\t #1 ID \\t #2 ID \\t #1 String \\t #2 String`` (a header, a UTF-8 BOM)."""
    rows = []
    for number, row in _tsv_rows(path, 5, skip_bom=True):
        if number == 1 and not row[0].strip().isdigit():
            continue  # the header
        rows.append((row[3], row[4], _label(path, number, row[0])))
    return rows


def read_stsb_pairs(path: Path, min_score: float = 4.0) -> list[Pair]:
    """STSb pairs, positive when the gold score is at least ``min_score`` (of 5)."""
    from biencoder.evaluation.sts import load_sts

    sts = load_sts(path)
    return [
        (a, b, score >= min_score)
        for a, b, score in zip(sts.sentences1, sts.sentences2, sts.scores, strict=True)
    ]


def banking_as_retrieval(texts: list[str], labels: list[str], queries: int, seed: int = SEED) -> BeirDataset:
    """A seeded sample of ``queries`` texts against the others: relevant = the same intent."""
    order = np.random.default_rng(seed).permutation(len(texts))
    chosen = set(order[: min(queries, len(texts) // 2)].tolist())
    corpus = {f"d{i:05d}": texts[i] for i in range(len(texts)) if i not in chosen}
    by_label: dict[str, list[str]] = {}
    for doc in corpus:
        by_label.setdefault(labels[int(doc[1:])], []).append(doc)
    qids = [i for i in sorted(chosen) if by_label.get(labels[i])]
    return BeirDataset(
        corpus=corpus,
        queries={f"q{i:05d}": texts[i] for i in qids},
        qrels={f"q{i:05d}": dict.fromkeys(by_label[labels[i]], 1) for i in qids},
    )


def _scifact(path: Path, split: str, max_queries: int) -> BeirDataset:
    names = {"choose": "train", "report": "test"}
    _split_file(path / "qrels", split, {k: f"{v}.tsv" for k, v in names.items()})
    return _sample_queries(load_beir(path, names[split]), max_queries)


def _dl19(path: Path, split: str, max_queries: int) -> BeirDataset:
    data = load_beir(path, "test")
    halves = dict(zip(SPLITS, _halves(data.queries), strict=True))
    if split not in halves:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    keep = [q for q in data.queries if q in halves[split]]
    half = BeirDataset(
        corpus=data.corpus, queries={q: data.queries[q] for q in keep}, qrels={q: data.qrels[q] for q in keep}
    )
    return _sample_queries(half, max_queries)


def _wikiqa(path: Path, split: str, max_queries: int) -> BeirDataset:
    file = _split_file(path, split, {"choose": "dev.tsv", "report": "test.tsv"})
    return _sample_queries(load_wikiqa(file), max_queries)


def _wikiqa_articles(path: Path, split: str, max_queries: int) -> BeirDataset:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    names = ["train.tsv"] if split == "choose" else ["dev.tsv", "test.tsv"]
    files = [_split_file(path, name, {name: name}) for name in names]
    return _sample_queries(load_wikiqa_articles(*files), max_queries)


def _quora(path: Path, split: str, max_queries: int) -> BeirDataset:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    pairs = read_quora(_split_file(path, "all", {"all": "dev.tsv"}))
    halves = dict(zip(SPLITS, _halves(p[0] for p in pairs), strict=True))
    return _sample_queries(pairs_as_retrieval([p for p in pairs if p[0] in halves[split]]), max_queries)


def _snli(path: Path, split: str, max_queries: int) -> BeirDataset:
    file = _split_file(path, split, {"choose": "dev.tsv", "report": "test.tsv"})
    return _sample_queries(pairs_as_retrieval(read_snli(file)), max_queries)


def _mrpc(path: Path, split: str, max_queries: int) -> BeirDataset:
    names = {"choose": "msr_paraphrase_train.txt", "report": "msr_paraphrase_test.txt"}
    return _sample_queries(pairs_as_retrieval(read_mrpc(_split_file(path, split, names))), max_queries)


def _stsb(path: Path, split: str, max_queries: int) -> BeirDataset:
    file = _split_file(path, split, {"choose": "sts-train.csv", "report": "sts-test.csv"})
    return _sample_queries(pairs_as_retrieval(read_stsb_pairs(file)), max_queries)


def _banking77(path: Path, split: str, max_queries: int) -> BeirDataset:
    from biencoder.evaluation.classification import read_labelled_csv

    file = _split_file(path, split, {"choose": "train.csv", "report": "test.csv"})
    texts, labels = read_labelled_csv(file)
    return banking_as_retrieval(texts, labels, min(max_queries, 500))


TESTBED: dict[str, TestbedTask] = {
    t.name: t
    for t in (
        TestbedTask(name="scifact", path="scifact", description="SciFact claims / abstracts", load=_scifact),
        TestbedTask(
            name="trec-dl19",
            path="trec-dl19-mini",
            description="DL19 queries / MS MARCO passages",
            load=_dl19,
        ),
        TestbedTask(name="wikiqa", path="wikiqa", description="WikiQA questions / sentences", load=_wikiqa),
        TestbedTask(
            name="wiki-articles",
            path="wikiqa",
            description="WikiQA questions / article summaries",
            load=_wikiqa_articles,
        ),
        TestbedTask(
            name="quora", path="quora-duplicates", description="Quora questions / duplicates", load=_quora
        ),
        TestbedTask(name="snli", path="snli", description="SNLI premises / entailments", load=_snli),
        TestbedTask(name="mrpc", path="msrp", description="MRPC sentences / paraphrases", load=_mrpc),
        TestbedTask(name="stsb", path="stsb", description="STSb sentence pairs scored >= 4", load=_stsb),
        TestbedTask(
            name="banking77", path="banking77", description="Banking77 texts / same intent", load=_banking77
        ),
    )
}


def load_testbed(name: str, split: str, data_dir: str | Path, max_queries: int = MAX_QUERIES) -> BeirDataset:
    """One test bed corpus's ``split`` ("choose" or "report") from ``data_dir``."""
    if name not in TESTBED:
        raise ValueError(f"unknown test bed task {name!r}; valid: {', '.join(TESTBED)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries < 1:
        raise ValueError(f"max_queries must be a positive integer, got {max_queries!r}")
    task = TESTBED[name]
    path = Path(data_dir) / task.path
    if not path.exists():
        raise FileNotFoundError(f"data for test bed task {name} is missing: {path}")
    data = task.load(path, split, max_queries)
    logger.debug("%s/%s: %d queries, %d documents", name, split, len(data.queries), len(data.corpus))
    return data
