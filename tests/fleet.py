"""``sim_fleet``: real ``flotilla sim`` processes on free loopback ports, for integration tests of any component.

    with sim_fleet(2, extra_args=["--preset", "zero"], kv_events=True) as fleet:
        fleet.urls                 # ["http://127.0.0.1:PORT", ...]
        fleet.kv_event_endpoints   # ["tcp://127.0.0.1:Q", ...] (publishing only with kv_events=True)
        fleet.kill(0); fleet.restart(0)

By default every engine is its own process, so a test can kill one engine (SIGKILL: no goodbye, exactly like a
crashed pod) and restart it on the same ports. ``one_process_per_engine=False`` runs ``--engines N`` in one
process (what ``flotilla sim`` users do); then ``kill``/``restart`` act on the whole fleet.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.procs import Proc, flotilla_argv, free_ports
from tests.support import free_port


@dataclass
class _Proc:
    """One ``flotilla`` process that can be killed and started again on the same argv, logging to one file."""

    args: list[str]
    log: Path
    proc: Proc | None = None

    def start(self) -> None:
        self.proc = Proc("sim", flotilla_argv(*self.args), log=self.log)

    def kill(self) -> None:
        """SIGKILL: no goodbye, exactly like a crashed pod."""
        if self.proc is not None:
            self.proc.signal(signal.SIGKILL)
            self.proc.stop()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        self.proc = None


@dataclass
class SimFleet:
    ports: list[int]
    kv_event_ports: list[int]
    procs: list[_Proc] = field(default_factory=list)
    one_process_per_engine: bool = True
    startup_timeout: float = 60.0

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    @property
    def kv_event_endpoints(self) -> list[str]:
        return [f"tcp://127.0.0.1:{q}" for q in self.kv_event_ports]

    def _proc(self, i: int) -> _Proc:
        return self.procs[i if self.one_process_per_engine else 0]

    def kill(self, i: int) -> None:
        """SIGKILL engine ``i`` (its whole process)."""
        self._proc(i).kill()

    def restart(self, i: int, *, wait: bool = True) -> None:
        """Start engine ``i`` again on its ports (cold: empty cache, counters reset)."""
        proc = self._proc(i)
        proc.kill()
        proc.start()
        if wait:
            indices = [i] if self.one_process_per_engine else range(len(self.ports))
            for j in indices:
                self.wait_healthy(j)

    def alive(self, i: int) -> bool:
        proc = self._proc(i).proc
        return proc is not None and proc.alive()

    def wait_healthy(self, i: int, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        url = self.urls[i] + "/health"
        while time.monotonic() < deadline:
            proc = self._proc(i).proc
            if proc is None or not proc.alive():
                raise RuntimeError(f"engine {i} exited:\n{self.log_tail(i)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(
            f"engine {i} not healthy after {timeout or self.startup_timeout}s:\n{self.log_tail(i)}"
        )

    def log_tail(self, i: int, lines: int = 40) -> str:
        log = self._proc(i).log
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        for p in self.procs:
            p.stop()


@contextlib.contextmanager
def sim_fleet(
    engines: int = 2,
    *,
    extra_args: Sequence[str] = (),
    one_process_per_engine: bool = True,
    kv_events: bool = False,
    wait: bool = True,
) -> Iterator[SimFleet]:
    """Run ``engines`` simulated engines as ``flotilla sim`` subprocesses on free loopback ports."""
    logdir = Path(tempfile.mkdtemp(prefix="flotilla-sim-"))
    extra = [*extra_args, *(["--kv-events"] if kv_events else [])]
    if one_process_per_engine:
        ports = [free_port() for _ in range(engines)]
        kv_ports = [free_port() for _ in range(engines)]
        procs = [
            _Proc(
                ["sim", "--engines", "1", "--port", str(p), "--kv-events-port", str(q), *extra],
                logdir / f"{i}.log",
            )
            for i, (p, q) in enumerate(zip(ports, kv_ports, strict=True))
        ]
    else:
        base, kv_base = free_ports(engines), free_ports(engines)
        ports = [base + i for i in range(engines)]
        kv_ports = [kv_base + i for i in range(engines)]
        procs = [
            _Proc(
                [
                    "sim",
                    "--engines",
                    str(engines),
                    "--port",
                    str(base),
                    "--kv-events-port",
                    str(kv_base),
                    *extra,
                ],
                logdir / "fleet.log",
            )
        ]
    fleet = SimFleet(ports, kv_ports, procs, one_process_per_engine)
    try:
        for p in procs:
            p.start()
        if wait:
            for i in range(engines):
                fleet.wait_healthy(i)
        yield fleet
    finally:
        fleet.close()
        if os.environ.get("FLOTILLA_KEEP_SIM_LOGS") is None:
            for f in logdir.iterdir():
                f.unlink()
            logdir.rmdir()


@contextlib.contextmanager
def sim_argv(args: Sequence[str], port: int, kv_port: int) -> Iterator[SimFleet]:
    """One engine from an explicit ``flotilla`` argv (e.g. ``sim serve`` and an operator's vLLM arguments) that
    serves on ``port`` (and publishes KV events on ``kv_port``); waits for ``/health``."""
    log = Path(tempfile.mkdtemp(prefix="flotilla-sim-")) / "engine.log"
    fleet = SimFleet([port], [kv_port], [_Proc(list(args), log)])
    try:
        fleet.procs[0].start()
        fleet.wait_healthy(0)
        yield fleet
    finally:
        fleet.close()
        if os.environ.get("FLOTILLA_KEEP_SIM_LOGS") is None:
            log.unlink(missing_ok=True)
            log.parent.rmdir()
