"""The control plane in a box lives in :mod:`bench.harness.controlplane` (the operator benchmark runs it too);
e2e tests import it from here."""

from bench.harness.controlplane import (
    FLOTILLA,
    NODE_NAME,
    REPO,
    SERVICE_CIDR,
    TOKEN,
    ControlPlane,
    ControlPlaneError,
    binaries,
    control_plane,
    pick_pod_cidr,
)

__all__ = [
    "FLOTILLA",
    "NODE_NAME",
    "REPO",
    "SERVICE_CIDR",
    "TOKEN",
    "ControlPlane",
    "ControlPlaneError",
    "binaries",
    "control_plane",
    "pick_pod_cidr",
]
