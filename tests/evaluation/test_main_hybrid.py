"""The main job's BM25 and hybrid rows: the chart of differences, the report's fusion lines, the row merge."""

from __future__ import annotations

from pathlib import Path

import pytest

from biencoder.evaluation.hybrid import FusionSettings
from biencoder.evaluation.report import _difference_bars, plot_differences
from biencoder.main_job.hybrid import HybridEvaluator, fusion_settings, merge_hybrid
from biencoder.main_job.report import _fusion_lines, _with_bm25_everywhere

RESULTS = {
    "base": {
        "scifact": {"ndcg@10": 0.6451},
        "scifact-bm25": {"ndcg@10": 0.6647},
        "scifact-hybrid": {"ndcg@10": 0.7010},
        "stsb": {"spearman": 0.8203},
    },
    "card recipe": {
        "scifact": {"ndcg@10": 0.7120},
        "scifact-hybrid": {"ndcg@10": 0.7546},
        "stsb": {"spearman": 0.8151},
    },
}


def test_the_chart_shows_differences_from_the_base_dense_score(tmp_path: Path) -> None:
    bars = _difference_bars(RESULTS, "scifact", "ndcg@10", "base")
    assert [b[0] for b in bars] == ["BM25", "base hybrid", "card recipe", "card recipe hybrid"]
    assert [round(b[1], 4) for b in bars] == [0.0196, 0.0559, 0.0669, 0.1095]
    png = plot_differences(tmp_path / "r.png", RESULTS, [("scifact", "ndcg@10"), ("stsb", "spearman")])
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    with pytest.raises(ValueError, match="none of the panels"):
        plot_differences(tmp_path / "x.png", RESULTS, [("trec-dl19", "ndcg@10")])


def test_fusion_records_round_trip_and_are_reported() -> None:
    picked = FusionSettings(alpha=0.4, normalization="minmax", candidates=1000)
    record = {**picked.to_dict(), "source": "the base model's CV", "cv_ndcg@10": 0.7}
    assert fusion_settings(record).to_dict() == picked.to_dict()
    assert fusion_settings(FusionSettings().to_dict()).to_dict() == FusionSettings().to_dict()
    (line,) = [x for x in _fusion_lines({"scifact": record}) if x.startswith("- scifact")]
    assert "alpha 0.4 (dense weight), minmax" in line and "the base model's CV" in line and "0.7000" in line
    table = _with_bm25_everywhere(RESULTS, {"scifact": record})
    assert table["card recipe"]["scifact-bm25"] == RESULTS["base"]["scifact-bm25"]


class _Fake:
    name, primary_metric = "scifact", "ndcg@10"

    def evaluate_modes(
        self, encoder: object, modes: tuple[str, ...], fusion: object
    ) -> dict[str, dict[str, float]]:
        rows = {
            "dense": ("scifact", 0.5),
            "lexical": ("scifact-bm25", 0.4),
            "hybrid": ("scifact-hybrid", 0.6),
        }
        return {rows[m][0]: {"ndcg@10": rows[m][1]} for m in modes}


def test_hybrid_rows_follow_their_task_and_dense_is_returned() -> None:
    wrapped = HybridEvaluator(_Fake(), FusionSettings(), lexical=True)
    assert wrapped(object()) == {"ndcg@10": 0.5}
    merged = merge_hybrid({"scifact": {"ndcg@10": 0.5}, "stsb": {"spearman": 0.8}}, [wrapped])
    assert list(merged) == ["scifact", "scifact-bm25", "scifact-hybrid", "stsb"]
    assert HybridEvaluator(_Fake(), FusionSettings(), lexical=False).modes == ("dense", "hybrid")


def test_each_models_decision_is_recorded_and_reported() -> None:
    from biencoder.main_job.hybrid import fusion_plan, record_choices, with_hybrid

    plan = fusion_plan()
    (wrapped,) = with_hybrid([_Fake()], plan, lexical=False)  # type: ignore[list-item]
    assert isinstance(wrapped, HybridEvaluator) and wrapped.fusion is None  # decided per model
    choice = {
        **FusionSettings(alpha=0.6, normalization="calibrated", adaptive=True).to_dict(),
        "evidence": {"reason": "beats dense on the 256 probes"},
    }
    record_choices(plan, [wrapped], "base")  # not evaluated yet: nothing to record
    assert plan["scifact"]["choices"] == {}
    wrapped.decision = choice
    record_choices(plan, [wrapped], "card recipe")
    assert plan["scifact"]["choices"] == {"card recipe": choice} and plan["trec-dl19"]["choices"] == {}
    assert (
        "  - card recipe: convex fusion, alpha 0.6 (dense weight), calibrated normalisation, adaptive, "
        "1000 candidates a side (beats dense on the 256 probes)"
    ) in _fusion_lines(plan)
