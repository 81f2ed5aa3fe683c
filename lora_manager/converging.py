"""One pass of the LoRA control loop for one base model: observe the engines, plan, act, report.

Shared by the operator's controller (pods from the API server) and ``flotilla up --lora`` (simulated engines
on loopback), so both place adapters with the same code.

The engines are the source of truth for what is loaded — not a status field or the controller's memory —
because an engine that restarts forgets its adapters and a controller that restarts forgets what it did.
A pass therefore starts with ``GET /v1/models`` on every pod; a pod that does not answer is left out of the
placement (as if not ready), so its adapters are re-placed on the pods that do. Unloads run before loads
(they free the slots the loads need); loads run concurrently across pods.

An adapter loaded with another path than the one wanted (its source changed) is unloaded and placed afresh.

**In-flight loads.** A load takes seconds and ``/v1/models`` lists the adapter only when it is done, so a
controller restarted mid-load cannot see it. Placement from the engines alone would then pick pods afresh —
and when the inputs differ from the first pass (another adapter appeared meanwhile) it picks *other* pods,
and the in-flight load becomes a surplus copy. So the caller records each pass's target before acting
(``on_plan``; the operator writes it to ``status.targetPods``) and hands it back as ``Wanted.pending``: pending
pairs on answering pods count as placed, and their loads are re-issued (the engine answers "already loaded"
once the first one finishes, or loads it if that one was lost).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from lora_manager.engine import EngineClient
from lora_manager.errors import EngineError
from lora_manager.placement import Adapter, Plan, Pod, Policy, place

log = logging.getLogger("flotilla.lora")


@dataclass(frozen=True, slots=True)
class EnginePod:
    """A ready engine pod and where its API answers."""

    name: str
    endpoint: str
    slots: int
    node: str = ""


@dataclass(frozen=True, slots=True)
class Wanted:
    """A managed adapter: ``path`` is what the engine is given as ``lora_path``."""

    name: str
    path: str
    replicas: int
    weight: float = 1.0
    policy: Policy = "LeastLoaded"
    #: pods an earlier pass chose for it (loads may still be in flight)
    pending: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Action:
    verb: str  # "load" | "unload"
    adapter: str
    pod: str
    #: False when the engine said it was already in that state (a race, or an in-flight earlier call)
    changed: bool


@dataclass
class Outcome:
    plan: Plan
    #: adapter -> pods where it is loaded now (observed, plus successful loads, minus unloads)
    loaded: dict[str, set[str]]
    #: adapter -> errors of this pass
    errors: dict[str, list[EngineError]] = field(default_factory=dict)
    #: pods whose /v1/models did not answer (left out of the placement)
    unreachable: dict[str, EngineError] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)


async def converge(
    client: EngineClient,
    pods: Sequence[EnginePod],
    wanted: Iterable[Wanted],
    *,
    on_plan: Callable[[Plan], Awaitable[None]] | None = None,
) -> Outcome:
    wanted = list(wanted)
    by_name = {w.name: w for w in wanted}
    observed, unreachable = await _observe(client, pods)
    stale: list[tuple[str, str]] = []
    loaded: dict[str, set[str]] = {}
    for pod, adapters in observed.items():
        names = set()
        for name, path in adapters.items():
            want = by_name.get(name)
            if want is not None and path and path != want.path:
                stale.append((name, pod))  # loaded from an old source: reload
                continue
            names.add(name)
        loaded[pod] = names
    live = [p for p in pods if p.name in observed]
    intended = {pod: set(names) for pod, names in loaded.items()}
    stale_pairs = set(stale)
    for want in wanted:
        for pod in want.pending:
            if pod in intended and (want.name, pod) not in stale_pairs:
                intended[pod].add(want.name)
    plan = place(
        [Pod(p.name, p.slots, p.node) for p in live],
        [Adapter(w.name, w.replicas, w.weight, w.policy) for w in wanted],
        intended,
    )
    if on_plan is not None:
        await on_plan(plan)
    endpoints = {p.name: p.endpoint for p in pods}
    outcome = Outcome(
        plan=plan,
        loaded={w.name: {p for p, names in loaded.items() if w.name in names} for w in wanted},
        unreachable=unreachable,
    )
    # only what is really there is unloaded; a dropped pending pair has nothing to unload (yet)
    unloads = sorted({(a, p) for a, p in plan.unloads if a in loaded.get(p, ())} | stale_pairs)
    # pending pairs the plan keeps but the engine does not list yet: ask again (idempotent)
    reissued = [(a, p) for a, ps in plan.target.items() for p in sorted(ps) if a not in loaded.get(p, ())]
    loads = list(dict.fromkeys([*plan.loads, *reissued]))
    await asyncio.gather(*(_unload(client, outcome, endpoints[p], a, p) for a, p in unloads))
    await asyncio.gather(*(_load(client, outcome, endpoints[p], by_name[a].path, a, p) for a, p in loads))
    return outcome


async def _observe(
    client: EngineClient, pods: Sequence[EnginePod]
) -> tuple[dict[str, dict[str, str]], dict[str, EngineError]]:
    results = await asyncio.gather(*(client.adapters(p.endpoint) for p in pods), return_exceptions=True)
    observed: dict[str, dict[str, str]] = {}
    unreachable: dict[str, EngineError] = {}
    for pod, result in zip(pods, results, strict=True):
        if isinstance(result, EngineError):
            unreachable[pod.name] = result
        elif isinstance(result, BaseException):
            raise result
        else:
            observed[pod.name] = result
    return observed, unreachable


async def _unload(client: EngineClient, outcome: Outcome, endpoint: str, adapter: str, pod: str) -> None:
    log.info("unload %s from %s", adapter, pod)
    try:
        changed = await client.unload(endpoint, adapter)
    except EngineError as exc:
        outcome.errors.setdefault(adapter, []).append(exc)
        return
    outcome.loaded.setdefault(adapter, set()).discard(pod)
    outcome.actions.append(Action("unload", adapter, pod, changed))


async def _load(
    client: EngineClient, outcome: Outcome, endpoint: str, path: str, adapter: str, pod: str
) -> None:
    log.info("load %s on %s", adapter, pod)
    try:
        changed = await client.load(endpoint, adapter, path)
    except EngineError as exc:
        log.warning("load %s on %s failed: %s", adapter, pod, exc)
        outcome.errors.setdefault(adapter, []).append(exc)
        return
    outcome.loaded.setdefault(adapter, set()).add(pod)
    outcome.actions.append(Action("load", adapter, pod, changed))
