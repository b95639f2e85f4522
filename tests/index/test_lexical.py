"""BM25 in the index equals bm25s's own; hybrid search equals fusing the two sides by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from biencoder.index import Index, IndexFormatError
from biencoder.index.config import FusionRecord, SearchResult
from biencoder.index.fusion import DEFAULT_ALPHA, convex_fusion, reciprocal_rank_fusion
from biencoder.index.lexical import LexicalConfig, LexicalIndex
from biencoder.index.persist import read_fusion_record, write_fusion_record

bm25s = pytest.importorskip("bm25s")
Stemmer = pytest.importorskip("Stemmer")

# Our scores are bm25s's float32 weights, summed in float32 over the query's terms in the same
# order as bm25s sums them, so they agree bit for bit today; a few float32 ulps of slack keep
# the comparison valid should bm25s accumulate in another order (a float32 sum of m terms moves
# by about m ulps when reordered, and a query has a handful of terms).
RTOL = 8 * float(np.finfo(np.float32).eps)

HAND_TEXTS = [
    "The cat sat on the mat; the cat purred.",
    "Cells, cells and more cells: cell biology of cancer cells.",
    "!!! ???",  # no tokens at all
    "the of and to",  # stop words only
    "Running runners run quickly through the running water.",
]
HAND_QUERIES = ["cells cells cancer", "cat running", "Does vitamin D reduce the risk of fractures?"]
STOPWORD_QUERY = "the of and"


@pytest.fixture(scope="module")
def corpus(data_dir: Path) -> tuple[list[str], list[str]]:
    """~200 SciFact abstracts and a few hand-written texts; 20 SciFact claims and hand queries."""
    folder = data_dir / "scifact"
    with (folder / "corpus.jsonl").open(encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(200), f, strict=False)]
    with (folder / "queries.jsonl").open(encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for _, line in zip(range(20), f, strict=False)]
    texts = [f"{r.get('title') or ''} {r['text']}".strip() for r in rows]
    return texts + HAND_TEXTS, queries + HAND_QUERIES


def reference(
    texts: list[str], queries: list[str], n: int, config: LexicalConfig | None = None
) -> list[tuple[list[int], np.ndarray]]:
    """bm25s over ``texts``: each query's rows with a score > 0, best first (ties: smaller row), top n."""
    c = config or LexicalConfig()
    stemmer = Stemmer.Stemmer(c.language) if c.language else None
    retriever = bm25s.BM25(k1=c.k1, b=c.b, method=c.method)
    tokens = bm25s.tokenize(texts, stopwords=c.stopwords, stemmer=stemmer, show_progress=False)
    retriever.index(tokens, show_progress=False)
    out = []
    for q in bm25s.tokenize(
        queries, stopwords=c.stopwords, stemmer=stemmer, return_ids=False, show_progress=False
    ):
        ids = retriever.get_tokens_ids(q)
        scores = retriever.get_scores_from_ids(ids) if ids else np.zeros(len(texts), np.float32)
        order = sorted(np.flatnonzero(scores > 0).tolist(), key=lambda i: (-scores[i], i))[:n]
        out.append((order, scores[order]))
    return out


def assert_matches(
    ours: list[tuple[np.ndarray, np.ndarray]], ref: list[tuple[list[int], np.ndarray]]
) -> None:
    assert len(ours) == len(ref)
    for (pos, scores), (ref_pos, ref_scores) in zip(ours, ref, strict=True):
        assert pos.tolist() == ref_pos
        np.testing.assert_allclose(scores, ref_scores, rtol=RTOL, atol=0)


def _lexical_index(texts: list[str], config: LexicalConfig | None = None) -> LexicalIndex:
    lexical = LexicalIndex(config)
    half = len(texts) // 2
    lexical.add(range(half), texts[:half])  # two adds: the vocabulary grows
    lexical.add(range(half, len(texts)), texts[half:])
    return lexical


def test_scores_equal_bm25s(corpus: tuple[list[str], list[str]], capfd: pytest.CaptureFixture[str]) -> None:
    texts, queries = corpus
    lexical = _lexical_index(texts)
    ours = lexical.search(queries, 10)
    assert_matches(ours, reference(texts, queries, 10))
    assert all(len(pos) for pos, _ in ours)
    # bm25s's own retrieval path gives the same top scores (its order of tied rows may differ)
    retriever = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    stemmer = Stemmer.Stemmer("english")
    retriever.index(
        bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False
    )
    q_tokens = bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False)
    _, top = retriever.retrieve(q_tokens, k=10, show_progress=False)
    for (_, scores), ref in zip(ours, top, strict=True):
        np.testing.assert_allclose(scores, ref[ref > 0], rtol=RTOL, atol=0)
    assert "it/s" not in capfd.readouterr().err  # no progress bars from our calls


