"""Run the reliability suite: real Redis, one process per simulated engine, ``flotilla gateway`` sharing its
prefix index and rate limits through Redis, and an open-loop load of mixed client behaviours while faults are
injected phase by phase.

Order: start Redis, the engines and the gateway → send the Poisson load, phase by phase, each phase's fault
starting ``fault_delay`` s in → wait for every request (each bounded by ``hung_after``) → wait until every
engine answers ``/health`` → poll the gateway's ``/metrics`` until every counter is back to 0, every breaker
closed and every endpoint healthy (bounded by ``settle_timeout``) → judge the acceptance checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from bench import contenders
from bench.arrivals import poisson_schedule
from bench.fleet import FleetSpec
from bench.harness.localhost import RedisServer
from bench.procs import StartError, wait_http
from bench.progress import Progress
from bench.reliability.behaviours import DISCONNECTING, OUTCOMES, Behaviours, Outcome, pick
from bench.reliability.faults import EngineSet, FaultLog, Faults
from bench.reliability.gateway_state import GatewayState, read_state, wait_settled
from bench.reliability.spec import Phase, ReliabilitySpec
from bench.workloads import BenchRequest, build

MODEL = FleetSpec().model
STREAMING = ("stream", "slow-reader")
SAMPLE_EVERY = 0.5


@dataclass
class Tally:
    """Outcomes of the requests sent in one phase (or in all of them)."""

    name: str
    fault: str = ""
    sent: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    nonstream_sent: int = 0
    nonstream_ok: int = 0
    stream_sent: int = 0
    stream_ok: int = 0
    #: the longest a request of this tally took to end (seconds)
    slowest: float = 0.0
    #: the gateway's /metrics, sampled every SAMPLE_EVERY s while the phase ran: the most requests in flight,
    #: and how long some breaker was not closed / some endpoint out of rotation (shows the faults were felt)
    max_in_flight: float = 0.0
    breaker_seconds: float = 0.0
    unhealthy_seconds: float = 0.0

    def add(self, o: Outcome) -> None:
        self.sent += 1
        self.slowest = max(self.slowest, o.seconds)
        self.outcomes[o.outcome] = self.outcomes.get(o.outcome, 0) + 1
        if o.behaviour == "nonstream":
            self.nonstream_sent += 1
            self.nonstream_ok += o.outcome == "ok"
        elif o.behaviour in STREAMING:
            self.stream_sent += 1
            self.stream_ok += o.outcome == "ok"

    def count(self, outcome: str) -> int:
        return self.outcomes.get(outcome, 0)

    @property
    def nonstream_success(self) -> float:
        return self.nonstream_ok / self.nonstream_sent if self.nonstream_sent else float("nan")


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class ReliabilityResult:
    suite: str
    command: str
    setup: dict[str, Any]
    phases: list[Tally]
    behaviours: list[Tally]
    total: Tally
    faults: list[tuple[float, str]]
    drained: GatewayState
    final: GatewayState
    settle_seconds: float | None
    #: outcome -> [(detail, count)], the most frequent details first
    details: dict[str, list[tuple[str, int]]]
    checks: list[Check]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def requests_for(spec: ReliabilitySpec) -> tuple[list[BenchRequest], list[float]]:
    """The load: shared-prefix chat prompts (the prefix index has work to do), Poisson offsets within the run."""
    expected = int(spec.rate * spec.seconds)
    offsets = [t for t in poisson_schedule(expected * 2 + 10, spec.rate, seed=spec.seed) if t < spec.seconds]
    pool = build("gsp", seed=spec.seed, params={"groups": 8, "prompts_per_group": 32, "system_len": 384,
                                                 "question_len": 48, "output_len": spec.max_tokens}).requests  # fmt: skip
    rng = random.Random(spec.seed + 1)
    out = [
        replace(pool[i % len(pool)], index=i, max_tokens=rng.randint(spec.min_tokens, spec.max_tokens))
        for i in range(len(offsets))
    ]
    return out, offsets


def phase_at(phases: tuple[Phase, ...], t: float) -> Phase:
    end = 0.0
    for phase in phases:
        end += phase.seconds
        if t < end:
            return phase
    return phases[-1]


async def watch(
    client: httpx.AsyncClient, gateway_url: str, spec: ReliabilitySpec, start: float, seen: dict[str, Tally]
) -> None:
    """Sample the gateway's gauges until cancelled, into ``seen[phase name]``."""
    while True:
        t = time.perf_counter() - start
        tally = seen.setdefault(phase_at(spec.phases, t).name, Tally(phase_at(spec.phases, t).name))
        try:
            state = await read_state(client, gateway_url)
        except httpx.HTTPError:
            state = None
        if state is not None:
            tally.max_in_flight = max(tally.max_in_flight, sum(e.in_flight for e in state.endpoints))
            tally.breaker_seconds += SAMPLE_EVERY * any(e.breaker_state != 0 for e in state.endpoints)
            tally.unhealthy_seconds += SAMPLE_EVERY * any(e.healthy != 1 for e in state.endpoints)
        await asyncio.sleep(max(0.0, start + t + SAMPLE_EVERY - time.perf_counter()))


