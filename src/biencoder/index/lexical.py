"""BM25 over the index's rows (``bm25s``): the lexical side of hybrid search.

Each row's text is tokenised once, when it is added, exactly as ``bm25s.tokenize(texts,
stopwords=..., stemmer=Stemmer.Stemmer(language))`` does, and kept as token ids (a vocabulary
that only grows). BM25's statistics (document frequencies, idf, average length) are those of
the live rows only, so the score matrix is rebuilt by ``bm25s`` from the stored token ids, with
no re-tokenisation, on the first search after rows were added or removed. That rebuild costs
time linear in the live tokens (about 0.6 s per million tokens here): cheap next to encoding
the same texts, but a loop of "add one row, search" on a large index pays it every time, so
batch the changes. Saving writes the matrix too, so loading does not rebuild.

The folder part, ``lexical/`` inside the index folder (no pickle anywhere)::

    config.json       LexicalConfig
    vocab.json        the tokens, a JSON array in id order
    tokens.npy        int32 [total tokens]: every row's token ids, one after another
    offsets.npy       int64 [rows + 1]: row r's ids are tokens[offsets[r]:offsets[r + 1]]
    bm25_*.npy        the BM25 matrix of the live rows (CSC: data, indices, indptr; rows: positions)
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder.index.storage import IndexFormatError, load_array, save_array

logger = logging.getLogger(__name__)

FOLDER = "lexical"
INSTALL_HINT = "lexical search needs bm25s and PyStemmer: pip install 'biencoder[lexical]'"
# bm25s's named stop-word lists (bm25s.tokenization._infer_stopwords)
STOPWORD_LISTS = (
    "en", "english", "en_plus", "english_plus", "de", "german", "nl", "dutch", "fr", "french",
    "es", "spanish", "pt", "portuguese", "it", "italian", "ru", "russian", "sv", "swedish",
    "no", "norwegian", "zh", "chinese", "tr", "turkish", "ko", "korean", "da", "danish",
)  # fmt: skip

Hits = tuple[NDArray[np.int64], NDArray[np.float32]]


def _bm25s() -> Any:
    try:
        import bm25s
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return bm25s


def _stemmer_module() -> Any:
    try:
        import Stemmer
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return Stemmer


class BM25Method(StrEnum):
    # bm25s's bm25l and bm25+ give every row a score > 0 for any query: not offered, since a
    # lexical candidate is a row that contains a query term.
    LUCENE = "lucene"
    ROBERTSON = "robertson"
    ATIRE = "atire"

    @classmethod
    def parse(cls, value: str | BM25Method) -> BM25Method:
        try:
            return cls(str(value).lower())
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown BM25 method {value!r}; valid: {valid}") from None


def _none_word(value: str | None) -> str | None:
    return None if value is None or value.lower() == "none" else value.lower()


@dataclass(frozen=True, kw_only=True, slots=True)
class LexicalConfig:
    """How texts are tokenised and scored.

    ``language``: a PyStemmer algorithm (``Stemmer.algorithms()``), or None / "none" for no
    stemming. ``stopwords``: a bm25s stop-word list name (``en``, ``de``, ...), or None. ``k1``
    (> 0) and ``b`` (in [0, 1]) are BM25's term-frequency saturation and length normalisation;
    ``method`` is the bm25s variant: lucene, robertson or atire.
    """

    language: str | None = "english"
    stopwords: str | None = "en"
    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"

    def __post_init__(self) -> None:
        for name in ("language", "stopwords"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string or None, got {value!r}")
        language, stopwords = _none_word(self.language), _none_word(self.stopwords)
        if language is not None:
            known = _stemmer_module().algorithms()
            if language not in known:
                raise ValueError(
                    f"unknown stemmer language {self.language!r}; valid: none, {', '.join(known)}"
                )
        if stopwords is not None and stopwords not in STOPWORD_LISTS:
            raise ValueError(
                f"unknown stop-word list {self.stopwords!r}; valid: none, {', '.join(STOPWORD_LISTS)}"
            )
        for name in ("k1", "b"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.k1 <= 0:
            raise ValueError(f"k1 must be > 0, got {self.k1!r}")
        if not 0 <= self.b <= 1:
            raise ValueError(f"b must be in [0, 1], got {self.b!r}")
        object.__setattr__(self, "language", language)
        object.__setattr__(self, "stopwords", stopwords)
        object.__setattr__(self, "k1", float(self.k1))
        object.__setattr__(self, "b", float(self.b))
        object.__setattr__(self, "method", BM25Method.parse(self.method).value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LexicalConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown lexical config fields {unknown}; valid: {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class Bm25Matrix:
    """BM25 weights of the live rows, CSC by token: token t's rows are ``indices[indptr[t]:indptr[t+1]]``.

    ``rows`` maps a matrix row to its index row position.
    """

    data: NDArray[np.float32]  # [nnz]
    indices: NDArray[np.int32]  # [nnz], matrix rows
    indptr: NDArray[np.int64]  # [vocabulary + 1]
    rows: NDArray[np.int64]  # [live]

    def scores(self, token_ids: Sequence[int]) -> NDArray[np.float32]:
        """Every live row's score for one query's token ids (repeats count), summed as bm25s does."""
        out = np.zeros(len(self.rows), dtype=np.float32)
        for t in token_ids:
            start, end = self.indptr[t], self.indptr[t + 1]
            np.add.at(out, self.indices[start:end], self.data[start:end])
        return out


def top_positive(scores: NDArray[np.float32], rows: NDArray[np.int64], n: int) -> Hits:
    """The ``n`` best rows with a score > 0, best first (ties: the smaller position)."""
    found = np.flatnonzero(scores > 0)
    if len(found) > n:
        nth = np.partition(scores[found], len(found) - n)[len(found) - n]
        found = found[scores[found] >= nth]
    order = np.lexsort((found, -scores[found]))[:n]  # matrix rows follow positions: same tie order
    return rows[found[order]], scores[found[order]]


class LexicalIndex:
    """Token ids per index row, and a BM25 matrix over the live ones; see the module docstring."""

    def __init__(self, config: LexicalConfig | None = None) -> None:
        self.config = config if config is not None else LexicalConfig()
        self._bm25s = _bm25s()
        language = self.config.language
        self._stemmer = _stemmer_module().Stemmer(language) if language is not None else None
        self._vocab: dict[str, int] = {}
        self._chunks: list[tuple[NDArray[np.int32], NDArray[np.int64]]] = []  # (ids, lengths) per add
        self._rows = 0
        self._alive = np.zeros(0, dtype=bool)
        self._matrix: Bm25Matrix | None = None  # None: rows changed since the last build

    def __len__(self) -> int:
        """Rows, removed ones included (positions are never reused)."""
        return self._rows

    @property
    def live(self) -> int:
        return int(self._alive.sum())

    @property
    def vocabulary_size(self) -> int:
        return len(self._vocab)

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """Tokens of each text: ``bm25s.tokenize`` with this config's stop words and stemmer."""
        return list(
            self._bm25s.tokenize(
                list(texts),
                stopwords=self.config.stopwords,
                stemmer=self._stemmer,
                return_ids=False,
                show_progress=False,
            )
        )

    def add(self, positions: Sequence[int] | NDArray[np.integer], texts: Sequence[str]) -> None:
        """Tokenise ``texts`` as the rows at ``positions``, which must continue the rows in order."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if isinstance(texts, str) or len(texts) != len(pos):
            raise ValueError(
                f"got {len(pos)} positions but {1 if isinstance(texts, str) else len(texts)} texts"
            )
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be strings")
        if not np.array_equal(pos, np.arange(self._rows, self._rows + len(pos))):
            raise ValueError(f"lexical rows are appended in order: expected positions from {self._rows}")
        if not len(pos):
            return
        tokens = self.tokenize(texts)
        vocab = self._vocab
        ids = [vocab.setdefault(t, len(vocab)) for doc in tokens for t in doc]
        lengths = np.fromiter((len(doc) for doc in tokens), dtype=np.int64, count=len(tokens))
        self._chunks.append((np.asarray(ids, dtype=np.int32), lengths))
        self._rows += len(pos)
        self._alive = np.concatenate([self._alive, np.ones(len(pos), dtype=bool)])
        self._matrix = None

    def mark_dead(self, positions: Sequence[int] | NDArray[np.integer]) -> None:
        """Removed (or replaced) rows: no longer candidates, no longer in BM25's statistics."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if len(pos) and (pos.min() < 0 or pos.max() >= self._rows):
            raise IndexError(f"positions out of range [0, {self._rows})")
        if self._alive[pos].any():
            self._alive[pos] = False
            self._matrix = None

    def search(self, query_texts: Sequence[str], n: int) -> list[Hits]:
        """Per query, (positions, scores) of its ``n`` best live rows with a score > 0, best first.

        A query whose tokens are all stop words or unknown to the rows gets empty arrays.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        matrix = self.matrix()
        vocab = self._vocab
        out: list[Hits] = []
        for tokens in self.tokenize(query_texts):
            ids = [vocab[t] for t in tokens if t in vocab]
            if not ids or not len(matrix.rows):
                out.append((np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)))
                continue
            out.append(top_positive(matrix.scores(ids), matrix.rows, n))
        return out

    def query_scales(self, query_texts: Sequence[str]) -> NDArray[np.float64]:
        """Each query's BM25 scale: the sum of the idf of its distinct terms found in the live rows.

        idf is Lucene's, ``log(1 + (N - df + 0.5) / (df + 0.5))`` over the N live rows: about what
        a passage of average length that holds each query term once scores. Calibrated fusion
        divides BM25 scores by it; a query with no known term gets 0.
        """
        matrix = self.matrix()
        n = len(matrix.rows)
        df = np.diff(matrix.indptr)
        vocab = self._vocab
        out = np.zeros(len(query_texts), dtype=np.float64)
        for q, tokens in enumerate(self.tokenize(query_texts)):
            ids = np.array(sorted({vocab[t] for t in tokens if t in vocab}), dtype=np.int64)
            found = df[ids][df[ids] > 0].astype(np.float64) if len(ids) else np.zeros(0)
            out[q] = float(np.log1p((n - found + 0.5) / (found + 0.5)).sum())
        return out

    # --- the BM25 matrix ----------------------------------------------------------------------
    def _flat(self) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
        """All rows' token ids and offsets [rows + 1], merging the per-add chunks once."""
        if len(self._chunks) != 1:
            ids = [c[0] for c in self._chunks]
            lengths = [c[1] for c in self._chunks]
            self._chunks = [
                (
                    np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32),
                    np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64),
                )
            ]
        ids_flat, lengths_flat = self._chunks[0]
        offsets = np.zeros(len(lengths_flat) + 1, dtype=np.int64)
        np.cumsum(lengths_flat, out=offsets[1:])
        return ids_flat, offsets

    def matrix(self) -> Bm25Matrix:
        """The BM25 matrix of the live rows, rebuilt by bm25s if rows changed since the last build."""
        if self._matrix is None:
            self._matrix = self._build()
        return self._matrix

    def _build(self) -> Bm25Matrix:
        live = np.flatnonzero(self._alive).astype(np.int64)
        vocab_size = len(self._vocab)
        ids, offsets = self._flat()
        if not (offsets[live + 1] - offsets[live]).any():  # no live row has a token: nothing matches
            return Bm25Matrix(
                data=np.zeros(0, dtype=np.float32),
                indices=np.zeros(0, dtype=np.int32),
                indptr=np.zeros(vocab_size + 1, dtype=np.int64),
                rows=live,
            )
        all_ids = ids.tolist()
        docs = [all_ids[offsets[r] : offsets[r + 1]] for r in live]
        c = self.config
        retriever = self._bm25s.BM25(k1=c.k1, b=c.b, method=c.method)
        built = retriever.build_index_from_ids(
            unique_token_ids=list(range(vocab_size)), corpus_token_ids=docs, show_progress=False
        )
        logger.debug("rebuilt the BM25 matrix: %d live rows, %d tokens", len(live), len(ids))
        return Bm25Matrix(
            data=np.asarray(built["data"], dtype=np.float32),
            indices=np.asarray(built["indices"], dtype=np.int32),
            indptr=np.asarray(built["indptr"], dtype=np.int64),
            rows=live,
        )

    # --- persistence ----------------------------------------------------------------------------
    def save(self, folder: Path) -> list[str]:
        """Write ``folder/lexical/`` (building the matrix first if rows changed); return the file names.

        The names are relative to ``folder``, for the index manifest.
        """
        part = folder / FOLDER
        part.mkdir(parents=True, exist_ok=True)
        matrix = self.matrix()
        ids, offsets = self._flat()
        (part / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        vocab = sorted(self._vocab, key=self._vocab.__getitem__)
        (part / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        arrays: dict[str, NDArray[Any]] = {
            "tokens.npy": ids,
            "offsets.npy": offsets,
            "bm25_data.npy": matrix.data,
            "bm25_indices.npy": matrix.indices,
            "bm25_indptr.npy": matrix.indptr,
            "bm25_rows.npy": matrix.rows,
        }
        for name, array in arrays.items():
            save_array(part, name, array)
        return [f"{FOLDER}/{n}" for n in ("config.json", "vocab.json", *arrays)]

    @classmethod
    def load(cls, folder: Path, alive: NDArray[np.bool_], *, mmap: bool = False) -> LexicalIndex:
        """Read ``folder/lexical/``; ``alive`` is the index's live-row mask (it must agree)."""
        part = folder / FOLDER
        config_path, vocab_path = part / "config.json", part / "vocab.json"
        try:
            config = LexicalConfig.from_dict(json.loads(config_path.read_text()))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"{config_path}: bad lexical config ({exc})") from None
        try:
            vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise IndexFormatError(f"{vocab_path}: unreadable vocabulary ({exc})") from None
        if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
            raise IndexFormatError(f"{vocab_path}: expected a JSON array of tokens")
        rows = len(alive)
        offsets = np.array(load_array(part, "offsets.npy", (rows + 1,), np.int64, False))
        ids = load_array(part, "tokens.npy", (int(offsets[-1]),), np.int32, mmap)
        if offsets[0] != 0 or (np.diff(offsets) < 0).any():
            raise IndexFormatError(f"{part / 'offsets.npy'}: offsets must start at 0 and never decrease")
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= len(vocab)):
            raise IndexFormatError(f"{part / 'tokens.npy'}: token ids outside the vocabulary")
        live = np.flatnonzero(alive).astype(np.int64)
        indptr = np.array(load_array(part, "bm25_indptr.npy", (len(vocab) + 1,), np.int64, False))
        nnz = int(indptr[-1])
        matrix = Bm25Matrix(
            data=load_array(part, "bm25_data.npy", (nnz,), np.float32, mmap),
            indices=load_array(part, "bm25_indices.npy", (nnz,), np.int32, mmap),
            indptr=indptr,
            rows=np.array(load_array(part, "bm25_rows.npy", (len(live),), np.int64, False)),
        )
        if not np.array_equal(matrix.rows, live):
            raise IndexFormatError(f"{part / 'bm25_rows.npy'}: the BM25 rows are not the index's live rows")
        index = cls(config)
        index._vocab = {t: i for i, t in enumerate(vocab)}
        if len(index._vocab) != len(vocab):
            raise IndexFormatError(f"{vocab_path}: tokens repeat")
        index._chunks = [(ids, np.diff(offsets))]
        index._rows, index._alive = rows, np.array(alive, dtype=bool)
        index._matrix = matrix
        return index

    def __repr__(self) -> str:
        return (
            f"LexicalIndex(rows={self._rows}, live={self.live}, vocabulary={len(self._vocab)}, {self.config})"
        )
