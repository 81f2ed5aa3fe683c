"""The scaler: windows per metric, a policy by name, then what every policy shares — bounds, cooldowns, holds.

One ``Autoscaler`` per scaled object. Each tick the caller hands it a ``FleetSample`` (from ``Sampler``), the
target's current replica count and the time, and gets a ``Decision``; it applies ``decision.desired`` when
``decision.scale`` is true. Order of the steps, each with the reason it exists:

1. **Windows.** Every metric's load goes into its window; the policy reads the stable and panic averages.
2. **Policy** (``registry.POLICIES[settings.algorithm]``): replicas wanted per metric, the largest wins.
3. **From zero.** At zero replicas, any request queued or in flight at a gateway asks for a pod at once,
   whatever the metrics say and past every cooldown: the gateway holds that request for a bounded time.
4. **Bounds.** ``[min_replicas, max_replicas]``. With ``min_replicas = 0`` the last pod stays until the fleet
   has seen no traffic at all for ``scale_to_zero_grace`` (traffic = anything waiting, running, queued, in
   flight or finished since the last tick), so a pause between two requests does not cost a cold start.
5. **Holds on scale-down** (never flap, never act blind): no scale-down until the windows have been filled
   for a full stable window since this scaler started (after an operator restart the windows are empty and a
   few samples must not undo the previous decision), none while a pod failed to answer (HPA likewise treats
   missing pods as fully loaded when scaling down) or while fewer pods answer than the target has (some are
   still starting: their load is unknown, and removing pods while others load is how fleets oscillate), none
   within ``scale_down_cooldown`` of the last scaling.
   A scale-up waits only for ``scale_up_cooldown`` (0 by default): under-provisioning costs SLOs,
   over-provisioning only money, and the down-cooldown then stops the count from bouncing back.

**State across restarts.** What the steps need beyond the windows — last scale time, last busy time, KPA's
panic state — is a ``ScalerState``; the operator persists it in the ``ModelAutoscaler`` status and passes it
back when it creates the scaler again. The scaler updates it on every decision that changes the count,
assuming the caller applies it; if applying fails, ``restore`` the state from before the call.

The clock is the caller's: ``now`` is passed in (wall time in the operator so persisted times stay valid,
simulated time in benchmarks, plain numbers in tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from autoscaler.policy import MetricLoad, PanicState, PolicyInput, ScalingPolicy
from autoscaler.registry import policy_named
from autoscaler.sampling import FleetSample
from autoscaler.settings import ScalerSettings
from autoscaler.windows import Window

__all__ = [
    "HELD_METRICS_MISSING",
    "HELD_PODS_NOT_READY",
    "HELD_SCALE_DOWN_COOLDOWN",
    "HELD_SCALE_UP_COOLDOWN",
    "HELD_WINDOW_FILLING",
    "LIMITED_DOWN_RATE",
    "LIMITED_MAX",
    "LIMITED_MIN",
    "LIMITED_UP_RATE",
    "Autoscaler",
    "Decision",
    "ScalerState",
]

#: ``Decision.limited``: the recommendation was raised to ``min_replicas`` / cut to ``max_replicas`` (HPA's
#: ScalingLimited reasons)
LIMITED_MIN: Final = "TooFewReplicas"
LIMITED_MAX: Final = "TooManyReplicas"
#: ``Decision.limited``: the max scale-up / scale-down rate cut the change short (HPA's ScaleUpLimit)
LIMITED_UP_RATE: Final = "ScaleUpLimit"
LIMITED_DOWN_RATE: Final = "ScaleDownLimit"
#: ``Decision.held``: a change the policy wanted and the scaler deferred
HELD_WINDOW_FILLING: Final = "WindowFilling"
HELD_METRICS_MISSING: Final = "MetricsMissing"
HELD_PODS_NOT_READY: Final = "PodsNotReady"
HELD_SCALE_DOWN_COOLDOWN: Final = "ScaleDownCooldown"
HELD_SCALE_UP_COOLDOWN: Final = "ScaleUpCooldown"


@dataclass(frozen=True, slots=True)
class ScalerState:
    """Everything a scaler must remember across an operator restart (times on the caller's clock)."""

    #: when the scaler last changed the replica count
    last_scale_time: float | None = None
    #: last tick that saw any traffic (for the scale-to-zero grace period)
    last_busy_time: float | None = None
    panic: PanicState = field(default_factory=PanicState)


@dataclass(frozen=True, slots=True)
class Decision:
    now: float
    #: the target's replicas when the decision was made
    current: int
    #: the replicas to set (== current: leave the target alone)
    desired: int
    #: the policy's want before bounds and holds; None when no metric had data (ScalingActive=False)
    recommended: int | None
    #: metric name → replicas that metric alone wants
    per_metric: Mapping[str, int]
    #: metric name → the stable-window load the decision used (fleet totals, see ``sampling``)
    values: Mapping[str, float]
    panic: bool
    #: LIMITED_MIN / LIMITED_MAX when a bound changed the recommendation, LIMITED_UP_RATE /
    #: LIMITED_DOWN_RATE when a rate bound did, else None
    limited: str | None
    #: one of the HELD_* reasons when a wanted change was deferred, else None
    held: str | None
    #: one line for an Event or a log: what was decided and why
    reason: str

    @property
    def scale(self) -> bool:
        return self.desired != self.current

    @property
    def active(self) -> bool:
        return self.recommended is not None


class Autoscaler:
    """The scaling decision for one target; feed it one ``FleetSample`` per tick (see the module docstring)."""

    def __init__(
        self,
        settings: ScalerSettings,
        *,
        state: ScalerState | None = None,
        policy: ScalingPolicy | None = None,
    ) -> None:
        self._windows: dict[str, Window] = {}
        self._since: float | None = None
        self._state = state or ScalerState()
        self._explicit_policy = policy
        self.settings = settings
        self.policy = policy or policy_named(settings.algorithm)
        self.reconfigure(settings)

    @property
    def state(self) -> ScalerState:
        return self._state

    def restore(self, state: ScalerState) -> None:
        """Undo the state change of a decision that could not be applied (the windows keep their samples)."""
        self._state = state

    def reconfigure(self, settings: ScalerSettings) -> None:
        """New settings (a spec change): windows of metrics still in use keep their samples."""
        self.settings = settings
        self.policy = self._explicit_policy or policy_named(settings.algorithm)
        names = {m.name for m in settings.metrics}
        self._windows = {n: self._windows.get(n) or Window(settings.stable_window) for n in names}
        for window in self._windows.values():
            window.span = settings.stable_window

    def recommend(self, sample: FleetSample, *, current: int, now: float) -> Decision:
        s = self.settings
        if self._since is None:
            self._since = now
        for name, window in self._windows.items():
            if name in sample.values:
                window.add(now, sample.values[name])
        state = self._state
        busy = sample.busy or sample.queued > 0 or sample.in_flight > 0
        last_busy = now if busy else state.last_busy_time
        loads = tuple(
            MetricLoad(
                m.name,
                m.target,
                self._windows[m.name].average(now),
                self._windows[m.name].average(now, s.panic_window),
            )
            for m in s.metrics
        )
        result = self.policy.recommend(PolicyInput(now, current, sample.ready, loads, s, panic=state.panic))
        from_zero = current == 0 and (sample.queued > 0 or sample.in_flight > 0)
        desired = current if result.desired is None else result.desired
        if from_zero:
            desired = max(desired, 1)
        limited = held = None
        floor = s.min_replicas
        if floor == 0 and current > 0:
            idle_since = last_busy if last_busy is not None else self._since
            if now - idle_since < s.scale_to_zero_grace:
                floor = 1  # the last pod waits out the grace period
        if desired < floor:
            desired = floor
            limited = LIMITED_MIN if floor == s.min_replicas else None
        if desired > s.max_replicas:
            desired, limited = s.max_replicas, LIMITED_MAX
        raw = max(result.per_metric.values()) if result.per_metric else None
        if limited is None and raw is not None and result.desired is not None:
            if raw > desired:
                limited = LIMITED_MAX if desired == s.max_replicas else LIMITED_UP_RATE
            elif raw < result.desired and not result.panic.active:
                limited = LIMITED_DOWN_RATE
        if desired < current <= s.max_replicas:
            if now - self._since < s.stable_window:
                held = HELD_WINDOW_FILLING
            elif sample.missing:
                held = HELD_METRICS_MISSING
            elif sample.ready < current:
                held = HELD_PODS_NOT_READY
            elif state.last_scale_time is not None and now - state.last_scale_time < s.scale_down_cooldown:
                held = HELD_SCALE_DOWN_COOLDOWN
        elif (
            desired > current >= s.min_replicas
            and not from_zero
            and state.last_scale_time is not None
            and now - state.last_scale_time < s.scale_up_cooldown
        ):
            held = HELD_SCALE_UP_COOLDOWN
        if held is not None:
            desired = current
        self._state = ScalerState(
            last_scale_time=now if desired != current else state.last_scale_time,
            last_busy_time=last_busy,
            panic=result.panic,
        )
        values = {m.name: m.stable for m in loads if m.stable is not None}
        return Decision(
            now=now,
            current=current,
            desired=desired,
            recommended=result.desired,
            per_metric=result.per_metric,
            values=values,
            panic=result.panic.active,
            limited=limited,
            held=held,
            reason=self._reason(current, desired, result.per_metric, values, from_zero, held, limited),
        )

    def _reason(
        self,
        current: int,
        desired: int,
        per_metric: Mapping[str, int],
        values: Mapping[str, float],
        from_zero: bool,
        held: str | None,
        limited: str | None,
    ) -> str:
        if from_zero and current == 0:
            why = "requests are waiting at the gateway for a model with no pods"
        elif per_metric:
            name = max(per_metric, key=lambda n: per_metric[n])
            target = next(m.target for m in self.settings.metrics if m.name == name)
            why = f"{name} load {values.get(name, 0.0):.3g} at target {target:g}/pod wants {per_metric[name]}"
        else:
            why = "no metric has data"
        verb = f"{current} -> {desired}" if desired != current else f"stay at {current}"
        extra = "".join(f"; {x}" for x in (limited, held) if x)
        return f"{self.policy.name} {verb}: {why}{extra}"
