"""Large solver instances (dozens to hundreds of buckets × six GPU types) for the solver-time table.

Capacities are synthetic but shaped like measured profiles: they fall with prompt and output length, faster
types have proportionally higher capacity, and the two slowest types cannot serve the longest prompts at
all (as the L4 and A10G cannot under a tight TPOT). Prices are the default list's. Rates are exponential per
bucket, so every bucket has traffic and the program is as large as the grid.
"""

from __future__ import annotations

import random

from optimizer import DEFAULT_PRICES, Profile, ProfileTable, Slo, Workload

SPEED = {"l4": 1.0, "a10g": 1.6, "l40s": 3.0, "a100-40gb": 4.0, "a100-80gb": 5.0, "h100-80gb": 9.0}


def instance(inputs: int, outputs: int, seed: int) -> tuple[list[Profile], Workload, dict[str, float], Slo]:
    rng = random.Random(seed)
    input_bounds = tuple(int(16 * 2 ** (k * 0.9)) + k for k in range(inputs))
    output_bounds = tuple(int(8 * 2 ** (k * 0.9)) + k for k in range(outputs))
    slo = Slo(ttft=5.0, tpot=0.1)
    profiles = []
    for gpu, speed in SPEED.items():
        rates = tuple(
            tuple(
                0.0 if speed < 2 and i > 0.75 * inputs
                else speed * 200 / (1 + 0.8 * i) / (1 + 0.6 * j) * rng.uniform(0.7, 1.3)
                for j in range(outputs)
            )
            for i in range(inputs)
        )  # fmt: skip
        profiles.append(
            Profile(gpu=gpu, input_bounds=input_bounds, output_bounds=output_bounds,
                    tables=(ProfileTable(slo=slo, max_rate=rates),))
        )  # fmt: skip
    rate = tuple(tuple(rng.expovariate(1 / 3) for _ in range(outputs)) for _ in range(inputs))
    workload = Workload(input_bounds=input_bounds, output_bounds=output_bounds, rate=rate)
    return profiles, workload, dict(DEFAULT_PRICES), slo
