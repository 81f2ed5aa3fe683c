"""Child processes of a benchmark run: started on loopback, waited for, pinned, and always stopped.

Every server the benchmark starts (the simulated fleet, Flotilla's gateway, peer routers) is a separate process
so that contenders are measured the same way — over real HTTP, with their own interpreter or binary — and so
one can be pinned to a CPU for the overhead mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx


class BenchError(Exception):
    """Base of the benchmark's errors; the CLI prints these as one line."""


class StartError(BenchError):
    """A server the benchmark needs did not come up."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive free ports (engines of a fleet get consecutive ports)."""
    for _ in range(200):
        base = free_port(host)
        if base + count >= 65535:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise StartError(f"no {count} consecutive free ports on {host}")


def flotilla_argv(*args: str) -> list[str]:
    """Run a ``flotilla`` subcommand with this interpreter (no reliance on the console script being on PATH)."""
    return [sys.executable, "-c", "from flotilla.cli import main; main()", *args]


class Proc:
    """A child process with its output in a log file (shown when it fails to start)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        cwd: str | None = None,
    ) -> None:
        """``log``: append the output to this file (a restarted process keeps one log); default a new temp file.
        ``cwd``: the working directory (default: this process's)."""
        self.name = name
        self.argv = list(argv)
        self.log = log or Path(tempfile.mkstemp(prefix=f"flotilla-bench-{name}-", suffix=".log")[1])
        self._log_file = self.log.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            cwd=cwd,
        )

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def pin(self, cpus: set[int]) -> bool:
        """Pin the process (all its threads) to ``cpus``; False where affinity is unsupported."""
        if not hasattr(os, "sched_setaffinity"):
            return False
        try:
            task_dir = Path(f"/proc/{self.popen.pid}/task")
            tids = [int(t.name) for t in task_dir.iterdir()] if task_dir.exists() else [self.popen.pid]
            for tid in tids:
                os.sched_setaffinity(tid, cpus)
        except OSError:
            return False
        return True

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process group (fault injection: SIGKILL a crash, SIGSTOP/SIGCONT a hang)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
        if sig == signal.SIGKILL:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it after ``timeout`` seconds."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log_file.close()

    def cleanup(self) -> None:
        with contextlib.suppress(OSError):
            self.log.unlink()


async def wait_http(
    proc: Proc | None, url: str, *, within: float = 60.0, ok: Sequence[int] = (200,), method: str = "GET",
    json: object = None,
) -> None:  # fmt: skip
    """Poll ``url`` until it answers with a status in ``ok``; fail early if ``proc`` died."""
    deadline = time.monotonic() + within
    last = ""
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc is not None and not proc.alive():
                raise StartError(f"{proc.name} exited with code {proc.popen.returncode}:\n{proc.tail()}")
            try:
                response = await client.request(method, url, json=json)
                if response.status_code in ok:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2)
    where = f"\n{proc.tail()}" if proc is not None else ""
    raise StartError(f"{url} not ready after {within:.0f}s ({last}){where}")
