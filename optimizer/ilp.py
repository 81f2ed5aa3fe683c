"""Mélange's cost-aware bin packing as an integer program, solved by CBC through PuLP.

Items are *slices* of the workload: each size bucket's rate is cut into ``slice_factor`` equal slices, so a
bucket can be split across GPU types. One slice of bucket ``b`` placed on type ``g`` uses
``load[b, g] = (rate_b / S) / max_rate[b, g]`` of one GPU (``max_rate`` from ``g``'s profile under the SLO).

    minimise    Σ_g price_g · n_g
    subject to  Σ_g y[b, g] = S                                   for every bucket b with traffic
                Σ_b y[b, g] · load[b, g] ≤ headroom · n_g          for every GPU type g
                y[b, g] ∈ {0..S},  n_g ∈ ℕ,  y[b, g] = 0 where g cannot meet the SLO for b

The paper writes one binary ``x[slice, g]`` per slice; slices of one bucket are interchangeable, so
``y[b, g] = Σ_{slices of b} x[slice, g]`` (how many of b's slices go to g) is the same program without the
S!-fold symmetry that makes branch-and-bound revisit equivalent assignments (on 120 buckets × 6 types × 16
slices: 0.2–0.4 s instead of 2.6–49 s with CBC, 0.4–3.8 s instead of 2.6–29 s with HiGHS).

Why CBC (PuLP) and not HiGHS (SciPy's ``milp``): on the same ``y`` programs (120–192 buckets, 6 types, 16
slices, 12 random instances) CBC took 0.05–0.37 s and HiGHS 0.08–2.1 s, with identical optima; PuLP is also
what Mélange's released solver uses, and it is a small dependency (no NumPy/SciPy). docs/optimizer.md has
the table; the ``optimizer`` bench reports solver times on large instances in every run.

``headroom`` (default 1, the paper's) caps each GPU's planned load below 1, should validation show that
packing buckets of different sizes onto one GPU costs more than the sum of their single-bucket profiles.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulp

from optimizer.errors import Infeasible, InputError
from optimizer.model import Profile, Slo, Workload

Matrix = tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class Plan:
    """The cheapest mix: GPUs per type, which share of each bucket each type serves, and what it costs."""

    slo: Slo
    workload: Workload
    #: GPUs per type (types with 0 included)
    counts: dict[str, int]
    #: dollars per GPU-hour of each type
    prices: dict[str, float]
    #: dollars per hour of the mix
    cost: float
    #: split[g][i][j]: share of bucket (i, j)'s rate served by type g (0..1; each bucket's shares sum to 1)
    split: dict[str, Matrix]
    #: planned load per type, in GPUs' worth (≤ headroom × count)
    load: dict[str, float]
    #: cost per hour of serving everything on one type (``None``: that type cannot serve some bucket)
    single: dict[str, float | None]
    solve_seconds: float
    slice_factor: int

    @property
    def best_single(self) -> tuple[str, float] | None:
        options = [(c, g) for g, c in self.single.items() if c is not None]
        if not options:
            return None
        cost, gpu = min(options)
        return gpu, cost

    @property
    def saving(self) -> float | None:
        """Fraction of the best single type's cost the mix saves (0 when one type is already best)."""
        best = self.best_single
        return None if best is None or best[1] == 0 else 1.0 - self.cost / best[1]


