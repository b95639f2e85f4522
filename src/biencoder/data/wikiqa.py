"""WikiQA as a retrieval collection: ``question \\t sentence \\t label`` lines, no header.

Each split file pairs Bing questions with the sentences of a Wikipedia summary, labelled 1 when
the sentence answers the question. As retrieval: the corpus is every distinct sentence of the
split, the queries are the distinct questions with at least one label-1 sentence, and their
qrels are those sentences (grade 1). Sentences and questions keep the order of their first line;
ids are that order, zero-padded (``s00000``, ``q00000``), so string order is file order.

Counts of the official release (``../shared/data/wikiqa``)::

    split   lines    questions   judged queries   sentences   qrels
    train   20,360   2,118       873              18,821      1,040
    dev      2,733     296       126               2,707        140
    test     6,165     633       243               5,951        293

A few lines repeat (train 2, dev 1, test 5); a repeated (question, sentence) pair counts once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from biencoder.data import DataFormatError
from biencoder.data.beir import BeirDataset

logger = logging.getLogger(__name__)

LABELS = {"0": 0, "1": 1}


@dataclass(frozen=True, kw_only=True, slots=True)
class WikiQaLine:
    question: str
    sentence: str
    label: int  # 1: the sentence answers the question


def read_wikiqa(path: str | Path) -> list[WikiQaLine]:
    """Every line of a WikiQA split file, read with quoting off (quotes are text).

    A line that is not three tab-separated columns, or whose label is not 0 or 1, is a
    DataFormatError naming the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"WikiQA file not found: {path}")
    lines: list[WikiQaLine] = []
    with path.open(encoding="utf-8", newline="") as f:
        for number, raw in enumerate(f, start=1):
            columns = raw.rstrip("\r\n").split("\t")
            if len(columns) != 3:
                raise DataFormatError(
                    f"{path}:{number}: expected 'question \\t sentence \\t label' (3 columns), "
                    f"got {len(columns)}"
                )
            question, sentence, label = columns
            if label not in LABELS:
                raise DataFormatError(f"{path}:{number}: label {label!r} is not 0 or 1")
            if not question.strip() or not sentence.strip():
                raise DataFormatError(f"{path}:{number}: empty question or sentence")
            lines.append(WikiQaLine(question=question, sentence=sentence, label=LABELS[label]))
    if not lines:
        raise DataFormatError(f"{path}: no lines")
    return lines


def load_wikiqa(path: str | Path) -> BeirDataset:
    """One split as retrieval: corpus (distinct sentences), judged queries, qrels (grade 1)."""
    lines = read_wikiqa(path)
    sentence_ids: dict[str, str] = {}
    question_ids: dict[str, str] = {}
    for line in lines:
        sentence_ids.setdefault(line.sentence, f"s{len(sentence_ids):05d}")
        question_ids.setdefault(line.question, f"q{len(question_ids):05d}")
    qrels: dict[str, dict[str, int]] = {}
    for line in lines:
        if line.label == 1:
            qrels.setdefault(question_ids[line.question], {})[sentence_ids[line.sentence]] = 1
    if not qrels:
        raise DataFormatError(f"{path}: no question has a label-1 sentence")
    judged = {q: text for text, q in question_ids.items() if q in qrels}
    logger.info(
        "%s: %d sentences, %d of %d questions judged, %d qrels",
        path,
        len(sentence_ids),
        len(judged),
        len(question_ids),
        sum(len(r) for r in qrels.values()),
    )
    return BeirDataset(corpus={d: text for text, d in sentence_ids.items()}, queries=judged, qrels=qrels)


def load_wikiqa_articles(*paths: str | Path) -> BeirDataset:
    """WikiQA at the article level: each question's candidate sentences, in file order, are the
    summary paragraph of one Wikipedia article; the corpus is the distinct paragraphs of the files,
    and a question's relevant document is the paragraph holding a label-1 sentence (grade 1).

    Web queries against whole Wikipedia abstracts: an entity-search-like task, where BM25 matches
    the article's name and dense matches the question's intent.
    """
    paragraph_ids: dict[str, str] = {}
    question_ids: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for path in paths:
        lines = read_wikiqa(path)
        start = 0
        for end in range(1, len(lines) + 1):
            if end < len(lines) and lines[end].question == lines[start].question:
                continue
            run = lines[start:end]  # one question's candidates: one article's summary
            paragraph = " ".join(line.sentence for line in run)
            doc = paragraph_ids.setdefault(paragraph, f"a{len(paragraph_ids):05d}")
            if any(line.label == 1 for line in run):
                qid = question_ids.setdefault(run[0].question, f"q{len(question_ids):05d}")
                qrels.setdefault(qid, {})[doc] = 1
            start = end
    if not qrels:
        raise DataFormatError(f"{', '.join(map(str, paths))}: no question has a label-1 sentence")
    return BeirDataset(
        corpus={d: text for text, d in paragraph_ids.items()},
        queries={q: text for text, q in question_ids.items()},
        qrels=qrels,
    )
