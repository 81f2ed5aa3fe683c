"""Fixtures of the cluster tier: the images (built and cached by hack/), one kind cluster per session, the
Flotilla image loaded into it. ``make e2e-cluster`` runs the build scripts first, outside any test timeout."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e_cluster.kind import KindCluster, script

#: the cluster's name; FLOTILLA_KEEP_CLUSTER=1 keeps it after the session and a later session reuses it
CLUSTER_NAME = os.environ.get("FLOTILLA_CLUSTER_NAME", "flotilla-e2e")


@pytest.fixture(scope="session")
def flotilla_image() -> str:
    """The repository's Dockerfile built on the local Python base (hack/flotilla-image.sh), or an image already
    in the local Docker engine named by FLOTILLA_E2E_IMAGE (to test a published or a deliberately broken one)."""
    script("docker-engine.sh")
    return os.environ.get("FLOTILLA_E2E_IMAGE") or script("flotilla-image.sh")


@pytest.fixture(scope="session")
def redis_image() -> str:
    """Debian's redis-server on a debootstrapped base, standing in for the chart's public redis image."""
    script("docker-engine.sh")
    return script("base-image.sh", "redis")


@pytest.fixture(scope="session")
def kind_cluster(
    flotilla_image: str, redis_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KindCluster]:
    bin_dir = script("build-cluster-tools.sh")
    node_image = script("kind-node-image.sh")
    cluster = KindCluster(CLUSTER_NAME, Path(bin_dir), tmp_path_factory.mktemp("kind"))
    keep = os.environ.get("FLOTILLA_KEEP_CLUSTER") == "1"
    if cluster.exists() and keep:
        cluster.export_kubeconfig()
    else:
        if cluster.exists():
            cluster.delete()
        try:
            cluster.create(node_image)
        except AssertionError as e:
            logs = cluster.node_logs() if cluster.exists() else ""
            cluster.delete()
            raise AssertionError(f"{e}\n--- node journal ---\n{logs}") from None
    try:
        cluster.load(flotilla_image)
        cluster.load(redis_image)
        yield cluster
    finally:
        if not keep:
            cluster.delete()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:6]
