"""The approximate index holds, per engine, no more than the engine's KV cache (``index_engine_capacity``):
real engine_sim processes with a tiny cache, a real gateway, the official openai client."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from flotilla.tokenizer import synthetic_ids, synthetic_text
from tests.fleet import SimFleet, sim_fleet
from tests.integration.gateway_harness import running_gateway

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
#: 64 blocks of 16 tokens: the engine can hold ~3 of the 300-token prompts below at once
GPU_BLOCKS = 64


@pytest.fixture(scope="module")
def small_engine() -> Iterator[SimFleet]:
    with sim_fleet(1, extra_args=["--time-scale", "0.02", "--num-gpu-blocks", str(GPU_BLOCKS)]) as f:
        yield f


def _send_distinct_prompts(base_url: str, n: int) -> None:
    with openai.OpenAI(base_url=base_url, api_key="none", max_retries=0) as client:
        for seed in range(n):
            text = synthetic_text(synthetic_ids(1000 + seed, 300))
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=2
            )


@pytest.mark.parametrize("capped", [True, False], ids=["engine-capacity", "uncapped"])
def test_index_holds_at_most_the_engines_kv_blocks(small_engine: SimFleet, capped: bool) -> None:
    with running_gateway(engines=small_engine.urls, index_engine_capacity=capped) as gw:
        gw.wait_healthy(1)
        _send_distinct_prompts(gw.base_url, 8)
        (endpoint,) = list(gw.gateway.fleet.pool)
        assert endpoint.metrics is not None
        assert endpoint.metrics.num_gpu_blocks == GPU_BLOCKS
        held = gw.gateway.index.blocks(endpoint.key)  # type: ignore[attr-defined]
        if capped:
            assert held == GPU_BLOCKS - 1  # filled to the cache's size (less vLLM's null block), no further
        else:
            assert held > 2 * GPU_BLOCKS  # the 8 prompts' ~20 blocks each, all remembered
