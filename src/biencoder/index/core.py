"""``Index``: add vectors (or texts, with an encoder) under string ids, search them, save and load a folder.

Exact search by chunked matrix products (memory bounded by the chunk size), or an HNSW graph;
float32, int8 or binary vectors, quantized search rescored with the float32 vectors. Rows are
never moved: ``remove`` marks a row dead, an ``add`` with an existing id replaces it (upsert).
With a lexical part (``lexical=LexicalConfig()``), rows keep their BM25 tokens too, and search
runs in three modes: dense, lexical (BM25) or hybrid (both lists fused, see ``fusion``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder import similarity as sim
from biencoder.index import persist, scoring
from biencoder.index.config import FusionRecord, IndexConfig, IndexKind, SearchResult
from biencoder.index.fusion import DEFAULT_CANDIDATES, Fusion, ScoreNormalization, SearchMode
from biencoder.index.hnsw import Hnsw
from biencoder.index.hybrid import (
    NO_LEXICAL_PART,
    SearchSettings,
    dense_result,
    fuse_sides,
    hybrid_result,
    is_texts,
    lexical_result,
    query_words,
    row_words,
    text_list,
)
from biencoder.index.lexical import LexicalConfig, LexicalIndex
from biencoder.index.quantize import Quantization, int8_ranges, quantize_binary, quantize_int8
from biencoder.protocol import Encoder

logger = logging.getLogger(__name__)

Array = NDArray[np.float32]


class Index:
    """A searchable set of (id, vector) rows; see :class:`IndexConfig` for the choices."""

    def __init__(
        self,
        dim: int | None = None,
        *,
        encoder: Encoder | None = None,
        config: IndexConfig | None = None,
        model_name: str | None = None,
        lexical: LexicalConfig | None = None,
    ) -> None:
        if lexical is not None and not isinstance(lexical, LexicalConfig):
            raise TypeError(f"lexical must be a LexicalConfig or None, got {type(lexical).__name__}")
        if encoder is not None and dim is not None and dim != encoder.dimension:
            raise ValueError(f"dimension mismatch: dim={dim} but the encoder gives {encoder.dimension}")
        if dim is None and encoder is not None:
            dim = encoder.dimension
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if config is None:
            config = IndexConfig(metric=encoder.similarity_fn_name if encoder is not None else "cosine")
        self.config = config
        self.encoder = encoder
        self.model_name = model_name
        self._dim = dim
        self._blocks: list[Any] = []  # float32 [m, dim] blocks; the first may be memory-mapped
        self._codes: list[Any] = []  # int8 [m, dim] or packed bits [m, dim/8], if quantized
        self._ranges: Array | None = None  # int8 [2, dim]
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._alive = np.zeros(0, dtype=bool)
        self._hnsw: Hnsw | None = None
        self._texts: list[str | None] | None = None  # per row, once any row was added with its text
        self._lexical = LexicalIndex(lexical) if lexical is not None else None  # BM25 tokens per row
        self._fusion: FusionRecord | None = None  # the tuned hybrid setting (fusion.json)

    # --- size and lookup -------------------------------------------------------------------
    @property
    def dim(self) -> int | None:
        return self._dim

    # The store contract (biencoder.stores.VectorStore): the in-process backend.
    backend = "memory"

    @property
    def dimension(self) -> int | None:
        return self._dim

    @property
    def count(self) -> int:
        """Live rows."""
        return len(self._row)

    @property
    def metric(self) -> str:
        return self.config.metric

    @property
    def kind(self) -> str:
        return self.config.kind

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str | int) and str(item) in self._row

    @property
    def ids(self) -> list[str]:
        """Live ids in row order."""
        return [self._ids[p] for p in np.flatnonzero(self._alive)]

    def get(self, item: str | int) -> Array:
        """The stored vector of one id (normalised for cosine)."""
        pos = self._row.get(str(item))
        if pos is None:
            raise KeyError(f"id {item!r} is not in the index")
        return scoring.gather_rows(self._blocks, np.array([pos]), self._need_dim())[0]

    def memory_bytes(self) -> dict[str, int]:
        """Bytes of the float32 vectors and of the quantized codes (what a quantized search scans)."""
        return {
            "float32": sum(int(b.nbytes) for b in self._blocks),
            "codes": sum(int(c.nbytes) for c in self._codes),
        }

    # --- changing the rows ---------------------------------------------------------------
    def add(
        self,
        ids: str | int | Sequence[str | int],
        data: Any,
        *,
        batch_size: int = 32,
        texts: Sequence[str] | None = None,
    ) -> None:
        """Add rows: ``data`` is texts (encoded with the index's encoder) or embeddings [n, dim].

        An id already present is replaced (upsert). Ids are strings; ints are converted.
        ``texts`` are kept with the rows (saved with the index; ``texts_of`` reads them back).
        An index with a lexical part needs every row's text: ``texts``, else ``data`` as texts.
        """
        id_list = [str(ids)] if isinstance(ids, str | int) else [str(i) for i in ids]
        vectors = self._vectors_of(data, batch_size, "added data")
        if len(id_list) != len(vectors):
            raise ValueError(f"got {len(id_list)} ids but {len(vectors)} vectors")
        if texts is not None:
            if isinstance(texts, str) or len(texts) != len(id_list):
                raise ValueError(f"texts must be a list of {len(id_list)} strings, one per id")
            if not all(isinstance(t, str) for t in texts):
                raise TypeError("texts must be strings")
        if len(set(id_list)) != len(id_list):
            dup = next(i for i in id_list if id_list.count(i) > 1)
            raise ValueError(f"duplicate id {dup!r} within one add")
        words = row_words(data, texts) if self._lexical is not None else None
        if not id_list:
            return
        replaced = [self._row[i] for i in id_list if i in self._row]
        start = len(self._ids)
        self._append_codes_and_graph(vectors)
        if self._lexical is not None and words is not None:
            self._lexical.add(range(start, start + len(id_list)), words)
        if replaced:
            self._alive[replaced] = False
            if self._lexical is not None:
                self._lexical.mark_dead(replaced)
            logger.debug("upsert: %d ids replaced", len(replaced))
        self._blocks.append(vectors)
        if texts is not None and self._texts is None:
            self._texts = [None] * len(self._ids)
        if self._texts is not None:
            self._texts.extend(texts if texts is not None else [None] * len(id_list))
        self._ids.extend(id_list)
        self._row.update({i: start + n for n, i in enumerate(id_list)})
        self._alive = np.concatenate([self._alive, np.ones(len(id_list), dtype=bool)])

    def upsert(
        self, ids: str | int | Sequence[str | int], data: Any, *, texts: Sequence[str] | None = None
    ) -> None:
        """``add``: an id already present is replaced."""
        self.add(ids, data, texts=texts)

    @property
    def has_texts(self) -> bool:
        return self._texts is not None

    def texts_of(self, ids: Sequence[str]) -> list[str | None]:
        """The stored text of each live id (None for an id without one, or not in the index)."""
        if self._texts is None:
            return [None] * len(ids)
        stored = self._texts
        return [stored[self._row[i]] if i in self._row else None for i in ids]

    # --- the lexical part and the tuned fusion ------------------------------------------------
    @property
    def has_lexical(self) -> bool:
        return self._lexical is not None

    @property
    def lexical_config(self) -> LexicalConfig | None:
        return self._lexical.config if self._lexical is not None else None

    @property
    def fusion_record(self) -> FusionRecord | None:
        return self._fusion

    @property
    def fusion_alpha(self) -> float | None:
        """The tuned dense weight of hybrid search, if one was recorded (``set_fusion``)."""
        return self._fusion.alpha if self._fusion is not None else None

    def lexical_scales(self, query_texts: Sequence[str]) -> NDArray[np.float64]:
        """Each query's BM25 scale (calibrated fusion's divisor; see ``LexicalIndex.query_scales``)."""
        if self._lexical is None:
            raise ValueError(NO_LEXICAL_PART)
        return self._lexical.query_scales(query_texts)

    def set_fusion(self, record: FusionRecord | None) -> None:
        """Record a tuned fusion setting (saved as ``fusion.json``); hybrid search then defaults to it."""
        if record is not None and not isinstance(record, FusionRecord):
            raise TypeError(f"record must be a FusionRecord or None, got {type(record).__name__}")
        self._fusion = record

    def choose_fusion(self, **options: Any) -> FusionRecord:
        """Decide this index's hybrid fusion without labels from probes cut out of its own texts
        (:func:`biencoder.index.fusion_choice.choose_index_fusion`, which takes ``options``), and
        record it (``set_fusion``; saved as ``fusion.json``). Needs the lexical part and an encoder."""
        from biencoder.index.fusion_choice import choose_index_fusion

        record = choose_index_fusion(self, **options)
        self.set_fusion(record)
        return record

    def remove(self, ids: str | int | Sequence[str | int]) -> None:
        """Remove ids; all must be present (KeyError names those that are not)."""
        id_list = [str(ids)] if isinstance(ids, str | int) else [str(i) for i in ids]
        missing = [i for i in id_list if i not in self._row]
        if missing:
            raise KeyError(f"{len(missing)} ids not in the index, e.g. {missing[:5]}")
        rows = [self._row.pop(i) for i in dict.fromkeys(id_list)]
        self._alive[rows] = False
        if self._lexical is not None:
            self._lexical.mark_dead(rows)

    def calibrate(self, embeddings: Any) -> None:
        """Set int8 ranges from representative embeddings before the first add (else the first batch)."""
        if self._ids:
            raise ValueError("calibrate before adding rows: the stored codes use the current ranges")
        self._ranges = int8_ranges(self._prepare(embeddings, "calibration embeddings"))

    def _append_codes_and_graph(self, vectors: Array) -> None:
        quant = self.config.quant
        codes: Any = None
        if quant is Quantization.INT8:
            if self._ranges is None:
                if len(vectors) < 2:
                    raise ValueError("int8 quantization calibrates on the first add: give it >= 2 vectors")
                self._ranges = int8_ranges(vectors)
            codes = quantize_int8(vectors, self._ranges)
        elif quant is Quantization.BINARY:
            codes = quantize_binary(vectors)
        if self.config.index_kind is IndexKind.HNSW:
            if self._hnsw is None:
                c = self.config
                self._hnsw = Hnsw.create(
                    self._need_dim(), c.similarity, quant, c.connectivity, c.expansion_add
                )
            if self._hnsw.needs_training:
                self._hnsw.train(vectors)
            self._hnsw.add(codes if quant is Quantization.BINARY else vectors)
        if codes is not None:
            self._codes.append(codes)

    # --- search ------------------------------------------------------------------------------
    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        mode: str | SearchMode | None = None,
        fusion: str | Fusion | None = None,
        alpha: float | None = None,
        normalization: str | ScoreNormalization | None = None,
        candidates: int = DEFAULT_CANDIDATES,
        query_texts: Sequence[str] | None = None,
        adaptive: bool | None = None,
        rescore: bool = True,
        expansion_search: int | None = None,
        batch_size: int = 32,
    ) -> SearchResult:
        """The ``k`` best live rows for each query (texts, or embeddings with ``query_texts``).

        ``mode``: dense, lexical (BM25; no encoder, no vectors) or hybrid; None is hybrid when
        the index has a lexical part, else dense. Hybrid fuses each side's ``candidates`` (at
        least ``k``) best rows by ``fusion`` (convex or rrf; None: the tuned record's, else
        convex); convex weighs the dense side by ``alpha`` (None: the tuned ``fusion_alpha``,
        else ``DEFAULT_ALPHA``) after ``normalization`` (minmax, zscore or calibrated; None: the
        tuned record's, else calibrated), per query moved by ``adaptive`` (None: on for the
        untuned default only; see :mod:`biencoder.index.fusion`). Text queries serve both
        sides; with vector queries, lexical and hybrid search read the words from ``query_texts``.
        """
        opts = SearchSettings.resolve(
            k=k,
            mode=mode,
            fusion=fusion,
            alpha=alpha,
            normalization=normalization,
            candidates=candidates,
            has_lexical=self._lexical is not None,
            record=self._fusion,
            adaptive=adaptive,
        )
        if len(self) == 0:
            raise ValueError("the index is empty: add vectors before searching")
        if opts.mode is SearchMode.DENSE:
            if query_texts is not None:
                raise ValueError("query_texts are read by lexical and hybrid search only, not dense")
            return self._dense_search(queries, k, rescore, expansion_search, batch_size)
        texts, lexical = query_words(queries, query_texts), self._lexical
        if lexical is None:  # SearchSettings.resolve refuses this; for the type checker
            raise ValueError(NO_LEXICAL_PART)
        if opts.mode is SearchMode.LEXICAL:
            return lexical_result(lexical.search(texts, k), self._ids)
        q = self._vectors_of([queries] if isinstance(queries, str) else queries, batch_size, "queries")
        if len(q) != len(texts):
            raise ValueError(f"got {len(q)} query vectors but {len(texts)} query_texts")
        fetch = min(max(opts.candidates, k), len(self))
        scores, positions = self.search_positions(
            q, fetch, rescore=rescore, expansion_search=expansion_search
        )
        hits = lexical.search(texts, fetch)
        scales = lexical.query_scales(texts) if opts.normalization is ScoreNormalization.CALIBRATED else None
        return hybrid_result(fuse_sides(scores, positions, hits, opts, scales), hits, self._ids)

    def _dense_search(
        self, queries: Any, k: int, rescore: bool, expansion_search: int | None, batch_size: int
    ) -> SearchResult:
        q = self._vectors_of([queries] if isinstance(queries, str) else queries, batch_size, "queries")
        scores, positions = self.search_positions(q, k, rescore=rescore, expansion_search=expansion_search)
        return dense_result(scores, positions, self._ids)

    def search_positions(
        self, q: Array, k: int, *, rescore: bool = True, expansion_search: int | None = None
    ) -> tuple[Array, NDArray[np.int64]]:
        """Prepared query vectors [q, dim] -> (scores, row positions) [q, <=k]; position -1: none."""
        c, dim, quant = self.config, self._need_dim(), self.config.quant
        k = min(k, len(self))
        quantized = quant is not Quantization.NONE
        fetch = k * c.rescore_multiplier if quantized and rescore else k
        fetch = min(fetch, len(self))
        if self._hnsw is not None:
            graph_q: Any = quantize_binary(q) if quant is Quantization.BINARY else q
            ef = expansion_search or c.expansion_search
            scores, pos = self._hnsw.search(graph_q, fetch, ef, self._alive)
        elif quantized:
            qq = scoring.quantized_queries(q, quant, self._ranges, dim)
            fn = scoring.quantized_score_fn(quant, dim)
            scores, pos = scoring.top_k_over_blocks(
                qq, self._codes, self._alive, fetch, fn, c.chunk_size, c.query_chunk_size, check_dims=False
            )
        else:
            fn = scoring.float_score_fn(c.similarity)
            return scoring.top_k_over_blocks(
                q, self._blocks, self._alive, k, fn, c.chunk_size, c.query_chunk_size
            )
        if quantized and rescore:
            return scoring.rescore(q, self._blocks, pos, c.similarity, k, dim, c.query_chunk_size)
        return scores[:, :k], pos[:, :k]

    # --- inputs ----------------------------------------------------------------------------
    def _need_dim(self) -> int:
        if self._dim is None:
            raise ValueError("the index has no dimension yet: add vectors first")
        return self._dim

    def _vectors_of(self, data: Any, batch_size: int, what: str) -> Array:
        if is_texts(data):
            if self.encoder is None:
                raise ValueError(
                    f"{what} are texts but the index has no encoder: pass encoder= or embeddings"
                )
            texts = text_list(data)
            if not all(isinstance(t, str) for t in texts):
                raise TypeError(f"{what}: mix of texts and non-texts")
            data = self.encoder.encode(texts, batch_size=batch_size)
        elif isinstance(data, Sequence) and len(data) == 0:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        return self._prepare(data, what)

    def _prepare(self, data: Any, what: str) -> Array:
        x = sim.as_matrix(data, what)
        if self._dim is None:
            self._dim = x.shape[1]
        if x.shape[1] != self._dim:
            raise ValueError(f"dimension mismatch: {what} have dimension {x.shape[1]}, the index {self._dim}")
        if not np.isfinite(x).all():
            raise ValueError(f"{what} contain NaN or infinite values")
        if self.config.similarity is sim.SimilarityFunction.COSINE:
            x = sim.normalize(x)
        return np.ascontiguousarray(x, dtype=np.float32)

    # --- persistence ---------------------------------------------------------------------
    def _rows(self) -> persist.IndexRows:
        return persist.IndexRows(
            config=self.config,
            dim=self._need_dim(),
            model_name=self.model_name,
            ids=self._ids,
            alive=self._alive,
            blocks=self._blocks,
            codes=self._codes,
            ranges=self._ranges,
            hnsw=self._hnsw,
            texts=self._texts,
            lexical=self._lexical,
            fusion=self._fusion,
        )

    def save(self, path: str | Path) -> None:
        """Write the index folder atomically (see :mod:`biencoder.index.storage`).

        With a lexical part, a BM25 matrix out of date is rebuilt first, so loading needs none.
        """
        persist.save_index(self._rows(), Path(path))
        logger.info("saved %s to %s", self, path)

    @classmethod
    def load(
        cls, path: str | Path, *, encoder: Encoder | None = None, mmap: bool = True, verify: bool = False
    ) -> Index:
        """Open an index folder; vectors are memory-mapped unless ``mmap=False``; ``verify`` checks sha256."""
        path = Path(path)
        rows = persist.load_index(path, mmap=mmap, verify=verify)
        if encoder is not None and encoder.dimension != rows.dim:
            raise ValueError(
                f"dimension mismatch: the index at {path} holds {rows.dim}-dimensional vectors "
                f"(model {rows.model_name!r}), the encoder gives {encoder.dimension}"
            )
        index = cls(rows.dim, encoder=encoder, config=rows.config, model_name=rows.model_name)
        index._ids, index._alive, index._blocks = rows.ids, rows.alive, rows.blocks
        index._codes, index._ranges = rows.codes, rows.ranges
        index._hnsw, index._texts = rows.hnsw, rows.texts
        index._lexical, index._fusion = rows.lexical, rows.fusion
        index._row = {rows.ids[p]: int(p) for p in np.flatnonzero(rows.alive)}
        name = getattr(encoder, "name", None)
        if encoder is not None and rows.model_name and name not in (None, rows.model_name):
            logger.warning("index %s was built with %s, searching with %s", path, rows.model_name, encoder)
        return index

    def export_parquet(self, path: str | Path, *, batch_rows: int = 65_536) -> None:
        """Live ids and vectors as Parquet (``id`` string, ``vector`` fixed-size list of float32)."""
        persist.export_parquet(self._rows(), Path(path), batch_rows=batch_rows)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Index(dim={self._dim}, live={len(self)}, metric={c.metric}, kind={c.kind}, "
            f"quantization={c.quantization})"
        )
