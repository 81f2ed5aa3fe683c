"""``flotilla profile --preset`` (simulated GPUs in simulated time) and ``flotilla optimize``, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flotilla.cli.optimize import optimize, profile

SMALL = ["--input-bounds", "128,2048", "--output-bounds", "32", "--min-seconds", "10", "--max-requests", "300",
         "--max-rate", "64", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("profiles")
    for preset in ("a10g-llama3-8b", "h100-80gb-llama3-8b"):
        result = CliRunner().invoke(
            profile,
            ["--preset", preset, "--slo", "ttft=1,tpot=0.06", *SMALL, "--out", str(out / f"{preset}.json")],
        )
        assert result.exit_code == 0, result.output
    return out


def test_profiles_rank_the_simulated_gpus(profiles: Path) -> None:
    a10g = json.loads((profiles / "a10g-llama3-8b.json").read_text())
    h100 = json.loads((profiles / "h100-80gb-llama3-8b.json").read_text())
    assert (a10g["gpu"], h100["gpu"]) == ("a10g", "h100-80gb")
    assert a10g["engine"] == "engine_sim:a10g-llama3-8b"
    short_a10g, long_a10g = (row[0] for row in a10g["tables"][0]["max_rate"])
    short_h100, long_h100 = (row[0] for row in h100["tables"][0]["max_rate"])
    # an A10G decodes one token in ~36 ms, within the 60 ms TPOT; a 2k prefill takes it ~0.7 s
    assert 0 < long_a10g < short_a10g
    assert long_a10g < long_h100
    assert short_a10g <= short_h100


def test_optimize_prints_the_plan(profiles: Path, tmp_path: Path) -> None:
    workload = tmp_path / "w.json"
    workload.write_text(
        json.dumps({"input_bounds": [128, 2048], "output_bounds": [32], "rate": [[3.0], [0.5]]})
    )
    result = CliRunner().invoke(optimize, ["--profiles", str(profiles), "--workload", str(workload)])
    assert result.exit_code == 0, result.output
    assert "best single type" in result.output
    assert "(2048, 32)" in result.output
    as_json = CliRunner().invoke(
        optimize, ["--profiles", str(profiles), "--workload", str(workload), "--json"]
    )
    plan = json.loads(as_json.output)
    assert plan["cost_per_hour"] <= plan["best_single"]["cost_per_hour"] + 1e-9
    assert sum(plan["counts"].values()) >= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slo", "tpot=0.04"], "give exactly one of --url"),
        (["--preset", "nope", "--slo", "ttft=1,tpot=0.04"], "unknown preset 'nope'"),
        (["--preset", "zero", "--slo", "tpot=0.04"], "profiling needs both ttft and tpot"),
        (["--preset", "zero", "--slo", "tpot=0.04,ttft=1", "--input-bounds", "64,x"], "comma-separated"),
        (["--preset", "zero", "--slo", "tpot=0.04,ttft=1", "--input-bounds", "64,32"], "strictly increasing"),
        (["--url", "http://127.0.0.1:1", "--slo", "tpot=0.04,ttft=1"], "--url needs --gpu"),
    ],
    ids=["no-target", "preset", "tpot-only", "bounds-syntax", "bounds-order", "url-without-gpu"],
)
def test_profile_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(profile, args)
    assert result.exit_code == 2
    assert message in result.output


def test_optimize_errors_are_one_line(profiles: Path, tmp_path: Path) -> None:
    workload = tmp_path / "w.json"
    workload.write_text(json.dumps({"input_bounds": [64], "output_bounds": [32], "rate": [[1.0]]}))
    result = CliRunner().invoke(optimize, ["--profiles", str(profiles), "--workload", str(workload)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: profile a10g's bucket grid differs from the workload's"
    ]
    prices = tmp_path / "p.json"
    prices.write_text(json.dumps({"per_hour": {"a10g": -1}}))
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"input_bounds": [128, 2048], "output_bounds": [32], "rate": [[1.0], [0.0]]}))
    result = CliRunner().invoke(
        optimize, ["--profiles", str(profiles), "--workload", str(good), "--prices", str(prices)]
    )
    assert result.exit_code == 1
    assert "prices must be positive" in result.output
