"""``flotilla bench --lora``: where to put LoRA adapters, measured on one trace for four placements.

Workload: ``adapters`` adapters with Zipf(``zipf_s``) popularity plus base-model traffic (``base_share`` of the
requests), Poisson arrivals, on ``engines`` simulated engines with ``slots`` GPU LoRA slots (vLLM
``--max-loras``: distinct adapters per batch) and a CPU cache of ``cpu_slots`` adapters (``--max-cpu-loras``;
beyond it an adapter is re-read from disk when used: a swap). The placements' capacity is the GPU slots, as the
operator's (``maxLoras``). Each adapter has a shared system prompt, so prefix caching works as it does for real
adapters. Contenders, all behind a fresh Flotilla gateway process:

* ``flotilla`` — ``lora_manager.place`` with the adapters' popularity as ``weight`` and the replicas that would
  keep each copy under half an engine's share of the adapter traffic (``flotilla_replicas``; what an operator
  sets in ``spec.replicas`` / ``spec.placement.weight`` from observed traffic). Placement gives every adapter
  its first replica before any gets a second, so with as many adapters as slots the extra replicas stay
  unplaced (the controller would report ``InsufficientCapacity``); density-aware, so hot adapters do not share
  an engine; the gateway routes with its default profile (``ttft-cost`` + ``lora-affinity``);
* ``flotilla-placement`` — the same placement with ``least-request`` routing (separates placement from routing);
* ``one-replica`` — one replica per adapter on the engine with the fewest adapters (AIBrix's default); the
  gateway routes ``least-request``;
* ``everywhere`` — every adapter loaded on every engine, vLLM's own LRU swapping between its CPU cache and the
  GPU slots; ``least-request``;
* ``random`` — one replica per adapter on a random engine with a free slot (seeded); ``least-request``.

Per seed a fresh trace, fresh engines per contender and the contenders in shuffled order. Reported: TTFT
p50/p90, adapter swaps per minute (the engines' ``flotilla_sim_lora_swaps_total``: a step had to load an
adapter into the CPU cache first — vLLM's LRU at work), goodput (requests meeting the SLO per second) and the
ratio of each to ``flotilla`` on the same trace, as mean ± 95 % interval over seeds (Student t), and the
engines' worst lag behind simulated time: a run whose engines lagged was CPU-starved (the machine is shared),
and its latencies say more about the machine than about the placement.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import httpx

from bench import contenders
from bench.client import run_open_loop
from bench.fleet import Fleet, FleetSpec, parse_prometheus
from bench.procs import BenchError
from bench.results import SLO, counters_from_samples, summarise
from bench.workloads import BenchRequest
from flotilla.tokenizer import synthetic_ids, synthetic_text
from lora_manager import Adapter, EngineClient, Pod, place

BASE = "meta-llama/Llama-3.1-8B-Instruct"
SWAPS = "flotilla_sim_lora_swaps_total"
LOADS = "flotilla_sim_lora_loads_total"
LAG = "flotilla_sim_lag_max_seconds"
#: two-sided 95 % Student t quantiles by degrees of freedom
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


@dataclass(frozen=True)
class LoraBenchSpec:
    engines: int = 4
    #: GPU slots (vLLM --max-loras): distinct adapters one batch can run
    slots: int = 4
    #: CPU cache (vLLM --max-cpu-loras, default = --max-loras): beyond it adapters are re-read from disk (swaps)
    cpu_slots: int = 4
    adapters: int = 16
    zipf_s: float = 1.0
    base_share: float = 0.3
    requests: int = 480
    #: requests/s (wall)
    rate: float = 16.0
    system_tokens: int = 256
    user_tokens: int = 1024
    output_tokens: int = 16
    #: 2.0 = the simulated GPUs run at half speed: the shared 2-core machine keeps up (max_lag in the report)
    time_scale: float = 2.0
    #: simulated seconds to (re)load an adapter into the CPU cache
    load_latency: float = 0.25
    seeds: tuple[int, ...] = (0, 1, 2)
    preset: str = "a100-llama3-8b"
    slo: SLO = field(default_factory=lambda: SLO(ttft=1.0, itl=0.1))

    def names(self) -> list[str]:
        return [f"lora-{i:02d}" for i in range(self.adapters)]

    def popularity(self) -> dict[str, float]:
        raw = [1 / (rank + 1) ** self.zipf_s for rank in range(self.adapters)]
        return {n: w / sum(raw) for n, w in zip(self.names(), raw, strict=True)}


Assignment = dict[str, list[str]]  # engine url -> adapters
Placement = Callable[[LoraBenchSpec, Sequence[str], random.Random], Assignment]


def _placed(
    spec: LoraBenchSpec, urls: Sequence[str], weights: dict[str, float], replicas: dict[str, int]
) -> Assignment:
    adapters = [Adapter(n, replicas[n], w) for n, w in weights.items()]
    plan = place([Pod(u, spec.slots) for u in urls], adapters, {})
    return {u: sorted(a for a, pods in plan.target.items() if u in pods) for u in urls}


def flotilla_replicas(spec: LoraBenchSpec) -> dict[str, int]:
    """Enough replicas that none carries more than half an engine's share of the adapter traffic."""
    return {
        n: max(1, min(spec.engines, math.ceil(w * 2 * spec.engines))) for n, w in spec.popularity().items()
    }


