"""The local scaler's reconcile logic with test doubles for engines and the gateway, on a fake clock."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest

from flotilla.cli.local_scaler import Decision, EngineHandle, LocalScaler, Observation
from flotilla.cli.local_wiring import make_policy

pytestmark = pytest.mark.timeout(30)


@dataclass
class Sched:
    running: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)


@dataclass
class FakeClock:
    def mapped(self) -> float:
        return 5.0


@dataclass
class FakeEngine:
    ready: bool = False
    scheduler: Sched = field(default_factory=Sched)
    clock: FakeClock = field(default_factory=FakeClock)

    def now(self) -> float:
        return 3.5  # 1.5 simulated seconds behind


class FakeEngines:
    def __init__(self) -> None:
        self.started: list[EngineHandle] = []
        self.stopped: list[EngineHandle] = []

    async def start(self, *, cold: bool = True) -> EngineHandle:
        handle = EngineHandle(url=f"http://127.0.0.1:{9000 + len(self.started)}", engine=FakeEngine(ready=not cold),
                              started=0.0)  # fmt: skip
        self.started.append(handle)
        return handle

    async def stop(self, handle: EngineHandle) -> None:
        self.stopped.append(handle)


class FakeGateway:
    def __init__(self) -> None:
        self.published: list[list[str]] = []
        self.in_flight = 0.0
        self.queued = 0.0
        self.arrivals = 0.0

    def publish(self, urls) -> None:
        self.published.append(list(urls))

    def demand(self) -> tuple[float, float, float]:
        return self.in_flight, self.queued, self.arrivals


class Wants:
    def __init__(self, desired: int) -> None:
        self.desired = desired
        self.seen: list[Observation] = []

    def decide(self, obs: Observation) -> Decision:
        self.seen.append(obs)
        return Decision(self.desired, panic=self.desired > 2)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def scaler(policy, *, min_engines=0, max_engines=4, clock=None):
    engines, gateway = FakeEngines(), FakeGateway()
    s = LocalScaler(policy, engines, gateway, min_engines=min_engines, max_engines=max_engines,
                    time_scale=0.001, tick=2.0, clock=clock or Clock())  # fmt: skip
    return s, engines, gateway


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.002)


async def test_engines_join_the_gateway_only_when_ready() -> None:
    policy = Wants(2)
    s, engines, gateway = scaler(policy)
    await s.step()
    assert len(engines.started) == 2
    assert s.status().starting == 2
    assert gateway.published == []  # cold: nothing to route to yet
    engines.started[0].engine.ready = True
    await settle()
    assert gateway.published[-1] == [engines.started[0].url]
    assert s.status().replicas == 1
    await s.step()
    assert len(engines.started) == 2  # the one still starting counts toward the desired count
    assert policy.seen[-1].ready == 1
    assert policy.seen[-1].starting == 1
    await s.shutdown()


async def test_desired_is_clamped_to_min_and_max() -> None:
    s, engines, _ = scaler(Wants(9), max_engines=3)
    await s.step()
    assert len(engines.started) == 3
    assert s.status().desired == 3
    assert s.status().panic
    await s.shutdown()
    s, engines, _ = scaler(Wants(0), min_engines=1)
    await s.step()
    assert len(engines.started) == 1


async def test_scale_down_cancels_cold_starts_first_then_the_least_busy() -> None:
    policy = Wants(0)
    s, engines, gateway = scaler(policy)
    await s.prestart(2)
    assert gateway.published[-1] == [engines.started[0].url, engines.started[1].url]
    engines.started[0].engine.scheduler.running = [1, 2]  # busy
    policy.desired = 3
    await s.step()
    cold = engines.started[2]
    policy.desired = 1
    await s.step()
    await settle()
    assert cold in engines.stopped  # the cold start is cancelled first
    assert engines.started[1] in engines.stopped  # then the idle serving engine
    assert gateway.published[-1] == [engines.started[0].url]
    assert engines.started[0] not in engines.stopped


async def test_a_retired_engine_drains_before_it_stops() -> None:
    policy = Wants(1)
    s, engines, gateway = scaler(policy)
    await s.prestart(1)
    busy = engines.started[0]
    busy.engine.scheduler.running = [1]
    policy.desired = 0
    await s.step()
    assert gateway.published[-1] == []  # out of the gateway at once
    await settle()
    assert busy not in engines.stopped  # still finishing its request
    busy.engine.scheduler.running = []
    await settle()
    assert busy in engines.stopped


async def test_gpu_seconds_and_the_record_use_simulated_time() -> None:
    clock = Clock()
    s, engines, _ = scaler(Wants(1), clock=clock)
    await s.prestart(1)
    clock.t += 0.01  # 10 simulated seconds at time scale 0.001
    assert s.gpu_seconds() == pytest.approx(10.0)
    await s.step()
    record = json.loads(s.record())
    assert record["time_scale"] == 0.001
    assert record["engines"][0]["ready"] == 0.0
    assert record["timeline"][0]["desired"] == 1
    assert record["timeline"][0]["lag"] == pytest.approx(1.5)
    await s.shutdown()
    assert engines.stopped == engines.started


async def test_run_reconciles_until_stopped_then_stops_every_engine() -> None:
    s, engines, gateway = scaler(Wants(2))
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))
    await settle()
    stop.set()
    await task
    assert len(engines.started) == 2
    assert engines.stopped == engines.started
    assert gateway.published[-1] == []


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="min_engines <= max_engines"):
        scaler(Wants(1), min_engines=3, max_engines=2)


def test_make_policy_refuses_unknown_algorithms() -> None:
    with pytest.raises(ValueError, match="unknown autoscaling policy 'hpa'"):
        make_policy("hpa", 0, 4)


@pytest.mark.parametrize("name", ["kpa", "apa"])
def test_the_autoscaler_policy_scales_from_zero_on_held_requests(name: str) -> None:
    policy = make_policy(name, 0, 4, target=2.0)
    idle = Observation(now=0.0, ready=0, starting=0, in_flight=0.0, queued=0.0)
    assert policy.decide(idle).desired == 0
    held = Observation(now=2.0, ready=0, starting=0, in_flight=0.0, queued=3.0)
    assert policy.decide(held).desired >= 1


def test_the_autoscaler_policy_follows_demand_per_engine() -> None:
    policy = make_policy("kpa", 1, 8, target=2.0)
    desired = 1
    seen = []
    for t in range(0, 40, 2):  # 8 concurrent requests on 1 ready engine at a target of 2 per engine
        obs = Observation(now=float(t), ready=1, starting=desired - 1, in_flight=8.0, queued=0.0, running=(4,),
                          waiting=(4,))  # fmt: skip
        desired = policy.decide(obs).desired
        seen.append(desired)
    assert seen[0] == 2  # at most twice the current count per decision (max_scale_up_rate)
    assert desired == 4


def test_the_autoscaler_policy_reads_the_arrival_rate() -> None:
    from autoscaler import ARRIVALS, MetricTarget, ScalerSettings
    from flotilla.cli.local_wiring import AutoscalerPolicy

    policy = AutoscalerPolicy(ScalerSettings(max_replicas=8, metrics=(MetricTarget(ARRIVALS, 0.5),)))
    desired = 1
    for t in range(0, 40, 2):  # 1.5 req/s arriving, 0.5 req/s per engine: 3 engines, whatever the backlog
        obs = Observation(now=float(t), ready=1, starting=desired - 1, in_flight=30.0, queued=0.0,
                          running=(4,), waiting=(26,), arrivals=1.5 * t)  # fmt: skip
        desired = policy.decide(obs).desired
    assert desired == 3