async def drive(
    spec: ReliabilitySpec,
    behaviours: Behaviours,
    faults: Faults,
    log: FaultLog,
    progress: Progress,
    seen: dict[str, Tally],
) -> list[Outcome]:
    """Send the load and inject the faults; ``seen`` collects what the gateway reported meanwhile."""
    requests, offsets = requests_for(spec)
    rng = random.Random(spec.seed + 2)
    plan = [
        (r, t, pick(spec.mix, rng), random.Random(rng.random()))
        for r, t in zip(requests, offsets, strict=True)
    ]
    tasks: list[asyncio.Task[Outcome]] = []
    fault_tasks: list[asyncio.Task[None]] = []
    log.start = start = time.perf_counter()
    gateway_url = behaviours.url.removesuffix("/v1/chat/completions")
    watcher = asyncio.create_task(watch(behaviours.client, gateway_url, spec, start, seen))
    current: Phase | None = None
    for request, offset, behaviour, request_rng in plan:
        delay = start + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        phase = phase_at(spec.phases, offset)
        if phase is not current:
            if current is not None:
                progress.finish_step()
            current = phase
            progress.step(f"{phase.name} ({phase.fault})", 0)
            log.note(f"phase '{phase.name}' starts")
            fault_tasks.append(asyncio.create_task(faults.run(phase)))
        tasks.append(asyncio.create_task(behaviours.run(behaviour, request, phase.name, request_rng)))
    # the last phase runs its full length even if its last arrival came early
    await asyncio.sleep(max(0.0, start + spec.seconds - time.perf_counter()))
    if current is not None:
        progress.finish_step()
    log.note("load ends; waiting for the requests still running")
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await asyncio.gather(*fault_tasks)
    _done, pending = await asyncio.wait(tasks, timeout=spec.hung_after + 10) if tasks else (set(), set())
    outcomes = []
    for task, (request, _, behaviour, _) in zip(tasks, plan, strict=True):
        if task in pending:  # the per-request bound should have ended it: count it, never wait for ever
            task.cancel()
            name = phase_at(spec.phases, offsets[request.index]).name
            outcomes.append(Outcome(request.index, name, behaviour, "hung", detail="never ended"))
        else:
            outcomes.append(task.result())
    log.note("every request ended")
    return outcomes


def tallies(
    spec: ReliabilitySpec, outcomes: list[Outcome], seen: dict[str, Tally] | None = None
) -> tuple[list[Tally], list[Tally], Tally]:
    phases = {p.name: Tally(p.name, p.fault) for p in spec.phases}
    for name, observed in (seen or {}).items():
        phase = phases[name]
        phase.max_in_flight = observed.max_in_flight
        phase.breaker_seconds = observed.breaker_seconds
        phase.unhealthy_seconds = observed.unhealthy_seconds
    kinds = {b: Tally(b) for b in spec.mix}
    total = Tally("total")
    for o in outcomes:
        phases[o.phase].add(o)
        kinds[o.behaviour].add(o)
        total.add(o)
    return list(phases.values()), list(kinds.values()), total


def judge(
    spec: ReliabilitySpec, total: Tally, kinds: list[Tally], final: GatewayState, settle: float | None
) -> list[Check]:
    leaked = [e.endpoint for e in final.endpoints if not e.drained]
    stuck = [f"{e.endpoint}: {e.breaker}, healthy={e.healthy:g}" for e in final.endpoints if not e.recovered]
    bad = next((k for k in kinds if k.name == "bad-request"), None)
    bad_refused = bad.count("error") if bad is not None else 0
    bad_sent = bad.sent if bad is not None else 0
    return [
        Check("no request hung", total.count("hung") == 0, f"{total.count('hung')} hung"),
        Check("no silent truncation", total.count("truncated") == 0, f"{total.count('truncated')} truncated"),
        Check(
            "every failure stated clearly", total.count("unclear") == 0, f"{total.count('unclear')} unclear"
        ),
        Check(
            "in-flight counters back to 0",
            not leaked and final.model_in_flight == 0 and final.model_queued == 0,
            f"endpoints with load left: {leaked or 'none'}; model in flight {final.model_in_flight:g}, "
            f"held {final.model_queued:g}",
        ),
        Check(
            "breakers closed, endpoints healthy",
            bool(final.endpoints) and not stuck,
            "all closed and healthy" + (f" after {settle:.1f} s" if settle is not None else "")
            if not stuck
            else "; ".join(stuck),
        ),
        Check(
            "bad requests refused with a clear error",
            bad_refused == bad_sent,
            f"{bad_refused}/{bad_sent} refused with an OpenAI error body",
        ),
        Check(
            f"non-streaming success ≥ {spec.min_nonstream_success:.1%}",
            total.nonstream_success >= spec.min_nonstream_success,
            f"{total.nonstream_ok}/{total.nonstream_sent} = {total.nonstream_success:.2%}",
        ),
    ]


