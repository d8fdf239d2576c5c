"""The experiments' step runner records where and when each step ran, and forgets it with the step."""
from __future__ import annotations

import json
from pathlib import Path

from reasonaudio.experiments.pipeline import RAN, Pipeline, machine_name, provenance


def _write(value: int):
    def run(tmp: Path) -> dict:
        (tmp / "out.txt").write_text(str(value))
        return {"value": value}
    return run


def test_steps_record_when_and_where_they_ran_and_a_rerun_forgets_the_later_ones(tmp_path: Path) -> None:
    pipe = Pipeline(tmp_path, {"a": 1}, tag="test")
    assert pipe.step("first", _write(1))["value"] == 1
    assert pipe.step("second", _write(2))["value"] == 2
    state = json.loads((tmp_path / "steps.json").read_text())
    assert set(state[RAN]) == {"first", "second"}
    assert all(r["machine"] == machine_name() and len(r["finished"]) == 19 for r in state[RAN].values())
    day = state[RAN]["first"]["finished"][:10]
    assert provenance(state) == f"2 steps ran {day} on {machine_name()}"
    # A reused step keeps its record; a step that reruns drops every later step and its record.
    again = Pipeline(tmp_path, {"a": 1}, tag="test")
    assert again.step("first", _write(9))["value"] == 1
    (tmp_path / "first").rename(tmp_path / "gone")
    assert again.step("first", _write(3))["value"] == 3
    state = json.loads((tmp_path / "steps.json").read_text())
    assert "second" not in state and set(state[RAN]) == {"first"}


def test_provenance_counts_steps_of_older_runs_that_recorded_nothing() -> None:
    steps = {"_settings": {}, "corpus": {"seconds": 1.0}, "score": {"seconds": 2.0},
             RAN: {"score": {"finished": "2026-12-07T05:00:00", "machine": "AMD EPYC, 2 CPUs"}}}
    assert provenance(steps) == ("1 step ran 2026-12-07 on AMD EPYC, 2 CPUs; 1 step (corpus) ran before steps "
                                 "recorded when and where")
    assert provenance({"_settings": {}}) == "no step recorded"
