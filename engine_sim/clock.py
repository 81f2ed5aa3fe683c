"""The engine's simulated clock, and how it maps onto wall time under ``--time-scale``.

Simulated time advances by exactly the model's step times while the engine is busy, whatever the host does;
wall time only decides *when* results are delivered (``wall = anchor + simulated × time_scale``). So latencies
the engine reports (metrics, usage) do not depend on host load, which keeps tests and benchmarks honest on a
shared 2-core machine. If the host is too slow to keep up, the simulation runs *behind* wall time (exported as
``flotilla_sim_lag_seconds``) rather than silently distorting step times; arrivals during a step are stamped
within that step. When the engine goes idle the clock re-anchors, so idle wall time counts as simulated time.
"""

from __future__ import annotations

import time


class SimClock:
    def __init__(self, time_scale: float) -> None:
        self.scale = time_scale
        self._v_anchor = 0.0
        self._w_anchor = time.monotonic()

    def mapped(self) -> float:
        """Simulated time that corresponds to the current wall time."""
        return self._v_anchor + (time.monotonic() - self._w_anchor) / self.scale

    def wall_of(self, sim: float) -> float:
        """Monotonic wall time at which simulated time ``sim`` is due."""
        return self._w_anchor + (sim - self._v_anchor) * self.scale

    def reanchor(self, sim: float) -> None:
        self._v_anchor = sim
        self._w_anchor = time.monotonic()
