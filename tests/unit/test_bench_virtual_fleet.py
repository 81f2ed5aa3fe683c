"""The autoscaling suite's virtual-time fleet (``bench.autoscaling.virtual``) and the incremental engine core it
drives (``engine_sim.offline.EngineCore``): agreement with ``replay``, cold starts, drains, holding, routing."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from bench.arrivals import poisson_schedule
from bench.autoscaling.baselines import Fixed, Reactive
from bench.autoscaling.virtual import Fleet
from engine_sim import Arrival, EngineConfig, replay
from engine_sim.offline import EngineCore
from flotilla.cli.local_scaler import Decision, Observation

pytestmark = pytest.mark.timeout(60)

CFG = EngineConfig(preset="a100-llama3-8b", max_num_seqs=4)
PROMPT, OUT = 256, 64


def fleet(policy: object, **kw: object) -> Fleet:
    args: dict[str, object] = {"min_engines": 0, "max_engines": 4, "startup_delay": 60.0, "prompt_tokens": PROMPT,
                               "output_tokens": OUT, "seed": 3}  # fmt: skip
    args.update(kw)
    return Fleet(CFG, policy, **args)  # type: ignore[arg-type]


@dataclass
class Script:
    """Desired engines by time: [(from t, count), ...]."""

    plan: list[tuple[float, int]]
    seen: list[Observation]

    def decide(self, obs: Observation) -> Decision:
        self.seen.append(obs)
        return Decision([n for t, n in self.plan if t <= obs.now][-1])


def test_the_incremental_core_reproduces_replay_exactly() -> None:
    times = poisson_schedule(300, 0.9, seed=5)
    arrivals = [Arrival(t, PROMPT, OUT) for t in times]
    expected = replay(CFG, arrivals, seed=11)
    core = EngineCore(CFG, seed=11)
    reqs = []
    for i, a in enumerate(arrivals):
        core.advance(a.at)
        reqs.append(core.submit(a, i))
    core.advance(math.inf)
    assert [r.timing.first_token - a.at for r, a in zip(reqs, arrivals, strict=True)] == [  # type: ignore[operator]
        o.ttft for o in expected
    ]


def test_one_warm_engine_under_constant_load_matches_replay() -> None:
    times = poisson_schedule(400, 0.6, seed=9)
    run = fleet(Fixed(1), seed=0).run(times, times[-1] + 1, initial=1)
    # the fleet seeds engine k's request stream with seed × 1000 + k: engine 0 of seed 0 is replay's seed 0
    expected = replay(CFG, [Arrival(t, PROMPT, OUT) for t in times], seed=0)
    assert [s.ttft for s in run.served] == pytest.approx([o.ttft for o in expected], abs=1e-9)
    assert len(run.spans) == 1
    assert run.spans[0].started == run.spans[0].ready == 0.0


def test_a_cold_start_delays_service_by_exactly_the_startup_delay() -> None:
    alone = replay(CFG, [Arrival(0.0, PROMPT, OUT)])[0].ttft
    assert alone is not None
    run = fleet(Fixed(1)).run([1.0], 120.0, initial=0)
    [span] = run.spans
    assert span.started == 0.0  # the first tick saw the policy want one engine
    assert span.ready == 60.0  # startup_delay after its start, exactly
    # held at the gateway from t = 1 until the engine was ready, then served as on an idle engine
    assert run.served[0].ttft == pytest.approx(59.0 + alone, abs=1e-9)


def test_requests_held_longer_than_the_hold_timeout_fail() -> None:
    run = fleet(Fixed(1), hold_timeout=10.0).run([1.0, 55.0], 120.0, initial=0)
    assert run.served[0].ttft == math.inf  # held 10 s, then the 503
    assert run.served[1].ttft == pytest.approx(5.0, abs=0.1)  # held 5 s, served when the engine came up


def test_the_holding_queue_is_bounded() -> None:
    run = fleet(Fixed(1), hold_max=2).run([1.0, 2.0, 3.0], 120.0, initial=0)
    assert [math.isfinite(s.ttft) for s in run.served] == [True, True, False]


def test_a_retired_engine_drains_its_requests_before_it_stops() -> None:
    # two warm engines, then one: the least busy goes, and its requests (13 s each) still finish
    times = [0.0, 0.1, 0.2, 0.3]
    run = fleet(Script([(0.0, 2), (2.0, 1)], []), output_tokens=1000).run(times, 60.0, initial=2)
    assert all(math.isfinite(s.e2e) for s in run.served)
    stopped = [s for s in run.spans if s.stopped is not None and s.stopped < 60.0]
    assert len(stopped) == 1
    assert stopped[0].stopping == 2.0
    assert stopped[0].stopped is not None
    assert stopped[0].stopped > 2.0  # stopped once drained, not at once


def test_requests_still_running_at_the_drain_timeout_fail() -> None:
    times = [0.0, 0.1]
    run = fleet(Script([(0.0, 2), (2.0, 1)], []), drain_timeout=1.0, output_tokens=1000).run(
        times, 60.0, initial=2
    )
    # each engine got one request (fewest in flight); the retired one is stopped after 1 s with it unfinished
    assert sorted(math.isfinite(s.e2e) for s in run.served) == [False, True]


def test_cold_starts_are_cancelled_before_serving_engines_go() -> None:
    run = fleet(Script([(0.0, 2), (10.0, 1)], [])).run([], 60.0, initial=1)
    cold = [s for s in run.spans if s.started == 2.0 or (s.started == 0.0 and s.ready is None)]
    assert len(cold) == 1
    assert cold[0].ready is None
    assert cold[0].stopped == 10.0
    assert next(s for s in run.spans if s.ready == 0.0).stopped is None


def test_the_gateway_routes_to_the_engine_with_the_fewest_in_flight() -> None:
    run = fleet(Fixed(3)).run([0.0, 0.01, 0.02, 0.03], 60.0, initial=3)
    assert all(math.isfinite(s.ttft) for s in run.served)
    # three idle engines take one each; the fourth goes to the first engine again
    ttfts = [s.ttft for s in run.served]
    assert ttfts[3] >= ttfts[0]


def test_the_policy_sees_demand_arrivals_and_engine_gauges() -> None:
    seen: list[Observation] = []
    fleet(Script([(0.0, 1)], seen), tick=1.0).run([0.5, 0.6, 0.7], 3.0, initial=1)
    at1 = next(o for o in seen if o.now == 1.0)
    assert at1.arrivals == 3.0
    assert at1.in_flight == 3.0
    assert at1.queued == 0.0
    assert at1.ready == 1
    assert sum(at1.running) + sum(at1.waiting) == 3


def test_the_reactive_bound_wants_ceil_rate_over_cap() -> None:
    policy = Reactive(lambda t: 1.0 if t < 10 else 2.5, 1.0)
    assert policy.decide(Observation(0.0, 0, 0, 0.0, 0.0)).desired == 1
    assert policy.decide(Observation(10.0, 0, 0, 0.0, 0.0)).desired == 3


def test_runs_are_deterministic_per_seed() -> None:
    times = poisson_schedule(200, 1.5, seed=2)
    a = fleet(Reactive(lambda t: 1.5, 0.7), seed=4).run(times, 150.0, initial=1)
    b = fleet(Reactive(lambda t: 1.5, 0.7), seed=4).run(times, 150.0, initial=1)
    assert a == b
