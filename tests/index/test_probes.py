"""Probes cut out of a corpus, and their reciprocal ranks through the search's own fusion."""

from __future__ import annotations

import numpy as np
import pytest

from biencoder.index.fusion_choice import Candidate, reciprocal_ranks
from biencoder.index.probes import MIN_WORDS, make_probes, probe_corpus, split_document


def test_a_sentence_is_taken_out_of_a_passage() -> None:
    text = "The cat sat on the mat today. Dogs bark at night in town. Birds sing in the early morning."
    query, target, kind = split_document(text, np.random.default_rng(0)) or ("", "", "")
    assert kind == "sentence"
    assert query in text and query not in target
    assert sorted((query + " " + target).split()) == sorted(text.split())


def test_a_sentence_gives_half_its_words_and_short_texts_none() -> None:
    words = [f"w{i}" for i in range(10)]
    query, target, kind = split_document(" ".join(words), np.random.default_rng(1)) or ("", "", "")
    assert kind == "span" and len(query.split()) == 5 and len(target.split()) == 5
    assert " ".join(words).find(query) >= 0  # contiguous
    assert split_document(" ".join(words[: 2 * MIN_WORDS - 1]), np.random.default_rng(0)) is None


def test_make_probes_is_seeded_and_skips_short_texts() -> None:
    texts = ["too short", None, "one two three four five six seven eight nine", "a b c d e f g h"]
    first, again = make_probes(texts, 5, seed=3), make_probes(texts, 5, seed=3)
    assert sorted(first.rows.tolist()) == [2, 3]
    assert first.queries == again.queries and first.targets == again.targets
    with pytest.raises(ValueError, match="positive integer"):
        make_probes(texts, 0)


def test_probe_corpus_keeps_every_probe_document() -> None:
    texts = [" ".join(f"w{i}" for i in range(12))] * 50
    probes = make_probes(texts, 5, seed=0)
    rows = probe_corpus(len(texts), probes, max_docs=20, seed=0)
    assert len(rows) == 20 and set(probes.rows.tolist()) <= set(rows.tolist())
    assert np.array_equal(probe_corpus(10, make_probes(texts[:10], 3), max_docs=20), np.arange(10))
    with pytest.raises(ValueError, match="below the number of probes"):
        probe_corpus(len(texts), probes, max_docs=2)


def test_reciprocal_ranks_follow_the_fused_order() -> None:
    dense_scores = np.array([[0.9, 0.8, 0.1]], dtype=np.float32)
    dense_positions = np.array([[0, 1, 2]], dtype=np.int64)
    lexical = [(np.array([2, 1], dtype=np.int64), np.array([9.0, 1.0], dtype=np.float32))]
    dense = Candidate(label="dense")
    lexical_heavy = Candidate(label="lexical", alpha=0.0, normalization="minmax")
    rr = reciprocal_ranks(dense_scores, dense_positions, lexical, np.array([2]), [dense, lexical_heavy])
    assert rr.tolist() == [[1 / 3, 1.0]]  # dense ranks row 2 third; BM25 alone ranks it first
