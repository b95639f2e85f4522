"""``biencoder evaluate`` and ``biencoder main`` end to end on the tiny model and small real subsets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from biencoder.cli import main as cli_main
from biencoder.evaluation.report import markdown_table, plot_comparison, read_json, write_json
from biencoder.evaluation.suite import cached_results, fingerprint


def test_markdown_table_has_a_change_column_for_two_models() -> None:
    results = {"base": {"t": {"a": 0.5, "b": 0.25}}, "tuned": {"t": {"a": 0.75}}}
    table = markdown_table(results, {"t": ["a", "b"]})
    assert "| t | a | 0.5000 | 0.7500 | +0.2500 |" in table
    assert "| t | b | 0.2500 |  |  |" in table
    assert "change" not in markdown_table({"only": results["base"]})


def test_json_and_chart_are_written(tmp_path: Path) -> None:
    write_json(tmp_path / "r.json", {"x": 1})
    assert read_json(tmp_path / "r.json") == {"x": 1}
    (tmp_path / "bad.json").write_text("{\n oops")
    with pytest.raises(ValueError, match=r"bad\.json:2"):
        read_json(tmp_path / "bad.json")
    png = plot_comparison(tmp_path / "c.png", {"a": {"t": {"m": 0.5}}, "b": {"t": {"m": -0.2}}})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fingerprint_follows_contents_and_settings(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("one")
    (tmp_path / "d" / "onnx").mkdir()
    (tmp_path / "d" / "onnx" / "model.onnx").write_text("ignored")
    first = fingerprint([tmp_path / "d"], {"limit": None})
    (tmp_path / "d" / "onnx" / "model.onnx").write_text("changed, still ignored")
    assert fingerprint([tmp_path / "d"], {"limit": None}) == first
    assert fingerprint([tmp_path / "d"], {"limit": 5}) != first
    (tmp_path / "d" / "f.txt").write_text("two")
    assert fingerprint([tmp_path / "d"], {"limit": None}) != first
    with pytest.raises(FileNotFoundError):
        fingerprint([tmp_path / "absent"])


def test_cached_results_compute_once(tmp_path: Path) -> None:
    calls = []

    def compute() -> dict[str, dict[str, float]]:
        calls.append(1)
        return {"t": {"m": 0.5}}

    file = tmp_path / "cache" / "k.json"
    assert cached_results(file, compute) == ({"t": {"m": 0.5}}, False)
    assert cached_results(file, compute) == ({"t": {"m": 0.5}}, True)
    assert cached_results(file, compute, use_cache=False)[1] is False
    file.write_text("not json")
    assert cached_results(file, compute) == ({"t": {"m": 0.5}}, False)
    assert len(calls) == 3


def test_evaluate_command_writes_metric_keys(
    tiny_model_dir: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    code = cli_main(
        [
            "evaluate",
            "--model",
            str(tiny_model_dir),
            "--ir",
            str(data_dir / "scifact"),
            "--sts",
            str(data_dir / "stsb" / "sts-test.csv"),
            "--task",
            "trec-dl19",
            "--data",
            str(data_dir),
            "--limit",
            "8",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"scifact", "sts-test", "trec-dl19"}
    assert {"ndcg@10", "mrr@10", "map@100", "recall@100"} <= set(report["results"]["scifact"])
    assert set(report["results"]["sts-test"]) == {"pearson", "spearman"}
    printed = capsys.readouterr().out
    assert "| trec-dl19 | ndcg@10 |" in printed


def test_evaluate_command_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli_main(["evaluate", "--model", "x"]) == 1
    assert "nothing to evaluate" in capsys.readouterr().err
    assert cli_main(["evaluate", "--task", "scifact", "--data", str(tmp_path / "absent")]) == 1
    assert "pass its location with --data" in capsys.readouterr().err


def test_main_without_data_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["main", "--data", str(tmp_path / "absent"), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "not found" in err and "--data DIR" in err and "scifact/" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_main_job_end_to_end(tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("biencoder.training")
    model = tmp_path / "tiny"  # a copy: evaluation exports an ONNX graph into it
    shutil.copytree(tiny_model_dir, model)
    args = [
        "main",
        "--data",
        str(data_dir),
        "--output",
        str(tmp_path / "run"),
        "--model",
        str(model),
        "--max-steps",
        "2",
        "--limit",
        "4",
        "--max-seq-length",
        "32",
    ]
    assert cli_main([*args, "--arms", "card,improved"]) == 0
    run = tmp_path / "run"
    report = json.loads((run / "report.json").read_text())
    assert list(report["results"]) == ["base", "card recipe", "improved recipe"]
    hybrid = {"scifact-hybrid", "trec-dl19-hybrid"}
    assert (
        set(report["results"]["base"])
        == {"scifact", "trec-dl19", "stsb", "scifact-bm25", "trec-dl19-bm25"} | hybrid
    )
    for name in ("card recipe", "improved recipe"):  # BM25 needs no model: computed once, with the base
        assert set(report["results"][name]) == {"scifact", "trec-dl19", "stsb"} | hybrid
    fusion = report["fusion"]
    for task in ("scifact", "trec-dl19"):  # each model's hybrid: the label-free decision made for it
        assert "label-free decision" in fusion[task]["source"]
        assert list(fusion[task]["choices"]) == ["base", "card recipe", "improved recipe"]
        for choice in fusion[task]["choices"].values():
            assert choice["evidence"]["reason"] and choice["evidence"]["probes"] >= 0
    assert report["quick_run"] is True and report["models"]["card recipe"]["train_steps"] == 2
    from biencoder.main_job.settings import IMPROVED

    improved = report["models"]["improved recipe"]
    assert improved["setting"] == IMPROVED.to_dict()
    # --max-seq-length holds for both arms: a setting that changes only the length trains as the card's
    assert improved["card_fine_tune_reused"] is (set(IMPROVED.train) <= {"max_seq_length"})
    saved_config = json.loads((run / "improved" / "model" / "sentence_bert_config.json").read_text())
    positions = json.loads((model / "config.json").read_text())["max_position_embeddings"]
    assert saved_config["max_seq_length"] == min(IMPROVED.eval_max_seq_length or 32, positions)
    paired = report["paired_scifact_ndcg@10"]
    assert paired["queries"] == 4 and paired["wins"] + paired["ties"] + paired["losses"] == 4
    assert set(report["per_query_scifact_ndcg@10"]["card recipe"]) == set(
        report["per_query_scifact_ndcg@10"]["improved recipe"]
    )
    assert (run / "model" / "README.md").is_file() and (run / "model" / "modules.json").is_file()
    assert "## Evaluation" in (run / "improved" / "model" / "README.md").read_text()
    text = (run / "report.md").read_text()
    assert "| scifact | ndcg@10 |" in text and "| improved recipe | trec-dl19 | ndcg@10 | >= base" in text
    assert "paired randomisation test" in text and "| whole job | minutes |" not in text  # not the default
    assert (run / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert not any("(cached)" in k for k in report["seconds"])
    # The improved column is the merged model's: evaluating the saved model agrees.
    from biencoder import SentenceEncoder as Encoder
    from biencoder.evaluation.tasks import TaskOptions as Options
    from biencoder.evaluation.tasks import build_tasks as build

    sts_task = build(["stsb"], data_dir, Options(limit=4))[0]
    merged = sts_task(Encoder.load(run / "improved" / "model", device="cpu"))
    assert np.isclose(merged["spearman"], report["results"]["improved recipe"]["stsb"]["spearman"], atol=1e-6)
    # The fine-tuned column is the trained model's: evaluating the saved model agrees.
    from biencoder import SentenceEncoder
    from biencoder.evaluation.tasks import TaskOptions, build_tasks

    sts = build_tasks(["stsb"], data_dir, TaskOptions(limit=4))[0]
    saved = sts(SentenceEncoder.load(run / "model", device="cpu"))
    assert np.isclose(saved["spearman"], report["results"]["card recipe"]["stsb"]["spearman"], atol=1e-6)
    assert "| scifact-hybrid | ndcg@10 |" in text and "| scifact-bm25 | ndcg@10 |" in text
    card_choice = fusion["scifact"]["choices"]["card recipe"]
    assert f"  - card recipe: convex fusion, alpha {card_choice['alpha']:g} (dense weight)" in text
    # The hybrid row is the saved model's hybrid search as the decision chose, and the decision
    # made again from the saved model and the corpus alone is the one recorded.
    from biencoder.loading import load_encoder
    from biencoder.main_job.hybrid import decide_fusion, fusion_settings
    from biencoder.memo import MemoEncoder

    scifact_task = build(["scifact"], data_dir, Options(limit=4))[0]
    saved_onnx = MemoEncoder(load_encoder(run / "model", "onnx", device="cpu"))
    hybrid_now = scifact_task.evaluate_modes(  # type: ignore[attr-defined]
        saved_onnx, "hybrid", fusion_settings(card_choice)
    )["scifact-hybrid"]
    for metric, value in report["results"]["card recipe"]["scifact-hybrid"].items():
        assert np.isclose(hybrid_now[metric], value, atol=1e-6), metric
    _, decided = decide_fusion(scifact_task, saved_onnx)  # type: ignore[arg-type]
    assert {k: v for k, v in decided.items() if k != "evidence"} == {
        k: v for k, v in card_choice.items() if k != "evidence"
    }
    # A second run reuses the base model's results.
    assert cli_main(args) == 0  # the default arms: the card's recipe alone
    again = json.loads((run / "report.json").read_text())
    assert list(again["results"]) == ["base", "card recipe"]
    assert "| default arms | whole job | minutes |" in (run / "report.md").read_text()
    assert any("(cached)" in k for k in again["seconds"])
    assert again["results"]["base"] == report["results"]["base"]
    for task in ("scifact", "trec-dl19"):  # the base's decision is cached with its results
        assert again["fusion"][task]["choices"]["base"] == fusion[task]["choices"]["base"]
        assert list(again["fusion"][task]["choices"]) == ["base", "card recipe"]


@pytest.mark.slow
def test_main_job_improved_arm_alone_trains_its_setting(
    tiny_model_dir: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An improved setting that trains differently from the card's gets its own fine-tune, merged
    and read at the setting's length (capped at the model's positions)."""
    pytest.importorskip("biencoder.training")
    from biencoder.main_job import run as job
    from biencoder.training.crossval import Setting

    setting = Setting(name="lr", train={"learning_rate": 1e-3}, eval_max_seq_length=512, merge_alpha=0.5)
    monkeypatch.setattr(job, "IMPROVED", setting)
    model = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, model)
    out = tmp_path / "run"
    quick = ["--max-steps", "2", "--limit", "4", "--max-seq-length", "32"]
    args = ["main", "--data", str(data_dir), "--output", str(out), "--model", str(model), *quick]
    assert cli_main([*args, "--arms", "improved"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["results"]) == ["base", "improved recipe"]
    improved = report["models"]["improved recipe"]
    assert improved["card_fine_tune_reused"] is False and improved["train_steps"] == 2
    assert improved["setting"]["merge_alpha"] == 0.5
    config = json.loads((out / "improved" / "model" / "sentence_bert_config.json").read_text())
    positions = json.loads((model / "config.json").read_text())["max_position_embeddings"]
    assert config["max_seq_length"] == positions
    # the saved model is the fine-tune merged halfway with the base
    from biencoder import SentenceEncoder

    base, tuned, merged = (
        SentenceEncoder.load(p, device="cpu").state_dict()
        for p in (model, out / "improved" / "tuned", out / "improved" / "model")
    )
    for name, value in merged.items():
        if value.is_floating_point():
            assert np.allclose(value, 0.5 * base[name] + 0.5 * tuned[name], atol=1e-6), name
    assert "merged with the base at alpha 0.5" in (out / "report.md").read_text()
