"""A real Kubernetes cluster in a box for the cluster tier: kind, on a local Docker engine, with images made here.

Why kind and not the loopback control plane of ``tests/e2e``: there the chart's pods are kwok fakes, so the image,
the chart's commands, probes and RBAC as a ServiceAccount sees it, and the engine arguments the operator
generates are unproven. Here every pod is a real container on a real kubelet (docs/e2e.md, "The cluster tier").

Everything is driven through the same command-line tools a user runs (``docker``, ``kind``, ``kubectl``,
``helm``) as subprocesses. Safety: the node lives on a Docker network that cannot leave the machine (no NAT, no
forwarding, FORWARD DROP rules: ``ensure_network``; the engine itself runs with iptables/ip-masq/ip-forward off:
hack/docker-engine.sh); this process only ever dials 127.0.0.1 (``kubectl port-forward``), so the loopback
guard of ``tests/support.py`` stays as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
HACK = REPO / "hack"
CHART = REPO / "charts" / "flotilla"
#: the Docker network of the nodes: internal (no gateway out); kind reuses it when it exists
NETWORK = "flotilla-kind"
BRIDGE = "flkind0"
T = TypeVar("T")


def script(name: str, *args: str, timeout: float = 3600) -> str:
    """Run ``hack/<name>`` (idempotent build scripts) and return the last line of its stdout."""
    proc = subprocess.run(
        ["bash", str(HACK / name), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"hack/{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout.strip().splitlines()[-1]


def ensure_network() -> None:
    """The nodes' Docker network, created once and reused, with no way out of the machine.

    Not ``--internal``: Docker publishes no ports for containers on internal networks, and kind reaches the API
    server through a published 127.0.0.1 port. Instead: no masquerading, dockerd's ``ip-forward=false`` (the
    host does not route), and DROP rules in the host's FORWARD chain for the bridge in both directions, so even
    a host that forwards for someone else forwards nothing of ours.
    """
    if (
        subprocess.run(["docker", "network", "inspect", NETWORK], capture_output=True, check=False).returncode
        != 0
    ):
        subprocess.run(
            ["docker", "network", "create", "--driver", "bridge", "-o", f"com.docker.network.bridge.name={BRIDGE}",
             "-o", "com.docker.network.bridge.enable_ip_masquerade=false", NETWORK],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    inspect = ["docker", "network", "inspect", "--format", "{{json .Options}}", NETWORK]
    options = json.loads(subprocess.run(inspect, capture_output=True, text=True, check=True).stdout)
    wanted = {
        "com.docker.network.bridge.name": BRIDGE,
        "com.docker.network.bridge.enable_ip_masquerade": "false",
    }
    if any(options.get(k) != v for k, v in wanted.items()):
        raise RuntimeError(f"docker network {NETWORK} exists with other options ({options}): remove it")
    for direction in ("-i", "-o"):
        rule = ["FORWARD", direction, BRIDGE, "-j", "DROP"]
        if subprocess.run(["iptables", "-C", *rule], capture_output=True, check=False).returncode != 0:
            subprocess.run(["iptables", "-I", *rule], capture_output=True, text=True, check=True)


#: kind's defaults, spelled out: the node image needs nothing special
KIND_CONFIG = """\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  apiServerAddress: 127.0.0.1
"""


@dataclass
class KindCluster:
    """A kind cluster and the tools to talk to it (``bin_dir`` from hack/build-cluster-tools.sh)."""

    name: str
    bin_dir: Path
    workdir: Path
    kubeconfig: Path = field(init=False)

    def __post_init__(self) -> None:
        self.kubeconfig = self.workdir / "kubeconfig"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "KUBECONFIG": str(self.kubeconfig),
            "KIND_EXPERIMENTAL_DOCKER_NETWORK": NETWORK,
        }

    def run(
        self, *cmd: str, input: str | None = None, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            list(cmd),
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} -> {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def kubectl(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.bin_dir / "kubectl"), *args, **kw)  # type: ignore[arg-type]

    def helm(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.bin_dir / "helm"), *args, **kw)  # type: ignore[arg-type]

    def kind(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.bin_dir / "kind"), *args, **kw)  # type: ignore[arg-type]

    def exists(self) -> bool:
        return self.name in self.kind("get", "clusters").stdout.split()

    def create(self, node_image: str) -> None:
        ensure_network()
        config = self.workdir / "kind.yaml"
        config.write_text(KIND_CONFIG)
        self.kind(
            "create", "cluster", "--name", self.name, "--image", node_image, "--config", str(config),
            "--kubeconfig", str(self.kubeconfig), "--wait", "180s", "--retain", timeout=400,
        )  # fmt: skip

    def export_kubeconfig(self) -> None:
        self.kind("export", "kubeconfig", "--name", self.name, "--kubeconfig", str(self.kubeconfig))

    def delete(self) -> None:
        self.kind("delete", "cluster", "--name", self.name, timeout=180, check=False)

    def load(self, image: str) -> None:
        self.kind("load", "docker-image", image, "--name", self.name, timeout=600)

    def node_logs(self) -> str:
        """The node's kubelet/containerd journal tail, for failure messages."""
        proc = self.run(
            "docker", "exec", f"{self.name}-control-plane", "journalctl", "--no-pager", "-n", "80",
            "-u", "kubelet", "-u", "containerd", check=False,
        )  # fmt: skip
        return proc.stdout[-6000:]

    def token_kubeconfig(self, namespace: str, service_account: str) -> Path:
        """A kubeconfig that authenticates only as the ServiceAccount (a bound token, no client certificate)."""
        token = self.kubectl(
            "create", "token", service_account, "-n", namespace, "--duration", "1h"
        ).stdout.strip()
        server = self.kubectl(
            "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"
        ).stdout
        ca = self.kubectl(
            "config",
            "view",
            "--minify",
            "--raw",
            "-o",
            "jsonpath={.clusters[0].cluster.certificate-authority-data}",
        ).stdout
        path = self.workdir / f"kubeconfig-{namespace}-{service_account}"
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: c, cluster: {{server: '{server}', certificate-authority-data: '{ca}'}}}}]\n"
            f"users: [{{name: u, user: {{token: '{token}'}}}}]\n"
            "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
        )
        return path

    @contextlib.contextmanager
    def port_forward(self, target: str, port: int, namespace: str) -> Iterator[int]:
        """``kubectl port-forward`` on 127.0.0.1 to ``target``'s ``port``; yields the local port."""
        proc = subprocess.Popen(
            [str(self.bin_dir / "kubectl"), "port-forward", "--address", "127.0.0.1", "-n", namespace, target,
             f":{port}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env(),
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 30
            local = 0
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                m = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
                if m:
                    local = int(m.group(1))
                    break
            if not local:
                raise AssertionError(f"kubectl port-forward {target} did not start (exit {proc.poll()})")
            yield local
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()


def eventually(check: Callable[[], T], timeout: float, interval: float = 1.0, what: str = "condition") -> T:
    """Call ``check`` until it returns something truthy (returned); an AssertionError counts as not yet."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
            if result:
                return result
            last = result
        except AssertionError as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met after {timeout}s (last: {last})")
        time.sleep(interval)


class ChatLoad:
    """``clients`` threads sending chat requests through the openai client ``c`` back to back while the block
    runs; every success is kept as its completion time, every failure as a message (none may be lost)."""

    def __init__(
        self, c: Any, model: str, *, clients: int, content: str, max_tokens: int, join: float
    ) -> None:
        self.c, self.model, self.content, self.max_tokens, self.join = c, model, content, max_tokens, join
        self.done: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._worker, args=(n,), daemon=True) for n in range(clients)
        ]

    def _worker(self, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                r = self.c.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": self.content.format(n=n, i=i)}],
                    max_tokens=self.max_tokens,
                )
                assert r.choices[0].message.content
                self.done.append(time.monotonic())
            except Exception as e:  # every failure is collected and reported
                self.failures.append(f"{type(e).__name__}: {e}")

    def served_since(self, t: float) -> int:
        return len([done for done in self.done if done > t])

    def __enter__(self) -> ChatLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.join)
