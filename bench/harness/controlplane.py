"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (one fake node), started as plain processes for the e2e tier and the benchmarks.

Why this and not kind: no Docker engine and no GPU here, yet the operator must be proven against a real API
server (validation, CEL, /scale, SSA, garbage collection, RBAC). kwok plays the kubelet: pods are scheduled
onto its fake node and marked Running with IPs from a 127.N.0.0/16 range, so a test can run one engine simulator per
pod on that pod's own loopback address (see ``podsim.py``).

Safety (docs/e2e.md): every listener binds 127.0.0.1, kwok hands out 127.x pod IPs, the node IP is
127.0.0.1, endpoint controllers are off (they would reject loopback IPs), and nothing dials a ClusterIP.

Binaries come from ``hack/build-control-plane.sh`` (built from the Go module proxy once, cached in
``~/.cache/flotilla``); the data directory lives on tmpfs and is removed on ``stop``.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.harness.localhost import free_port

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "build-control-plane.sh"
#: the ``flotilla`` entry point of the running interpreter's environment
FLOTILLA = str(Path(sys.executable).parent / "flotilla")
TOKEN = "flotilla-e2e-admin-token"
#: ClusterIPs are API data only here (nothing routes or dials them); /20 leaves room for the 1000 Services of
#: the operator benchmark, where envtest's /24 would run out
SERVICE_CIDR = "10.0.0.0/20"
NODE_NAME = "kwok-node-0"

NODE_MANIFEST = f"""
apiVersion: v1
kind: Node
metadata:
  name: {NODE_NAME}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: {NODE_NAME}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
"""


class ControlPlaneError(RuntimeError):
    pass


def pick_pod_cidr() -> str:
    """A 127.N.0.0/16 range nobody on this machine serves engines in.

    Loopback is shared by every process on the host (other test sessions, other developers' simulators on
    127.1.x.y), and a simulator that finds its pod's address taken would leave the port to a stranger. So the
    second octet is random, and a range is skipped when anything answers on its first addresses.
    """
    rng = random.SystemRandom()
    for _ in range(20):
        octet = rng.randint(64, 254)
        if not any(_listening(f"127.{octet}.0.{i}", 8000) for i in range(1, 9)):
            return f"127.{octet}.0.0/16"
    raise ControlPlaneError("no free 127.N.0.0/16 pod range found")


def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def binaries(timeout: float = 3600.0) -> Path:
    """The bin directory, building it first if needed (the first build takes tens of minutes)."""
    override = os.environ.get("FLOTILLA_CONTROLPLANE_BIN")
    if override:
        return Path(override)
    log = Path(tempfile.gettempdir()) / "flotilla-build-control-plane.log"
    with log.open("ab") as err:
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=err, timeout=timeout, check=False
        )
    if proc.returncode != 0:
        raise ControlPlaneError(f"{BUILD_SCRIPT} failed ({proc.returncode}); see {log}")
    return Path(proc.stdout.decode().strip().splitlines()[-1])


