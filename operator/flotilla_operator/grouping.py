"""The ModelGroup controller: one kopf daemon per group, observing request sizes, solving, writing ``/scale``.

One tick, with the I/O here and the decisions in ``optimizer`` (the integer program, the counter window,
the stabiliser; pure, clock passed in) and ``group_status`` (pure):

1. read every member through its ``/scale`` subresource and its ModelDeployment (``spec.gpuType``, served
   model), and the ModelAutoscalers of the namespace (a member one of them targets is left to it);
2. read the profiles from the ConfigMap ``spec.profiles.configMapName`` (one ``flotilla profile`` file per
   value) and the prices (the built-in list under ``spec.prices``);
3. scrape the gateways' ``flotilla_gateway_request_sizes_total`` (the same gateway discovery as the
   autoscaler's: pods labelled ``flotilla.dev/component=gateway`` and ``--gateway-metrics-url``) into the
   counter window; the workload is its growth over ``windowSeconds``;
4. solve (CBC, in a thread), stabilise scale-downs, clamp to each member's bounds, write what changed
   through ``/scale``, and post a ``PlanChanged`` Event when the GPUs per type change;
5. write the plan (its split per GPU type and size bucket, which the gateways route by), per-member
   replicas and the conditions into the status.

A daemon, like the autoscaler's, because the window and the stabiliser are memory kept between ticks and
kopf stops daemons on the replica that peering pauses. After a restart the stabiliser starts from the
members' current replicas, so a fail-over never scales a group down before a full stabilisation window.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import kopf
from pydantic import ValidationError

from flotilla.crds import API_VERSION, ModelDeploymentSpec, ModelGroupSpec
from flotilla.sizes import parse_sizes
from flotilla_operator import group_status as report
from flotilla_operator.autoscaling import AutoscalingOptions, find_gateways
from flotilla_operator.autoscaling_status import rfc3339
from flotilla_operator.errors import KubeError, NotFound
from flotilla_operator.kube import MD_PLURAL, Kube, _path
from flotilla_operator.publish import post_event, tick_until_stopped, write_status
from optimizer import DEFAULT_PRICES, Infeasible, OptimizerError, Profile, Slo, solve, validated
from optimizer.planning import CounterWindow, MemberBounds, Stabilizer, clamp, gpu_summary, routing_shares

log = logging.getLogger("flotilla.operator.groups")

MG_PLURAL = "modelgroups"
Problem = report.GroupProblem


@dataclass(frozen=True)
class Member:
    name: str
    gpu_type: str
    replicas: int
    bounds: MemberBounds
    scaled_by: str = ""


class Stop(Exception):
    """A tick cannot go on: the problem to report."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _stop(reason: str, message: str) -> Stop:
    return Stop(Problem(report.PLANNED, reason, message[:2000]))


