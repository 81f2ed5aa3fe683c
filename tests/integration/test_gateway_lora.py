"""LoRA requests reach only the engines that host the adapter (learned from each engine's /v1/models)."""

from __future__ import annotations

from collections import Counter

import httpx
import openai

from flotilla.labels import HEADER_ENDPOINT as ENDPOINT_HEADER
from tests.fleet import sim_fleet
from tests.integration.gateway_harness import running_gateway

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def test_lora_requests_reach_only_hosting_engines() -> None:
    with (
        sim_fleet(3, extra_args=["--time-scale", "0.1", "--enable-lora", "--max-loras", "2"]) as fleet,
        running_gateway(engines=fleet.urls) as gw,
    ):
        gw.wait_healthy(3)
        hosts = fleet.urls[:2]
        for url in hosts:
            r = httpx.post(
                url + "/v1/load_lora_adapter", json={"lora_name": "sql-lora", "lora_path": "hub/sql-lora"}
            )
            assert r.status_code == 200, r.text
        keys = {u.removeprefix("http://") for u in hosts}
        gw.wait_until(
            lambda g: sum("sql-lora" in e.adapters for e in g.fleet.pool) == 2, what="adapter discovered"
        )
        with openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=60) as client:
            assert "sql-lora" in {m.id for m in client.models.list().data}
            served = Counter()
            for strategy in ("default", "round-robin", "random", "least-request", "lora-affinity"):
                for i in range(4):
                    raw = client.chat.completions.with_raw_response.create(
                        model="sql-lora",
                        messages=[{"role": "user", "content": f"select {i}"}],
                        max_tokens=2,
                        extra_headers={"x-routing-strategy": strategy},
                    )
                    served[raw.headers[ENDPOINT_HEADER]] += 1
            assert set(served) <= keys, served
            assert len(served) == 2, served  # both hosts are used
            # the base model still reaches all three
            base = Counter(
                client.chat.completions.with_raw_response.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": "base"}],
                    max_tokens=2,
                    extra_headers={"x-routing-strategy": "round-robin"},
                ).headers[ENDPOINT_HEADER]
                for _ in range(6)
            )
            assert len(base) == 3
