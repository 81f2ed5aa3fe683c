"""``flotilla operator`` and ``flotilla crds``."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from flotilla import crds as api
from flotilla_operator import peering
from flotilla_operator.app import PEERING_NAME, OperatorConfig, run
from flotilla_operator.autoscaling import AutoscalingOptions


def all_manifests() -> list[dict[str, object]]:
    """Flotilla's CRDs followed by kopf's peering CRDs (the chart's ``crds/`` directory, in order)."""
    return [*api.manifests(), *peering.manifests()]


@click.command("crds")
@click.option(
    "--output-dir",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write one file per CRD into this directory instead of printing a multi-document stream.",
)
def crds(output_dir: Path | None) -> None:
    """Print (or write) the CRD manifests generated from Flotilla's models."""
    docs = [api.render(m) for m in all_manifests()]
    if output_dir is None:
        click.echo("---\n".join(docs), nl=False)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    for manifest, text in zip(all_manifests(), docs, strict=True):
        (output_dir / api.file_name(manifest)).write_text(text)


@click.command("operator")
@click.option(
    "--kubeconfig", envvar="KUBECONFIG", default=None, help="Kubeconfig file (default: in-cluster)."
)
@click.option("--context", default=None, help="Kubeconfig context.")
@click.option("--namespace", "-n", "namespaces", multiple=True, help="Watch only these namespaces (repeat).")
@click.option("--standalone", is_flag=True, help="No peering: act even if other replicas run.")
@click.option("--peering", "peering_name", default=PEERING_NAME, show_default=True, help="Peering object.")
@click.option(
    "--priority",
    type=int,
    default=None,
    help="Peering priority; the highest acts (default: random per process).",
)
@click.option("--workers", default=16, show_default=True, help="Handler worker threads.")
@click.option(
    "--liveness",
    default=None,
    help="Serve kopf's liveness probe at this URL, e.g. http://$(POD_IP):8080/healthz.",
)
@click.option(
    "--gateway-metrics-url",
    "gateway_metrics_urls",
    multiple=True,
    help="A gateway's /metrics URL (or base URL) the autoscaler reads per-model demand from (repeat).",
)
@click.option(
    "--gateway-discovery/--no-gateway-discovery",
    default=True,
    show_default=True,
    help="Also read demand from Ready pods labelled flotilla.dev/component=gateway (their 'http' port).",
)
@click.option(
    "--gateway-namespace",
    "gateway_namespaces",
    multiple=True,
    help="Namespaces to discover gateway pods in (repeat; default: the watched namespaces, or all).",
)
@click.option(
    "--simulator-image",
    envvar="FLOTILLA_SIMULATOR_IMAGE",
    default=None,
    help="Image of engine.type=simulator engines without engine.image (Flotilla's own image; the chart sets it).",
)
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
def operator(
    kubeconfig: str | None,
    context: str | None,
    namespaces: tuple[str, ...],
    standalone: bool,
    peering_name: str,
    priority: int | None,
    workers: int,
    liveness: str | None,
    gateway_metrics_urls: tuple[str, ...],
    gateway_discovery: bool,
    gateway_namespaces: tuple[str, ...],
    simulator_image: str | None,
    verbose: bool,
) -> None:
    """Run the Flotilla operator (ModelDeployment → Deployment + Service, status, drift correction;
    ModelAutoscaler → /scale)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # the autoscaler scrapes every pod each sync period: httpx's one INFO line per request would drown the log
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose else logging.WARNING)
    run(
        OperatorConfig(
            kubeconfig=kubeconfig,
            context=context,
            namespaces=namespaces,
            standalone=standalone,
            peering_name=peering_name,
            priority=priority,
            workers=workers,
            liveness_endpoint=liveness,
            simulator_image=simulator_image or None,
            autoscaling=AutoscalingOptions(
                gateway_metrics_urls=gateway_metrics_urls,
                discover_gateways=gateway_discovery,
                namespaces=gateway_namespaces,
            ),
        )
    )
