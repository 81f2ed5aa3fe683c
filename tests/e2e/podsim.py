"""Stand-in engines for kwok's fake pods: one ``flotilla sim`` process per Running engine pod.

kwok marks pods Running and gives each a 127.N.x.y IP, but nothing listens there. This watcher polls the API
server for engine pods (``flotilla.dev/component=engine``) and starts a simulator bound to the pod's own IP
and engine port, serving the pod's served model name; when the pod goes (or its IP changes) the process is
stopped. Every component under test then reaches "pods" over real HTTP at ``status.podIP``, exactly as it
would in a cluster. Polling (0.5 s) instead of a watch keeps it simple and free of TLS warnings.

A pod annotated ``sim.flotilla.test/args`` gets those extra simulator arguments (e.g. ``--startup-delay 3``
for a cold start, ``--time-scale``): the test world's stand-in for what the engine image would do.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from flotilla import labels
from tests.e2e.controlplane import FLOTILLA, TOKEN, ControlPlane
from tests.support import is_loopback, wait_for_port

log = logging.getLogger("flotilla.tests.podsim")

#: extra ``flotilla sim`` arguments for one pod (test-only annotation)
SIM_ARGS = "sim.flotilla.test/args"

#: (pod ip, port, served model name) -> argv of the stand-in process
Command = Callable[[str, int, str], list[str]]


def sim_command(ip: str, port: int, model: str) -> list[str]:
    return [FLOTILLA, "sim", "--engines", "1", "--host", ip, "--port", str(port),
            "--model", model]  # fmt: skip


@dataclass(frozen=True)
class PodKey:
    namespace: str
    name: str
    uid: str


@dataclass
class Sim:
    ip: str
    port: int
    model: str
    proc: subprocess.Popen[bytes]
    args: tuple[str, ...] = ()


@dataclass
class PodSimulator:
    cluster: ControlPlane
    log_dir: Path
    command: Command = sim_command
    interval: float = 0.5
    sims: dict[PodKey, Sim] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="podsim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            for key in list(self.sims):
                self._kill(key)

    def endpoints(self) -> list[tuple[str, int, str]]:
        with self._lock:
            return [(s.ip, s.port, s.model) for s in self.sims.values() if s.proc.poll() is None]

    def _run(self) -> None:
        selector = f"{labels.COMPONENT}={labels.COMPONENT_ENGINE}"
        with httpx.Client(
            base_url=self.cluster.server,
            headers={"Authorization": f"Bearer {TOKEN}"},
            verify=False,  # self-signed serving cert of the loopback test API server
            timeout=10,
        ) as client:
            while not self._stop.is_set():
                try:
                    pods = client.get("/api/v1/pods", params={"labelSelector": selector}).json()["items"]
                    self._sync(pods)
                except (httpx.HTTPError, KeyError, ValueError) as exc:
                    self.errors.append(repr(exc))
                self._stop.wait(self.interval)

    def _sync(self, pods: list[dict[str, object]]) -> None:
        wanted: dict[PodKey, tuple[str, int, str, tuple[str, ...]]] = {}
        for pod in pods:
            meta: dict[str, object] = pod["metadata"]  # type: ignore[assignment]
            status: dict[str, object] = pod.get("status") or {}  # type: ignore[assignment]
            ip = str(status.get("podIP") or "")
            if status.get("phase") != "Running" or not ip or meta.get("deletionTimestamp"):
                continue
            if not is_loopback(ip):  # the safety rule: never serve (or dial) a non-loopback pod IP
                self.errors.append(f"pod {meta['name']} has non-loopback IP {ip}")
                continue
            annotations: dict[str, str] = meta.get("annotations") or {}  # type: ignore[assignment]
            port = int(annotations.get(labels.ENGINE_PORT, labels.DEFAULT_ENGINE_PORT))
            model = annotations.get(labels.SERVED_MODEL_NAME, "model")
            args = tuple(shlex.split(annotations.get(SIM_ARGS, "")))
            key = PodKey(str(meta["namespace"]), str(meta["name"]), str(meta["uid"]))
            wanted[key] = (ip, port, model, args)
        with self._lock:
            for key, sim in list(self.sims.items()):
                if sim.proc.poll() is not None:  # e.g. its pod address was taken: never let that pass quietly
                    self.errors.append(f"simulator of {key.namespace}/{key.name} on {sim.ip}:{sim.port} exited "
                                       f"with {sim.proc.returncode} (log in {self.log_dir})")  # fmt: skip
                    del self.sims[key]
            for key in [k for k in self.sims if wanted.get(k) != self._spec(k)]:
                self._kill(key)
            for key, (ip, port, model, args) in wanted.items():
                if key not in self.sims:
                    self._spawn(key, ip, port, model, args)

    def _spec(self, key: PodKey) -> tuple[str, int, str, tuple[str, ...]]:
        sim = self.sims[key]
        return (sim.ip, sim.port, sim.model, sim.args)

    def _spawn(self, key: PodKey, ip: str, port: int, model: str, args: tuple[str, ...] = ()) -> None:
        # an IP reused by kwok after a pod died: the old process must be gone before the new one binds
        for other in [k for k, s in self.sims.items() if (s.ip, s.port) == (ip, port)]:
            self._kill(other)
        out = (self.log_dir / f"{key.namespace}_{key.name}.log").open("ab")
        proc = subprocess.Popen([*self.command(ip, port, model), *args], stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.sims[key] = Sim(ip, port, model, proc, args)
        log.info("started sim for %s/%s on %s:%d", key.namespace, key.name, ip, port)

    def _kill(self, key: PodKey) -> None:
        sim = self.sims.pop(key)
        if sim.proc.poll() is None:
            sim.proc.terminate()
            try:
                sim.proc.wait(10)
            except subprocess.TimeoutExpired:
                sim.proc.kill()
                sim.proc.wait(5)

    def wait_serving(self, ip: str, port: int, timeout: float = 30) -> None:
        wait_for_port(ip, port, timeout)