def flotilla_placement(spec: LoraBenchSpec, urls: Sequence[str], _: random.Random) -> Assignment:
    return _placed(spec, urls, spec.popularity(), flotilla_replicas(spec))


def one_replica(spec: LoraBenchSpec, urls: Sequence[str], _: random.Random) -> Assignment:
    return _placed(spec, urls, dict.fromkeys(spec.names(), 1.0), dict.fromkeys(spec.names(), 1))


def everywhere(spec: LoraBenchSpec, urls: Sequence[str], _: random.Random) -> Assignment:
    return {u: spec.names() for u in urls}


def random_placement(spec: LoraBenchSpec, urls: Sequence[str], rng: random.Random) -> Assignment:
    out: Assignment = {u: [] for u in urls}
    for name in spec.names():
        free = [u for u in urls if len(out[u]) < spec.slots] or list(urls)
        out[rng.choice(free)].append(name)
    return out


#: contender -> (placement, gateway routing strategy)
CONTENDERS: dict[str, tuple[Placement, str]] = {
    "flotilla": (flotilla_placement, "default"),
    "flotilla-placement": (flotilla_placement, "least-request"),
    "one-replica": (one_replica, "least-request"),
    "everywhere": (everywhere, "least-request"),
    "random": (random_placement, "least-request"),
}


def trace(spec: LoraBenchSpec, seed: int) -> tuple[list[BenchRequest], list[float]]:
    rng = random.Random(seed)
    names, weights = zip(*spec.popularity().items(), strict=True)
    system = {
        m: synthetic_text(synthetic_ids(zlib.crc32(m.encode()), spec.system_tokens)) for m in (BASE, *names)
    }
    requests, offsets, now = [], [], 0.0
    for i in range(spec.requests):
        model = BASE if rng.random() < spec.base_share else rng.choices(names, weights)[0]
        user = synthetic_text(synthetic_ids(seed * 1_000_003 + i, spec.user_tokens))
        messages = ({"role": "system", "content": system[model]}, {"role": "user", "content": user})
        requests.append(BenchRequest(i, f"s{i}", messages, spec.output_tokens, model=model))
        offsets.append(now)
        now += rng.expovariate(spec.rate)
    return requests, offsets


@dataclass
class LoraRow:
    seed: int
    contender: str
    ttft_p50: float
    ttft_p90: float
    goodput: float
    swaps_per_min: float
    ok: int
    requests: int
    placement: Assignment
    #: the engines' worst lag behind simulated time (``flotilla_sim_lag_max_seconds``): large = CPU-starved run
    max_lag: float = math.nan


async def _scrape(urls: Sequence[str]) -> list[dict[str, float]]:
    async with httpx.AsyncClient(timeout=30.0, trust_env=False) as client:
        responses = await asyncio.gather(*(client.get(u + "/metrics") for u in urls))
    return [parse_prometheus(r.text) for r in responses]


async def _wait_models(base_url: str, names: set[str], within: float = 30.0) -> None:
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        for _ in range(int(within / 0.25)):
            try:
                ids = {m["id"] for m in (await client.get(base_url + "/models")).json()["data"]}
            except (httpx.HTTPError, ValueError, KeyError):
                ids = set()
            if names <= ids:
                return
            await asyncio.sleep(0.25)
    raise BenchError(f"the gateway did not list every adapter within {within}s")


async def _start_fleet(spec: FleetSpec, attempts: int = 3) -> Fleet:
    """Fresh engines; a free port taken by another process between probe and bind is retried."""
    for attempt in range(attempts):
        try:
            return await Fleet.start(spec)
        except BenchError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


