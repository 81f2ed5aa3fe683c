"""The system under test of one autoscaling run: ``flotilla up --autoscale`` with a given policy, in a child.

The benchmark starts this module as its own process (``bench.procs.Proc``), so the load generator and the
system under test do not share an event loop. It runs exactly what ``flotilla up --autoscale`` runs — the
gateway, the local scaler and in-process engines — with the policy named in the spec: Flotilla's KPA/APA
(``autoscaler``), or the benchmark's baselines (HPA-like, fixed, the reactive bound, the oracle's replayed
schedule). ``build_policy`` is also what the virtual-time mode (``bench.autoscaling.virtual``) plugs in. On SIGTERM
it writes the scaler's record (timeline, engine lifetimes) to the spec's ``record`` path.

    python -m bench.autoscaling.sut '<json spec>'
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.autoscaling import oracle as oracle_mod
from bench.autoscaling.baselines import Fixed, HpaLike, Reactive
from bench.autoscaling.traces import TRACES, scaled
from flotilla.cli import up
from flotilla.cli.local_scaler import Decision, Observation, Policy


@dataclass
class StartsAt:
    """Runs ``inner`` on the trace's clock: simulated seconds since the wall time the load generator wrote
    into ``start_file`` when it started the trace (trace time 0 until then)."""

    inner: Policy
    start_file: Path
    time_scale: float
    _start: float | None = None

    def decide(self, obs: Observation) -> Decision:
        if self._start is None:
            try:
                self._start = float(self.start_file.read_text())
            except (OSError, ValueError):
                return self.inner.decide(replace(obs, now=0.0))
        return self.inner.decide(replace(obs, now=max(0.0, (time.time() - self._start) / self.time_scale)))


def build_policy(spec: dict[str, Any]) -> Policy:
    kind = spec["policy"]
    p = spec.get("params", {})
    if kind in ("kpa", "apa", "kpa-arrivals", "kpa-headroom"):
        from autoscaler import ARRIVALS, DEMAND, MetricTarget, ScalerSettings
        from flotilla.cli.local_wiring import AutoscalerPolicy

        metric = ARRIVALS if kind in ("kpa-arrivals", "kpa-headroom") else DEMAND
        settings = ScalerSettings(
            max_replicas=spec["max_engines"], min_replicas=spec["min_engines"],
            metrics=(MetricTarget(metric, p["target"]),), algorithm=kind[:3].upper(),
            **{k: v for k, v in p.items() if k != "target"},
        )  # fmt: skip
        return AutoscalerPolicy(settings)
    if kind == "hpa":
        return HpaLike(
            target=p["target"], min_replicas=max(1, spec["min_engines"]), max_replicas=spec["max_engines"]
        )
    if kind == "fixed":
        return Fixed(p["replicas"])
    if kind in ("oracle", "reactive"):
        trace = scaled(TRACES[spec["trace"]](), spec.get("trace_factor", 1.0))
        inner: Policy
        if kind == "oracle":
            plan = oracle_mod.schedule(
                trace, spec["cap"], spec["startup_delay"], min_replicas=spec["min_engines"]
            )
            inner = oracle_mod.OraclePolicy(plan)
        else:
            cap = spec["cap"]
            inner = Reactive(lambda t: trace.rate(t, cap), cap, spec["min_engines"])
        if "start_file" not in spec:
            return inner  # virtual time: the policy's clock is already the trace's
        return StartsAt(inner, Path(spec["start_file"]), spec["time_scale"])
    raise ValueError(f"unknown policy {kind!r}")


def main(argv: list[str] | None = None) -> None:
    spec = json.loads((argv or sys.argv[1:])[0])
    opts = up.UpOptions(
        engines=1, engine_urls=(), host="127.0.0.1", port=spec["port"], model=spec["model"],
        preset=spec["preset"], time_scale=spec["time_scale"], num_gpu_blocks=None, redis_url=None,
        strategy=None, status=False, autoscale=True, min_engines=spec["min_engines"],
        max_engines=spec["max_engines"], policy=spec["policy"], startup_delay=spec["startup_delay"],
        record=Path(spec["record"]), engine_extra=spec.get("engine", {}),
    )  # fmt: skip
    policy = build_policy(spec)
    with open("/dev/null", "w") as devnull:
        asyncio.run(up.run(opts, out=devnull, err=devnull, policy=policy, initial=spec["initial"]))


if __name__ == "__main__":
    main()
