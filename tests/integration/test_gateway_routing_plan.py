"""Standalone size-aware routing: ``flotilla optimize --json`` → ``flotilla gateway --routing-plan`` → each request
size lands on the GPU type the plan gave it (real engines, the official openai client, the real solver).

Profiles as in tests/e2e/test_model_group.py: an L4 serves prompts up to 256 tokens at 4 req/s and nothing
longer, an A100-80GB every size at 10 req/s. For 30 req/s of short requests and 2 req/s of long ones the
cheapest mix fills the A100 the long requests need with part of the short ones and puts the rest on L4s, so
the short bucket is *split* between the types and the long one goes to the A100 alone; the test reads the
shares from the plan and checks that the gateway served each size in those proportions.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml
from click.testing import CliRunner

from flotilla.cli.optimize import optimize
from flotilla.labels import HEADER_ENDPOINT
from flotilla.sizes import DEFAULT_INPUT_BOUNDS, DEFAULT_OUTPUT_BOUNDS
from flotilla.tokenizer import synthetic_ids
from tests.fleet import SimFleet, sim_fleet
from tests.integration.gateway_harness import running_gateway

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SLO = {"ttft": 5.0, "tpot": 0.1, "attainment": 0.99}
LONG_ROW = DEFAULT_INPUT_BOUNDS.index(1024)


def profile(gpu: str, rate: float, max_input: int) -> dict[str, object]:
    max_rate = [
        [rate if i <= max_input else 0.0 for _ in DEFAULT_OUTPUT_BOUNDS] for i in DEFAULT_INPUT_BOUNDS
    ]
    return {"gpu": gpu, "input_bounds": list(DEFAULT_INPUT_BOUNDS), "output_bounds": list(DEFAULT_OUTPUT_BOUNDS),
            "tables": [{"slo": SLO, "max_rate": max_rate}]}  # fmt: skip


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    with sim_fleet(2, extra_args=["--preset", "zero"]) as f:
        yield f


def make_plan(tmp_path: Path) -> dict[str, object]:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "l4.json").write_text(json.dumps(profile("l4", 4.0, 256)))
    (profiles / "a100.json").write_text(json.dumps(profile("a100-80gb", 10.0, 8192)))
    rate = [[0.0] * len(DEFAULT_OUTPUT_BOUNDS) for _ in DEFAULT_INPUT_BOUNDS]
    rate[0][0], rate[LONG_ROW][0] = 30.0, 2.0
    workload = tmp_path / "workload.json"
    workload.write_text(json.dumps({"model": MODEL, "input_bounds": list(DEFAULT_INPUT_BOUNDS),
                                    "output_bounds": list(DEFAULT_OUTPUT_BOUNDS), "rate": rate}))  # fmt: skip
    result = CliRunner().invoke(
        optimize,
        ["--profiles", str(profiles), "--workload", str(workload), "--slo", "ttft=5,tpot=0.1", "--json"],
    )
    assert result.exit_code == 0, result.output
    plan: dict[str, object] = json.loads(result.output)
    (tmp_path / "plan.json").write_text(result.output)
    return plan


def test_each_size_lands_on_the_gpu_type_the_plan_gave_it(fleet: SimFleet, tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    split: dict[str, list[list[float]]] = plan["split"]  # type: ignore[assignment]
    short = {gpu: m[0][0] for gpu, m in split.items() if m[0][0] > 0}
    assert set(short) == {"l4", "a100-80gb"}, split  # the short bucket is shared
    assert {gpu for gpu, m in split.items() if m[LONG_ROW][0] > 0} == {"a100-80gb"}
    gpu_of = {
        url.removeprefix("http://"): gpu for url, gpu in zip(fleet.urls, ("l4", "a100-80gb"), strict=True)
    }
    engines = tmp_path / "engines.yaml"
    engines.write_text(yaml.safe_dump({"engines": [{"url": u, "gpu_type": g} for u, g in
                                                   zip(fleet.urls, ("l4", "a100-80gb"), strict=True)]}))  # fmt: skip
    with running_gateway(engines_file=engines, routing_plan=tmp_path / "plan.json",
                         default_profile="least-request") as gw:  # fmt: skip
        gw.wait_healthy(2)
        with openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0, timeout=60) as client:

            def served(prompt_tokens: int, n: int) -> Counter[str]:
                out: Counter[str] = Counter()
                for k in range(n):
                    raw = client.completions.with_raw_response.create(
                        model=MODEL, prompt=synthetic_ids(k, prompt_tokens), max_tokens=16,
                        extra_body={"ignore_eos": True},
                    )  # fmt: skip
                    out[gpu_of[raw.headers[HEADER_ENDPOINT]]] += 1
                return out

            assert served(600, 5) == {"a100-80gb": 5}
            n = 16
            assert served(30, n) == {gpu: round(share * n) for gpu, share in short.items()}