@dataclass
class ControlPlane:
    bin_dir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="flotilla-cp-", dir=_tmpfs())))
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    api_port: int = 0
    pod_cidr: str = field(default_factory=pick_pod_cidr)

    @property
    def pod_prefix(self) -> str:
        """``127.N.`` — every pod IP of this cluster starts with it."""
        return self.pod_cidr.rsplit(".", 2)[0] + "."

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def env(self) -> dict[str, str]:
        """Environment for child processes: our kubeconfig, our binaries first, no in-cluster hints."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["HELM_CACHE_HOME"] = str(self.root / "helm" / "cache")
        env["HELM_CONFIG_HOME"] = str(self.root / "helm" / "config")
        env["HELM_DATA_HOME"] = str(self.root / "helm" / "data")
        return env

    # ------------------------------------------------------------------ processes
    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("wb") as out:
            proc = subprocess.Popen(
                [str(self.bin_dir / name), *args], stdout=out, stderr=subprocess.STDOUT, env=self.env()
            )
        self.procs.append((name, proc))
        return proc

    def _check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise ControlPlaneError(f"{name} exited with {proc.returncode}:\n{tail}")

    def _wait(self, what: str, ok: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if callable(ok) and ok():
                return
            time.sleep(0.25)
        raise ControlPlaneError(f"{what} not ready after {timeout:.0f}s (logs in {self.logs})")

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.bin_dir / "kubectl"), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 180.0) -> None:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        pki = self.root / "pki"
        pki.mkdir(parents=True)
        sa_key = pki / "sa.key"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True, timeout=60
        )
        (pki / "tokens.csv").write_text(f'{TOKEN},admin,admin-uid,"system:masters"\n')

        etcd_port, etcd_peer = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                "--name", "t",
                "--data-dir", str(self.root / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster", f"t=http://127.0.0.1:{etcd_peer}",
                "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}",
                "--unsafe-no-fsync",
                "--log-level", "warn",
            ],
        )  # fmt: skip
        self._wait("etcd", lambda: _http_ok(f"http://127.0.0.1:{etcd_port}/health"), 60)

        self.api_port = free_port()
        self._spawn(
            "kube-apiserver",
            [
                "--etcd-servers", f"http://127.0.0.1:{etcd_port}",
                "--bind-address", "127.0.0.1",
                "--advertise-address", "127.0.0.1",
                "--secure-port", str(self.api_port),
                "--endpoint-reconciler-type", "none",
                "--cert-dir", str(pki / "serving"),
                "--token-auth-file", str(pki / "tokens.csv"),
                "--authorization-mode", "RBAC",
                "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file", str(sa_key),
                "--service-account-signing-key-file", str(sa_key),
                "--service-cluster-ip-range", SERVICE_CIDR,
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )  # fmt: skip
        self._write_kubeconfig()
        self._wait("kube-apiserver", lambda: _http_ok(f"{self.server}/readyz", token=TOKEN), timeout)

        kc = str(self.kubeconfig)
        common = [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
        ]
        self._spawn(
            "kube-controller-manager",
            [
                *common,
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={sa_key}",
                "--controllers=*,-endpoints-controller,-endpointslice-controller,-endpointslice-mirroring-controller",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [*common, "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}"],
        )
        stages = self.root / "kwok-stages.yaml"
        stage_dir = self.bin_dir.parent / "kwok-stages"
        stages.write_text("\n---\n".join(p.read_text() for p in sorted(stage_dir.glob("*.yaml"))))
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={kc}",
                "--manage-all-nodes=true",
                "--node-ip=127.0.0.1",
                f"--cidr={self.pod_cidr}",
                "--node-lease-duration-seconds=40",
                f"--config={stages}",
            ],
        )
        self.kubectl("apply", "-f", "-", input=NODE_MANIFEST)
        self.kubectl(
            "wait", "node", NODE_NAME, "--for=condition=Ready", f"--timeout={int(timeout)}s", timeout=timeout
        )
        # the default ServiceAccount must exist before pods can be admitted in "default"
        self._wait(
            "default serviceaccount",
            lambda: self.kubectl("get", "sa", "default", check=False).returncode == 0,
            60,
        )

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(
            f"""apiVersion: v1
kind: Config
clusters:
- name: flotilla-e2e
  cluster:
    server: {self.server}
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: {TOKEN}
contexts:
- name: flotilla-e2e
  context: {{cluster: flotilla-e2e, user: admin}}
current-context: flotilla-e2e
"""
        )

    def stop(self) -> None:
        """Stop the processes newest first (kwok before the API server before etcd), remove the data."""
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        self.procs.clear()
        if not os.environ.get("FLOTILLA_KEEP_CONTROLPLANE"):
            shutil.rmtree(self.root, ignore_errors=True)


def _tmpfs() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _http_ok(url: str, token: str | None = None) -> bool:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        # the serving certificate is self-signed and generated at start-up; the host is loopback
        return httpx.get(url, headers=headers, verify=False, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def control_plane(timeout: float = 180.0) -> Iterator[ControlPlane]:
    cp = ControlPlane(bin_dir=binaries())
    cp.start(timeout)
    try:
        yield cp
    finally:
        cp.stop()


if __name__ == "__main__":  # pragma: no cover - a developer's shell: python -m bench.harness.controlplane
    from bench.harness.localhost import install_loopback_guard

    install_loopback_guard()

    # background shells ignore SIGINT: make SIGTERM a clean stop too
    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    with control_plane() as plane:
        print(f"export KUBECONFIG={plane.kubeconfig}  # Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
