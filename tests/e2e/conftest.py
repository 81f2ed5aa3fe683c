"""Fixtures of the e2e tier: one real control plane per session, the CRDs, the operator, pod simulators."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla_operator import peering
from tests.e2e.controlplane import FLOTILLA, REPO, ControlPlane, control_plane
from tests.e2e.podsim import PodSimulator

CRDS = REPO / "charts" / "flotilla" / "crds"
#: what the session operator runs for ``engine.type: simulator`` (kwok runs no images; the name is checked)
SIMULATOR_IMAGE = "flotilla:e2e"


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok on loopback (built on first use)."""
    with control_plane() as plane:
        yield plane


@pytest.fixture(scope="session")
def crds(cluster: ControlPlane) -> ControlPlane:
    cluster.kubectl("apply", "-f", str(CRDS))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", timeout=70)
    import yaml

    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(peering.peering_object("flotilla")))
    return cluster


class OperatorProcess:
    """``flotilla operator`` as a real process against the test cluster (restartable)."""

    def __init__(self, cluster: ControlPlane, log: Path, *extra: str) -> None:
        self.cluster, self.log, self.extra = cluster, log, extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [FLOTILLA, "operator", "--kubeconfig", str(self.cluster.kubeconfig),
                 *self.extra],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.cluster.env(),
            )  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.output():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"operator exited ({self.proc.returncode}):\n{self.output()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{needle!r} not in the operator log after {timeout}s:\n{self.output()[-3000:]}")


@pytest.fixture(scope="session")
def operator(crds: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(
        crds,
        tmp_path_factory.mktemp("operator") / "operator.log",
        "--priority", "100", "--simulator-image", SIMULATOR_IMAGE,
    )  # fmt: skip
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        if os.environ.get("FLOTILLA_E2E_SHOW_LOGS"):
            print(proc.output()[-20000:])


@pytest.fixture(scope="session")
def pod_sims(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodSimulator]:
    sims = PodSimulator(cluster, tmp_path_factory.mktemp("podsim"))
    sims.start()
    try:
        yield sims
    finally:
        sims.stop()


@pytest.fixture
def ns(cluster: ControlPlane) -> Iterator[str]:
    """A fresh namespace per test (deleted without waiting)."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
