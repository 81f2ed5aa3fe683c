"""``engine_sim.replay``: the scheduler and latency model in pure simulated time."""

from __future__ import annotations

import pytest

from engine_sim import Arrival, EngineConfig, replay
from engine_sim.latency import LatencyModel, StepShape

CFG = EngineConfig(preset="a100-80gb-llama3-8b", enable_prefix_caching=False)


def test_one_request_takes_its_prefill_step_then_one_step_per_token() -> None:
    [out] = replay(CFG, [Arrival(2.0, 100, 5)])
    m = LatencyModel(CFG.profile)
    prefill = m.step_time(StepShape(prefill_tokens=100, context_tokens=100, attention_pairs=100 * 50))
    assert out.finished
    assert out.ttft == pytest.approx(prefill)
    decodes = [m.step_time(StepShape(decode_tokens=1, context_tokens=100 + k)) for k in range(1, 5)]
    assert out.tpot == pytest.approx(sum(decodes) / 4)


def test_requests_share_steps_and_later_ones_wait() -> None:
    outs = replay(CFG, [Arrival(0.0, 2048, 20), Arrival(0.0, 2048, 20), Arrival(0.001, 64, 20)])
    alone = replay(CFG, [Arrival(0.0, 64, 20)])[0]
    assert all(o.finished for o in outs)
    # two 2k prompts fill the 2048-token budget one after the other; the short one queues behind them
    first, second, short = (o.ttft or 0.0 for o in outs)
    assert second > first > 0
    assert short > 5 * (alone.ttft or 1.0)


def test_the_horizon_cuts_an_overloaded_run_and_leaves_requests_unfinished() -> None:
    arrivals = [Arrival(i * 0.01, 4000, 200) for i in range(200)]  # 100 req/s of 4k prompts: far too many
    outs = replay(CFG, arrivals, horizon=5.0)
    assert not all(o.finished for o in outs)
    assert outs[-1].ttft is None


def test_outcomes_keep_the_order_given_and_sizes_are_capped_by_the_context() -> None:
    small = EngineConfig(preset="zero", num_gpu_blocks=20, enable_prefix_caching=False)  # 304 usable tokens
    outs = replay(small, [Arrival(1.0, 10, 3), Arrival(0.0, 5000, 3)])
    assert [o.arrival.at for o in outs] == [1.0, 0.0]
    assert all(o.finished for o in outs)
