"""The standalone loop (no cluster): collector + sampler + scaler drive a real gateway's engine set from zero.

The gateway holds a request for a declared model at zero engines and exports it as demand; the loop reads
that, asks for one engine, "starts" it (adds a running simulator to the gateway's endpoints), and the held
request is served. With no traffic the count returns to zero after the grace period.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from autoscaler import ARRIVALS, DEMAND, RUNNING, Autoscaler, Collector, MetricTarget, Sampler, ScalerSettings
from gateway.endpoints import EndpointSpec
from tests.fleet import sim_fleet
from tests.integration.gateway_harness import running_gateway

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


async def test_scale_from_zero_through_a_real_gateway_and_back() -> None:
    settings = ScalerSettings(
        max_replicas=2, min_replicas=0, metrics=(MetricTarget(DEMAND, 4), MetricTarget(RUNNING, 4)),
        stable_window=2.0, panic_window=0.5, scale_down_cooldown=1.0, scale_to_zero_grace=1.0,
    )  # fmt: skip
    with (
        sim_fleet(2, extra_args=["--time-scale", "0.2"]) as fleet,
        running_gateway(hold_timeout=20) as gw,
    ):
        gw.call(gw.gateway.fleet.catalog.declare, "test", {MODEL: None})
        scaler, sampler = Autoscaler(settings), Sampler([MODEL])
        replicas = 0
        history = [0]
        arrived = 0.0  # the integral of the arrival rate over the ticks
        last_tick: float | None = None
        async with httpx.AsyncClient() as http:
            collector = Collector(http, timeout=1.0)

            async def tick() -> None:
                nonlocal replicas, arrived, last_tick
                scrape = await collector.collect(fleet.urls[:replicas], [gw.url])
                now = time.monotonic()
                sample = sampler.sample(scrape, now)
                if last_tick is not None:
                    arrived += sample.values.get(ARRIVALS, 0.0) * (now - last_tick)
                last_tick = now
                decision = scaler.recommend(sample, current=replicas, now=now)
                if decision.scale:
                    replicas = decision.desired
                    history.append(replicas)
                    gw.call(gw.gateway.set_endpoints, [EndpointSpec(url=u) for u in fleet.urls[:replicas]])

            for _ in range(5):
                await tick()
                await asyncio.sleep(0.1)
            assert replicas == 0  # nothing asked for a model at zero

            def ask() -> str | None:
                with openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=30) as client:
                    reply = client.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4
                    )
                return reply.choices[0].message.content

            request = asyncio.create_task(asyncio.to_thread(ask))
            while not request.done():
                await tick()
                await asyncio.sleep(0.1)
            assert await request
            assert history == [0, 1]
            # the one request was seen arriving (held, then in flight, then finished): ~1 request in total
            assert arrived == pytest.approx(1.0, abs=0.01)
            deadline = time.monotonic() + 20
            while replicas and time.monotonic() < deadline:
                await tick()
                await asyncio.sleep(0.1)
            assert history == [0, 1, 0]