@pytest.mark.parametrize(
    "config",
    [
        LexicalConfig(k1=1.2, b=0.4, method="robertson"),
        LexicalConfig(k1=0.9, b=1.0, method="atire"),
        LexicalConfig(language=None, stopwords=None, b=0.0),
    ],
)
def test_variants_equal_bm25s(corpus: tuple[list[str], list[str]], config: LexicalConfig) -> None:
    texts, queries = corpus
    assert_matches(_lexical_index(texts, config).search(queries, 7), reference(texts, queries, 7, config))


def test_stop_words_and_unknown_words_give_nothing(corpus: tuple[list[str], list[str]]) -> None:
    lexical = _lexical_index(corpus[0])
    for pos, scores in lexical.search([STOPWORD_QUERY, "zzzqqq xxyyzz"], 5):
        assert pos.dtype == np.int64 and len(pos) == 0 and len(scores) == 0


def test_after_upsert_and_remove_equals_fresh_bm25s(corpus: tuple[list[str], list[str]]) -> None:
    texts, queries = corpus
    rng = np.random.default_rng(0)
    index = Index(8, lexical=LexicalConfig())
    ids = [f"d{i}" for i in range(len(texts))]
    index.add(ids, rng.standard_normal((len(texts), 8)), texts=texts)
    index.remove(ids[:40:2])
    index.search("cells", 3, mode="lexical")  # build, then change again: rebuilt on the next search
    new_texts = ["cancer cells in mice", "vitamin D and bone fractures", texts[5]]
    index.upsert([ids[1], ids[3], "new"], rng.standard_normal((3, 8)), texts=new_texts)
    index.remove(ids[-3])
    current = dict(zip(ids, texts, strict=True)) | dict(zip([ids[1], ids[3], "new"], new_texts, strict=True))
    live = index.ids  # row order
    assert len(live) == len(texts) - 20 - 1 + 1
    got = index.search(queries, 10, mode="lexical")
    ref = reference([current[i] for i in live], queries, 10)
    for q, (ref_rows, ref_scores) in enumerate(ref):
        assert got.ids[q] == [live[r] for r in ref_rows]
        np.testing.assert_allclose(got.scores[q], ref_scores, rtol=RTOL, atol=0)


def _hybrid_index(texts: list[str], dim: int = 16) -> tuple[Index, np.ndarray]:
    rng = np.random.default_rng(1)
    index = Index(dim, lexical=LexicalConfig())
    index.add([f"d{i}" for i in range(len(texts))], rng.standard_normal((len(texts), dim)), texts=texts)
    return index, rng.standard_normal((len(HAND_QUERIES) + 20, dim)).astype(np.float32)


def _sides(index: Index, q: np.ndarray, words: list[str], fetch: int) -> tuple[SearchResult, SearchResult]:
    return index.search(q, fetch, mode="dense"), index.search(words, fetch, mode="lexical")


def _keys(ids: list[str]) -> np.ndarray:
    return np.array([int(i[1:]) for i in ids], dtype=np.int64)  # "d17" is row 17: no upserts here


@pytest.mark.parametrize(
    "options",
    [{}, {"alpha": 0.3}, {"alpha": 0.0, "normalization": "zscore"}, {"alpha": 1.0}, {"fusion": "rrf"}],
)
def test_hybrid_equals_fusing_the_sides_by_hand(corpus: tuple[list[str], list[str]], options: dict) -> None:
    texts, queries = corpus
    index, q = _hybrid_index(texts)
    got = index.search(q, 5, query_texts=queries, candidates=30, **options)
    assert got.mode == "hybrid" and got.notes == [None] * len(queries)
    dense, lexical = _sides(index, q, queries, 30)
    scales = index._lexical.query_scales(queries)  # type: ignore[union-attr]
    for n in range(len(queries)):
        sides = (
            _keys(dense.ids[n]),
            np.array(dense.scores[n]),
            _keys(lexical.ids[n]),
            np.array(lexical.scores[n]),
        )
        if options.get("fusion") == "rrf":
            fused = reciprocal_rank_fusion(*sides, k=5)
        else:  # the untuned default: calibrated, adaptive; a given alpha is that weight, not adapted
            alpha = options.get("alpha", DEFAULT_ALPHA)
            fused = convex_fusion(
                *sides,
                alpha=alpha,
                k=5,
                normalization=options.get("normalization", "calibrated"),
                lexical_scale=float(scales[n]),
                adaptive=not options,
            )
        assert got.ids[n] == [f"d{key}" for key in fused.keys]
        np.testing.assert_allclose(got.scores[n], fused.scores, rtol=1e-12, atol=1e-12)
        by_id = dict(zip(dense.ids[n], dense.scores[n], strict=True))
        assert got.dense_scores is not None and got.lexical_scores is not None
        assert got.dense_scores[n] == [by_id.get(i) for i in got.ids[n]]
        hit = got.hits(n)[0]
        assert set(hit) == {"id", "score", "dense_score", "lexical_score"}


