"""The faults: real processes killed, frozen and started again, while the load runs.

* an engine **killed** is SIGKILLed (no goodbye, as a crashed pod) and started again on the same port after
  ``kill_down`` seconds, cold; then, once it is healthy and ``kill_gap`` seconds later, the next engine dies —
  one engine down at a time, round the fleet, until the phase ends;
* an engine **failing** (the one the gateway sent the most requests in the second before) answers a share of
  requests 500 and cuts a share of its streams after the first chunk (engine_sim's ``/sim/faults``) while its
  ``/health`` stays 200 — a sick GPU, not a dead pod: the health check cannot see it, only the circuit breaker
  can, so this phase exercises open → half-open → trial → closed; when it answers normally again, a few
  clients leave before their first byte just as its breaker goes half-open (an abandoned trial once kept a
  healthy engine out for ever);
* an engine **hung** is SIGSTOPped for ``hang_seconds`` (its sockets stay open and accept connections, nothing
  answers: a wedged process, the hard case for a proxy) and then SIGCONTed;
* **Redis killed** is SIGKILLed and started again, empty, on its port after ``redis_down`` seconds; **Redis
  frozen** is SIGSTOPped as long and then SIGCONTed.

Each engine is its own ``flotilla sim`` process (:class:`EngineSet`), so one can die alone. Whatever a fault
did is undone in ``finally``, so an interrupted run leaves no stopped process behind.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field, replace

import httpx

from bench.fleet import FleetSpec
from bench.harness.localhost import RedisServer
from bench.procs import Proc, free_port, wait_http
from bench.reliability.gateway_state import GatewayState, read_state
from bench.reliability.spec import Phase, ReliabilitySpec

#: seconds reserved for an engine's cold start when planning the last kill of a phase
RESTART_MARGIN = 3.0
#: after a failing engine recovers: how long to wait for its breaker to go half-open (cooldown 5 s), and how many
#: clients then leave before their first byte
TRIAL_WAIT = 7.0
TRIAL_LEAVERS = 4


class EngineSet:
    """N single-engine ``flotilla sim`` processes on fixed loopback ports."""

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        self.ports = [free_port() for _ in range(spec.engines)]
        self.procs: list[Proc | None] = [None] * spec.engines
        one = replace(spec, engines=1)
        self._argv = [one.argv(port, None) for port in self.ports]

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    async def start(self, i: int, *, within: float = 60.0) -> None:
        old = self.procs[i]
        if old is not None:
            old.stop()
            old.cleanup()
        proc = self.procs[i] = Proc(f"sim-{i}", self._argv[i])
        await wait_http(proc, self.urls[i] + "/health", within=within)

    async def start_all(self) -> None:
        try:
            await asyncio.gather(*(self.start(i) for i in range(len(self.ports))))
        except BaseException:
            self.stop()
            raise

    def signal(self, i: int, sig: int) -> None:
        proc = self.procs[i]
        if proc is not None:
            proc.signal(sig)

    def alive(self, i: int) -> bool:
        proc = self.procs[i]
        return proc is not None and proc.alive()

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None:
                proc.stop()
                proc.cleanup()
        self.procs = [None] * len(self.ports)


@dataclass
class FaultLog:
    """What was done when (seconds since the load started), for the report."""

    start: float = field(default_factory=time.perf_counter)
    events: list[tuple[float, str]] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.events.append((round(time.perf_counter() - self.start, 2), text))


class Faults:
    def __init__(
        self,
        spec: ReliabilitySpec,
        engines: EngineSet,
        redis: RedisServer,
        log: FaultLog,
        gateway_url: str | None = None,
    ) -> None:
        self.spec = spec
        self.gateway_url = gateway_url
        self.engines = engines
        self.redis = redis
        self.log = log
        self._next_victim = 0

    async def run(self, phase: Phase) -> None:
        """Inject ``phase``'s fault for (at most) its duration; every change is undone before returning."""
        if phase.fault == "none":
            return
        routed_before = await self._routed() if phase.fault == "engine-errors" else {}
        await asyncio.sleep(self.spec.fault_delay)
        deadline = time.perf_counter() + phase.seconds - self.spec.fault_delay
        if phase.fault == "engine-kill":
            await self._kill_engines(deadline)
        elif phase.fault == "engine-hang":
            await self._hang_engine()
        elif phase.fault == "engine-errors":
            await self._failing_engine(await self._busiest_since(routed_before))
        elif phase.fault in ("redis-kill", "redis-freeze"):
            await self._redis(phase.fault == "redis-kill")
        else:
            raise ValueError(f"unknown fault {phase.fault!r}")

    async def _kill_engines(self, deadline: float) -> None:
        n = len(self.engines.ports)
        # stop killing early enough that the last victim is back (a cold start takes 1–3 s on a busy machine)
        # before the phase ends: phases must not overlap, or their outcomes could not be told apart
        while time.perf_counter() + self.spec.kill_down + RESTART_MARGIN < deadline:
            i = self._next_victim % n
            self._next_victim += 1
            self.engines.signal(i, signal.SIGKILL)
            self.log.note(f"engine {i} killed (SIGKILL)")
            try:
                await asyncio.sleep(self.spec.kill_down)
            finally:
                await self.engines.start(i)
                self.log.note(f"engine {i} restarted and healthy")
            await asyncio.sleep(min(self.spec.kill_gap, max(0.0, deadline - time.perf_counter())))

    async def _hang_engine(self) -> None:
        i = self._next_victim % len(self.engines.ports)
        self.engines.signal(i, signal.SIGSTOP)
        self.log.note(f"engine {i} hung (SIGSTOP)")
        try:
            await asyncio.sleep(self.spec.hang_seconds)
        finally:
            self.engines.signal(i, signal.SIGCONT)
            self.log.note(f"engine {i} resumed (SIGCONT)")

    async def _routed(self) -> dict[str, float]:
        if self.gateway_url is None:
            return {}
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
            return (await read_state(client, self.gateway_url)).routed

    async def _busiest_since(self, before: dict[str, float]) -> int:
        """The engine the gateway sent the most requests since ``before`` (the next in turn when it routed none).

        A failing engine is only seen through the requests routed to it, and the router may rightly send none
        for a while: after a hang the gateway forgets what the engine had cached (as for a restarted pod), so
        under a light load of shared prompts the warm engines keep winning and the cold one stays idle.
        """
        after = await self._routed()
        ports = [url.removeprefix("http://") for url in self.engines.urls]
        sent = [after.get(key, 0.0) - before.get(key, 0.0) for key in ports]
        if max(sent, default=0.0) <= 0:
            return self._next_victim % len(ports)
        return max(range(len(ports)), key=sent.__getitem__)

    async def _failing_engine(self, i: int) -> None:
        url = self.engines.urls[i] + "/sim/faults"
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
            bad = {"failure_rate": self.spec.error_rate, "die_mid_stream_rate": self.spec.cut_stream_rate}
            (await client.post(url, json=bad)).raise_for_status()
            self.log.note(
                f"engine {i} failing: {self.spec.error_rate:.0%} answered 500, "
                f"{self.spec.cut_stream_rate:.0%} of streams cut (health still 200)"
            )
            try:
                await asyncio.sleep(self.spec.errors_seconds)
                await self._until_open(client, i, url)
            finally:
                (
                    await client.post(url, json={"failure_rate": 0.0, "die_mid_stream_rate": 0.0})
                ).raise_for_status()
                self.log.note(f"engine {i} answers normally again")
            await self._leave_during_trial(client, i)

    def _breaker(self, state: GatewayState, i: int) -> float | None:
        key = self.engines.urls[i].removeprefix("http://")
        return next((e.breaker_state for e in state.endpoints if e.endpoint == key), None)

    async def _until_open(self, client: httpx.AsyncClient, i: int, faults_url: str) -> None:
        """Fail every request of engine ``i`` until the gateway reports its breaker open (at most TRIAL_WAIT s),
        so that its recovery always goes through a half-open trial."""
        if self.gateway_url is None:
            return
        (await client.post(faults_url, json={"failure_rate": 1.0})).raise_for_status()
        deadline = time.perf_counter() + TRIAL_WAIT
        while time.perf_counter() < deadline:
            if self._breaker(await read_state(client, self.gateway_url), i) == 2:
                self.log.note(f"engine {i}'s breaker is open")
                return
            await asyncio.sleep(0.05)
        self.log.note(f"engine {i}'s breaker did not open within {TRIAL_WAIT:g} s")

    async def _leave_during_trial(self, client: httpx.AsyncClient, i: int) -> None:
        """Clients that leave before the first byte while engine ``i``'s breaker is half-open.

        The engine is healthy again, so the breaker's one trial request would close it — unless the trial's
        client leaves first. A gateway that kept such an abandoned trial "in flight" refused the healthy engine
        for ever (issue 11); under the random mix this needs a leaving client to be the trial by chance, so here
        a few are sent exactly when the gateway reports the breaker half-open.
        """
        if self.gateway_url is None:
            return
        deadline = time.perf_counter() + TRIAL_WAIT
        while time.perf_counter() < deadline:
            breaker = self._breaker(await read_state(client, self.gateway_url), i)
            if breaker == 0:
                self.log.note(f"engine {i}'s breaker closed before a half-open trial could be abandoned")
                return
            if breaker == 1:
                body = {"model": self.engines.spec.model, "messages": [{"role": "user", "content": "wait"}],
                        "max_tokens": 64, "ignore_eos": True}  # fmt: skip
                url = self.gateway_url + "/v1/chat/completions"
                sends = [asyncio.ensure_future(client.post(url, json=body)) for _ in range(TRIAL_LEAVERS)]
                await asyncio.sleep(0.05)  # long before 64 tokens: no byte has come back
                for send in sends:
                    send.cancel()
                await asyncio.gather(*sends, return_exceptions=True)
                self.log.note(f"{TRIAL_LEAVERS} clients left during engine {i}'s half-open trial")
                return
            await asyncio.sleep(0.05)
        self.log.note(f"engine {i}'s breaker never went half-open within {TRIAL_WAIT:g} s")

    async def _redis(self, kill: bool) -> None:
        if kill:
            self.redis.stop()  # SIGKILL
        else:
            self._redis_signal(signal.SIGSTOP)
        self.log.note("redis killed (SIGKILL)" if kill else "redis frozen (SIGSTOP)")
        try:
            await asyncio.sleep(self.spec.redis_down)
        finally:
            if kill:
                await asyncio.to_thread(self.redis.start)  # same port; waits for it to listen
                self.log.note("redis restarted (empty)")
            else:
                self._redis_signal(signal.SIGCONT)
                self.log.note("redis resumed (SIGCONT)")

    def _redis_signal(self, sig: int) -> None:
        if self.redis.proc is not None and self.redis.proc.poll() is None:
            self.redis.proc.send_signal(sig)
