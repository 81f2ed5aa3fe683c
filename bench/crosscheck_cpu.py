"""CPU seconds of the router and of the load generator *while requests were in flight*.

Why: on a 2-core machine shared by the engines, the router and the load generator, a client-side TTFT
includes waiting for a CPU; a load generator that burns more CPU (guidellm runs a main process and worker
processes) slows a Python router more than a Rust one. To say whether that explains a disagreement, the
cross-check needs each process's CPU over the load window only — not guidellm's start-up (imports of torch and
transformers) or the router's idle polling before it. So a sampler reads the CPU of whole process groups
(every child the benchmark starts leads its own session) a few times a second, stamped with wall time, and the
window's CPU is interpolated from the samples around the tool's first send and last completion.

CPU seconds alone cannot tell a router that *works* more from one that *waits for a CPU* more: a starved
process uses no more CPU, it just gets it later. So the same sampler also reads each group's **run-queue wait**
(:func:`group_wait`: the time its threads were runnable but not running, from the kernel's schedstat). That is
how the cross-check found why guidellm measured Flotilla's gateway 3× slower than ``flotilla bench`` did: the
gateway was runnable but queued for a CPU behind guidellm's processes for most of the load window
(docs/benchmarks.md, "Independent cross-check").
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def group_processes(pgid: int) -> Iterator[tuple[Path, list[str]]]:
    """``/proc/PID`` and its ``stat`` fields after the command (state, ppid, pgrp, …, utime at 11, stime at 12)
    of every live process in process group ``pgid``; a process that exits meanwhile is skipped."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                yield entry, fields
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile


def group_cpu(pgid: int) -> float:
    """utime + stime (s) of every live process in process group ``pgid`` (Linux /proc; NaN elsewhere)."""
    if not Path("/proc").is_dir():
        return math.nan
    return sum(int(fields[11]) + int(fields[12]) for _, fields in group_processes(pgid)) / _TICK


def group_wait(pgid: int) -> float:
    """Seconds every thread of every live process in group ``pgid`` spent runnable but waiting for a CPU
    (``/proc/PID/task/TID/schedstat``, second field, ns; NaN where the kernel does not expose it)."""
    if not Path("/proc").is_dir():
        return math.nan
    total = 0
    seen = False
    for entry, _ in group_processes(pgid):
        try:
            for task in (entry / "task").iterdir():
                total += int((task / "schedstat").read_text().split()[1])
                seen = True
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile, or no schedstat
    return total / 1e9 if seen else math.nan


def own_cpu() -> float:
    return time.process_time()


@dataclass
class Samples:
    """(wall time, CPU seconds) pairs per named source."""

    times: list[float] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, at: float, readings: dict[str, float]) -> None:
        self.times.append(at)
        for name, value in readings.items():
            self.values.setdefault(name, []).append(value)

    def at(self, name: str, t: float) -> float:
        """CPU of ``name`` at wall time ``t``, linear between the samples around it (clamped at the ends)."""
        ys = self.values.get(name) or []
        if not ys or math.isnan(t):
            return math.nan
        i = bisect.bisect_left(self.times, t)
        if i <= 0:
            return ys[0]
        if i >= len(ys):
            return ys[-1]
        t0, t1, y0, y1 = self.times[i - 1], self.times[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * ((t - t0) / (t1 - t0) if t1 > t0 else 1.0)

    def between(self, name: str, start: float, end: float) -> float:
        """CPU seconds ``name`` used from ``start`` to ``end`` (wall time)."""
        return self.at(name, end) - self.at(name, start)


@contextlib.asynccontextmanager
async def sampling(sources: dict[str, Callable[[], float]], *, every: float = 0.25) -> AsyncIterator[Samples]:
    """Sample ``sources`` every ``every`` seconds (in a thread: /proc reads block) until the block exits."""
    samples = Samples()

    def read() -> None:
        samples.add(time.time(), {name: f() for name, f in sources.items()})

    async def loop() -> None:
        while True:
            await asyncio.to_thread(read)
            await asyncio.sleep(every)

    task = asyncio.create_task(loop())
    try:
        yield samples
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        read()  # a last sample after the work, so the window's end is covered
