"""``flotilla profile --url``: the HTTP probe against a real, time-scaled ``flotilla sim`` process.

The live probe and the simulated-time probe drive the same scheduler (one over HTTP at 1/20 of real time,
one in-process), so their profiles of one bucket must agree closely; both must also show the GPU's limit.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flotilla.cli.gpu_probe import simulated_probe
from flotilla.cli.optimize import profile
from optimizer import Grid, Slo, profile_gpu
from tests.fleet import sim_fleet

SLO = Slo(ttft=2.0, tpot=0.1)
ARGS = ["--input-bounds", "1024", "--output-bounds", "32", "--min-seconds", "20", "--max-requests", "200",
        "--max-rate", "64", "--min-requests", "20", "--quiet"]  # fmt: skip


@pytest.mark.slow
def test_live_profile_matches_the_simulated_one(tmp_path: Path) -> None:
    with sim_fleet(1, extra_args=["--preset", "a10g-llama3-8b", "--time-scale", "0.05"]) as fleet:
        out = tmp_path / "live.json"
        result = CliRunner().invoke(
            profile,
            ["--url", fleet.urls[0], "--gpu", "a10g", "--slo", "ttft=2,tpot=0.1", *ARGS, "--out", str(out)],
        )
        assert result.exit_code == 0, result.output
    live = json.loads(out.read_text())
    assert live["engine"] == fleet.urls[0]
    assert live["model"] == "meta-llama/Llama-3.1-8B-Instruct"  # asked the engine's /v1/models
    [[live_rate]] = live["tables"][0]["max_rate"]
    offline = asyncio.run(
        profile_gpu(
            simulated_probe("a10g-llama3-8b", [SLO]), Grid(input_bounds=(1024,), output_bounds=(32,)), [SLO],
            gpu="a10g", min_seconds=20, max_requests=200, ceiling=64, min_requests=20,
        )
    )  # fmt: skip
    [[sim_rate]] = offline.tables[0].max_rate
    # an A10G prefills ~3k tok/s (a 1k prompt: 0.33 s); each prefill also stalls the decodes sharing its step,
    # which the 100 ms TPOT bounds before the prefill capacity (3 req/s) does
    assert 0.5 < sim_rate < 3.0
    assert live_rate == pytest.approx(sim_rate, rel=0.35)
