"""`flotilla bench --quick` runs end to end on real simulated engines and writes a report (not a timed test)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_quick_bench_writes_a_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", "from flotilla.cli import main; main()", "bench", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=540, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    assert report.startswith("# flotilla bench — quick suite")
    assert "### Workload `gsp`" in report
    assert "### Gateway overhead" in report
    assert (out / "gsp.png").stat().st_size > 0

    ran = {r["contender"] for r in results["runs"] if not r["skipped"]}
    assert "direct" in ran
    assert any(c.startswith("flotilla:") for c in ran), report
    for run in results["runs"]:
        if not run["skipped"]:
            assert run["ok"] == run["requests"] > 0, run
            assert 0 < run["hit_rate"] <= 1, run
    peers_installed = importlib.util.find_spec("sglang_router") or importlib.util.find_spec("vllm_router")
    peer_ran = any(c.startswith(("sglang:", "vllm-router:")) for c in ran)
    if peers_installed:
        assert peer_ran, report
    else:
        assert "is not installed (pip install -e '.[peers]')" in report
    assert "infinite-cache oracle hit rate **" in report
    assert "oracle unavailable" not in report
