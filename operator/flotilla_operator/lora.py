"""The LoRA controller: LoRAAdapters → ``lora_manager`` placement → load/unload on engine pods → status, Events.

The kopf handlers that feed it are in ``lora_handlers``; this module holds the per-process state and one pass.

Placement is per base model, not per adapter: the adapters of one ModelDeployment share its pods' slots, so
one pass (``lora_manager.converging``) observes every pod of the model, plans all of its adapters together and
acts. Every trigger therefore names a model key ``(namespace, ModelDeployment name)``:

- LoRAAdapter create / spec update / operator start (resume), and a resync timer per adapter — the timer
  catches what no watch event shows, such as an engine container that restarted and lost its adapters;
- engine pod events (``flotilla.dev/component=engine``, ``flotilla.dev/lora-enabled=true``): a pod that
  appears, turns ready, restarts or goes re-triggers the pass within a watch round trip, not a resync period;
- LoRAAdapter deletion: kopf's finalizer holds the object until a pass with the adapter at 0 replicas has
  unloaded it from every pod that answers.

Passes of one model are serialised by a lock and coalesced by request number: a caller is satisfied by any
pass that *started* after it asked (it read the indexes after the change that triggered the call), so a burst
of pod events costs one or two passes, not one each. Everything comes from kopf indexes (adapters by model,
pods by model, ModelDeployments), so a pass makes no API reads; it writes a status only when it changed.

The engines' own ``/v1/models`` are the truth about what is loaded (see ``lora_manager.converging``), which is
what makes a restarted operator converge without duplicate loads: it re-reads the engines, and the
deterministic placement picks the same pods for anything still in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import ValidationError

from flotilla import labels
from flotilla.crds import API_VERSION, LoRAAdapterSpec, ModelDeploymentSpec
from flotilla_operator import lora_status
from flotilla_operator.errors import KubeError, NotFound
from flotilla_operator.handlers import State, now
from lora_manager import (
    EngineClient,
    EnginePod,
    LoraDisabled,
    Outcome,
    Plan,
    Retry,
    SourceRefused,
    Wanted,
    converge,
    engine_path,
)

log = logging.getLogger("flotilla.operator.lora")

#: seconds between resync passes per adapter (pod events handle the common cases within a second)
RESYNC = 10.0

Key = tuple[str, str]


def _first(index: Any, key: Key) -> dict[str, Any] | None:
    for body in index.get(key) or ():
        return dict(body)
    return None


def _ready(pod: Mapping[str, Any]) -> bool:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or status.get("phase") != "Running" or not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def engine_pods(pods: Iterable[Mapping[str, Any]], slots: int) -> list[EnginePod]:
    out = []
    for pod in pods:
        if not _ready(pod):
            continue
        meta = pod["metadata"]
        port = (meta.get("annotations") or {}).get(labels.ENGINE_PORT, labels.DEFAULT_ENGINE_PORT)
        ip = pod["status"]["podIP"]
        host = f"[{ip}]" if ":" in ip else ip
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        out.append(EnginePod(meta["name"], f"http://{host}:{port}", slots, node))
    return sorted(out, key=lambda p: p.name)


def adapter_slots(spec: ModelDeploymentSpec) -> int:
    """Adapters one pod may hold: its GPU slots, ``maxLoras`` — not the larger CPU cache (``maxCpuLoras``).

    vLLM swaps CPU-cached adapters into the GPU slots in milliseconds, but one batch runs at most ``maxLoras``
    distinct adapters: on a pod holding more, requests for the extra ones wait for a slot whenever the others
    are busy. The LoRA benchmark measured it: replicating hot adapters into a CPU cache of 8 (5 adapters per
    pod, 4 GPU slots) gave a worse TTFT p90 than one replica each within the slots (docs/benchmarks.md).
    """
    return spec.lora.max_loras


def served_name(body: Mapping[str, Any]) -> str:
    return str((body.get("spec") or {}).get("adapterName") or body["metadata"]["name"])


def _ref(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": "LoRAAdapter",
        "metadata": {"namespace": meta["namespace"], "name": meta["name"], "uid": meta.get("uid", "")},
    }


@dataclass
class LoraController:
    """Per-process state of the LoRA controller (one per operator; kopf peering keeps one acting)."""

    resync: float = RESYNC
    retry: Retry = field(default_factory=lambda: Retry(attempts=3, base=0.2, cap=1.0))
    #: connect fast (a vanished pod must not stall a pass), read slowly (a Hub download takes minutes)
    timeout: httpx.Timeout = field(default_factory=lambda: httpx.Timeout(300.0, connect=3.0))
    _engines: EngineClient | None = None
    _locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    _asked: dict[Key, int] = field(default_factory=dict)
    _started: dict[Key, int] = field(default_factory=dict)
    _last: dict[Key, Outcome | None] = field(default_factory=dict)
    #: status as last written, by adapter uid (the index lags behind our own writes)
    _written: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: passes run, per model (coalescing is visible here)
    passes: dict[Key, int] = field(default_factory=dict)

    def engines(self) -> EngineClient:
        if self._engines is None:
            self._engines = EngineClient(timeout=self.timeout, retry=self.retry)
        return self._engines

    async def close(self) -> None:
        if self._engines is not None:
            await self._engines.aclose()
            self._engines = None

    async def reconcile(self, key: Key, state: State, indexes: Mapping[str, Any]) -> Outcome | None:
        """Run (or wait for) a pass of model ``key`` that starts after this call; its outcome."""
        ticket = self._asked[key] = self._asked.get(key, 0) + 1
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if self._started.get(key, 0) >= ticket:
                return self._last.get(key)
            self._started[key] = self._asked[key]
            self.passes[key] = self.passes.get(key, 0) + 1
            outcome = await self._pass(key, state, indexes)
            self._last[key] = outcome
            return outcome

    async def _pass(self, key: Key, state: State, indexes: Mapping[str, Any]) -> Outcome | None:
        namespace, md_name = key
        adapters = [dict(b) for b in indexes["index_lora"].get(key) or ()]
        if not adapters:
            return None
        md = _first(indexes["index_md"], key)
        problem: tuple[str, str] | None = None
        spec: ModelDeploymentSpec | None = None
        if md is None or md["metadata"].get("deletionTimestamp"):
            problem = ("BaseModelNotFound", f"ModelDeployment {namespace}/{md_name} does not exist")
        else:
            try:
                spec = ModelDeploymentSpec.model_validate(md.get("spec") or {})
            except ValidationError:
                problem = ("BaseModelNotFound", f"ModelDeployment {md_name} has an invalid spec")
            else:
                if not spec.lora.enabled:
                    problem = ("LoraNotEnabled", f"ModelDeployment {md_name} has spec.lora.enabled=false")
        if spec is None or problem is not None:
            for body in adapters:
                if not body["metadata"].get("deletionTimestamp"):
                    desired = int((body.get("spec") or {}).get("replicas") or 0)
                    obs = lora_status.Observation(desired, frozenset(), problem)
                    await self._write(state, body, obs)
            return None
        slots = adapter_slots(spec)
        pods = engine_pods(indexes["index_lora_pods"].get(key) or (), slots)
        sized_by = f"maxLoras={slots}"
        wanted = [_wanted(body, len(pods), self._target(body)) for body in adapters]
        by_name = {served_name(b): b for b in adapters}

        async def record(plan: Plan) -> None:
            """Persist each target before loading there (see ``lora_manager.converging``: in-flight loads)."""
            for want in wanted:
                if want is None or by_name[want.name]["metadata"].get("deletionTimestamp"):
                    continue
                target = sorted(plan.target.get(want.name, ()))
                if target != sorted(want.pending):
                    await self._patch(state, by_name[want.name], {"targetPods": target})

        outcome = await converge(self.engines(), pods, [w for w in wanted if w is not None], on_plan=record)
        for action in outcome.actions:
            if action.changed and action.adapter in by_name:
                verb = "Loaded" if action.verb == "load" else "Unloaded"
                prep = "on" if action.verb == "load" else "from"
                await _event(state, by_name[action.adapter], verb, f"{verb} {prep} pod {action.pod}")
        for want in wanted:
            if want is None:
                continue
            body = by_name[want.name]
            if body["metadata"].get("deletionTimestamp"):
                continue
            obs = _observe(want, outcome, pods, md_name, sized_by)
            await self._write(state, body, obs)
        return outcome

    def forget(self, uid: str) -> None:
        """Drop what was cached about a deleted adapter."""
        self._written.pop(uid, None)

    def _target(self, body: Mapping[str, Any]) -> frozenset[str]:
        status = self._written.get(body["metadata"].get("uid", "")) or body.get("status") or {}
        return frozenset(status.get("targetPods") or ())

    async def _patch(self, state: State, body: Mapping[str, Any], patch: dict[str, Any]) -> None:
        meta = body["metadata"]
        try:
            await asyncio.to_thread(state.kube.patch_lora_status, meta["namespace"], meta["name"], patch)
        except KubeError as exc:  # NotFound included: deleted meanwhile
            log.warning("could not write status of lora %s/%s: %s", meta["namespace"], meta["name"], exc)
            return
        uid = meta.get("uid", "")
        self._written[uid] = {**(self._written.get(uid) or body.get("status") or {}), **patch}

    async def _write(self, state: State, body: dict[str, Any], obs: lora_status.Observation) -> None:
        meta = body["metadata"]
        uid = meta.get("uid", "")
        previous = self._written.get(uid, body.get("status") or {})
        new = lora_status.build(previous, obs, int(meta.get("generation") or 0), now())
        if lora_status.unchanged(previous, new):
            return
        try:
            await asyncio.to_thread(state.kube.patch_lora_status, meta["namespace"], meta["name"], new)
        except NotFound:
            return
        except KubeError as exc:
            log.warning("could not write status of lora %s/%s: %s", meta["namespace"], meta["name"], exc)
            return
        state.count("status/LoRAAdapter")
        self._written[uid] = new
        if obs.problem is not None and _reason(previous, lora_status.DEGRADED) != obs.problem[0]:
            await _event(state, body, obs.problem[0], obs.problem[1], warning=True)


def _reason(status: Mapping[str, Any], type_: str) -> str | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return str(cond.get("reason"))
    return None


def _wanted(body: Mapping[str, Any], ready_pods: int, pending: frozenset[str] = frozenset()) -> Wanted | None:
    try:
        spec = LoRAAdapterSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return None  # the CRD schema rejects these; an object from an older CRD is skipped
    if body["metadata"].get("deletionTimestamp"):
        replicas = 0
    elif spec.replicas is not None:
        replicas = spec.replicas
    else:
        replicas = min(ready_pods, spec.max_replicas or ready_pods)
    name = spec.adapter_name or str(body["metadata"]["name"])
    return Wanted(
        name, engine_path(spec.source), replicas, spec.placement.weight, spec.placement.policy, pending
    )


def _observe(
    want: Wanted, outcome: Outcome, pods: list[EnginePod], md_name: str, sized_by: str
) -> lora_status.Observation:
    loaded = frozenset(outcome.loaded.get(want.name, ()))
    errors = outcome.errors.get(want.name) or []
    problem: tuple[str, str] | None = None
    refused = [e for e in errors if isinstance(e, SourceRefused)]
    disabled = [e for e in errors if isinstance(e, LoraDisabled)]
    short = outcome.plan.shortfall.get(want.name, 0)
    if refused:
        problem = ("SourceRefused", f"the engine cannot load {want.path!r}: {refused[0]}")
    elif disabled:
        problem = ("LoraDisabled", str(disabled[0]))
    elif errors:
        problem = ("EngineError", f"{len(errors)} engine call(s) failed, retrying: {errors[0]}")
    elif not pods:
        problem = ("NoReadyPods", f"ModelDeployment {md_name} has no ready engine pod")
    elif short:
        placed = want.replicas - short
        problem = (
            "InsufficientCapacity",
            f"{placed} of {want.replicas} replicas placed: {len(pods)} ready pod(s) with {sized_by} have no "
            f"free slot for another copy; add pods, raise spec.lora.maxLoras of "
            f"ModelDeployment {md_name} or lower spec.replicas",
        )
    elif outcome.unreachable and len(loaded) < want.replicas:
        pod, exc = next(iter(outcome.unreachable.items()))
        problem = ("EngineError", f"pod {pod} does not answer: {exc}")
    loading = any(a == want.name for a, _ in outcome.plan.loads)
    target = outcome.plan.target.get(want.name, frozenset())
    return lora_status.Observation(want.replicas, loaded, problem, loading, target)


async def _event(
    state: State, body: Mapping[str, Any], reason: str, message: str, *, warning: bool = False
) -> None:
    try:
        await asyncio.to_thread(
            state.kube.post_event,
            _ref(body),
            type_="Warning" if warning else "Normal",
            reason=reason,
            message=message,
            now=now(),
        )
    except KubeError as exc:
        log.warning("could not post event %s: %s", reason, exc)
