"""The autoscaling suite in virtual time: one process, no wall clock, deterministic per seed.

The wall-clock mode (``--clock wall``: the gateway, the local scaler and served engines, time-scaled) is the
integration check, but on a small shared machine its simulated engines fall behind wall time and every
contender — the fixed fleet and the oracle included — loses SLO minutes to the apparatus. Here the same parts
run as a discrete-event simulation in simulated seconds:

* **engines** — :class:`engine_sim.offline.EngineCore`: the served engine's ``Scheduler``, ``BlockPool`` and
  ``LatencyModel``, advanced step by step. An engine started cold serves from ``started + startup_delay``
  exactly (the preset's cold start); one that is stopped loses whatever it still holds (a failed request);
* **the gateway** — dispatches each request to the serving engine with the fewest requests in flight (its
  load-aware choice; the lowest index on a tie), and while no engine serves the model holds requests FIFO,
  bounded as the gateway bounds them (``hold_max`` requests, ``hold_timeout`` seconds, then a failure);
* **the scaler** — the local scaler's loop (``flotilla.cli.local_scaler``) on its ``tick``: it observes what
  the policies read (gateway demand = held + in flight, the arrivals counter, running/waiting per serving
  engine), asks the contender's policy — the *same* policy objects the wall-clock mode plugs into the local
  scaler (``bench.autoscaling.sut.build_policy``: Flotilla's ``autoscaler`` KPA/APA, the HPA-like baseline,
  the oracle's schedule) — and starts engines or retires them in the local scaler's order
  (:func:`~flotilla.cli.local_scaler.retire_order`): out of the gateway at once, stopped when drained or after
  ``drain_timeout``, polled every ``poll`` seconds as the local scaler does.

Nothing here reads the clock, so host load cannot distort a run; a run of a 7-minute trace takes seconds.
TTFT is the engine's first token minus the request's arrival at the gateway, so time held is included.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from bench.autoscaling.metrics import EngineSpan, Served
from engine_sim.config import EngineConfig
from engine_sim.offline import Arrival, EngineCore
from engine_sim.request import Request
from flotilla.cli.local_scaler import Observation, Policy, retire_order

# event kinds, in the order they are handled at equal times: an engine becoming ready serves the requests of
# that instant; the scaler then sees them; polls (drains, hold timeouts) come last
_READY, _ARRIVAL, _TICK, _POLL = 0, 1, 2, 3


@dataclass(eq=False)
class SimEngine:
    core: EngineCore
    started: float
    #: when the cold start ends (the engine joins the gateway then, unless retired first)
    ready_by: float
    ready: float | None = None
    stopping: float | None = None
    stopped: float | None = None
    #: (request, arrival index) dispatched here and not known to be finished
    dispatched: list[tuple[Request, int]] = field(default_factory=list)

    @property
    def busy(self) -> int:
        return self.core.busy

    def in_flight(self, t: float) -> int:
        """Requests the gateway sent here that have not finished by ``t``."""
        self.dispatched = [
            (r, i) for r, i in self.dispatched if r.timing.finished is None or r.timing.finished > t
        ]
        return len(self.dispatched)

    def span(self) -> EngineSpan:
        return EngineSpan(self.started, self.ready, self.stopped, self.stopping)


@dataclass
class FleetRun:
    served: list[Served]
    spans: list[EngineSpan]
    #: (time, desired, ready, starting) per scaler tick
    timeline: list[tuple[float, int, int, int]]


class Fleet:
    """A fleet of simulated engines behind a modelled gateway, scaled by ``policy`` (see the module docstring)."""

    def __init__(
        self, config: EngineConfig, policy: Policy, *, min_engines: int, max_engines: int, startup_delay: float,
        prompt_tokens: int, output_tokens: int, seed: int = 0, tick: float = 2.0, poll: float = 0.5,
        drain_timeout: float = 30.0, hold_timeout: float | None = None, hold_max: int = 256,
    ) -> None:  # fmt: skip
        if not 0 <= min_engines <= max_engines:
            raise ValueError(f"need 0 <= min_engines <= max_engines, got {min_engines} and {max_engines}")
        self.config = config
        self.policy = policy
        self.min_engines, self.max_engines = min_engines, max_engines
        self.startup_delay = startup_delay
        self.prompt_tokens, self.output_tokens = prompt_tokens, output_tokens
        self.seed = seed
        self.tick, self.poll, self.drain_timeout = tick, poll, drain_timeout
        #: ``flotilla up --autoscale`` holds for two cold starts (at least 30 s)
        self.hold_timeout = max(30.0, 2 * startup_delay) if hold_timeout is None else hold_timeout
        self.hold_max = hold_max
        self.engines: list[SimEngine] = []
        self.held: list[tuple[float, int]] = []  # (arrival time, arrival index), FIFO
        self.arrived = 0
        self.timeline: list[tuple[float, int, int, int]] = []
        self.desired = 0
        self._events: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        self._requests: dict[int, Request] = {}
        self._failed: set[int] = set()

    # ------------------------------------------------------------------ engines
    def serving(self) -> list[SimEngine]:
        return [e for e in self.engines if e.ready is not None and e.stopping is None]

    def starting(self) -> list[SimEngine]:
        return [e for e in self.engines if e.ready is None and e.stopping is None]

    def start(self, t: float, *, cold: bool = True) -> SimEngine:
        core = EngineCore(self.config, seed=self.seed * 1_000 + len(self.engines), start=t)
        engine = SimEngine(core, started=t, ready_by=t + (self.startup_delay if cold else 0.0))
        self.engines.append(engine)
        if cold:
            self._push(engine.ready_by, _READY, engine)
        else:
            engine.ready = t
        return engine

    def _retire(self, engine: SimEngine, t: float) -> None:
        engine.stopping = t
        if engine.ready is None or engine.busy == 0:
            self._stop(engine, t)

    def _stop(self, engine: SimEngine, t: float) -> None:
        for req in engine.core.drop_all():
            self._failed.add(int(req.request_id))
        engine.stopped = t

    # ------------------------------------------------------------------ gateway
    def _dispatch(self, index: int, t: float) -> None:
        serving = self.serving()
        engine = min(serving, key=lambda e: e.in_flight(t))  # fewest in flight; the first on a tie
        req = engine.core.submit(Arrival(t, self.prompt_tokens, self.output_tokens), index)
        engine.dispatched.append((req, index))
        self._requests[index] = req

    def _arrive(self, index: int, t: float) -> None:
        self.arrived += 1
        if self.serving():
            self._dispatch(index, t)
        elif len(self.held) < self.hold_max:
            self.held.append((t, index))
        else:
            self._failed.add(index)  # the holding queue is full: 503

    def _release_held(self, t: float) -> None:
        held, self.held = self.held, []
        for _, index in held:
            self._dispatch(index, t)

    # ------------------------------------------------------------------ scaler
    def _observe(self, t: float) -> Observation:
        serving = self.serving()
        return Observation(
            now=t, ready=len(serving), starting=len(self.starting()),
            in_flight=float(sum(e.in_flight(t) for e in self.engines if e.stopped is None)),
            queued=float(len(self.held)), running=tuple(e.core.running for e in serving),
            waiting=tuple(e.core.waiting for e in serving), arrivals=float(self.arrived),
        )  # fmt: skip

    def _scale(self, t: float, record: bool) -> None:
        obs = self._observe(t)
        decision = self.policy.decide(obs)
        self.desired = max(self.min_engines, min(self.max_engines, decision.desired))
        provisioned = len(self.serving()) + len(self.starting())
        for _ in range(self.desired - provisioned):
            self.start(t)
        if self.desired < provisioned:
            for engine in retire_order(self.starting(), self.serving())[: provisioned - self.desired]:
                self._retire(engine, t)
        if record:
            self.timeline.append((t, self.desired, len(self.serving()), len(self.starting())))

    # ------------------------------------------------------------------ the loop
    def _push(self, t: float, kind: int, payload: Any) -> None:
        heapq.heappush(self._events, (t, kind, next(self._seq), payload))

    def run(
        self, arrivals: list[float], duration: float, *, initial: int, horizon: float = 900.0
    ) -> FleetRun:
        """Replay ``arrivals`` (simulated seconds, sorted) over a trace of ``duration`` seconds, starting with
        ``initial`` warm engines; the scaler keeps working after the trace until every request is answered
        (at most ``horizon`` seconds more). GPU time is the caller's to cut at ``duration``."""
        for _ in range(initial):
            self.start(0.0, cold=False)
        self.desired = initial
        for i, at in enumerate(arrivals):
            self._push(at, _ARRIVAL, i)
        self._push(0.0, _TICK, None)
        self._push(0.0, _POLL, None)
        end = duration + horizon
        while self._events:
            t, kind, _, payload = heapq.heappop(self._events)
            if t > end:
                break
            for engine in self.engines:
                if engine.stopped is None:
                    engine.core.advance(t)
            if kind == _READY:
                if payload.stopping is None:
                    payload.ready = t
                    self._release_held(t)
            elif kind == _ARRIVAL:
                self._arrive(payload, t)
            elif kind == _TICK:
                self._scale(t, record=t <= duration)
                if t < duration or not self._settled(len(arrivals)):
                    self._push(t + self.tick, _TICK, None)
            else:
                self._housekeep(t)
                if t < duration or not self._settled(len(arrivals)):
                    self._push(t + self.poll, _POLL, None)
        return FleetRun(self._served(arrivals), [e.span() for e in self.engines], self.timeline)

    def _housekeep(self, t: float) -> None:
        for engine in self.engines:
            draining = engine.stopping is not None and engine.stopped is None
            if draining and (engine.busy == 0 or t >= (engine.stopping or t) + self.drain_timeout):
                self._stop(engine, t)
        while self.held and t - self.held[0][0] >= self.hold_timeout:
            self._failed.add(self.held.pop(0)[1])  # held too long: 503 with Retry-After

    def _settled(self, total: int) -> bool:
        """Every request answered (a first token, or failed)."""
        if self.held:
            return False
        return all(
            i in self._failed or (i in self._requests and self._requests[i].timing.first_token is not None)
            for i in range(total)
        )

    def _served(self, arrivals: list[float]) -> list[Served]:
        out = []
        for i, at in enumerate(arrivals):
            req = self._requests.get(i)
            if i in self._failed or req is None or req.timing.first_token is None:
                out.append(Served(at, math.inf))
                continue
            done = req.timing.finished
            out.append(Served(at, req.timing.first_token - at, math.inf if done is None else done - at))
        return out
