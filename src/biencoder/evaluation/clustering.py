"""Clustering as MTEB defines it: mini-batch k-means on embeddings, scored by V-measure.

MTEB's settings: ``MiniBatchKMeans(n_clusters=<number of labels>, batch_size=500,
n_init="auto")``, seeded; V-measure of the clusters against the labels.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from biencoder.data import DataFormatError
from biencoder.protocol import Encoder

logger = logging.getLogger(__name__)

_SUBJECT = re.compile(r"^Subject:\s*(?:(?:Re|RE|re)\s*:\s*)*(.*)$", re.MULTILINE)


def read_newsgroups(
    path: str | Path, split: str = "test", subjects: bool = True
) -> tuple[list[str], list[str]]:
    """20 Newsgroups from JSON lines (``split``, ``label``, ``text``), gzip or plain.

    ``subjects``: keep the subject line only (``Re:`` prefixes dropped), as MTEB's
    TwentyNewsgroupsClustering clusters titles; posts without one are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"20 Newsgroups file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    texts: list[str] = []
    labels: list[str] = []
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or "label" not in obj:
                raise DataFormatError(f"{path}:{number}: expected an object with 'text' and 'label'")
            if obj.get("split") != split:
                continue
            text = obj["text"]
            if subjects:
                match = _SUBJECT.search(text)
                if match is None or not match.group(1).strip():
                    continue
                text = match.group(1).strip()
            texts.append(text)
            labels.append(str(obj["label"]))
    if not texts:
        raise DataFormatError(f"{path}: no texts in split {split!r}")
    return texts, labels


@dataclass(frozen=True, kw_only=True)
class ClusteringEvaluator:
    """``v_measure`` of k-means clusters (k = number of labels) against the labels."""

    name: str
    texts: Sequence[str]
    labels: Sequence[str]
    batch_size: int = 32
    kmeans_batch_size: int = 500
    seed: int = 42
    show_progress: bool | None = None
    primary_metric: str = "v_measure"

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.texts)} texts but {len(self.labels)} labels")
        n_labels = len(set(self.labels))
        if n_labels < 2 or len(self.texts) < n_labels:
            raise ValueError(f"{self.name}: needs at least 2 labels and as many texts as labels")

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        try:
            from sklearn.cluster import MiniBatchKMeans
            from sklearn.metrics import v_measure_score
        except ImportError:
            raise ImportError("clustering needs scikit-learn: pip install 'biencoder[eval]'") from None
        emb = encoder.encode(list(self.texts), batch_size=self.batch_size, show_progress=self.show_progress)
        kmeans = MiniBatchKMeans(
            n_clusters=len(set(self.labels)),
            batch_size=self.kmeans_batch_size,
            n_init="auto",
            random_state=self.seed,
        )
        clusters = kmeans.fit_predict(emb)
        result = {"v_measure": float(v_measure_score(list(self.labels), clusters))}
        logger.info("%s: V-measure %.4f over %d texts", self.name, result["v_measure"], len(self.texts))
        return result
