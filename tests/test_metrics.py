"""The JSONL metrics log: flushed per line, resumable, readable after a crash."""

import json
import math

import pytest

from ppo_core.metrics import MetricsLog, read_log


def test_write_read_roundtrip_and_flush(tmp_path):
    path = tmp_path / "run.jsonl"
    log = MetricsLog(path)
    log.write({"iteration": 1, "losses/approx_kl": 0.01})
    # flushed already: a reader sees the line before close()
    assert read_log(path) == [{"iteration": 1, "losses/approx_kl": 0.01}]
    log.write({"iteration": 2, "losses/approx_kl": float("nan")})
    log.close()
    records = read_log(path)
    assert math.isnan(records[1]["losses/approx_kl"])
    json.loads(path.read_text().splitlines()[1])           # still strict JSON


def test_resume_appends(tmp_path):
    path = tmp_path / "run.jsonl"
    with MetricsLog(path) as log:
        log.write({"iteration": 1})
    with MetricsLog(path, resume=True) as log:
        assert log.records == [{"iteration": 1}]
        log.write({"iteration": 2})
    assert [r["iteration"] for r in read_log(path)] == [1, 2]


def test_truncated_last_line_is_skipped_but_corruption_is_not(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text('{"a": 1}\n{"a": 2')
    assert read_log(path) == [{"a": 1}]
    path.write_text('{"a": 1}\nnot json\n{"a": 3}\n')
    with pytest.raises(ValueError, match=":2"):
        read_log(path)
    with pytest.raises(ValueError, match="no log"):
        read_log(tmp_path / "missing.jsonl")


def test_resume_after_a_killed_run_drops_the_broken_line_and_later_iterations(tmp_path):
    """A killed run leaves a half-written last line; appending after it would glue the next
    record onto it and lose it. Resuming also drops iterations the checkpoint does not hold."""
    path = tmp_path / "run.jsonl"
    path.write_text('{"iteration": 1}\n{"iteration": 2}\n{"iterat')
    with MetricsLog(path, resume=True, keep=lambda r: r["iteration"] <= 1) as log:
        assert log.records == [{"iteration": 1}]
        log.write({"iteration": 2, "redone": True})
    assert read_log(path) == [{"iteration": 1}, {"iteration": 2, "redone": True}]
