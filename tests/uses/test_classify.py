"""TextClassifier against scikit-learn's LogisticRegression on sentence-transformers' embeddings."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from biencoder.uses import TextClassifier

TEXTS = [
    f"{a} {b} {c}"
    for a in ("the cat", "a dog", "the fish", "a bird")
    for b in ("is", "was")
    for c in ("big", "small", "red")
]
LABELS = [t.split()[1] for t in TEXTS]  # the animal


def _reference(
    st_model: object, train: list[str], y: list[str], test: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    def emb(texts: list[str]) -> np.ndarray:
        e = st_model.encode(texts, convert_to_numpy=True)  # type: ignore[attr-defined]
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    ref = LogisticRegression(C=1.0, max_iter=1000, random_state=0).fit(emb(train), y)
    return ref.predict(emb(test)), ref.predict_proba(emb(test))


def test_matches_sklearn_on_reference_embeddings(tiny_model_dir: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    from biencoder import SentenceEncoder

    clf = TextClassifier(SentenceEncoder.load(tiny_model_dir, device="cpu")).fit(TEXTS, LABELS)
    pred, proba = _reference(st.SentenceTransformer(str(tiny_model_dir), device="cpu"), TEXTS, LABELS, TEXTS)
    np.testing.assert_array_equal(clf.predict(TEXTS), pred)
    np.testing.assert_allclose(clf.predict_proba(TEXTS), proba, atol=1e-4)
    assert clf.classes == sorted(set(LABELS))


def test_embeddings_without_encoder_and_bad_input() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(2, 1, (20, 8)), rng.normal(-2, 1, (20, 8))]).astype(np.float32)
    y = [0] * 20 + [1] * 20
    clf = TextClassifier(None)
    with pytest.raises(ValueError, match="not trained"):
        clf.predict(x)
    assert clf.fit(x, y).score(x, y) == 1.0
    with pytest.raises(ValueError, match="40 training texts but 3 labels"):
        clf.fit(x, [0, 1, 0])
    with pytest.raises(ValueError, match="at least 2 distinct labels"):
        clf.fit(x, [0] * 40)
    with pytest.raises(TypeError, match="Encoder protocol"):
        TextClassifier("not an encoder")  # type: ignore[arg-type]


@pytest.mark.slow
def test_banking77_subset_real_model(data_dir: Path, minilm: object, st_minilm: object) -> None:
    with (data_dir / "banking77" / "train.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    classes = sorted({r["category"] for r in rows})[:8]
    rows = [r for r in rows if r["category"] in classes]
    train, test = rows[:240:2], rows[1:240:2]
    clf = TextClassifier(minilm).fit([r["text"] for r in train], [r["category"] for r in train])  # type: ignore[arg-type]
    pred, _ = _reference(
        st_minilm, [r["text"] for r in train], [r["category"] for r in train], [r["text"] for r in test]
    )
    ours = clf.predict([r["text"] for r in test])
    assert np.mean(ours == pred) >= 0.99  # float rounding may flip a borderline case
    assert clf.score([r["text"] for r in test], [r["category"] for r in test]) > 0.7
