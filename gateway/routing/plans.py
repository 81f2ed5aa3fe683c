"""Size-aware routing plans: which GPU type serves which request size, per model (the GPU optimizer's split).

A ModelGroup's plan (``status.plan``, written by the operator; or a ``flotilla optimize --json`` file in
standalone mode) says, for each (prompt tokens, output tokens) bucket of the grid in :mod:`flotilla.sizes`,
what share of the bucket's requests each GPU type should serve. :class:`RoutingPlans` keeps the plans by
served model name and, per model and bucket, a **smooth weighted round-robin** over the types' shares
(nginx's: every pick adds each weight to its type's credit, the type with the most credit wins and pays
back the total), so a bucket split 3 : 1 goes l4, l4, a100, l4, … — exact shares over any short run, and
evenly interleaved rather than in bursts, which a random draw would not give on a handful of requests.

The request's output size is its ``max_tokens`` (the engine's actual output is not known before it ends);
an upper bound, so the type planned for the bucket is planned for at least that much work.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flotilla.sizes import bucket_index

__all__ = ["RoutingPlans", "SizePlan", "parse_plan"]


@dataclass(frozen=True, slots=True)
class SizePlan:
    """One model's split: ``shares[gpu][i][j]`` of input bucket ``i`` × output bucket ``j``."""

    input_bounds: tuple[int, ...]
    output_bounds: tuple[int, ...]
    shares: Mapping[str, tuple[tuple[float, ...], ...]]

    def weights(self, i: int, j: int) -> list[tuple[str, float]]:
        return [(gpu, m[i][j]) for gpu, m in sorted(self.shares.items()) if m[i][j] > 0]


def parse_plan(input_bounds: Any, output_bounds: Any, split: Mapping[str, Any]) -> SizePlan:
    """A plan from its wire shape; ``ValueError`` when the matrices do not fit the grid."""
    ins = tuple(int(b) for b in input_bounds)
    outs = tuple(int(b) for b in output_bounds)
    if not ins or not outs:
        raise ValueError("a routing plan needs input and output bounds")
    shares: dict[str, tuple[tuple[float, ...], ...]] = {}
    for gpu, matrix in split.items():
        rows = tuple(tuple(float(v) for v in row) for row in matrix)
        if len(rows) != len(ins) or any(len(r) != len(outs) for r in rows):
            raise ValueError(f"the shares of {gpu} do not fit the {len(ins)} × {len(outs)} grid")
        shares[str(gpu)] = rows
    return SizePlan(ins, outs, shares)


@dataclass(slots=True)
class _Swrr:
    credit: dict[str, float] = field(default_factory=dict)

    def pick(self, weights: Iterable[tuple[str, float]]) -> str | None:
        chosen: str | None = None
        total = 0.0
        for gpu, weight in weights:
            total += weight
            self.credit[gpu] = self.credit.get(gpu, 0.0) + weight
            if chosen is None or self.credit[gpu] > self.credit[chosen]:
                chosen = gpu
        if chosen is not None:
            self.credit[chosen] -= total
        return chosen


class RoutingPlans:
    """Plans by model, replaced whole by discovery; the round-robin state per (model, bucket)."""

    def __init__(self) -> None:
        self._plans: dict[str, SizePlan] = {}
        self._rr: dict[tuple[str, int, int], _Swrr] = {}

    def replace(self, plans: Mapping[str, SizePlan]) -> None:
        changed = {m for m in set(self._plans) | set(plans) if self._plans.get(m) != plans.get(m)}
        self._plans = dict(plans)
        for key in [k for k in self._rr if k[0] in changed]:
            del self._rr[key]

    def get(self, model: str) -> SizePlan | None:
        return self._plans.get(model)

    def __len__(self) -> int:
        return len(self._plans)

    def choose(
        self, model: str, prompt_tokens: int, max_tokens: int, usable: Collection[str] | None = None
    ) -> str | None:
        """The GPU type for this request, among ``usable`` (None: any); None when the plan names none."""
        plan = self._plans.get(model)
        if plan is None:
            return None
        i = bucket_index(plan.input_bounds, prompt_tokens)
        j = bucket_index(plan.output_bounds, max_tokens)
        weights = [(g, w) for g, w in plan.weights(i, j) if usable is None or g in usable]
        if not weights:
            return None
        return self._rr.setdefault((model, i, j), _Swrr()).pick(weights)