def test_stopword_query_gives_dense_results_with_a_note(corpus: tuple[list[str], list[str]]) -> None:
    index, q = _hybrid_index(corpus[0])
    got = index.search(q[:2], 4, query_texts=[STOPWORD_QUERY, "cancer cells"])
    dense = index.search(q[:2], 4, mode="dense")  # the same query batch: the same float32 products
    assert got.ids[0] == dense.ids[0] and got.scores[0] == dense.scores[0]
    assert got.lexical_scores is not None and got.lexical_scores[0] == [None] * 4
    assert got.notes is not None and "dense results only" in str(got.notes[0]) and got.notes[1] is None
    lexical = index.search([STOPWORD_QUERY], 4, mode="lexical")
    assert lexical.ids == [[]] and lexical.notes is not None and "no lexical match" in str(lexical.notes[0])


def test_mode_defaults_and_lexical_needs_no_encoder(corpus: tuple[list[str], list[str]]) -> None:
    texts, queries = corpus
    index, q = _hybrid_index(texts)
    assert index.has_lexical and index.lexical_config == LexicalConfig()
    assert index.search(q[:2], 3, query_texts=queries[:2]).mode == "hybrid"
    lexical = index.search("cancer cells", 3, mode="lexical")  # texts, no encoder: fine for BM25
    assert lexical.mode == "lexical" and lexical.dense_scores is None and len(lexical.ids[0]) == 3
    assert index.search(None, 3, mode="lexical", query_texts=["cancer cells"]).ids == lexical.ids
    plain = Index(16)
    plain.add(["a", "b"], q[:2])
    result = plain.search(q[:1], 1)
    assert result.mode == "dense" and result.dense_scores is None and result.notes is None
    assert not plain.has_lexical and plain.lexical_config is None and plain.fusion_alpha is None


def test_with_an_encoder(corpus: tuple[list[str], list[str]], tiny_model_dir: Path) -> None:
    from biencoder import SentenceEncoder

    texts = [*HAND_TEXTS, "a small dog and a big cat", "the red car is fast", "water and fire"]
    index = Index(encoder=SentenceEncoder.load(tiny_model_dir, device="cpu"), lexical=LexicalConfig())
    index.add([f"d{i}" for i in range(len(texts))], texts)  # the texts serve both sides
    queries = ["a fast red car", "cat and dog"]
    got = index.search(queries, 3)
    dense, lexical = index.search(queries, 8, mode="dense"), index.search(queries, 8, mode="lexical")
    scales = index._lexical.query_scales(queries)  # type: ignore[union-attr]
    for n in range(len(queries)):
        fused = convex_fusion(
            _keys(dense.ids[n]),
            np.array(dense.scores[n]),
            _keys(lexical.ids[n]),
            np.array(lexical.scores[n]),
            alpha=DEFAULT_ALPHA,
            k=3,
            normalization="calibrated",
            lexical_scale=float(scales[n]),
            adaptive=True,
        )
        assert got.ids[n] == [f"d{key}" for key in fused.keys]


