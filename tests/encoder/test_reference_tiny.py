"""The encoder against sentence-transformers on the tiny model: tokens, every pooling mode, Dense, prompts,
similarity functions. Fast: the reference's own modules run on the same weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from biencoder import SentenceEncoder
from biencoder import similarity as sim
from biencoder.modules import Pooling

st = pytest.importorskip("sentence_transformers")

TEXTS = [
    "the cat sat",
    "what is the blue water of the earth? " * 6,  # truncated at 24 tokens
    "",
    "  spaced   out  ",
    "UPPER lower 123 !?",
    "héllo wörld 🤖",
]
MODES = ["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]


@pytest.fixture(scope="module")
def ours(tiny_model_dir: Path) -> SentenceEncoder:
    return SentenceEncoder.load(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def theirs(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    return st.SentenceTransformer(str(tiny_model_dir), device="cpu")


def test_tokens_equal_hf_tokenizer(ours: SentenceEncoder, theirs) -> None:  # type: ignore[no-untyped-def]
    mine = ours.tokenize(TEXTS)
    ref = ours.transformer.tokenizer(
        TEXTS, padding=True, truncation="longest_first", max_length=ours.max_seq_length, return_tensors="pt"
    )
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        torch.testing.assert_close(mine[key], ref[key], rtol=0, atol=0)
    st_features = theirs.preprocess(TEXTS)
    torch.testing.assert_close(mine["input_ids"], st_features["input_ids"], rtol=0, atol=0)


def test_embeddings_equal_reference(ours: SentenceEncoder, theirs) -> None:  # type: ignore[no-untyped-def]
    np.testing.assert_allclose(ours.encode(TEXTS), theirs.encode(TEXTS), atol=1e-6)


def test_prompt_equals_reference(ours: SentenceEncoder, theirs) -> None:  # type: ignore[no-untyped-def]
    got = ours.encode(TEXTS, prompt="query: ")
    np.testing.assert_allclose(got, theirs.encode(TEXTS, prompt="query: "), atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_pooling_modes_equal_reference(mode: str) -> None:
    torch.manual_seed(0)
    tokens = torch.randn(4, 7, 16)
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [1] * 5 + [0] * 2, [1] + [0] * 6])
    ref_module = st.models.Pooling(16, pooling_mode=mode)
    ref = ref_module({"token_embeddings": tokens, "attention_mask": mask})["sentence_embedding"]
    got = Pooling(16, mode)({"token_embeddings": tokens, "attention_mask": mask})["sentence_embedding"]
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


def test_combined_pooling_modes_and_config_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    tokens = torch.randn(3, 5, 8)
    mask = torch.tensor([[1] * 5, [1] * 2 + [0] * 3, [1] * 4 + [0]])
    ref_module = st.models.Pooling(8, pooling_mode=("cls", "mean", "max"))
    ref = ref_module({"token_embeddings": tokens, "attention_mask": mask})["sentence_embedding"]
    ref_module.save(str(tmp_path))
    ours = Pooling.load(tmp_path)  # reads the reference's own saved config
    got = ours({"token_embeddings": tokens, "attention_mask": mask})["sentence_embedding"]
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


def test_model_with_dense_layer_saved_by_reference(tiny_model_dir: Path, tmp_path: Path) -> None:
    transformer = st.models.Transformer(str(tiny_model_dir), max_seq_length=24)
    pooling = st.models.Pooling(32, pooling_mode="cls")
    torch.manual_seed(2)
    dense = st.models.Dense(32, 8)
    reference = st.SentenceTransformer(
        modules=[transformer, pooling, dense, st.models.Normalize()], device="cpu"
    )
    reference.save(str(tmp_path / "dense"))
    ours = SentenceEncoder.load(tmp_path / "dense", device="cpu")
    assert ours.dimension == 8
    np.testing.assert_allclose(ours.encode(TEXTS), reference.encode(TEXTS), atol=1e-6)
    ours.save(tmp_path / "again")
    back = st.SentenceTransformer(str(tmp_path / "again"), device="cpu")
    np.testing.assert_allclose(back.encode(TEXTS), reference.encode(TEXTS), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "ref_matrix", "ref_pairwise"),
    [
        ("cosine", "cos_sim", "pairwise_cos_sim"),
        ("dot", "dot_score", "pairwise_dot_score"),
        ("euclidean", "euclidean_sim", "pairwise_euclidean_sim"),
        ("manhattan", "manhattan_sim", "pairwise_manhattan_sim"),
    ],
)
def test_similarity_functions_equal_reference(name: str, ref_matrix: str, ref_pairwise: str) -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 16)).astype(np.float32)
    b = rng.normal(size=(4, 16)).astype(np.float32)
    util = st.util
    ref = getattr(util, ref_matrix)(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(sim.similarity(a, b, name), ref, rtol=1e-5, atol=1e-5)
    ref_p = getattr(util, ref_pairwise)(torch.from_numpy(a[:4]), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(sim.similarity_pairwise(a[:4], b, name), ref_p, rtol=1e-5, atol=1e-5)


def test_unknown_similarity_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid: cosine, dot, euclidean, manhattan"):
        sim.SimilarityFunction.parse("jaccard")


def test_pooling_order_survives_save(tmp_path: Path) -> None:
    torch.manual_seed(3)
    tokens = torch.randn(2, 4, 8)
    mask = torch.tensor([[1] * 4, [1] * 2 + [0] * 2])
    Pooling(8, ["max", "cls"]).save(tmp_path)
    reference = st.models.Pooling.load(str(tmp_path))
    ref = reference({"token_embeddings": tokens, "attention_mask": mask})["sentence_embedding"]
    got = Pooling.load(tmp_path)({"token_embeddings": tokens, "attention_mask": mask})["sentence_embedding"]
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
