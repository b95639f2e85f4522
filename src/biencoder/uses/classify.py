"""Text classification: logistic regression (scikit-learn) on sentence embeddings."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder import similarity as sim
from biencoder.protocol import Encoder
from biencoder.uses._inputs import embed, is_encoder

logger = logging.getLogger(__name__)


class TextClassifier:
    """Encode texts with any :class:`~biencoder.protocol.Encoder`, then logistic regression.

    ``fit``/``predict``/``predict_proba``/``score`` take texts, or embeddings when the
    classifier has no encoder (``TextClassifier(None)``). ``C`` and ``max_iter`` go to
    ``sklearn.linear_model.LogisticRegression``; embeddings are L2-normalised unless
    ``normalize=False``.
    """

    def __init__(
        self,
        encoder: Encoder | None,
        *,
        C: float = 1.0,
        max_iter: int = 1000,
        normalize: bool = True,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        if encoder is not None and not is_encoder(encoder):
            raise TypeError(f"encoder must follow the Encoder protocol, got {type(encoder).__name__}")
        if not C > 0:
            raise ValueError(f"C must be positive, got {C}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be positive, got {max_iter}")
        try:
            from sklearn.linear_model import LogisticRegression
        except ImportError as exc:
            raise ImportError("the classifier needs scikit-learn: pip install 'biencoder[eval]'") from exc
        self.encoder = encoder
        self.normalize = normalize
        self.batch_size = batch_size
        self.model = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
        self._fitted = False

    def _features(self, data: Any, name: str) -> NDArray[np.float32]:
        if self.encoder is not None:
            if isinstance(data, str):
                data = [data]
            emb = embed(self.encoder, data, batch_size=self.batch_size, name=name)
        else:
            emb = embed(data, None, name=name)
        return sim.normalize(emb) if self.normalize else emb

    def fit(self, texts: Sequence[str] | Any, labels: Sequence[Any]) -> TextClassifier:
        x = self._features(texts, "training texts")
        labels = list(labels)
        if len(labels) != len(x):
            raise ValueError(f"got {len(x)} training texts but {len(labels)} labels")
        if len(set(labels)) < 2:
            raise ValueError(
                f"need at least 2 distinct labels to train a classifier, got {sorted(set(labels))}"
            )
        self.model.fit(x, labels)
        self._fitted = True
        logger.info("trained on %d examples, %d classes", len(x), len(self.model.classes_))
        return self

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise ValueError("the classifier is not trained: call fit(texts, labels) first")

    @property
    def classes(self) -> list[Any]:
        self._check_fitted()
        return list(self.model.classes_)

    def predict(self, texts: Sequence[str] | Any) -> NDArray[Any]:
        self._check_fitted()
        return np.asarray(self.model.predict(self._features(texts, "texts")))

    def predict_proba(self, texts: Sequence[str] | Any) -> NDArray[np.float64]:
        """[n, n_classes] probabilities, columns in the order of :attr:`classes`."""
        self._check_fitted()
        return np.asarray(self.model.predict_proba(self._features(texts, "texts")))

    def score(self, texts: Sequence[str] | Any, labels: Sequence[Any]) -> float:
        """Accuracy."""
        pred = self.predict(texts)
        labels = list(labels)
        if len(labels) != len(pred):
            raise ValueError(f"got {len(pred)} texts but {len(labels)} labels")
        return float(np.mean(pred == np.asarray(labels)))