def test_save_load_round_trip(corpus: tuple[list[str], list[str]], tmp_path: Path) -> None:
    texts, queries = corpus
    index, q = _hybrid_index(texts)
    index.remove(["d3", "d8"])
    index.upsert("d9", q[:1], texts=["cancer cells"])
    index.set_fusion(
        FusionRecord(alpha=0.3, grid=(0.0, 0.3, 1.0), split="dev", folds=5, data="scifact", cv_score=0.61)
    )
    before = [index.search(q, 6, query_texts=queries), index.search(queries, 6, mode="lexical")]
    index.save(tmp_path / "ix")
    assert (tmp_path / "ix" / "lexical" / "tokens.npy").is_file()
    for mmap in (True, False):
        loaded = Index.load(tmp_path / "ix", mmap=mmap, verify=True)
        assert loaded.fusion_alpha == 0.3 and loaded.fusion_record == index.fusion_record
        assert loaded.search(queries, 6, mode="lexical") == before[1]  # BM25: bit for bit
        after = loaded.search(q, 6, query_texts=queries)
        # dense scores: the saved vectors are one block, the live index's were two, and a matrix
        # product of another shape may round differently in float32
        assert after.ids == before[0].ids and after.lexical_scores == before[0].lexical_scores
        np.testing.assert_allclose(after.scores, before[0].scores, rtol=1e-6)
    # the loaded lexical part keeps working: statistics of the live rows after more changes
    loaded.add(["x1", "x2"], q[:2], texts=["vitamin D", "fractures of bone"])
    loaded.remove(["d0", "x1"])
    live = loaded.ids
    current = dict(zip([f"d{i}" for i in range(len(texts))], texts, strict=True))
    current |= {"d9": "cancer cells", "x2": "fractures of bone"}
    assert loaded.texts_of(live) == [current[i] for i in live]
    got = loaded.search(queries, 5, mode="lexical")
    for n, (rows, scores) in enumerate(reference([current[i] for i in live], queries, 5)):
        assert got.ids[n] == [live[r] for r in rows]
        np.testing.assert_allclose(got.scores[n], scores, rtol=RTOL, atol=0)


def test_old_folder_and_fusion_record_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    plain = Index(4)
    plain.add(["a", "b", "c"], rng.standard_normal((3, 4)))
    plain.save(tmp_path / "old")
    old = Index.load(tmp_path / "old")
    assert not old.has_lexical and old.fusion_record is None
    with pytest.raises(ValueError, match="has no lexical part"):
        old.search(["x"], 1, mode="lexical")
    record = FusionRecord(alpha=0.7, fusion="convex", normalization="zscore")
    write_fusion_record(tmp_path / "old", record)  # only fusion.json: the manifest still verifies
    assert read_fusion_record(tmp_path / "old") == record
    assert Index.load(tmp_path / "old", verify=True).fusion_alpha == 0.7
    (tmp_path / "old" / "fusion.json").write_text('{"alpha": 2}')
    with pytest.raises(IndexFormatError, match=r"fusion.json: bad fusion record \(alpha must be"):
        Index.load(tmp_path / "old")
    with pytest.raises(FileNotFoundError):
        write_fusion_record(tmp_path / "nowhere", record)


def test_tuned_record_sets_the_defaults(corpus: tuple[list[str], list[str]]) -> None:
    texts, queries = corpus
    index, q = _hybrid_index(texts)
    index.set_fusion(FusionRecord(alpha=0.2, normalization="zscore"))
    tuned = index.search(q, 5, query_texts=queries)
    explicit = index.search(q, 5, query_texts=queries, alpha=0.2, normalization="zscore")
    assert tuned == explicit != index.search(q, 5, query_texts=queries, alpha=0.2, normalization="minmax")


