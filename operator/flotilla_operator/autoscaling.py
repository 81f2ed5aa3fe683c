"""The ModelAutoscaler controller: one kopf daemon per autoscaler, scraping, deciding and writing ``/scale``.

Why a daemon and not a timer: each autoscaler has its own ``syncPeriodSeconds`` (short in tests, seconds in
production) and keeps in-memory windows between ticks; a daemon is one long-lived task per object with its
own loop, and kopf stops every daemon when peering pauses this replica, so only the active operator scales.

One tick, with the I/O here and the decisions in ``autoscaler`` (pure) and ``autoscaling_status`` (pure):

1. read the target through its ``/scale`` subresource (replicas and pod selector, for any kind with /scale);
2. list the target's pods (Running, Ready, with an IP) and find the gateways: pods labelled
   ``flotilla.dev/component=gateway`` (their ``http`` container port) plus ``--gateway-metrics-url``;
3. scrape them all concurrently (``autoscaler.Collector``), sample, decide;
4. write ``spec.replicas`` through ``/scale`` when the decision changes it, post a ``SuccessfulRescale``
   Event, and mirror the decision, the metric values and the scaler's memory into the status.

The scaler's memory (last scale time, last traffic, panic) is read back from the status when the daemon
starts, so an operator restart — or a fail-over to the standby replica — neither forgets a recent scale-up
(the scale-down cooldown still counts from it) nor acts on half-filled windows (no scale-down until a full
stable window has been observed). A decision that could not be written is undone (``Autoscaler.restore``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import kopf
from pydantic import ValidationError

from autoscaler import Autoscaler, Collector, Sampler, ScalerSettings
from flotilla import labels
from flotilla.crds import API_VERSION, ModelAutoscalerSpec
from flotilla_operator import autoscaling_status as report
from flotilla_operator.errors import KubeError, NotFound
from flotilla_operator.kube import Kube, _path
from flotilla_operator.publish import post_event, tick_until_stopped, write_status

log = logging.getLogger("flotilla.operator.autoscaler")

MAS_PLURAL = "modelautoscalers"
#: seconds between ticks while the target is at zero: the tick then only reads the gateways, and each second
#: saved is a second less that the first request waits on top of the cold start
ZERO_SYNC_PERIOD = 1.0
_PLURALS = {"ModelDeployment": "modeldeployments", "Deployment": "deployments", "StatefulSet": "statefulsets"}


@dataclass
class AutoscalingOptions:
    """Operator-wide settings of the autoscaler controller (``flotilla operator`` flags)."""

    #: gateways outside the cluster (or not labelled): their /metrics URLs (or base URLs)
    gateway_metrics_urls: Sequence[str] = ()
    #: look for gateway pods (``flotilla.dev/component=gateway``) through the API server
    discover_gateways: bool = True
    #: namespaces to look for gateway pods in; empty = the whole cluster
    namespaces: Sequence[str] = ()
    #: seconds one scrape of one pod or gateway may take
    scrape_timeout: float = 2.0


def plural(kind: str) -> str:
    return _PLURALS.get(kind, kind.lower() + "s")


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if (
        status.get("phase") != "Running"
        or not status.get("podIP")
        or pod["metadata"].get("deletionTimestamp")
    ):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def engine_url(pod: dict[str, Any]) -> str:
    annotations = pod["metadata"].get("annotations") or {}
    port = int(annotations.get(labels.ENGINE_PORT, labels.DEFAULT_ENGINE_PORT))
    return f"http://{pod['status']['podIP']}:{port}"


def gateway_url(pod: dict[str, Any]) -> str | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == "http":
                return f"http://{pod['status']['podIP']}:{port['containerPort']}/metrics"
    return None


Call = Callable[..., Awaitable[dict[str, Any]]]


async def find_gateways(call: Call, options: AutoscalingOptions) -> list[str]:
    """The gateways' ``/metrics`` URLs: ``--gateway-metrics-url`` plus ready pods labelled as gateways.

    Shared by the autoscaler (per-model demand) and the ModelGroup controller (request sizes)."""
    urls = list(options.gateway_metrics_urls)
    if not options.discover_gateways:
        return urls
    query = [("labelSelector", f"{labels.COMPONENT}={labels.COMPONENT_GATEWAY}")]
    paths = [_path("v1", "pods", ns) for ns in options.namespaces] or ["/api/v1/pods"]
    for path in paths:
        try:
            listing = await call("GET", path, query=query)
        except KubeError as exc:
            log.warning("could not list gateway pods: %s", exc)
            continue
        for pod in listing.get("items") or []:
            url = gateway_url(pod) if _ready(pod) else None
            if url is not None:
                urls.append(url)
    return sorted(set(urls))


@dataclass
class Target:
    api_version: str
    kind: str
    name: str
    namespace: str

    def path(self, sub: str = "") -> str:
        return _path(self.api_version, plural(self.kind), self.namespace, self.name, sub)


@dataclass
class AutoscalerLoop:
    """The state of one ModelAutoscaler's daemon: its scaler (windows, memory) and its sampler."""

    kube: Kube
    collector: Collector
    options: AutoscalingOptions
    namespace: str
    name: str
    scaler: Autoscaler | None = None
    sampler: Sampler | None = None
    spec: ModelAutoscalerSpec | None = None
    last_problem: str | None = field(default=None)

    async def call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.kube.request, method, path, **kw)

    async def tick(self, body: dict[str, Any]) -> float:
        """One scrape-decide-apply round; returns the seconds until the next one."""
        problem: report.Problem | None
        generation = int(body["metadata"].get("generation") or 0)
        try:
            spec = ModelAutoscalerSpec.model_validate(body.get("spec") or {})
            settings = report.settings_from_spec(spec)
        except (ValidationError, ValueError) as exc:
            problem = report.Problem(report.SCALING_ACTIVE, "InvalidSpec", str(exc)[:2000])
            await self.publish(body, report.status(body.get("status"), generation=generation, now=self.stamp(),
                                                   problem=problem), problem)  # fmt: skip
            return 30.0
        period = spec.sync_period_seconds
        self.configure(spec, settings, body)
        assert self.scaler is not None
        ref = spec.scale_target_ref
        target = Target(ref.api_version, ref.kind, ref.name, self.namespace)
        try:
            scale = await self.call("GET", target.path("scale"))
        except NotFound:
            exists = await self.exists(target)
            message = (
                f"the target {ref.kind} {ref.name} has no /scale subresource"
                if exists
                else f"the target {ref.kind} {ref.name} does not exist"
            )
            problem = report.Problem(report.ABLE_TO_SCALE, "FailedGetScale", message)
            await self.publish(body, report.status(body.get("status"), generation=generation, now=self.stamp(),
                                                   problem=problem), problem)  # fmt: skip
            return period
        except KubeError as exc:
            problem = report.Problem(report.ABLE_TO_SCALE, "FailedGetScale", str(exc)[:2000])
            await self.publish(body, report.status(body.get("status"), generation=generation, now=self.stamp(),
                                                   problem=problem), problem)  # fmt: skip
            return period
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        selector = (scale.get("status") or {}).get("selector") or ""
        pods, gateways, models = await asyncio.gather(
            self.pods(selector), self.gateways(), self.model_names(target)
        )
        if self.sampler is None or (models is not None and self.sampler.models != frozenset(models)):
            self.sampler = Sampler(models or ())
        scrape = await self.collector.collect(pods, gateways)
        now = time.time()
        sample = self.sampler.sample(scrape, now)
        before = self.scaler.state
        decision = self.scaler.recommend(sample, current=current, now=now)
        problem = None
        scaled = False
        if decision.scale:
            try:
                await self.call(
                    "PATCH", target.path("scale"), body={"spec": {"replicas": decision.desired}},
                    content_type="application/merge-patch+json",
                )  # fmt: skip
                scaled = True
            except KubeError as exc:
                self.scaler.restore(before)
                problem = report.Problem(report.ABLE_TO_SCALE, "FailedUpdateScale", str(exc)[:2000])
        if scaled:
            log.info("%s/%s: %s", self.namespace, self.name, decision.reason)
            await self.event(body, "SuccessfulRescale", f"New size: {decision.desired}; {decision.reason}")
        new = report.status(
            body.get("status"), generation=generation, now=self.stamp(), current=current, ready=sample.ready,
            decision=decision, settings=settings, state=self.scaler.state, problem=problem, scaled=scaled,
        )  # fmt: skip
        if scaled:
            new["currentReplicas"] = decision.desired
        await self.publish(body, new, problem)
        if current == 0 and not scaled:
            return min(period, ZERO_SYNC_PERIOD)
        return period

    async def exists(self, target: Target) -> bool:
        try:
            await self.call("GET", target.path())
        except KubeError:
            return False
        return True

    def configure(self, spec: ModelAutoscalerSpec, settings: ScalerSettings, body: dict[str, Any]) -> None:
        if self.scaler is None:
            self.scaler = Autoscaler(settings, state=report.state_from_status(body.get("status")))
        elif spec != self.spec:
            self.scaler.reconfigure(settings)
        self.spec = spec

    async def pods(self, selector: str) -> list[str]:
        if not selector:
            return []
        listing = await self.call(
            "GET", _path("v1", "pods", self.namespace), query=[("labelSelector", selector)]
        )
        return sorted(engine_url(p) for p in listing.get("items") or [] if _ready(p))

    async def gateways(self) -> list[str]:
        return await find_gateways(self.call, self.options)

    async def model_names(self, target: Target) -> list[str] | None:
        """The names gateways count this target's demand under (None: unknown this tick, keep the last ones).

        For a ModelDeployment: its served model name and the names of the LoRAAdapters based on it (a request
        for an adapter of a model at zero pods is demand for that model's pods too).
        """
        if target.kind != "ModelDeployment":
            return []
        try:
            md = await self.call("GET", target.path())
        except KubeError:
            return None
        spec = md.get("spec") or {}
        status = md.get("status") or {}
        served = status.get("servedModelName") or spec.get("servedModelName") or spec.get("model")
        names = [served] if served else []
        try:
            adapters = await self.call("GET", _path(API_VERSION, "loraadapters", self.namespace))
        except KubeError:
            return names  # no LoRAAdapter CRD, or not allowed to list them: the base model's demand only
        for item in adapters.get("items") or []:
            aspec = item.get("spec") or {}
            if aspec.get("baseModelDeployment") == target.name:
                names.append(aspec.get("adapterName") or item["metadata"]["name"])
        return names

    async def publish(
        self, body: dict[str, Any], new: dict[str, Any], problem: report.Problem | None
    ) -> None:
        key = f"{problem.reason}: {problem.message}" if problem else None
        if problem is not None and key != self.last_problem:
            await self.event(body, problem.reason, problem.message, warning=True)
        self.last_problem = key
        await write_status(self.kube, MAS_PLURAL, body, new)

    async def event(self, body: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        await post_event(
            self.kube, "ModelAutoscaler", body, reason, message, now=self.stamp(), warning=warning
        )

    @staticmethod
    def stamp() -> str:
        return report.rfc3339(time.time())


async def autoscale(
    body: kopf.Body, name: str, namespace: str | None, stopped: kopf.DaemonStopped, memo: Any,
    options: AutoscalingOptions, **_: Any,
) -> None:  # fmt: skip
    """kopf daemon: one loop per ModelAutoscaler, for as long as it exists and this replica is active."""
    assert namespace is not None, "ModelAutoscaler is namespaced"
    log.info("autoscaler %s/%s: started", namespace, name)
    # trust_env=False: pods are dialled directly, never through an HTTP(S)_PROXY from the environment
    async with httpx.AsyncClient(trust_env=False) as http:
        loop = AutoscalerLoop(
            memo.kube, Collector(http, timeout=options.scrape_timeout), options, namespace, name
        )
        await tick_until_stopped(loop.tick, body, stopped, what=f"autoscaler {namespace}/{name}")
