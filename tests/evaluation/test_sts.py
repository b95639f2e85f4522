"""STS: the reader, and the evaluator against sentence-transformers' evaluator and scipy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from biencoder.data import DataFormatError
from biencoder.evaluation.sts import StsEvaluator, load_sts
from tests.evaluation.fakes import TableEncoder, TableSTModel

STSB_ROWS = [
    "main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\tAn air plane is taking off.",
    'main-news\theadlines\t2013\t0002\t1.400\t"Quoted" text\tother "text\tsource-a\tsource-b',
    "main-forums\tdeft\t2014\t0003\t0.000\tA cat.\tA plane is taking off.",
]


def test_load_sts_reads_columns_five_to_seven(tmp_path: Path) -> None:
    path = tmp_path / "sts.csv"
    path.write_text("\n".join(STSB_ROWS) + "\n\n")
    pairs = load_sts(path)
    assert pairs.scores == [5.0, 1.4, 0.0]
    assert pairs.sentences1[1] == '"Quoted" text' and pairs.sentences2[1] == 'other "text'
    three = tmp_path / "three.tsv"
    three.write_text("sentence1\tsentence2\tscore\na\tb\t1\nc\td\t2\n")
    assert load_sts(three).sentences2 == ["b", "d"]


def test_load_sts_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(STSB_ROWS[0] + "\nonly\ttwo\n")
    with pytest.raises(DataFormatError, match=r"bad.csv:2: expected 7\+"):
        load_sts(path)
    path.write_text(STSB_ROWS[0] + "\na\tb\tc\td\tx\tf\tg\n")
    with pytest.raises(DataFormatError, match=r"bad\.csv:2: score 'x'"):
        load_sts(path)
    with pytest.raises(FileNotFoundError):
        load_sts(tmp_path / "missing.csv")


def random_pairs(seed: int, n: int = 200) -> tuple[list[str], list[str], list[float], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    texts = [f"t{i}" for i in range(120)]  # fewer texts than pairs: repeated sentences
    s1 = [texts[i] for i in rng.integers(0, 120, n)]
    s2 = [texts[i] for i in rng.integers(0, 120, n)]
    gold = (rng.integers(0, 26, n) / 5).tolist()
    table = {t: rng.normal(size=16).astype(np.float32) for t in texts}
    return s1, s2, gold, table


@pytest.mark.parametrize("seed", range(3))
def test_sts_equals_sentence_transformers(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    module = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
    s1, s2, gold, table = random_pairs(seed)
    ref_ev = module.EmbeddingSimilarityEvaluator(s1, s2, gold, write_csv=False)
    monkeypatch.setattr(ref_ev, "store_metrics_in_model_card_data", lambda *a, **k: None)
    ref = ref_ev(TableSTModel(table))
    encoder = TableEncoder(table)
    ours = StsEvaluator(name="sts", sentences1=s1, sentences2=s2, scores=gold)(encoder)
    assert encoder.calls == 1  # each distinct sentence encoded once, in one call
    assert ours["pearson"] == pytest.approx(ref["pearson_cosine"], abs=1e-6)
    assert ours["spearman"] == pytest.approx(ref["spearman_cosine"], abs=1e-6)


def test_sts_equals_scipy_on_the_same_similarities() -> None:
    stats = pytest.importorskip("scipy.stats")
    s1, s2, gold, table = random_pairs(9)
    ev = StsEvaluator(name="sts", sentences1=s1, sentences2=s2, scores=gold)
    encoder = TableEncoder(table)
    predicted = ev.similarities(encoder)
    ours = ev(encoder)
    assert ours["pearson"] == pytest.approx(stats.pearsonr(gold, predicted)[0], abs=1e-9)
    assert ours["spearman"] == pytest.approx(stats.spearmanr(gold, predicted)[0], abs=1e-9)


def test_sts_evaluator_checks_lengths() -> None:
    with pytest.raises(ValueError, match="must be equal"):
        StsEvaluator(name="s", sentences1=["a", "b"], sentences2=["c"], scores=[1.0, 2.0])
