"""Running a plan on the simulated fleet: does the mix the solver chose actually meet the SLO?

A trace (Poisson arrivals at the workload's rate, sizes drawn from the dataset — real sizes, not bucket
bounds) is dispatched the way the gateway would: each request's bucket picks a GPU type in proportion to the
plan's split (smooth weighted round-robin, so shares hold exactly over any stretch of the trace), then the
type's replica with the least planned work assigned so far (work = the request's share of a GPU,
``1 / max_rate[bucket, type]``). Each replica then replays its arrivals through engine_sim's scheduler in
simulated time (``engine_sim.replay``) and every request's TTFT and TPOT are scored against the SLO.

The first ``warmup`` share of the trace is not scored: the fleet starts empty.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.gpu_mix.datasets import Sampler
from engine_sim import Arrival, EngineConfig, replay
from flotilla.sizes import bucket_index
from optimizer import Grid, Plan, Slo, attainment

Matrix = tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class Request:
    at: float
    prompt: int
    output: int


def trace(sampler: Sampler, rate: float, requests: int, seed: int) -> list[Request]:
    rng = random.Random(seed)
    out, t = [], 0.0
    for _ in range(requests):
        t += rng.expovariate(rate)
        prompt, output = sampler(rng)
        out.append(Request(t, prompt, output))
    return out


class _Wrr:
    """Smooth weighted round-robin (nginx's): over any run of picks, each choice's share tracks its weight."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        self.weights = {k: w for k, w in weights.items() if w > 0}
        self.current = dict.fromkeys(self.weights, 0.0)

    def pick(self) -> str:
        total = sum(self.weights.values())
        for k, w in self.weights.items():
            self.current[k] += w
        best = max(self.current, key=self.current.__getitem__)
        self.current[best] -= total
        return best


def dispatch(
    requests: Sequence[Request], grid: Grid, counts: Mapping[str, int], split: Mapping[str, Matrix],
    caps: Mapping[str, Matrix],
) -> dict[tuple[str, int], list[Request]]:  # fmt: skip
    """``{(gpu type, replica): requests}`` as the plan's routing would send them."""
    wrr: dict[tuple[int, int], _Wrr] = {}
    work = {(g, r): 0.0 for g, n in counts.items() for r in range(n)}
    out: dict[tuple[str, int], list[Request]] = {k: [] for k in work}
    for req in requests:
        i, j = bucket_index(grid.input_bounds, req.prompt), bucket_index(grid.output_bounds, req.output)
        if (i, j) not in wrr:
            wrr[i, j] = _Wrr({g: split[g][i][j] for g in split if counts.get(g, 0) > 0})
        gpu = wrr[i, j].pick()
        replica = min(range(counts[gpu]), key=lambda r: work[gpu, r])
        work[gpu, replica] += 1.0 / caps[gpu][i][j]
        out[gpu, replica].append(req)
    return out


@dataclass(frozen=True)
class Validation:
    attainment: float
    requests: int
    #: (gpu type, replica) -> scored requests on it
    per_replica: dict[str, int]


def run_fleet(
    requests: Sequence[Request], grid: Grid, counts: Mapping[str, int], split: Mapping[str, Matrix],
    caps: Mapping[str, Matrix], presets: Mapping[str, str], slo: Slo, *, warmup: float = 0.1,
) -> Validation:  # fmt: skip
    scored_from = requests[int(len(requests) * warmup)].at if requests else 0.0
    outcomes: list[tuple[float | None, float | None]] = []
    per_replica: dict[str, int] = {}
    for (gpu, replica), reqs in dispatch(requests, grid, counts, split, caps).items():
        if not reqs:
            continue
        config = EngineConfig(preset=presets[gpu], enable_prefix_caching=False)
        arrivals = [Arrival(r.at, r.prompt, r.output) for r in reqs]
        last = arrivals[-1].at + (slo.ttft or 600.0) + (slo.tpot or 10.0) * max(r.output for r in reqs)
        results = replay(config, arrivals, horizon=last)
        scored = [(o.ttft, o.tpot if o.finished else None) for o in results if o.arrival.at >= scored_from]
        outcomes += scored
        per_replica[f"{gpu}/{replica}"] = len(scored)
    return Validation(attainment(slo, outcomes), len(outcomes), per_replica)


def single_type(plan: Plan, gpu: str) -> tuple[dict[str, int], dict[str, Matrix]]:
    """Counts and split of the best single-type fleet: everything on ``gpu``."""
    rows, cols = plan.workload.shape
    n = round((plan.single[gpu] or 0.0) / plan.prices[gpu])
    return {gpu: n}, {gpu: tuple(tuple(1.0 for _ in range(cols)) for _ in range(rows))}