@dataclass
class GroupLoop:
    """The state of one ModelGroup's daemon: its counter window and its stabiliser."""

    kube: Kube
    http: httpx.AsyncClient
    options: AutoscalingOptions
    namespace: str
    name: str
    clock: Callable[[], float] = time.time
    window: CounterWindow | None = None
    stabilizer: Stabilizer | None = None
    last_problem: str | None = field(default=None)

    async def call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.kube.request, method, path, **kw)

    async def tick(self, body: dict[str, Any]) -> float:
        """One observe-solve-apply round; returns the seconds until the next one."""
        previous = body.get("status") or {}
        try:
            spec = ModelGroupSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            await self.publish(body, problem=Problem(report.PLANNED, "InvalidSpec", str(exc)[:2000]))
            return 30.0
        if self.window is None or self.window.window != spec.window_seconds:
            self.window = CounterWindow(spec.window_seconds)
        if self.stabilizer is None or self.stabilizer.seconds != spec.stabilization_seconds:
            self.stabilizer = Stabilizer(spec.stabilization_seconds)
        try:
            members = await self.members(spec)
            profiles = await self.profiles(spec, {m.gpu_type for m in members})
            prices = {**DEFAULT_PRICES, **spec.prices}
            missing = sorted(m.gpu_type for m in members if m.gpu_type not in prices)
            if missing:
                raise _stop("NoPrice", f"no price for GPU type(s) {', '.join(missing)}: set spec.prices")
            counts = await self.scrape(spec.model)
        except Stop as stop:
            await self.publish(body, problem=stop.problem)
            return spec.sync_period_seconds
        now = self.clock()
        self.window.add(now, counts)
        grid = profiles[0]
        try:
            workload = self.window.workload(now, grid, spec.model)
        except OptimizerError as exc:
            await self.publish(body, problem=Problem(report.PLANNED, "InvalidInput", str(exc)))
            return spec.sync_period_seconds
        if workload is None:
            problem = Problem(
                report.PLANNED, "Observing", "waiting for a second scrape of the gateways", True
            )
            await self.publish(body, problem=problem)
            return spec.sync_period_seconds
        if workload.total == 0:
            # The size counter moves only when requests *finish*: a group planned down to zero GPUs would never
            # see the requests the gateways hold for it, and never scale back up. An idle group keeps its replicas.
            message = (
                f"no finished request of {spec.model!r} in the last {self.window.span:.0f} s: replicas held"
            )
            await self.publish(body, problem=Problem(report.PLANNED, "NoTraffic", message, True))
            return spec.sync_period_seconds
        slo = Slo(ttft=spec.slo.ttft_seconds, tpot=spec.slo.tpot_seconds, attainment=spec.slo.attainment)
        try:
            plan = await asyncio.to_thread(
                solve, profiles, workload, prices, slo, slice_factor=spec.slice_factor, headroom=spec.headroom
            )
        except OptimizerError as exc:
            reason = "Infeasible" if isinstance(exc, Infeasible) else "InvalidInput"
            await self.publish(body, problem=Problem(report.PLANNED, reason, str(exc)))
            return spec.sync_period_seconds
        statuses, scale_error = await self.apply(members, plan.counts, now)
        gpus = gpu_summary(plan.counts)
        best = plan.best_single
        new_plan = report.plan_status(
            input_bounds=grid.input_bounds, output_bounds=grid.output_bounds, shares=routing_shares(plan),
            rate=workload.total, cost=plan.cost, best_single=best[1] if best else None, now=self.stamp(),
        )  # fmt: skip
        if gpus != previous.get("gpus"):
            log.info("%s/%s: plan %s at $%.4g/h", self.namespace, self.name, gpus, plan.cost)
            await self.event(
                body, "PlanChanged", f"GPUs {gpus} at ${plan.cost:.4g}/h for {workload.total:.3g} req/s"
            )
        await self.publish(
            body, plan=new_plan, members=statuses, gpus=gpus, cost=plan.cost, scale_error=scale_error
        )
        return spec.sync_period_seconds

    async def members(self, spec: ModelGroupSpec) -> list[Member]:
        autoscaled = await self.autoscaled()
        out: list[Member] = []
        for m in spec.members:
            try:
                md = await self.call("GET", _path(API_VERSION, MD_PLURAL, self.namespace, m.name))
                scale = await self.call("GET", _path(API_VERSION, MD_PLURAL, self.namespace, m.name, "scale"))
            except NotFound:
                raise _stop("MemberNotFound", f"ModelDeployment {m.name} does not exist") from None
            except KubeError as exc:
                raise _stop("MemberNotFound", str(exc)) from None
            try:
                md_spec = ModelDeploymentSpec.model_validate(md.get("spec") or {})
            except ValidationError as exc:
                raise _stop("MemberInvalid", f"ModelDeployment {m.name}: {exc}") from None
            if not md_spec.gpu_type:
                raise _stop("MissingGpuType", f"ModelDeployment {m.name} has no spec.gpuType")
            if md_spec.served_name != spec.model:
                raise _stop(
                    "ModelMismatch",
                    f"ModelDeployment {m.name} serves {md_spec.served_name!r}, not {spec.model!r}",
                )
            if any(o.gpu_type == md_spec.gpu_type for o in out):
                raise _stop("DuplicateGpuType", f"two members run on GPU type {md_spec.gpu_type}")
            out.append(
                Member(
                    name=m.name,
                    gpu_type=md_spec.gpu_type,
                    replicas=int((scale.get("spec") or {}).get("replicas") or 0),
                    bounds=MemberBounds(m.min_replicas, m.max_replicas),
                    scaled_by=autoscaled.get(m.name, ""),
                )
            )
        return out

    async def autoscaled(self) -> dict[str, str]:
        """ModelDeployment name -> ``ModelAutoscaler/<name>`` for the members an autoscaler owns."""
        try:
            listing = await self.call("GET", _path(API_VERSION, "modelautoscalers", self.namespace))
        except KubeError:
            return {}
        out: dict[str, str] = {}
        for item in listing.get("items") or []:
            ref = (item.get("spec") or {}).get("scaleTargetRef") or {}
            if ref.get("kind", "ModelDeployment") == "ModelDeployment" and ref.get("name"):
                out[ref["name"]] = f"ModelAutoscaler/{item['metadata']['name']}"
        return out

    async def profiles(self, spec: ModelGroupSpec, gpu_types: set[str]) -> list[Profile]:
        name = spec.profiles.config_map_name
        try:
            cm = await self.call("GET", _path("v1", "configmaps", self.namespace, name))
        except KubeError as exc:
            raise _stop("ProfilesNotFound", f"ConfigMap {name}: {exc}") from None
        found: dict[str, Profile] = {}
        for key, text in sorted((cm.get("data") or {}).items()):
            try:
                profile = validated(Profile, json.loads(text), f"profile {name}/{key}")
            except (ValueError, OptimizerError) as exc:
                raise _stop("InvalidInput", f"ConfigMap {name} key {key}: {exc}") from None
            if profile.gpu in gpu_types:
                found[profile.gpu] = profile
        missing = sorted(gpu_types - set(found))
        if missing:
            raise _stop("NoProfile", f"ConfigMap {name} has no profile for GPU type(s) {', '.join(missing)}")
        return [found[g] for g in sorted(found)]

    async def scrape(self, model: str) -> dict[tuple[int, int], float]:
        """The size counter of ``model`` summed over every gateway (any failure: no sample this tick)."""
        urls = await find_gateways(self.call, self.options)
        if not urls:
            raise _stop("NoGateway", "no gateway found (pods labelled flotilla.dev/component=gateway)")
        texts = await asyncio.gather(*(self._get(u) for u in urls), return_exceptions=True)
        total: dict[tuple[int, int], float] = {}
        for url, text in zip(urls, texts, strict=True):
            if isinstance(text, BaseException):
                raise _stop("ScrapeFailed", f"{url}: {type(text).__name__}: {text}")
            for key, value in parse_sizes(text, model).items():
                total[key] = total.get(key, 0.0) + value
        return total

    async def _get(self, url: str) -> str:
        url = url if url.rstrip("/").endswith("/metrics") else url.rstrip("/") + "/metrics"
        response = await self.http.get(url, timeout=self.options.scrape_timeout)
        response.raise_for_status()
        return response.text

    async def apply(
        self, members: list[Member], counts: dict[str, int], now: float
    ) -> tuple[list[dict[str, Any]], str | None]:
        assert self.stabilizer is not None
        self.stabilizer.forget({m.name for m in members})
        statuses: list[dict[str, Any]] = []
        errors: list[str] = []
        for m in members:
            planned = counts.get(m.gpu_type, 0)
            desired = clamp(self.stabilizer.desire(m.name, planned, now, current=m.replicas), m.bounds)
            replicas = m.replicas
            if not m.scaled_by and desired != m.replicas:
                path = _path(API_VERSION, MD_PLURAL, self.namespace, m.name, "scale")
                try:
                    await self.call("PATCH", path, body={"spec": {"replicas": desired}},
                                    content_type="application/merge-patch+json")  # fmt: skip
                    log.info("%s/%s: %s %d -> %d", self.namespace, self.name, m.name, m.replicas, desired)
                    replicas = desired
                except KubeError as exc:
                    errors.append(f"{m.name}: {exc}")
            statuses.append({
                "name": m.name, "gpuType": m.gpu_type, "plannedReplicas": planned,
                "desiredReplicas": desired, "replicas": replicas, "scaledBy": m.scaled_by,
            })  # fmt: skip
        return statuses, "; ".join(errors)[:2000] or None

    async def publish(self, body: dict[str, Any], *, problem: Problem | None = None, **fields: Any) -> None:
        key = f"{problem.reason}: {problem.message}" if problem else None
        if problem is not None and not problem.waiting and key != self.last_problem:
            await self.event(body, problem.reason, problem.message, warning=True)
        self.last_problem = key
        generation = int(body["metadata"].get("generation") or 0)
        new = report.status(
            body.get("status"), generation=generation, now=self.stamp(), problem=problem, **fields
        )
        await write_status(self.kube, MG_PLURAL, body, new)

    async def event(self, body: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        await post_event(self.kube, "ModelGroup", body, reason, message, now=self.stamp(), warning=warning)

    def stamp(self) -> str:
        return rfc3339(self.clock())


async def run_group(
    body: kopf.Body, name: str, namespace: str | None, stopped: kopf.DaemonStopped, memo: Any,
    options: AutoscalingOptions, **_: Any,
) -> None:  # fmt: skip
    """kopf daemon: one loop per ModelGroup, for as long as it exists and this replica is active."""
    assert namespace is not None, "ModelGroup is namespaced"
    log.info("model group %s/%s: started", namespace, name)
    async with httpx.AsyncClient(trust_env=False) as http:
        loop = GroupLoop(memo.kube, http, options, namespace, name)
        await tick_until_stopped(loop.tick, body, stopped, what=f"model group {namespace}/{name}")
