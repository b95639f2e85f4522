"""The real all-MiniLM-L6-v2 against sentence-transformers on real text: 1,000 STSb test sentences, 250
SciFact abstracts (many beyond 256 tokens), empty strings, unicode and emoji. Max abs difference <= 1e-5."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from biencoder import SentenceEncoder

pytestmark = [pytest.mark.slow, pytest.mark.reference]
TOL = 1e-5
EDGE_CASES = [
    "",
    " ",
    "\t\n",
    "héllo wörld",
    "日本語のテキストです",
    "emoji 🤖🎉👩‍👩‍👧",
    "Ω≈ç√∫˜µ≤≥÷",
    "a" * 3000,
]


def sts_sentences(data_dir: Path, n: int = 500) -> list[str]:
    with (data_dir / "stsb" / "sts-test.csv").open(encoding="utf-8", newline="") as f:
        rows = list(itertools.islice(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), n))
    return [r[5] for r in rows] + [r[6] for r in rows]


def scifact_abstracts(data_dir: Path, n: int = 250) -> list[str]:
    with (data_dir / "scifact" / "corpus.jsonl").open(encoding="utf-8") as f:
        docs = [json.loads(line) for line in itertools.islice(f, n)]
    return [f"{d['title']} {d['text']}" for d in docs]


@pytest.fixture(scope="module")
def texts(data_dir: Path) -> list[str]:
    return sts_sentences(data_dir) + scifact_abstracts(data_dir) + EDGE_CASES


@pytest.fixture(scope="module")
def encoded(minilm: SentenceEncoder, texts: list[str]):  # type: ignore[no-untyped-def]
    """Our embeddings of every text, with which of them were truncated (one pass serves both)."""
    return minilm.encode_with_stats(texts, batch_size=32)


@pytest.fixture(scope="module")
def embeddings(encoded, st_minilm, texts: list[str]):  # type: ignore[no-untyped-def]
    return encoded.embeddings, st_minilm.encode(texts, batch_size=32)


def test_embeddings_match_reference(embeddings, texts: list[str]) -> None:  # type: ignore[no-untyped-def]
    ours, ref = embeddings
    assert ours.shape == ref.shape == (len(texts), 384)
    diff = np.abs(ours - ref).max()
    assert diff <= TOL, f"max abs difference {diff:.2e}"


def test_long_abstracts_are_truncated_and_counted(minilm: SentenceEncoder, encoded, texts: list[str]) -> None:  # type: ignore[no-untyped-def]
    lengths = [len(minilm.transformer.tokenizer(t)["input_ids"]) for t in texts]
    assert list(encoded.truncated) == [n > 256 for n in lengths]
    assert encoded.num_truncated == sum(n > 256 for n in lengths) >= 100  # most of the 250 abstracts


def test_similarity_matrices_match_reference(minilm: SentenceEncoder, st_minilm, embeddings) -> None:  # type: ignore[no-untyped-def]
    ours, ref = embeddings
    mine = minilm.similarity(ours[:400], ours[400:800])
    theirs = st_minilm.similarity(ref[:400], ref[400:800]).numpy()
    assert np.abs(mine - theirs).max() <= TOL
    pair_mine = minilm.similarity_pairwise(ours[:400], ours[400:800])
    pair_theirs = st_minilm.similarity_pairwise(ref[:400], ref[400:800]).numpy()
    assert np.abs(pair_mine - pair_theirs).max() <= TOL


def test_our_save_loads_in_reference(
    minilm: SentenceEncoder, embeddings, tmp_path: Path, texts: list[str]
) -> None:  # type: ignore[no-untyped-def]
    st = pytest.importorskip("sentence_transformers")
    minilm.save(tmp_path / "ours")
    reloaded = st.SentenceTransformer(str(tmp_path / "ours"), device="cpu")
    # against our embeddings of the same texts (computed once, in other batches: the contract's bound)
    assert np.abs(reloaded.encode(texts[::7]) - embeddings[0][::7]).max() <= TOL
    assert reloaded.max_seq_length == 256
    assert reloaded.similarity_fn_name == "cosine"


def test_reference_save_loads_in_ours(st_minilm, embeddings, tmp_path: Path, texts: list[str]) -> None:  # type: ignore[no-untyped-def]
    st_minilm.save(str(tmp_path / "theirs"))
    reloaded = SentenceEncoder.load(tmp_path / "theirs", device="cpu")
    assert np.abs(reloaded.encode(texts[::7]) - embeddings[1][::7]).max() <= TOL
    assert reloaded.max_seq_length == 256


def test_name_resolves_to_bundled_copy(minilm_path: Path) -> None:
    from biencoder.resolve import resolve_model_path

    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == minilm_path
    assert resolve_model_path("all-MiniLM-L6-v2") == minilm_path
