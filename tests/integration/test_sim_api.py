"""The programmatic API other components embed: exports, ``serve_engines`` in this loop, CLI validation."""

from __future__ import annotations

import httpx
import pytest
from click.testing import CliRunner

import engine_sim
from engine_sim import EngineConfig, fleet_configs, serve_engines
from engine_sim.cli import sim
from tests.support import free_port

pytestmark = pytest.mark.timeout(60)


def test_public_exports_are_pinned() -> None:
    assert sorted(engine_sim.__all__) == sorted(
        [
            "GPU_PRESETS",
            "PRESETS",
            "Arrival",
            "Engine",
            "EngineConfig",
            "EngineDead",
            "Faults",
            "LatencyProfile",
            "Outcome",
            "RequestHandle",
            "RunningEngine",
            "SimError",
            "create_app",
            "fleet_configs",
            "replay",
            "serve_engines",
        ]
    )


async def test_serve_engines_in_the_current_loop() -> None:
    base = EngineConfig(preset="zero", served_model_name="m")
    ports = [free_port(), free_port()]
    configs = [
        c.model_copy(update={"port": p}) for c, p in zip(fleet_configs(base, 2, 0, None), ports, strict=True)
    ]
    async with serve_engines(configs) as running, httpx.AsyncClient() as client:
        assert [r.url for r in running] == [f"http://127.0.0.1:{p}" for p in ports]
        for i, r in enumerate(running):
            resp = await client.post(
                r.url + "/v1/completions", json={"model": "m", "prompt": "hi", "max_tokens": 3}
            )
            assert resp.status_code == 200
            assert resp.json()["usage"]["completion_tokens"] == 3
            assert r.engine.config.engine_index == i
        # same seed on every engine: the same prompt gets the same text anywhere
        texts = [
            (await client.post(r.url + "/v1/completions", json={"prompt": "same", "max_tokens": 5})).json()[
                "choices"
            ][0]["text"]
            for r in running
        ]
        assert texts[0] == texts[1]
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{ports[0]}/health")


def test_fleet_configs_assign_ports_and_kv_endpoints() -> None:
    configs = fleet_configs(EngineConfig(kv_events=True), 3, 9000, 6000)
    assert [c.port for c in configs] == [9000, 9001, 9002]
    assert [c.kv_events_endpoint for c in configs] == [f"tcp://127.0.0.1:{6000 + i}" for i in range(3)]
    assert configs[2].topic == "kv@127.0.0.1:9002@meta-llama/Llama-3.1-8B-Instruct"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "tpu"], "tpu"),
        (["--output-len", "9:3"], "output_len_min"),
        (["--failure-rate", "2"], "failure-rate"),
        (["--engines", "0"], "engines"),
    ],
    ids=["unknown-preset", "bad-output-range", "rate-above-one", "zero-engines"],
)
def test_cli_rejects_bad_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(sim, args)
    assert result.exit_code == 2
    assert message in result.output