def test_bad_inputs(corpus: tuple[list[str], list[str]]) -> None:
    texts, queries = corpus
    index, q = _hybrid_index(texts)
    cases: list[tuple[dict, str]] = [
        ({"queries": q[:2]}, "need the query words: pass texts as queries, or query_texts="),
        ({"queries": q[:2], "query_texts": ["ok", "  "]}, "query 1 is empty"),
        ({"queries": ["cells"], "query_texts": ["cells"]}, "the queries are texts already"),
        ({"queries": ["cells"]}, "queries are texts but the index has no encoder"),
        ({"queries": q[:3], "query_texts": queries[:2]}, "got 3 query vectors but 2 query_texts"),
        (
            {"queries": q[:1], "query_texts": ["x"], "mode": "dense"},
            "query_texts are read by lexical and hybrid",
        ),
        (
            {"queries": q[:1], "query_texts": ["x"], "alpha": 1.5},
            r"alpha must be a number in \[0, 1\], got 1.5",
        ),
        ({"queries": q[:1], "query_texts": ["x"], "alpha": True}, "alpha must be a number"),
        ({"queries": q[:1], "query_texts": ["x"], "alpha": 0.5, "fusion": "rrf"}, "rrf fusion takes none"),
        ({"queries": q[:1], "mode": "sparse"}, "unknown search mode 'sparse'; valid: dense, lexical, hybrid"),
        ({"queries": q[:1], "fusion": "max"}, "unknown fusion 'max'; valid: convex, rrf"),
        (
            {"queries": q[:1], "normalization": "l2"},
            "unknown score normalization 'l2'; valid: minmax, zscore",
        ),
        ({"queries": q[:1], "candidates": 0}, "candidates must be a positive integer"),
        ({"queries": q[:1], "k": 0}, "k must be a positive integer"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            index.search(**kwargs)
    with pytest.raises(ValueError, match="has a lexical part: add needs the row texts"):
        index.add("z", q[:1])
    assert "z" not in index
    with pytest.raises(TypeError, match="LexicalConfig"):
        Index(4, lexical="english")  # type: ignore[arg-type]
    plain = Index(16)
    plain.add("a", q[:1])
    with pytest.raises(
        ValueError, match=r"has no lexical part: build it with `biencoder index \.\.\. --lexical`"
    ):
        plain.search(["cells"], 1, mode="hybrid")


def test_lexical_index_checks() -> None:
    lexical = LexicalIndex()
    lexical.add([0, 1], ["cats purr", "dogs bark"])
    with pytest.raises(ValueError, match="appended in order: expected positions from 2"):
        lexical.add([5], ["birds"])
    with pytest.raises(ValueError, match="got 1 positions but 2 texts"):
        lexical.add([2], ["a", "b"])
    with pytest.raises(ValueError, match="n must be a positive integer"):
        lexical.search(["cats"], 0)
    lexical.mark_dead([0])
    assert lexical.live == 1 and lexical.search(["cats purr"], 3)[0][0].size == 0
    with pytest.raises(IndexError):
        lexical.mark_dead([7])


def test_lexical_config() -> None:
    config = LexicalConfig(language="None", stopwords="none", k1=2, b=0)
    assert config.language is None and config.stopwords is None and config.k1 == 2.0
    assert LexicalConfig.from_dict(LexicalConfig().to_dict()) == LexicalConfig()
    bad = [
        ({"k1": 0}, "k1 must be > 0"),
        ({"k1": True}, "k1 must be a finite number"),
        ({"k1": float("nan")}, "k1 must be a finite number"),
        ({"b": 1.5}, r"b must be in \[0, 1\]"),
        ({"language": "klingon"}, "unknown stemmer language 'klingon'; valid: none, arabic"),
        ({"stopwords": "xx"}, "unknown stop-word list 'xx'; valid: none, en,"),
        ({"method": "bm25+"}, "unknown BM25 method 'bm25\\+'; valid: lucene, robertson, atire"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            LexicalConfig(**kwargs)
    with pytest.raises(ValueError, match=r"unknown lexical config fields \['delta'\]"):
        LexicalConfig.from_dict({"delta": 0.5})


def test_fusion_record() -> None:
    record = FusionRecord(alpha=0.4, grid=[0, 0.4, 1], folds=5, cv_score=0.5)  # type: ignore[arg-type]
    assert record.grid == (0.0, 0.4, 1.0)
    assert FusionRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    for kwargs, message in [
        ({"alpha": -0.1}, "alpha must be a number"),
        ({"alpha": 0.5, "fusion": "sum"}, "unknown fusion 'sum'"),
        ({"alpha": 0.5, "grid": (0.5, 2.0)}, "alpha must be a number in \\[0, 1\\], got 2.0"),
        ({"alpha": 0.5, "folds": 0}, "folds must be a positive integer"),
        ({"alpha": 0.5, "cv_score": float("nan")}, "cv_score must be a finite number"),
    ]:
        with pytest.raises(ValueError, match=message):
            FusionRecord(**kwargs)
    with pytest.raises(ValueError, match=r"unknown fusion record fields \['beta'\]"):
        FusionRecord.from_dict({"alpha": 0.5, "beta": 1})


def test_query_scales_are_the_sum_of_lucene_idf_over_the_live_rows(
    corpus: tuple[list[str], list[str]],
) -> None:
    """The calibrated fusion's BM25 scale, from a plain count of document frequencies."""
    texts, queries = corpus
    lexical = LexicalIndex(LexicalConfig())
    lexical.add(range(len(texts)), texts)
    lexical.mark_dead([0, 5])
    live = [t for n, t in enumerate(texts) if n not in (0, 5)]
    docs = [set(d) for d in lexical.tokenize(live)]
    want = []
    for tokens in lexical.tokenize([*queries, "the of and"]):
        df = [sum(t in d for d in docs) for t in set(tokens)]
        want.append(sum(math.log(1 + (len(docs) - f + 0.5) / (f + 0.5)) for f in df if f > 0))
    np.testing.assert_allclose(lexical.query_scales([*queries, "the of and"]), want, rtol=1e-12)
    assert want[-1] == 0.0  # stop words only: no scale