def solve(
    profiles: Sequence[Profile],
    workload: Workload,
    prices: Mapping[str, float],
    slo: Slo | None = None,
    *,
    slice_factor: int = 8,
    headroom: float = 1.0,
    time_limit: float = 60.0,
) -> Plan:
    if slice_factor < 1:
        raise InputError("slice_factor must be >= 1")
    if not 0 < headroom <= 1:
        raise InputError("headroom must be in (0, 1]")
    gpus, caps, slo = _inputs(profiles, workload, prices, slo)
    rows, cols = workload.shape
    buckets = [(i, j) for i in range(rows) for j in range(cols) if workload.rate[i][j] > 0]
    for i, j in buckets:
        if all(cap[i][j] <= 0 for cap in caps):
            raise Infeasible(
                f"no GPU type meets {slo.label()} for input ≤{workload.input_bounds[i]} / output "
                f"≤{workload.output_bounds[j]} tokens"
            )
    single = {g: _single_cost(workload, cap, prices[g], headroom) for g, cap in zip(gpus, caps, strict=True)}
    problem = pulp.LpProblem("melange", pulp.LpMinimize)
    n = [problem.add_variable(f"n_{k}", lowBound=0, cat="Integer") for k in range(len(gpus))]
    y: dict[tuple[int, int, int], tuple[pulp.LpVariable, float]] = {}
    for b, (i, j) in enumerate(buckets):
        row = []
        for k in range(len(gpus)):
            if caps[k][i][j] > 0:
                var = problem.add_variable(f"y_{b}_{k}", lowBound=0, upBound=slice_factor, cat="Integer")
                y[i, j, k] = (var, workload.rate[i][j] / slice_factor / caps[k][i][j])
                row.append(var)
        problem += pulp.lpSum(row) == slice_factor
    for k in range(len(gpus)):
        problem += pulp.lpSum(v * load for (_, _, kk), (v, load) in y.items() if kk == k) <= headroom * n[k]
    problem += pulp.lpSum(prices[g] * n[k] for k, g in enumerate(gpus))
    started = time.perf_counter()
    status = problem.solve(_cbc(time_limit))
    elapsed = time.perf_counter() - started
    if status != pulp.LpStatusOptimal:
        raise Infeasible(f"the solver found no optimal plan: {pulp.LpStatus[status]}")
    counts = {g: round(n[k].value() or 0.0) for k, g in enumerate(gpus)}
    shares = {g: [[0.0] * cols for _ in range(rows)] for g in gpus}
    load = dict.fromkeys(gpus, 0.0)
    for (i, j, k), (var, slice_load) in y.items():
        taken = round(var.value() or 0.0)
        shares[gpus[k]][i][j] = taken / slice_factor
        load[gpus[k]] += taken * slice_load
    return Plan(
        slo=slo,
        workload=workload,
        counts=counts,
        prices={g: prices[g] for g in gpus},
        cost=sum(prices[g] * n for g, n in counts.items()),
        split={g: tuple(tuple(r) for r in m) for g, m in shares.items()},
        load=load,
        single=single,
        solve_seconds=elapsed,
        slice_factor=slice_factor,
    )


def _cbc(time_limit: float) -> pulp.LpSolver:
    """CBC: a system ``cbc`` when there is one, else the binary PuLP 3 bundles.

    PuLP 3.3 flags its bundled-CBC class as deprecated ahead of 4.0 (which ships CBC as an extra and keeps
    only ``COIN_CMD``); pyproject pins ``pulp<4`` until that is taken up, so the notice is silenced here.
    """
    system = pulp.COIN_CMD(msg=False, timeLimit=time_limit)
    if system.available():
        return system
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit)


def _inputs(
    profiles: Sequence[Profile], workload: Workload, prices: Mapping[str, float], slo: Slo | None
) -> tuple[list[str], list[Matrix], Slo]:
    if not profiles:
        raise InputError("no profiles given")
    gpus: list[str] = []
    caps: list[Matrix] = []
    chosen: Slo | None = slo
    for p in profiles:
        if p.gpu in gpus:
            raise InputError(f"two profiles for GPU type {p.gpu}")
        if not p.same_grid(workload):
            raise InputError(f"profile {p.gpu}'s bucket grid differs from the workload's")
        if p.gpu not in prices:
            raise InputError(f"no price for GPU type {p.gpu}")
        table = p.table(chosen)
        if chosen is None:
            chosen = table.slo
        gpus.append(p.gpu)
        caps.append(table.max_rate)
    assert chosen is not None
    return gpus, caps, chosen


def _single_count(workload: Workload, cap: Matrix, headroom: float) -> int | None:
    load = 0.0
    for rate_row, cap_row in zip(workload.rate, cap, strict=True):
        for rate, c in zip(rate_row, cap_row, strict=True):
            if rate > 0:
                if c <= 0:
                    return None
                load += rate / c
    return math.ceil(load / headroom - 1e-9)


def _single_cost(workload: Workload, cap: Matrix, price: float, headroom: float) -> float | None:
    n = _single_count(workload, cap, headroom)
    return None if n is None else n * price
