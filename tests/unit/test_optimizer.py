"""The GPU optimizer's pure parts: the ILP on hand-solved instances, the rate search, inputs and their errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from optimizer import (
    Grid,
    Infeasible,
    InputError,
    Profile,
    ProfileTable,
    RateSearch,
    Slo,
    Workload,
    load_json,
    solve,
)
from optimizer.profiling import profile_gpu
from optimizer.report import plan_to_dict, render

SLO = Slo(ttft=2.0, tpot=0.1)
GRID = {"input_bounds": (256, 4096), "output_bounds": (256,)}


def profile(gpu: str, short: float, long: float, slo: Slo = SLO) -> Profile:
    return Profile(gpu=gpu, **GRID, tables=(ProfileTable(slo=slo, max_rate=((short,), (long,))),))


def workload(short: float, long: float) -> Workload:
    return Workload(**GRID, rate=((short,), (long,)))


# a cheap GPU that serves only short requests (10 req/s) and a fast one (40 short or 4 long req/s) at 3x the price
CHEAP, FAST = profile("cheap", 10.0, 0.0), profile("fast", 40.0, 4.0)
PRICES = {"cheap": 1.0, "fast": 3.0}


@pytest.mark.parametrize(
    ("short", "long", "slices", "counts", "cost"),
    [
        # light load: one fast GPU carries everything (0.25 + 0.5); the mix would cost 1 + 3
        (10.0, 2.0, 8, {"cheap": 0, "fast": 1}, 3.0),
        # heavy short load: fast takes the long bucket and 2 of 3 short slices (0.5 + 0.5), cheap the third
        (30.0, 2.0, 3, {"cheap": 1, "fast": 1}, 4.0),
        # without slicing the short bucket goes whole to one type: 3 cheap + 1 fast or 2 fast
        (30.0, 2.0, 1, None, 6.0),
        # only short traffic: 2 cheap ($2) beat 1 fast ($3)
        (20.0, 0.0, 8, {"cheap": 2, "fast": 0}, 2.0),
    ],
    ids=["one-fast-type-wins", "sliced-mix", "unsliced", "short-only-cheap"],
)
def test_ilp_finds_the_hand_computed_optimum(
    short: float, long: float, slices: int, counts: dict[str, int] | None, cost: float
) -> None:
    plan = solve([CHEAP, FAST], workload(short, long), PRICES, slice_factor=slices)
    assert plan.cost == pytest.approx(cost)
    if counts is not None:
        assert plan.counts == counts
    for i in range(2):
        total = sum(m[i][0] for m in plan.split.values())
        assert total == pytest.approx(1.0 if (short, long)[i] > 0 else 0.0)
    for gpu, n in plan.counts.items():
        assert plan.load[gpu] <= n + 1e-9


def test_plan_compares_with_the_best_single_type() -> None:
    plan = solve([CHEAP, FAST], workload(30.0, 2.0), PRICES, slice_factor=3)
    assert plan.single == {"cheap": None, "fast": 6.0}
    assert plan.best_single == ("fast", 6.0)
    assert plan.saving == pytest.approx(1 - 4 / 6)
    text = render(plan)
    assert "the mix saves 33%" in text
    assert "(4096, 256)" in text
    data = plan_to_dict(plan)
    assert data["counts"] == {"cheap": 1, "fast": 1}
    assert data["split"]["fast"][1][0] == 1.0
    json.dumps(data)


def test_headroom_keeps_each_gpu_below_its_profiled_capacity() -> None:
    plan = solve([FAST], workload(0.0, 4.0), {"fast": 3.0}, headroom=0.8)
    assert plan.counts == {"fast": 2}
    assert solve([FAST], workload(0.0, 4.0), {"fast": 3.0}).counts == {"fast": 1}


@pytest.mark.parametrize(
    ("profiles", "work", "prices", "error", "match"),
    [
        ([CHEAP], workload(1.0, 1.0), PRICES, Infeasible, r"input ≤4096 / output ≤256"),
        ([CHEAP, FAST], workload(1.0, 1.0), {"cheap": 1.0}, InputError, "no price for GPU type fast"),
        ([CHEAP, CHEAP], workload(1.0, 0.0), PRICES, InputError, "two profiles for GPU type cheap"),
        ([], workload(1.0, 0.0), PRICES, InputError, "no profiles"),
        (
            [CHEAP],
            Workload(input_bounds=(256,), output_bounds=(256,), rate=((1.0,),)),
            PRICES,
            InputError,
            "grid differs",
        ),
        (
            [CHEAP, profile("fast", 40.0, 4.0, Slo(tpot=0.04, ttft=1.0))],
            workload(1.0, 0.0),
            PRICES,
            InputError,
            "has no table for SLO",
        ),
    ],
    ids=["no-type-serves-long", "missing-price", "duplicate", "empty", "grid", "slo-mismatch"],
)
def test_bad_inputs_are_one_line_errors(
    profiles: list[Profile], work: Workload, prices: dict[str, float], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as info:
        solve(profiles, work, prices)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tpot=0.04", Slo(tpot=0.04)),
        ("ttft=2, tpot=40ms", Slo(ttft=2.0, tpot=0.04)),
        ("ttft=500ms,attainment=0.9", Slo(ttft=0.5, attainment=0.9)),
    ],
)
def test_slo_parse(text: str, expected: Slo) -> None:
    assert Slo.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [("p99=1", "bad SLO part"), ("tpot=fast", "bad SLO value"), ("attainment=0.9", "needs ttft or tpot"),
     ("tpot=-1", "greater than 0")],
)  # fmt: skip
def test_slo_parse_errors(text: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        Slo.parse(text)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{", "is not JSON"),
        ('{"input_bounds": [4, 2], "output_bounds": [1], "rate": [[1], [1]]}', "strictly increasing"),
        ('{"input_bounds": [4], "output_bounds": [1], "rate": [[-1]]}', "non-negative"),
        ('{"input_bounds": [4], "output_bounds": [1], "rate": [[1]], "extra": 1}', "extra"),
    ],
    ids=["syntax", "bounds", "negative", "unknown-field"],
)
def test_workload_files_are_validated(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "w.json"
    path.write_text(content)
    with pytest.raises(InputError, match=match) as info:
        load_json(Workload, path, "workload")
    assert "\n" not in str(info.value)


def probe_answers(capacity: float) -> list[tuple[float, float]]:
    search = RateSearch(target=0.99, start=1.0, rel_tol=0.05)
    while (rate := search.next_rate()) is not None:
        search.observe(rate, 1.0 if rate <= capacity else 0.5)
    return [(search.result, len(search.probes))]


@pytest.mark.parametrize("capacity", [0.3, 1.0, 37.3, 150.0], ids=str)
def test_rate_search_brackets_the_capacity_from_below(capacity: float) -> None:
    [(result, probes)] = probe_answers(capacity)
    assert result <= capacity
    assert result >= capacity / 1.05 - 1e-9
    assert probes <= 24


def test_rate_search_gives_zero_when_nothing_passes_and_stops_at_the_ceiling() -> None:
    assert probe_answers(0.001)[0][0] == 0.0
    search = RateSearch(target=0.99, start=1.0, ceiling=50.0)
    while (rate := search.next_rate()) is not None:
        search.observe(rate, 1.0)
    assert search.result == 50.0


def test_profile_gpu_measures_each_bucket_and_shares_probes_between_slos() -> None:
    calls: list[tuple[int, int, float, int]] = []
    # capacity falls with size; a request's TPOT is 0.05 below capacity and 1.0 above it
    capacity = {(256, 256): 20.0, (4096, 256): 2.0}

    async def probe(prompt: int, output: int, rate: float, n: int) -> list[tuple[float | None, float | None]]:
        calls.append((prompt, output, rate, n))
        ok = rate <= capacity[prompt, output]
        return [(0.1, 0.05 if ok else 1.0)] * n

    loose, tight = Slo(ttft=1.0, tpot=0.1), Slo(ttft=1.0, tpot=0.01)
    result = asyncio.run(profile_gpu(probe, Grid(**GRID), [loose, tight], gpu="g", min_requests=10))
    assert result.table(loose).max_rate[0][0] == pytest.approx(20.0, rel=0.1)
    assert result.table(loose).max_rate[1][0] == pytest.approx(2.0, rel=0.1)
    assert result.table(loose).max_rate[1][0] <= 2.0
    assert result.table(tight).max_rate == ((0.0,), (0.0,))  # skipped the long bucket: short already failed
    assert len(calls) == len(set(calls))
    # probes last long enough for the engine to settle: 3 x the measured duration (0.1 + 0.05 x 255 s) at least
    assert all(n >= rate * 3 * (0.1 + 0.05 * 255) - 1e-6 for _, _, rate, n in calls)
    assert all(n <= 2000 for *_, n in calls)


def test_workload_from_two_scrapes_of_the_gateway_counter() -> None:
    from optimizer import workload_from_counts

    grid = Grid(**GRID)
    before = {(256, 256): 10.0, (4096, 256): 5.0}
    after = {(256, 256): 40.0, (4096, 256): 2.0}  # the second gateway restarted: its counter starts over
    w = workload_from_counts(before, after, 10.0, grid, "m")
    assert w.rate == ((3.0,), (0.2,))
    assert w.model == "m"
    with pytest.raises(InputError, match=r"bucket \(64, 256\), which is not on the profiles' grid"):
        workload_from_counts({}, {(64, 256): 1.0}, 10.0, grid, "m")
    with pytest.raises(InputError, match="window must be positive"):
        workload_from_counts({}, {}, 0.0, grid, "m")


def test_public_exports_are_pinned() -> None:
    import optimizer

    assert sorted(optimizer.__all__) == sorted([
        "DEFAULT_PRICES", "Grid", "Infeasible", "InputError", "LoadProbe", "OptimizerError", "Outcomes", "Plan",
        "Prices", "Profile", "ProfileTable", "RateSearch", "Slo", "Workload", "attainment", "http_probe",
        "load_json", "observe", "plan_to_dict", "profile_gpu", "render", "solve", "validated",
        "workload_from_counts",
    ])  # fmt: skip
