"""The real parts the local scaler drives (``flotilla.cli.local_scaler``'s protocols, implemented):

* :class:`SimEngines` — ``engine_sim`` engines in this process, one HTTP server each, started cold;
* :class:`GatewayEndpoints` — an in-process gateway: its endpoints, its catalog, its demand gauges;
* :class:`AutoscalerPolicy` / :func:`make_policy` — Flotilla's autoscaler (KPA or APA) as a policy.

Kept apart from the loop so that the loop is tested with test doubles and these are tested through
``flotilla up --autoscale`` itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from flotilla.cli.local_scaler import Decision, EngineHandle, Observation


class SimEngines:
    """In-process ``engine_sim`` engines, one HTTP server each (``engine_sim.serve_engines``), on free ports."""

    def __init__(self, base: Any) -> None:
        #: an ``engine_sim.EngineConfig``; its ``startup_delay`` is the cold start
        self.base = base
        self._next = 0

    async def start(self, *, cold: bool = True) -> EngineHandle:
        from engine_sim import serve_engines

        update: dict[str, Any] = {"port": 0, "engine_index": self._next}
        if not cold:
            update["startup_delay"] = 0.0
        cfg = self.base.model_copy(update=update)
        self._next += 1
        stack = contextlib.AsyncExitStack()
        running = await stack.enter_async_context(serve_engines([cfg]))
        return EngineHandle(url=running[0].url, engine=running[0].engine, started=0.0, owner=stack)

    async def stop(self, handle: EngineHandle) -> None:
        stack: contextlib.AsyncExitStack = handle.owner
        await stack.aclose()


class GatewayEndpoints:
    """Tells an in-process gateway (``app.state.gateway``) about engines and reads the model's demand.

    The model is declared in the gateway's catalog (source ``"up"``), so while no engine serves it requests
    are held rather than answered 404. Demand is read the way the operator's autoscaler reads it — the
    ``flotilla.demand`` gauges of the gateway's Prometheus registry — so this path exercises the contract."""

    def __init__(self, gateway: Any, model: str) -> None:
        self.gateway = gateway
        self.model = model
        gateway.fleet.catalog.declare("up", {model: None})

    def publish(self, urls: Sequence[str]) -> None:
        from gateway.endpoints import EndpointSpec

        self.gateway.set_endpoints([EndpointSpec(url=u, model=self.model) for u in urls])

    def demand(self) -> tuple[float, float, float]:
        from prometheus_client import generate_latest

        from flotilla.demand import ModelDemand, parse_demand

        found = parse_demand(generate_latest(self.gateway.metrics.registry).decode()).get(
            self.model, ModelDemand()
        )
        return found.in_flight, found.queued, found.arrivals


class AutoscalerPolicy:
    """Flotilla's autoscaler (``autoscaler.Autoscaler``: KPA or APA, bounds, holds, cooldowns) as a policy.

    The sample is built from what this process knows exactly — the gateway's demand and the in-process
    engines' gauges — rather than scraped, which is what ``autoscaler.FleetSample`` allows for."""

    def __init__(self, settings: Any) -> None:
        from autoscaler import Autoscaler

        self.scaler = Autoscaler(settings)
        self.last: Any = None
        self._previous: Observation | None = None

    def decide(self, obs: Observation) -> Decision:
        from autoscaler import ARRIVALS, DEMAND, RUNNING, WAITING, FleetSample

        running, waiting = float(sum(obs.running)), float(sum(obs.waiting))
        values = (
            {DEMAND: obs.demand, RUNNING: running, WAITING: waiting} if obs.ready else {DEMAND: obs.demand}
        )
        prev, self._previous = self._previous, obs
        if prev is not None and obs.now > prev.now:
            # the gateway's arrivals counter as a rate (req/s): the offered load, which a backlog does not swell
            values[ARRIVALS] = max(0.0, obs.arrivals - prev.arrivals) / (obs.now - prev.now)
        sample = FleetSample(
            ready=obs.ready, values=values, queued=obs.queued, in_flight=obs.in_flight,
            busy=obs.demand > 0 or running > 0 or waiting > 0,
        )  # fmt: skip
        self.last = decision = self.scaler.recommend(sample, current=obs.ready + obs.starting, now=obs.now)
        return Decision(decision.desired, decision.panic, dict(decision.values))


def make_policy(
    name: str, min_engines: int, max_engines: int, *, target: float = 8.0, stable_window: float = 60.0,
    scale_down_cooldown: float = 30.0,
) -> AutoscalerPolicy:  # fmt: skip
    """``flotilla up --autoscale``'s policy: KPA or APA on the gateway's demand (Knative's concurrency), with
    windows short enough to watch (Knative's 60 s stable window, 10 % of it for panic)."""
    from autoscaler import DEMAND, POLICIES, MetricTarget, ScalerSettings

    algorithm = name.upper()
    if algorithm not in POLICIES:
        raise ValueError(
            f"unknown autoscaling policy {name!r}; choose from {', '.join(p.lower() for p in POLICIES)}"
        )
    return AutoscalerPolicy(
        ScalerSettings(
            max_replicas=max_engines, min_replicas=min_engines, metrics=(MetricTarget(DEMAND, target),),
            algorithm=algorithm, stable_window=stable_window, panic_window=stable_window / 10,
            scale_down_cooldown=scale_down_cooldown, scale_to_zero_grace=30.0,
        )
    )  # fmt: skip
