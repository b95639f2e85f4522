"""Progress: a bar in a terminal, log lines at an interval elsewhere."""

from __future__ import annotations

import logging

import pytest

from biencoder.progress import ENV_INTERVAL, Progress, format_duration, interval_seconds, track


def test_log_lines_say_done_total_speed_and_time_left(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="biencoder.progress")
    with Progress(10, "Training", "step", show=False, interval=0) as progress:
        for step in range(4):
            progress.set_postfix(loss=0.5 / (step + 1))
            progress.update()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5  # one per update at interval 0, then the closing line
    assert lines[0].startswith("Training: 1/10 steps (10%), loss 0.5000, ")
    assert lines[3].startswith("Training: 4/10 steps (40%), loss 0.1250, ")
    assert lines[3].endswith(" left") and ("s/step" in lines[3] or "steps/s" in lines[3])
    assert lines[4].startswith("Training: 4/10 steps (40%) (done in ")


def test_no_line_before_the_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="biencoder.progress")
    assert list(track(range(5), "Encoding", "text", show=False)) == [0, 1, 2, 3, 4]  # 30 s not reached
    assert caplog.records == []


def test_weighted_units_and_resumed_counts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="biencoder.progress")
    with Progress(100, "Indexing", "text", initial=40, show=False, interval=0) as progress:
        progress.update(30)
    assert caplog.records[0].getMessage().startswith("Indexing: 70/100 texts (70%), ")
    for _ in track([[1, 2], [3]], "Encoding", "text", total=3, show=False, weight=len):
        pass


def test_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_INTERVAL, raising=False)
    assert interval_seconds() == 30.0
    monkeypatch.setenv(ENV_INTERVAL, "2.5")
    assert interval_seconds() == 2.5
    for bad in ("soon", "-1"):
        monkeypatch.setenv(ENV_INTERVAL, bad)
        with pytest.raises(ValueError, match=ENV_INTERVAL):
            interval_seconds()


def test_durations() -> None:
    assert [format_duration(s) for s in (0, 59.4, 61, 3600, 3725)] == [
        "0:00",
        "0:59",
        "1:01",
        "1:00:00",
        "1:02:05",
    ]
