"""The LoRA benchmark's pure parts: the trace, the four placements, intervals and the report table."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from bench import lora_bench
from bench.lora_bench import BASE, LoraBenchSpec, LoraRow

URLS = [f"http://e{i}" for i in range(4)]


def test_trace_is_reproducible_and_zipf_shaped() -> None:
    spec = LoraBenchSpec(requests=4000)
    first, offsets = lora_bench.trace(spec, 1)
    again, _ = lora_bench.trace(spec, 1)
    assert [r.model for r in first] == [r.model for r in again]
    assert offsets == sorted(offsets)
    counts = Counter(r.model for r in first)
    assert abs(counts[BASE] / len(first) - spec.base_share) < 0.03
    names = spec.names()
    assert counts[names[0]] > 1.6 * counts[names[1]] > counts[names[3]]
    assert math.isclose(sum(spec.popularity().values()), 1.0)


@pytest.mark.parametrize("name", list(lora_bench.CONTENDERS))
def test_placements_fit_the_cpu_cache(name: str) -> None:
    spec = LoraBenchSpec()
    placement, _ = lora_bench.CONTENDERS[name]
    out = placement(spec, URLS, random.Random(0))
    copies = Counter(a for adapters in out.values() for a in adapters)
    if name == "everywhere":
        assert all(sorted(v) == spec.names() for v in out.values())
        return
    assert all(len(v) <= spec.slots for v in out.values())
    # 16 adapters on 4 x 4 slots: one copy each; flotilla's extra replicas for hot adapters stay unplaced
    assert dict(copies) == dict.fromkeys(spec.names(), 1)


def test_flotilla_spreads_the_hot_adapters_and_replicates_when_slots_allow() -> None:
    spec = LoraBenchSpec()
    weights = spec.popularity()
    replicas = lora_bench.flotilla_replicas(spec)
    assert [replicas[n] for n in spec.names()[:4]] == [3, 2, 1, 1]

    def heaviest_engine(out: dict[str, list[str]]) -> float:
        copies = Counter(a for v in out.values() for a in v)
        return max(sum(weights[a] / copies[a] for a in v) for v in out.values())

    ours = lora_bench.flotilla_placement(spec, URLS, random.Random(0))
    aibrix = lora_bench.one_replica(spec, URLS, random.Random(0))
    assert all(len(set(spec.names()[:4]) & set(v)) == 1 for v in ours.values())
    assert heaviest_engine(ours) < heaviest_engine(aibrix)
    roomy = lora_bench.flotilla_placement(LoraBenchSpec(slots=8), URLS, random.Random(0))
    assert Counter(a for v in roomy.values() for a in v) == replicas


def test_interval_and_report() -> None:
    mean, half = lora_bench.interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert math.isnan(lora_bench.interval([5.0])[1])
    rows = [LoraRow(s, c, 0.02, p90, 40.0, swaps, 10, 10, {}) for s in (0, 1)
            for c, p90, swaps in (("flotilla", 0.05, 0.0), ("everywhere", 0.5, 900.0))]  # fmt: skip
    text = lora_bench.report(LoraBenchSpec(seeds=(0, 1)), rows, "flotilla bench --lora")
    assert "Command: `flotilla bench --lora`" in text
    assert "| everywhere | 20 ± 0 | 500 ± 0 | 10.00 ± 0.00 | 900 ± 0 |" in text
