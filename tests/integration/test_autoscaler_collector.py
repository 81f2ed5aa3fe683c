"""The collector + sampler against real simulated engines driven by the official openai client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from autoscaler import KV_CACHE, RPS, RUNNING, TTFT_P95, WAITING, Collector, Sampler
from tests.fleet import SimFleet, sim_fleet
from tests.support import free_port

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    # time-scale 0.5: a 64-token answer takes ~0.5 s of wall time, long enough to be seen queued and running
    with sim_fleet(2, extra_args=["--time-scale", "0.5", "--max-num-seqs", "4"]) as f:
        yield f


async def test_collects_load_rates_and_ttft_from_real_engines(fleet: SimFleet) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    sampler = Sampler([MODEL])
    async with (
        httpx.AsyncClient() as http,
        openai.AsyncOpenAI(base_url=fleet.urls[0] + "/v1", api_key="x", max_retries=0, timeout=60) as client,
    ):
        collector = Collector(http, timeout=1.0)
        idle = sampler.sample(await collector.collect(fleet.urls, [dead]), time.time())
        assert idle.ready == 2
        assert idle.values[RUNNING] == 0
        assert not idle.busy

        async def one() -> None:
            await client.completions.create(
                model=MODEL, prompt="hello " * 50, max_tokens=64, extra_body={"ignore_eos": True}
            )

        load = [asyncio.create_task(one()) for _ in range(12)]
        deadline = time.monotonic() + 10
        while True:  # until all 12 have reached the engine (the client needs a moment on a busy machine)
            busy = sampler.sample(await collector.collect(fleet.urls, [dead]), time.time())
            if busy.values[RUNNING] + busy.values[WAITING] == 12 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        await asyncio.gather(*load)
        after = sampler.sample(await collector.collect([*fleet.urls, dead], [dead]), time.time())
    # 12 requests on one engine with 4 seats: 4 running, 8 waiting, at the first scrape
    assert busy.values[RUNNING] + busy.values[WAITING] == 12
    assert busy.values[RUNNING] == 4
    assert busy.values[KV_CACHE] > 0
    assert busy.busy
    assert after.values[RPS] > 0
    assert after.values[TTFT_P95] > 0
    assert after.ready == 2
    assert after.missing == 1
    scrape = await _collect_once(fleet, dead)
    assert any(dead in e for e in scrape.errors)
    assert scrape.gateways[0].demand is None


async def _collect_once(fleet: SimFleet, dead: str):
    async with httpx.AsyncClient() as http:
        return await Collector(http, timeout=1.0).collect(fleet.urls[:1], [dead])
