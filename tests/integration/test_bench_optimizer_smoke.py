"""`flotilla bench --suite optimizer --quick` end to end (not a timed test): profiles of two simulated GPUs,
plans for three dataset shapes, each plan and the best single type run on the simulated fleet, the report;
then ``--rerender`` from optimizer.json, and a second run reusing the cached profiles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FLOTILLA = [sys.executable, "-c", "from flotilla.cli import main; main()"]


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLOTILLA, "bench", *args], capture_output=True, text=True, timeout=280, check=False
    )


def test_quick_optimizer_bench_plans_validates_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = bench("--suite", "optimizer", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((out / "optimizer.json").read_text())
    assert sorted(results["profiles"]) == ["a10g", "h100-80gb"]
    assert {c["dataset"] for c in results["cases"]} == {"short", "long", "mixed"}
    for case in results["cases"]:
        # the plan is never dearer than one type, and it really meets the SLO on the simulated fleet
        assert case["cost"] <= case["single_cost"] + 1e-9, case
        assert case["attainment"] >= 0.99, case
        assert sum(case["counts"].values()) >= 1
    [live] = [c for c in results["cases"] if c["live_attainment"] is not None]
    # the mixed shape at 8 req/s needs both types; run on served engine_sim processes over HTTP it holds too
    assert (live["dataset"], live["rate"]) == ("mixed", 8.0)
    assert len(live["counts"]) == 2
    assert live["live_attainment"] >= 0.99
    assert all(len(s["seconds"]) == 3 for s in results["solver"])
    report = (out / "report.md").read_text()
    assert report.startswith("# GPU mix (Mélange) on simulated GPUs — `optimizer-quick`")
    assert "## Solver time" in report

    (out / "report.md").unlink()
    assert bench("--suite", "optimizer", "--rerender", "--out", str(out)).returncode == 0
    assert (out / "report.md").read_text() == report

    again = bench("--suite", "optimizer", "--quick", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "profile a10g: reusing" in again.stderr