async def measure(spec: LoraBenchSpec, name: str, seed: int) -> LoraRow:
    placement, strategy = CONTENDERS[name]
    requests, offsets = trace(spec, seed)
    lora_args = (
        "--enable-lora",
        "--max-loras",
        str(spec.slots),
        "--max-cpu-loras",
        str(spec.cpu_slots),
        "--lora-load-latency",
        str(spec.load_latency),
    )
    fleet_spec = FleetSpec(engines=spec.engines, model=BASE, preset=spec.preset, time_scale=spec.time_scale,
                           seed=seed, extra_args=lora_args)  # fmt: skip
    fleet = await _start_fleet(fleet_spec)
    try:
        assignment = placement(spec, fleet.urls, random.Random(seed))
        async with EngineClient(timeout=60.0) as engines:
            await asyncio.gather(
                *(engines.load(u, a, f"org/{a}") for u, names in assignment.items() for a in names)
            )
        gateway = contenders.flotilla(strategy)
        await gateway.start(fleet.urls, model=BASE, kv_events=[])
        try:
            await _wait_models(gateway.base_url, set(spec.names()))
            before = await _scrape(fleet.urls)
            results, wall = await run_open_loop(
                base_url=gateway.base_url, requests=requests, offsets=offsets, model=BASE,
                headers=gateway.headers, drain_timeout=30.0,
            )  # fmt: skip
            after = await _scrape(fleet.urls)
        finally:
            gateway.stop()
    finally:
        fleet.stop()
    deltas = [
        counters_from_samples(a).minus(counters_from_samples(b)) for a, b in zip(after, before, strict=True)
    ]
    swaps = sum(a.get(SWAPS, 0.0) - b.get(SWAPS, 0.0) + a.get(LOADS, 0.0) - b.get(LOADS, 0.0)
                for a, b in zip(after, before, strict=True))  # fmt: skip
    slo = SLO(ttft=spec.slo.ttft * spec.time_scale, itl=spec.slo.itl * spec.time_scale)
    summary = summarise(workload="lora-zipf", contender=name, results=results, duration=wall, deltas=deltas,
                        oracle_hit_rate=math.nan, slo=slo)  # fmt: skip
    return LoraRow(seed, name, summary.ttft_p50, summary.ttft_p90, summary.goodput_req_s,
                   swaps / wall * 60 if wall > 0 else math.nan, summary.ok, summary.requests,
                   {str(i): assignment[u] for i, u in enumerate(fleet.urls)},
                   max(a.get(LAG, math.nan) for a in after))  # fmt: skip


async def run(
    spec: LoraBenchSpec, names: Sequence[str], on_row: Callable[[LoraRow], None] | None = None
) -> list[LoraRow]:
    rows = []
    for seed in spec.seeds:
        order = list(names)
        random.Random(seed).shuffle(order)
        for name in order:
            row = await measure(spec, name, seed)
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


def interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and 95 % half-width (Student t) of ``values``."""
    data = [v for v in values if not math.isnan(v)]
    if not data:
        return math.nan, math.nan
    if len(data) == 1:
        return data[0], math.nan
    return statistics.fmean(data), T95.get(len(data) - 1, 1.96) * statistics.stdev(data) / math.sqrt(
        len(data)
    )


def _fmt(mean: float, half: float, scale: float = 1.0, digits: int = 0) -> str:
    if math.isnan(mean):
        return "–"
    if math.isnan(half):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {half * scale:.{digits}f}"


def report(spec: LoraBenchSpec, rows: Sequence[LoraRow], command: str) -> str:
    names = list(dict.fromkeys(r.contender for r in rows))
    by = {(r.seed, r.contender): r for r in rows}
    lines = [
        f"Command: `{command}`", "",
        f"{spec.engines} engines × {spec.slots} GPU LoRA slots ({spec.cpu_slots} in the CPU cache), {spec.adapters} adapters (Zipf s={spec.zipf_s}), "
        f"{spec.base_share:.0%} base-model traffic, {spec.requests} requests at {spec.rate}/s per seed, "
        f"seeds {', '.join(map(str, spec.seeds))}, time scale {spec.time_scale}, adapter load "
        f"{spec.load_latency} simulated s. Mean ± 95 % interval over seeds; ratios are per seed against "
        "`flotilla` on the same trace.", "",
        "| contender | TTFT p50 (ms) | TTFT p90 (ms) | p90 ÷ flotilla | swaps/min | goodput (req/s) "
        "| goodput ÷ flotilla | ok | max engine lag (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name in names:
        mine = [r for r in rows if r.contender == name]

        def ratio(get: Callable[[LoraRow], float], mine: list[LoraRow] = mine) -> tuple[float, float]:
            return interval(
                [get(r) / get(by[(r.seed, "flotilla")]) for r in mine if (r.seed, "flotilla") in by]
            )

        lines.append(
            f"| {name} | {_fmt(*interval([r.ttft_p50 for r in mine]), 1000)} "
            f"| {_fmt(*interval([r.ttft_p90 for r in mine]), 1000)} | {_fmt(*ratio(lambda r: r.ttft_p90), 1, 2)} "
            f"| {_fmt(*interval([r.swaps_per_min for r in mine]))} | {_fmt(*interval([r.goodput for r in mine]), 1, 2)} "
            f"| {_fmt(*ratio(lambda r: r.goodput), 1, 2)} | {sum(r.ok for r in mine)}/{sum(r.requests for r in mine)} "
            f"| {max(r.max_lag for r in mine) * 1000:.0f} |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def write(out: Path, spec: LoraBenchSpec, rows: Sequence[LoraRow], command: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "lora-results.json").write_text(
        json.dumps({"spec": asdict(replace(spec)), "rows": [asdict(r) for r in rows]}, indent=1)
    )
    path = out / "lora-report.md"
    path.write_text("# LoRA placement\n\n" + report(spec, rows, command))
    return path
