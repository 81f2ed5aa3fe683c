"""`flotilla bench --suite autoscaling --quick` runs end to end (not a timed test): calibration, KPA vs HPA-like
vs fixed side by side on the step trace, autoscaling.json, report and plot — in virtual time (the default) and
on the wall clock with real served engines (``--clock wall``, the integration check)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("clock", ["virtual", pytest.param("wall", marks=pytest.mark.slow)])
def test_quick_autoscaling_bench_writes_a_report(tmp_path: Path, clock: str) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", "from flotilla.cli import main; main()", "bench", "--suite", "autoscaling",
         "--quick", "--clock", clock, "--out", str(out)],
        capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = (out / "report.md").read_text()
    results = json.loads((out / "autoscaling.json").read_text())
    assert report.startswith("# flotilla bench — autoscaling-quick suite")
    assert "### Trace `step`" in report
    assert "### Goal check (generated)" in report
    assert "**Flotilla KPA** over all traces and seeds" in report
    assert (out / "autoscaling-step.png").stat().st_size > 0
    assert results["config"]["clock"] == clock

    cal = results["calibration"]
    assert cal["cap"] > 0
    assert cal["concurrency"] > 0
    assert cal["running"] > 0
    runs = {r["contender"]: r for r in results["runs"]}
    assert set(runs) == {"kpa", "hpa", "fixed"}
    for name, run in runs.items():
        assert run["requests"] > 50, name
        assert run["oracle_gpu_seconds"] > 0, name
        assert run["gpu_seconds"] > 0, name
        assert run["minutes"] >= 3, name
    # the fixed fleet runs the peak's engines all the time: never cheaper than the oracle
    assert runs["fixed"]["gpu_seconds"] >= runs["fixed"]["oracle_gpu_seconds"]
    assert {row[2] for row in runs["fixed"]["timeline"]} == {3}
    # the autoscalers followed the step up: more than the one warm engine became ready after it
    for name in ("kpa", "hpa"):
        assert max(row[2] for row in runs[name]["timeline"]) >= 2, name
        assert runs[name]["step_to_ready"][0] is not None, name
        assert runs[name]["step_to_ready"][0] >= 0, name
