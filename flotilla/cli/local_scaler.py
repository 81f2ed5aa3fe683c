"""The standalone scaler: an autoscaling policy driving simulated engines that this process starts and stops.

In Kubernetes the autoscaler writes ``/scale`` and the Deployment controller, kubelet and readiness probes do
the rest. Without a cluster (``flotilla up --autoscale``, ``flotilla bench --suite autoscaling``) this one loop
plays all of those parts, so a user can watch the engine count follow load and the benchmark measures the same
code a user runs:

* every ``tick`` (simulated seconds) it observes demand — the gateway's in-flight and held requests for the
  model, and each ready engine's running/waiting gauges — and asks a :class:`Policy` for the desired count;
* it starts engines (``engine_sim`` in this process, with the engine's own ``startup_delay`` as cold start)
  and adds each one to the gateway only once it is ready, as a readiness probe would;
* it scales down by first cancelling cold starts that have not finished, then taking the least busy ready
  engines out of the gateway and stopping them once their requests have drained (the pod's grace period);
* the model is declared in the gateway's catalog, so at zero engines requests are held, not refused.

Time is simulated time (wall seconds ÷ ``time_scale``): policies see the same windows and cold starts they
would in real time, only faster. Every engine's start, ready and stop times are kept, so GPU-seconds (a
replica is charged from its start, cold start included, until it stops) can be computed afterwards.

The loop only sees small protocols (``Policy``, ``Engines``, ``Endpoints``), so it is tested with test
doubles; the real parts — in-process engines, the in-process gateway, Flotilla's autoscaler as a policy — are
in ``flotilla.cli.local_wiring``. Both live in ``flotilla.cli``, the one place allowed to wire components
(engine_sim, the gateway, the autoscaler) together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

log = logging.getLogger("flotilla.local_scaler")


@dataclass(frozen=True, slots=True)
class Observation:
    """What the scaler saw at one tick; ``now`` is simulated seconds since the scaler started."""

    now: float
    #: engines serving (in the gateway)
    ready: int
    #: engines started but not ready yet (cold start)
    starting: int
    #: requests the gateway has dispatched to an engine and not finished, for this model
    in_flight: float
    #: requests the gateway holds because no engine is available
    queued: float
    #: ``vllm:num_requests_running`` / ``_waiting`` of each ready engine
    running: tuple[int, ...] = ()
    waiting: tuple[int, ...] = ()
    #: requests that ever arrived at the gateway for this model (a counter; its rate is the offered load)
    arrivals: float = 0.0

    @property
    def demand(self) -> float:
        """Concurrent requests wanting service (what KPA's concurrency metric counts)."""
        return self.in_flight + self.queued


@dataclass(frozen=True, slots=True)
class Decision:
    desired: int
    panic: bool = False
    #: metric values the policy used, for status lines and the benchmark's timeline
    detail: dict[str, float] = field(default_factory=dict)


class Policy(Protocol):
    """Desired engine count from an observation (pure; keeps its own windows)."""

    def decide(self, obs: Observation) -> Decision: ...


class Engines(Protocol):
    """Starts and stops engines; ``start`` returns at once, the engine becomes ready after its cold start."""

    async def start(self, *, cold: bool = True) -> EngineHandle: ...

    async def stop(self, handle: EngineHandle) -> None: ...


class Endpoints(Protocol):
    """The gateway side: which engines serve, the model catalog, and the demand it sees."""

    def publish(self, urls: Sequence[str]) -> None: ...

    def demand(self) -> tuple[float, float, float]:
        """(in-flight, queued, arrivals so far) requests for the model."""
        ...


@dataclass(eq=False)
class EngineHandle:
    url: str
    #: the in-process engine (engine_sim.Engine): readiness and gauges are read from it directly
    engine: Any
    started: float
    ready_at: float | None = None
    stopping_at: float | None = None
    stopped: float | None = None
    #: opaque owner state (the exit stack of its server)
    owner: Any = None

    @property
    def ready(self) -> bool:
        return bool(self.engine.ready)

    @property
    def lag(self) -> float:
        """Simulated seconds the engine is behind wall time (0 when it keeps up): the host could not run its
        steps on time, so what it serves per wall second is less than a real GPU would."""
        return max(0.0, float(self.engine.clock.mapped() - self.engine.now()))

    @property
    def busy(self) -> int:
        """Requests the engine holds (running + waiting)."""
        sched = self.engine.scheduler
        return len(sched.running) + len(sched.waiting)


class Retirable(Protocol):
    @property
    def started(self) -> float: ...

    @property
    def busy(self) -> int: ...


R = TypeVar("R", bound=Retirable)


def retire_order(starting: Sequence[R], serving: Sequence[R]) -> list[R]:
    """Which engines a scale-down takes, first to last: the cold starts furthest from done (they cost a GPU
    and serve nothing yet), then the least busy serving engines (the fewest requests to drain). Shared with
    the benchmark's virtual-time fleet (``bench.autoscaling.virtual``), so both retire the same engines."""
    return sorted(starting, key=lambda h: -h.started) + sorted(serving, key=lambda h: h.busy)


@dataclass(frozen=True, slots=True)
class Tick:
    """One row of the scaler's timeline (simulated seconds)."""

    t: float
    desired: int
    ready: int
    starting: int
    draining: int
    panic: bool
    in_flight: float
    queued: float
    #: the largest lag of a serving engine (simulated seconds; see ``EngineHandle.lag``)
    lag: float = 0.0


@dataclass(frozen=True, slots=True)
class ScalerStatus:
    replicas: int
    starting: int
    desired: int
    panic: bool


class LocalScaler:
    def __init__(
        self,
        policy: Policy,
        engines: Engines,
        endpoints: Endpoints,
        *,
        min_engines: int,
        max_engines: int,
        time_scale: float = 1.0,
        tick: float = 2.0,
        drain_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= min_engines <= max_engines:
            raise ValueError(f"need 0 <= min_engines <= max_engines, got {min_engines} and {max_engines}")
        if not tick > 0 or not time_scale > 0:
            raise ValueError("tick and time_scale must be > 0")
        self.policy = policy
        self.engines = engines
        self.endpoints = endpoints
        self.min_engines = min_engines
        self.max_engines = max_engines
        self.time_scale = time_scale
        self.tick = tick
        self.drain_timeout = drain_timeout
        self._clock = clock
        self._t0 = clock()
        #: wall time (Unix) of simulated time 0, to line the record up with other processes' clocks
        self.origin = time.time()
        self.handles: list[EngineHandle] = []
        self.timeline: list[Tick] = []
        self.desired = min_engines
        self.panic = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ time
    def now(self) -> float:
        """Simulated seconds since the scaler was created."""
        return (self._clock() - self._t0) / self.time_scale

    async def _sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(sim_seconds * self.time_scale)

    # ------------------------------------------------------------------ views
    def serving(self) -> list[EngineHandle]:
        return [h for h in self.handles if h.ready_at is not None and h.stopping_at is None]

    def starting(self) -> list[EngineHandle]:
        return [h for h in self.handles if h.ready_at is None and h.stopping_at is None]

    def draining(self) -> list[EngineHandle]:
        return [h for h in self.handles if h.stopping_at is not None and h.stopped is None]

    def status(self) -> ScalerStatus:
        return ScalerStatus(len(self.serving()), len(self.starting()), self.desired, self.panic)

    def observe(self) -> Observation:
        in_flight, queued, arrivals = self.endpoints.demand()
        serving = self.serving()
        return Observation(
            now=self.now(),
            ready=len(serving),
            starting=len(self.starting()),
            in_flight=in_flight,
            queued=queued,
            running=tuple(len(h.engine.scheduler.running) for h in serving),
            waiting=tuple(len(h.engine.scheduler.waiting) for h in serving),
            arrivals=arrivals,
        )

    # ------------------------------------------------------------------ the loop
    async def prestart(self, count: int) -> None:
        """Start ``count`` engines warm (no cold start) and publish them: a fleet that was already running."""
        for _ in range(count):
            handle = await self.engines.start(cold=False)
            handle.started = handle.ready_at = self.now()
            self.handles.append(handle)
        if count:
            self._publish()

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile every ``tick`` until ``stop`` is set; then stop every engine."""
        try:
            while not stop.is_set():
                await self.step()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.tick * self.time_scale)
        finally:
            await self.shutdown()

    async def step(self) -> None:
        """One reconcile: observe, decide, start or retire engines, record a timeline row."""
        obs = self.observe()
        decision = self.policy.decide(obs)
        self.desired = max(self.min_engines, min(self.max_engines, decision.desired))
        self.panic = decision.panic
        await self._reconcile()
        lag = max((h.lag for h in self.serving()), default=0.0)
        self.timeline.append(
            Tick(obs.now, self.desired, len(self.serving()), len(self.starting()), len(self.draining()),
                 decision.panic, obs.in_flight, obs.queued, lag)
        )  # fmt: skip

    async def _reconcile(self) -> None:
        provisioned = self.serving() + self.starting()
        missing = self.desired - len(provisioned)
        for _ in range(missing):
            handle = await self.engines.start()
            handle.started = self.now()
            self.handles.append(handle)
            self._spawn(self._await_ready(handle))
        if missing < 0:
            for handle in retire_order(self.starting(), self.serving())[:-missing]:
                self._retire(handle)

    def _retire(self, handle: EngineHandle) -> None:
        was_serving = handle.ready_at is not None
        handle.stopping_at = self.now()
        if was_serving:
            self._publish()
        self._spawn(self._drain_and_stop(handle))

    async def _await_ready(self, handle: EngineHandle) -> None:
        while not handle.ready:
            if handle.stopping_at is not None:
                return
            await self._sleep(min(0.5, self.tick))
        if handle.stopping_at is None:
            handle.ready_at = self.now()
            log.info("engine %s ready after %.1f s", handle.url, handle.ready_at - handle.started)
            self._publish()

    async def _drain_and_stop(self, handle: EngineHandle) -> None:
        deadline = self.now() + self.drain_timeout
        while handle.busy and self.now() < deadline:
            await self._sleep(min(0.5, self.tick))
        await self.engines.stop(handle)
        handle.stopped = self.now()

    def _publish(self) -> None:
        self.endpoints.publish([h.url for h in self.serving()])

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.endpoints.publish([])
        for handle in self.handles:
            if handle.stopped is None:
                await self.engines.stop(handle)
                handle.stopped = self.now()

    # ------------------------------------------------------------------ accounting
    def gpu_seconds(self, until: float | None = None) -> float:
        """Σ over engines of (stop − start): a replica is charged from its start, cold start included."""
        end = self.now() if until is None else until
        return sum((h.stopped if h.stopped is not None else end) - h.started for h in self.handles)

    def record(self) -> bytes:
        """The timeline and every engine's life as JSON (simulated seconds since ``origin`` wall time)."""
        return json.dumps({
            "origin": self.origin, "time_scale": self.time_scale,
            "engines": [{"url": h.url, "started": h.started, "ready": h.ready_at, "stopping": h.stopping_at,
                         "stopped": h.stopped} for h in self.handles],
            "timeline": [asdict(t) for t in self.timeline],
        }).encode()  # fmt: skip