def frequent_details(outcomes: list[Outcome], top: int = 5) -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = {}
    for kind in OUTCOMES:
        if kind in ("ok", "disconnected"):
            continue
        counts = Counter(
            f"{o.behaviour}: {o.detail}"
            for o in outcomes
            if o.outcome == kind
            and not (o.behaviour == "bad-request" and kind == "error")  # refused as meant
        )
        if counts:
            out[kind] = counts.most_common(top)
    return out


def gateway_log_errors(log_text: str) -> list[str]:
    return [line for line in log_text.splitlines() if " ERROR " in line or "Traceback" in line]


async def run_reliability(
    spec: ReliabilitySpec, *, command: str, progress: Progress, gateway_log: Path | None = None
) -> ReliabilityResult:
    """Run ``spec``; the gateway's log is copied to ``gateway_log`` when given."""
    fleet = FleetSpec(engines=spec.engines, preset=spec.preset, time_scale=spec.time_scale, seed=spec.seed)
    try:
        redis = RedisServer()
    except RuntimeError as exc:  # no redis-server binary
        raise StartError(str(exc)) from exc
    engines = EngineSet(fleet)
    gateway = contenders.flotilla("default")
    gateway.env.update(spec.gateway_env)
    gateway.env["FLOTILLA_GATEWAY_REDIS_URL"] = redis.url
    log = FaultLog()
    seen: dict[str, Tally] = {}
    try:
        progress.message(f"starting redis, {spec.engines} engines ({spec.preset}) and the gateway")
        redis.start()
        await engines.start_all()
        await gateway.start(engines.urls, model=MODEL, kv_events=[])
        gateway_url = gateway.base_url.removesuffix("/v1")
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
        timeout = httpx.Timeout(spec.hung_after + 5, connect=10.0)
        async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
            behaviours = Behaviours(
                client,
                gateway.base_url,
                model=MODEL,
                hung_after=spec.hung_after,
                slow_pause=spec.slow_read_pause,
            )
            outcomes = await drive(
                spec, behaviours, Faults(spec, engines, redis, log, gateway_url), log, progress, seen
            )
            for url in engines.urls:  # the faults are over: every engine must be back
                await wait_http(None, url + "/health", within=30.0)
            progress.message("load drained; waiting for the gateway's counters and breakers to settle")
            drained, final, settle = await wait_settled(client, gateway_url, within=spec.settle_timeout)
        log.note("gateway settled" if settle is not None else "gateway did not settle")
        log_text = gateway.proc.log.read_text(errors="replace") if gateway.proc else ""
        errors = gateway_log_errors(log_text)
    finally:
        if gateway_log is not None and gateway.proc is not None:
            gateway_log.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(gateway.proc.log, gateway_log)
        gateway.stop()
        engines.stop()
        redis.close()  # SIGKILL: also ends a frozen one
    phases, kinds, total = tallies(spec, outcomes, seen)
    notes = [f"gateway log: {len(errors)} ERROR lines" + (f", first: {errors[0][:300]}" if errors else "")]
    disconnecting = sum(k.sent for k in kinds if k.name in DISCONNECTING)
    notes.append(f"{disconnecting} requests were sent by clients that disconnect on purpose")
    return ReliabilityResult(
        suite=spec.name,
        command=command,
        setup={
            "engines": spec.engines,
            "preset": spec.preset,
            "time_scale": spec.time_scale,
            "seed": spec.seed,
            "rate": spec.rate,
            "seconds": spec.seconds,
            "mix": spec.mix,
            "tokens": [spec.min_tokens, spec.max_tokens],
            "kill_down": spec.kill_down,
            "hang_seconds": spec.hang_seconds,
            "redis_down": spec.redis_down,
            "hung_after": spec.hung_after,
            "gateway_env": spec.gateway_env,
        },
        phases=phases,
        behaviours=kinds,
        total=total,
        faults=log.events,
        drained=drained,
        final=final,
        settle_seconds=settle,
        details=frequent_details(outcomes),
        checks=judge(spec, total, kinds, final, settle),
        notes=notes,
    )
