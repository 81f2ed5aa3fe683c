"""Latency relations of the engine model, measured on the engine's simulated clock (robust to host load).

Each test runs a real :class:`Engine` step loop in this event loop at a small ``time_scale`` and compares
simulated timings with wide margins: prefix hits cut TTFT, TTFT grows with queue length, decode steps slow
down with batch size.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from engine_sim import Engine, EngineConfig
from engine_sim.engine import RequestHandle
from flotilla.tokenizer import synthetic_ids

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    overrides = getattr(request, "param", {})
    e = Engine(EngineConfig(time_scale=0.01, **overrides))
    await e.start()
    try:
        yield e
    finally:
        await e.stop()


async def drain(handle: RequestHandle) -> None:
    async for _ in handle:
        pass


async def run(engine: Engine, prompts: list[list[int]], max_tokens: int) -> list[RequestHandle]:
    handles = [engine.submit(p, max_tokens=max_tokens, ignore_eos=True) for p in prompts]
    await asyncio.gather(*(drain(h) for h in handles))
    return handles


def ttft(h: RequestHandle) -> float:
    value = h.request.timing.ttft
    assert value is not None
    return value


def tpot(h: RequestHandle) -> float:
    t = h.request.timing
    assert t.first_token is not None
    assert t.last_token is not None
    return (t.last_token - t.first_token) / (h.request.num_output - 1)


async def test_prefix_hit_lowers_ttft_and_counts_hits(engine: Engine) -> None:
    prompt = synthetic_ids(1, 3000)
    (cold,) = await run(engine, [prompt], 2)
    hits_before = engine.scheduler.stats.prefix_hits
    (warm,) = await run(engine, [prompt], 2)
    assert cold.request.cached_tokens == 0
    assert warm.request.cached_tokens == 2992  # floor(2999 / 16) * 16
    assert ttft(warm) < ttft(cold) / 4
    assert engine.scheduler.stats.prefix_hits - hits_before == 2992


async def test_ttft_grows_with_queue_length(engine: Engine) -> None:
    prompts = [synthetic_ids(100 + i, 1500) for i in range(8)]
    handles = await run(engine, prompts, 2)
    ttfts = [ttft(h) for h in handles]
    # FCFS with a 2048-token budget: later requests wait for earlier prefills
    assert ttfts[-1] > 3 * ttfts[0]
    firsts = [h.request.timing.first_token for h in handles]
    assert firsts == sorted(firsts)  # type: ignore[type-var]
    assert handles[-1].request.timing.queue_time is not None


async def test_decode_step_time_grows_with_batch_size(engine: Engine) -> None:
    (alone,) = await run(engine, [synthetic_ids(7, 64)], 16)
    batch = await run(engine, [synthetic_ids(1000 + i, 64) for i in range(200)], 16)
    assert min(tpot(h) for h in batch) > 1.3 * tpot(alone)


@pytest.mark.parametrize("engine", [{"preset": "h100-llama3-8b"}], indirect=True, ids=["h100"])
async def test_h100_is_faster_than_a100(engine: Engine) -> None:
    a100 = Engine(EngineConfig(time_scale=0.01))
    await a100.start()
    try:
        prompt = synthetic_ids(3, 2000)
        (slow,) = await run(a100, [prompt], 8)
        (fast,) = await run(engine, [prompt], 8)
    finally:
        await a100.stop()
    assert ttft(fast) < ttft(slow)
    assert tpot(fast) < tpot(slow)


@pytest.mark.parametrize(
    "engine", [{"num_gpu_blocks": 40, "max_num_seqs": 8}], indirect=True, ids=["tiny-kv"]
)
async def test_kv_pressure_preempts_and_everything_still_finishes(engine: Engine) -> None:
    handles = await run(engine, [synthetic_ids(50 + i, 100) for i in range(6)], 80)
    assert engine.scheduler.stats.preemptions > 0
    assert all(h.request.finish_reason == "length" and h.request.num_output == 80 for h in handles)
    assert engine.pool.usage() == 0.0


async def test_time_scale_keeps_the_shape(engine: Engine) -> None:
    slow = Engine(EngineConfig(time_scale=0.05))
    await slow.start()
    try:
        prompt = synthetic_ids(11, 800)
        (a,) = await run(engine, [prompt], 5)
        (b,) = await run(slow, [prompt], 5)
    finally:
        await slow.stop()
    assert ttft(a) == pytest.approx(ttft(b), rel=0.05)
    assert tpot(a) == pytest.approx(tpot(b), rel=0.05)


async def test_a_crashed_step_loop_marks_the_engine_dead(engine: Engine) -> None:
    def boom() -> None:
        raise RuntimeError("simulated scheduler bug")

    engine.scheduler.schedule = boom  # type: ignore[assignment,method-assign]
    handle = engine.submit([1, 2, 3], max_tokens=2)
    events = [ev async for ev in handle]
    assert events[-1].finish_reason == "error"
    assert engine.faults.dead


@pytest.mark.parametrize(
    "engine",
    [{"enable_lora": True, "max_loras": 2, "lora_modules": {"a": "org/a"}, "lora_step_overhead": 0.5}],
    indirect=True,
    ids=["lora"],
)
async def test_lora_requests_pay_the_step_overhead(engine: Engine) -> None:
    prompt = synthetic_ids(21, 300)
    base = engine.submit(prompt, max_tokens=8, ignore_eos=True)
    await drain(base)
    lora = engine.submit(prompt, max_tokens=8, ignore_eos=True, lora_name=engine.resolve_model("a"))
    await drain(lora)
    assert lora.request.cached_tokens == 0  # adapter-scoped hashes: no hit on the base model's blocks
    assert tpot(lora) > 1.3 * tpot(base)


async def test_latency_spikes_slow_every_step(engine: Engine) -> None:
    prompt = synthetic_ids(31, 100)
    (calm,) = await run(engine, [prompt], 6)
    engine.faults = engine.faults.model_copy(update={"latency_spike_rate": 1.0, "latency_spike_factor": 5.0})
    (spiky,) = await run(engine, [synthetic_ids(32, 100)], 6)
    assert tpot(spiky) == pytest.approx(5 * tpot(calm), rel=0.05)


@pytest.mark.parametrize(
    "engine",
    [
        {
            "enable_lora": True,
            "max_loras": 1,
            "lora_modules": {"a": "org/a", "b": "org/b"},
            "lora_load_latency": 0.2,
        }
    ],
    indirect=True,
    ids=["one-cpu-slot"],
)
async def test_switching_adapters_beyond_the_cpu_cache_reloads_them(engine: Engine) -> None:
    async def one(name: str, seed: int) -> float:
        h = engine.submit(synthetic_ids(seed, 50), max_tokens=2, ignore_eos=True, lora_name=name)
        await drain(h)
        return ttft(h)

    warm = await one("b", 1)  # b was loaded last: resident
    cold = await one("a", 2)  # a was evicted from the single CPU slot: reload
    assert cold > warm + 0.15
    assert await one("a", 3) < cold - 0.15  # resident again
