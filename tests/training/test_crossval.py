"""K-fold cross-validation of training settings (biencoder.training.crossval, ``biencoder cv``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from biencoder.cli import main
from biencoder.cli.crossval import parse_setting
from biencoder.data.beir import load_beir
from biencoder.evaluation.paired import compare
from biencoder.training import crossval
from biencoder.training.crossval import (
    CrossValidation,
    CVResult,
    Setting,
    choose,
    compare_to,
    cross_validate,
    query_folds,
    write_folds,
)
from tests.tiny import WORDS
from tests.training.test_selection import _beir


def test_folds_partition_the_queries_by_a_seeded_cut() -> None:
    ids = [f"q{i}" for i in range(23)]
    folds = query_folds(ids, 4, seed=1)
    assert sorted(q for f in folds for q in f) == sorted(ids)
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert query_folds(list(reversed(ids)), 4, seed=1) == folds  # the input's order does not matter
    assert query_folds(ids, 4, seed=2) != folds
    with pytest.raises(ValueError, match="folds must be in"):
        query_folds(ids[:3], 4, seed=0)
    with pytest.raises(ValueError, match="folds must be at least 2"):
        CrossValidation(folds=1)


def test_each_fold_holds_out_its_queries_with_all_their_judgements(tmp_path: Path) -> None:
    source = _beir(tmp_path / "src", 13)
    folders = write_folds(source, tmp_path / "folds", CrossValidation(folds=3, fold_seed=5))
    whole = load_beir(source, "train").qrels
    held = []
    for folder in folders:
        dev, train = load_beir(folder, "dev").qrels, load_beir(folder, "train").qrels
        assert set(dev).isdisjoint(train) and set(dev) | set(train) == set(whole)
        assert dev == {q: whole[q] for q in dev} and train == {q: whole[q] for q in train}
        held += list(dev)
    assert sorted(held) == sorted(whole)  # every query held out exactly once


def _tiny_settings() -> list[Setting]:
    quick = {"max_steps": 2, "batch_size": 4, "max_seq_length": 16}
    return [
        Setting(name="card", train=quick),
        Setting(name="short-eval", train=quick, eval_max_seq_length=3),
        Setting(name="lr", train={**quick, "learning_rate": 1e-3}),
        Setting(name="base", train=quick, merge_alpha=0.0),  # all base: the fine-tune merged away
    ]


def _sts_file(path: Path) -> Path:
    rows = [
        f"main-captions\tMSRvid\t2012test\t{i:04d}\t{i % 6}.0\t{WORDS[i]} {WORDS[i + 1]}\t{WORDS[i]}"
        for i in range(8)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.slow
def test_cross_validation_scores_every_query_once_and_resumes(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _beir(tmp_path / "src", 12)
    trained: list[str] = []
    evaluated: list[tuple[str, int]] = []
    real_train, real_evaluate = crossval._train_fold, crossval._evaluate

    def counting_train(setting: Setting, fold: Path, model_dir: Path, *args: Any) -> None:
        trained.append(f"{setting.name}/{fold.name}")
        real_train(setting, fold, model_dir, *args)

    def recording_evaluate(model_dir: Path, *args: Any) -> list[Any]:
        config = json.loads((model_dir / "sentence_bert_config.json").read_text())
        evaluated.append((model_dir.name, config["max_seq_length"]))
        return real_evaluate(model_dir, *args)

    monkeypatch.setattr(crossval, "_train_fold", counting_train)
    monkeypatch.setattr(crossval, "_evaluate", recording_evaluate)
    cv = CrossValidation(folds=2, eval_backend="torch", general_dev=str(_sts_file(tmp_path / "sts.csv")))
    out = tmp_path / "cv"
    results = cross_validate(_tiny_settings(), source, out, cv, base_model=str(tiny_model_dir), device="cpu")

    # settings that train alike share one fine-tune per fold; each is evaluated at its own length
    assert sorted(trained) == ["card/fold-0", "card/fold-1", "lr/fold-0", "lr/fold-1"]
    assert sorted(evaluated) == sorted(
        [(f"{s}-fold-{i}", n) for i in (0, 1) for s, n in (("card", 16), ("card", 3), ("lr", 16))]
        + [(f"base-fold-{i}-merged", 16) for i in (0, 1)]
    )
    queries = set(load_beir(source, "train").qrels)
    for r in results.values():
        assert set(r.per_query) == queries and len(r.fold_means) == 2
        assert all(0.0 <= v <= 1.0 for v in r.per_query.values())
    assert not (out / "models").exists() or not any((out / "models").iterdir())  # fine-tunes deleted
    # merge_alpha 0 is the base model itself: its held-out scores are the base model's
    from biencoder.encoder import SentenceEncoder
    from biencoder.evaluation.retrieval import RetrievalEvaluator
    from biencoder.evaluation.sts import StsEvaluator

    base = SentenceEncoder.load(tiny_model_dir, device="cpu")
    for fold in (0, 1):
        held_out = RetrievalEvaluator.from_beir(out / "folds" / f"fold-{fold}", "dev")
        held_out(base)
        for q, m in held_out.last_per_query.items():
            assert results["base"].per_query[q] == pytest.approx(m["ndcg@10"], abs=1e-6)
    general = StsEvaluator.from_file(tmp_path / "sts.csv")(base)[StsEvaluator.primary_metric]
    assert results["base"].general == pytest.approx([general, general], abs=1e-6)
    assert all(len(r.general) == 2 for r in results.values())

    record = json.loads((out / "cv.json").read_text())
    assert record["settings"]["short-eval"]["per_query"] == results["short-eval"].per_query
    assert record["settings"]["short-eval"]["eval_max_seq_length"] == 3

    # the paired test is the evaluation module's, over every train query
    row = {r["setting"]: r for r in compare_to(results, "card")}["lr"]
    expected = compare(results["card"].per_query, results["lr"].per_query)
    assert row["p_value"] == expected.p_value and row["gain"] == pytest.approx(expected.mean_difference)

    # a second run reads the scores back: nothing is trained or evaluated again
    trained.clear(), evaluated.clear()
    again = cross_validate(_tiny_settings(), source, out, cv, base_model=str(tiny_model_dir), device="cpu")
    assert trained == [] and evaluated == []
    assert {k: r.per_query for k, r in again.items()} == {k: r.per_query for k, r in results.items()}

    # other folds, or a setting of the same name that changed, are refused rather than mixed in
    with pytest.raises(ValueError, match="cross-validation made with"):
        cross_validate(_tiny_settings(), source, out, CrossValidation(folds=3), base_model="unused")
    changed = [*_tiny_settings()[:3], Setting(name="base", train={"max_steps": 2}, merge_alpha=0.0)]
    with pytest.raises(ValueError, match="setting 'base' was"):
        cross_validate(changed, source, out, cv, base_model=str(tiny_model_dir), device="cpu")
    assert trained == []


def _result(name: str, values: np.ndarray) -> CVResult:
    return CVResult(Setting(name=name), {f"q{i}": float(v) for i, v in enumerate(values)}, [], 0.0)


def test_choose_takes_a_significant_gain_or_keeps_the_baseline() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 400)
    results = {
        "card": _result("card", base),
        "noise": _result("noise", base + rng.normal(0, 0.05, 400)),  # no real difference
        "better": _result("better", base + 0.03 + rng.normal(0, 0.05, 400)),
        "worse": _result("worse", base - 0.05),
    }
    assert choose(results, "card") == "better"
    del results["better"]
    assert choose(results, "card") == "card"
    with pytest.raises(ValueError, match="baseline 'nope'"):
        choose(results, "nope")


def test_settings_are_parsed_and_bad_ones_named() -> None:
    s = parse_setting("len512:max_seq_length=512,loss=cached_mnrl,eval_max_seq_length=512")
    assert s == Setting(
        name="len512", train={"max_seq_length": 512, "loss": "cached_mnrl"}, eval_max_seq_length=512
    )
    assert parse_setting("card") == Setting(name="card")
    with pytest.raises(ValueError, match=r"unknown training field.*max_len"):
        parse_setting("x:max_len=512")
    with pytest.raises(ValueError, match="expected field=value"):
        parse_setting("x:max_seq_length")
    with pytest.raises(ValueError, match="must be an integer"):
        parse_setting("x:eval_max_seq_length=long")
    with pytest.raises(ValueError, match="set by the cross-validation"):
        parse_setting("x:seed=3")
    with pytest.raises(ValueError, match="name must be"):
        parse_setting("a b:epochs=1")
    rehearse = parse_setting('q:extra_data=a/quora.jsonl,extra_data=b.csv,dataset_losses={"quora":"mse"}')
    assert rehearse == Setting(
        name="q", train={"dataset_losses": {"quora": "mse"}}, extra_data=("a/quora.jsonl", "b.csv")
    )
    # extra data is part of what a fine-tune is: it is not shared with the plain setting
    assert rehearse.training_key() != Setting(name="p", train=rehearse.train).training_key()
    assert Setting(name="c").to_dict() == {  # a setting recorded before extra_data existed resumes
        "name": "c",
        "train": {},
        "eval_max_seq_length": None,
        "merge_alpha": None,
    }
    with pytest.raises(ValueError, match="extra_data must be a tuple"):
        Setting(name="x", extra_data="quora.jsonl")  # type: ignore[arg-type]


def test_extra_data_trains_beside_each_fold(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import biencoder.training

    seen: list[tuple[str, ...]] = []

    def fake_train(config: Any, show_progress: bool | None = None) -> None:
        seen.append(config.data)
        assert config.dataset_losses == {"general": "mse"}

    monkeypatch.setattr(biencoder.training, "train", fake_train)
    setting = Setting(name="r", train={"dataset_losses": {"general": "mse"}}, extra_data=("general.jsonl",))
    fold = tmp_path / "fold-0"
    crossval._train_fold(setting, fold, tmp_path / "m", CrossValidation(), "base", "cpu", False)
    assert seen == [(str(fold), "general.jsonl")]


def test_cv_command_names_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["cv", "--data", str(tmp_path / "none"), "-o", str(tmp_path / "o"), "--setting", "card"])
    assert code == 1
    assert "none" in capsys.readouterr().err
    assert not (tmp_path / "o" / "cv.json").exists()


@pytest.mark.slow
def test_cv_command_prints_the_table_and_the_choice(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _beir(tmp_path / "src", 8)
    quick = "max_steps=1,batch_size=4,max_seq_length=16"
    args = ["cv", "--data", str(source), "-o", str(tmp_path / "o"), "--model", str(tiny_model_dir)]
    args += ["--folds", "2", "--eval-backend", "torch", "--device", "cpu"]
    args += ["--setting", f"card:{quick}", "--setting", f"short:{quick},eval_max_seq_length=4"]
    assert main(args) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "o" / "cv.json").read_text())
    for name in ("card", "short"):
        mean = record["settings"][name]["mean"]
        assert f"| {name} | {mean:.4f} ±" in out
    assert out.strip().splitlines()[-1] == f"chosen: {choose(_results(record), 'card')}"


def _results(record: dict[str, Any]) -> dict[str, CVResult]:
    return {
        name: CVResult(Setting(name=name), r["per_query"], r["fold_means"], r["seconds"])
        for name, r in record["settings"].items()
    }
