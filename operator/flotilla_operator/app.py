"""Assembling and running the operator: an explicit kopf registry, settings, login, and ``run``.

Nothing is registered at import time: ``create_registry`` builds a fresh ``kopf.OperatorRegistry``, so tests
can run two differently configured operators in one process, and importing this module has no effect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import secrets
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes import client

from flotilla import labels
from flotilla.crds import GROUP, VERSION
from flotilla_operator import autoscaling, grouping, handlers, lora_handlers
from flotilla_operator.kube import Kube, api_client

MANAGED = {labels.MANAGED_BY: labels.MANAGED_BY_VALUE}
PEERING_NAME = "flotilla"


@dataclass
class OperatorConfig:
    """How one operator process runs. Defaults suit a cluster deployment via the Helm chart."""

    #: kubeconfig path; None = the pod's service account (in-cluster)
    kubeconfig: str | None = None
    context: str | None = None
    #: namespaces to watch; empty = the whole cluster
    namespaces: Collection[str] = ()
    #: kopf peering: with two replicas the highest priority one works and the other stands by
    standalone: bool = False
    peering_name: str = PEERING_NAME
    #: None = a random priority, so that identical replicas differ: kopf pauses *all* operators that share
    #: the top priority, and the highest one acts while the others stand by
    priority: int | None = None
    #: worker threads for the sync handlers (each holds one API call at a time)
    workers: int = 16
    liveness_endpoint: str | None = None
    #: image run by ModelDeployments with ``engine.type: simulator`` and no ``engine.image`` (Flotilla's own)
    simulator_image: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: the ModelAutoscaler controller (gateway discovery, scrape timeout)
    autoscaling: autoscaling.AutoscalingOptions = field(default_factory=autoscaling.AutoscalingOptions)


def _login(configuration: client.Configuration, **_: Any) -> kopf.ConnectionInfo:
    """kopf authenticates with the same credentials as the operator's own client (one source).

    kopf calls this again whenever the API server answers 401, and ``get_api_key_with_prefix`` runs the
    client's refresh hook first, so rotated service-account tokens and exec-plugin tokens are picked up.
    """
    header = configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    scheme: str | None = None
    token: str | None = None
    if header:
        scheme, token = header.split(" ", 1) if " " in header else ("Bearer", header)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def _configure(settings: kopf.OperatorSettings, config: OperatorConfig, **_: Any) -> None:
    # Progress and diff-base live in our own annotations, never in .status: status belongs to the API.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Events are posted explicitly for what the operator did; kopf's per-handler chatter stays in the log.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = config.workers
    settings.peering.name = config.peering_name
    settings.peering.priority = config.priority or 0
    settings.peering.standalone = config.standalone
    # One ClusterKopfPeering (shipped by the chart) even when only some namespaces are watched: per-namespace
    # KopfPeering objects would have to exist in every watched namespace before the operator could start.
    settings.peering.clusterwide = True
    settings.peering.mandatory = not config.standalone
    # A lost watch must not go unnoticed for long; the server closes watches after this many seconds.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


def create_registry(config: OperatorConfig, configuration: client.Configuration) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry, id="login")(functools.partial(_login, configuration=configuration))
    kopf.on.startup(registry=registry, id="configure")(functools.partial(_configure, config=config))
    md = (GROUP, VERSION, "modeldeployments")
    kopf.index(*md, registry=registry, id="index_md")(handlers.index_md)
    for decorator in (
        kopf.on.create(*md, registry=registry, id="reconcile"),
        kopf.on.update(*md, registry=registry, id="reconcile", field="spec"),
        kopf.on.resume(*md, registry=registry, id="reconcile"),
    ):
        decorator(handlers.reconcile)
    kopf.on.event("apps", "v1", "deployments", labels=MANAGED, registry=registry, id="deployment")(
        handlers.child_event
    )
    kopf.on.event("", "v1", "services", labels=MANAGED, registry=registry, id="service")(handlers.child_event)
    kopf.on.event(
        "networking.k8s.io", "v1", "networkpolicies", labels=MANAGED, registry=registry, id="networkpolicy"
    )(handlers.child_event)
    options = config.autoscaling
    if not options.namespaces and config.namespaces:
        options = dataclasses.replace(options, namespaces=tuple(config.namespaces))
    kopf.daemon(
        GROUP, VERSION, "modelautoscalers", registry=registry, id="autoscale", cancellation_timeout=10.0
    )(functools.partial(autoscaling.autoscale, options=options))
    kopf.daemon(GROUP, VERSION, grouping.MG_PLURAL, registry=registry, id="group", cancellation_timeout=10.0)(
        functools.partial(grouping.run_group, options=options)
    )
    lora_handlers.register(registry)
    return registry


async def operator(config: OperatorConfig, *, stop_flag: asyncio.Event | None = None) -> None:
    """Run until cancelled or ``stop_flag`` is set (kopf's own signal handling applies in ``run``)."""
    if config.priority is None:
        config = dataclasses.replace(config, priority=secrets.randbelow(1_000_000) + 1)
    api = api_client(config.kubeconfig, context=config.context, pool_size=config.workers * 2)
    try:
        await kopf.operator(
            registry=create_registry(config, api.configuration),
            memo=handlers.State(kube=Kube(api), simulator_image=config.simulator_image),
            standalone=config.standalone,
            priority=config.priority,
            peering_name=None if config.standalone else config.peering_name,
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            liveness_endpoint=config.liveness_endpoint,
            stop_flag=stop_flag,
        )
    finally:
        api.close()  # type: ignore[no-untyped-call]


def run(config: OperatorConfig) -> None:
    asyncio.run(operator(config))
