"""The gateway's request-size counter and ``flotilla optimize --workload-from`` reading it (real engines,
the official openai client, the real gateway over HTTP)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from click.testing import CliRunner

from flotilla.cli.optimize import optimize
from flotilla.sizes import DEFAULT_INPUT_BOUNDS, DEFAULT_OUTPUT_BOUNDS, parse_sizes
from flotilla.tokenizer import synthetic_ids
from optimizer import Grid, Profile, ProfileTable, Slo, observe
from tests.fleet import sim_fleet
from tests.integration.gateway_harness import RunningGateway, running_gateway

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
GRID = Grid(input_bounds=DEFAULT_INPUT_BOUNDS, output_bounds=DEFAULT_OUTPUT_BOUNDS)


@pytest.fixture(scope="module")
def gw() -> Iterator[RunningGateway]:
    with sim_fleet(1, extra_args=["--preset", "zero"]) as fleet, running_gateway(engines=fleet.urls) as g:
        g.wait_healthy(1)
        yield g


def send(gw: RunningGateway, sizes: list[tuple[int, int]], *, stream: bool = False) -> None:
    with openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0, timeout=60) as client:
        for k, (prompt, output) in enumerate(sizes):
            ids = synthetic_ids(1000 + k, prompt)
            if stream:
                for _ in client.completions.create(model=MODEL, prompt=ids, max_tokens=output, stream=True,
                                                   extra_body={"ignore_eos": True}):  # fmt: skip
                    pass
            else:
                client.completions.create(
                    model=MODEL, prompt=ids, max_tokens=output, extra_body={"ignore_eos": True}
                )


def counts(gw: RunningGateway) -> dict[tuple[int, int], float]:
    return parse_sizes(httpx.get(gw.url + "/metrics").text, MODEL)


def test_requests_are_counted_in_their_size_bucket(gw: RunningGateway) -> None:
    before = counts(gw)
    # (prompt, output) -> bucket by upper bounds: 64 -> (64, 64); 65 -> (256, 64); 300 / 100 -> (1024, 256);
    # 9000 tokens and 2000 outputs fall into the last buckets
    send(gw, [(64, 8), (65, 8), (300, 100), (300, 100), (9000, 2000)])
    # a stream without include_usage has no output count: not counted
    send(gw, [(64, 8)], stream=True)
    after = counts(gw)
    delta = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
    assert delta == {(64, 64): 1.0, (256, 64): 1.0, (1024, 256): 2.0, (8192, 1024): 1.0}


def write_profile(directory: Path) -> None:
    rows, cols = GRID.shape
    profile = Profile(gpu="l4", input_bounds=GRID.input_bounds, output_bounds=GRID.output_bounds,
                      tables=(ProfileTable(slo=Slo(ttft=5.0, tpot=0.1),
                                           max_rate=tuple((1.0,) * cols for _ in range(rows))),))  # fmt: skip
    (directory / "l4.json").write_text(profile.model_dump_json())


def test_optimize_plans_from_what_the_gateway_observed(gw: RunningGateway, tmp_path: Path) -> None:
    write_profile(tmp_path)

    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            send(gw, [(200, 30)])
            time.sleep(0.05)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        workload = asyncio.run(observe([gw.url], MODEL, 1.5, GRID))
        assert workload.rate[1][0] > 0  # (256, 64)
        assert workload.total == pytest.approx(workload.rate[1][0])
        result = CliRunner().invoke(optimize, ["--profiles", str(tmp_path), "--workload-from", gw.url, "--model",
                                               MODEL, "--window", "1.5", "--json"])  # fmt: skip
    finally:
        stop.set()
        worker.join()
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["counts"]["l4"] >= 1
    assert plan["split"]["l4"][1][0] == 1.0


def test_workload_from_a_model_without_traffic_is_a_one_line_error(
    gw: RunningGateway, tmp_path: Path
) -> None:
    write_profile(tmp_path)
    result = CliRunner().invoke(
        optimize,
        ["--profiles", str(tmp_path), "--workload-from", gw.url, "--model", "nobody", "--window", "0.2"],
    )
    assert result.exit_code == 1
    assert result.output == "Error: the gateway saw no finished requests of 'nobody' in 0.2 s\n"
