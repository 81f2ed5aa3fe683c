"""`python -m bench.gateway_overhead` runs end to end (the stub engine, the bare proxy, a real gateway process and
a peer router, one short round) and reports every contender with its CPU per request (not a timed test: nothing
here asserts a latency or a rate)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_overhead_reports_every_contender_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gateway_overhead", "--contenders", "bare", "flotilla:default",
         "sglang:round_robin", "--rounds", "1", "--seconds", "0.5", "--latency-requests", "10", "--json", str(out)],
        capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"contender", "direct", "bare", "flotilla:default", "sglang:round_robin"}
    results = {r["name"]: r for r in json.loads(out.read_text())}
    for name in ("bare", "flotilla:default", "sglang:round_robin"):
        r = results[name]
        assert not r["skipped"], r
        assert r["errors"] == 0, r
        assert len(r["pairs"]) == 10  # every latency request paired with one to direct
        assert r["rps"][0] > 0
        assert r["cps"][0] > 0
        assert r["cpu_req_us"][0] > 0  # the proxy's CPU was read from /proc
        assert r["cpu_chunk_us"][0] > 0
        p50, p99, p99_low, p99_high = r["loaded_ms"]  # latency under the closed loop's load
        assert 0 < p50 <= p99
        assert p99_low <= p99 <= p99_high
