"""`python -m bench.health_load` runs end to end (real gateway processes, the stub engine, the prober) and
reports every contender (not a timed test: nothing here asserts a latency)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.mark.parametrize("tokenizer", ["synthetic", "llama3"])
def test_health_under_load_reports_every_contender(tokenizer: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.health_load", "--clients", "4", "--size", "200000", "--seconds", "1.5",
         "--rounds", "1", "--tokenizer", tokenizer],
        capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"contender", "bare", "flotilla", "flotilla:inline", "flotilla:switch-5ms"}
    served = int(rows["flotilla"].split("|")[5])
    assert served > 0, proc.stdout
