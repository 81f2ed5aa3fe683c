"""KPA: Knative's pod autoscaler with AIBrix's tolerance band — a stable window, and a panic window for bursts.

Per metric, with load L averaged over each window and per-pod target T:

    stable_want = ceil(L_stable ÷ T)     (kept at `current` while L_stable ÷ (ready × T) is in the dead band)
    panic_want  = ceil(L_panic ÷ T)      (same dead band)
    both clamped to [floor(current ÷ max_down_rate), ceil(max_up_rate × current)]

The largest metric wins. **Panic**: entered when ``panic_want ≥ panic_threshold × current`` (a burst that wants
at least twice the pods the target has; at zero, any want) for any metric. In panic the
count is ``max(panic_want, stable_want, current, previous panic decision)``: the short window reacts within
seconds, and nothing is removed while a burst is under way. Panic ends one full stable window after the
condition last held, by which time the stable window has absorbed the burst, so leaving panic does not drop
replicas that the burst still needs.

Outside panic the stable window decides, which is why a quiet minute after a busy hour does not halve the
fleet at once: the average falls gradually, and the scaler's scale-down cooldown comes on top.

Why Knative's trigger and not AIBrix's ``panic ÷ stable > threshold``: AIBrix compares two averages of the
same load, so a slow ramp that has already doubled the fleet's load never panics, and with ``stable = 0`` it
panics on any load at all. Comparing the short window's want with the pods we have asks the question that
matters: are we short by a factor of two right now? One change from Knative: the comparison is with the
target's replicas, pods still starting included, not with the ready pods. Knative's cold starts take seconds;
an LLM engine's take minutes, and counting only ready pods would keep re-triggering panic — and so block every
scale-down — for the whole cold start after the burst has already been answered with enough pods. (Scale-downs
while pods start are held by the scaler anyway.)
"""

from __future__ import annotations

from autoscaler.policy import (
    PanicState,
    PolicyInput,
    PolicyResult,
    clamp,
    pods_for,
    rate_bounds,
    within_tolerance,
)

__all__ = ["KPA"]


class KPA:
    name = "KPA"

    def recommend(self, inputs: PolicyInput) -> PolicyResult:
        s = inputs.settings
        low, high = rate_bounds(inputs.current, s)
        per_metric: dict[str, int] = {}
        stable_want: int | None = None
        panic_want: int | None = None
        triggered = False
        for m in inputs.metrics:
            if m.stable is None:
                continue
            want = self._want(m.stable, m.target, inputs)
            per_metric[m.name] = want
            stable_want = want if stable_want is None else max(stable_want, want)
            if m.panic is None:
                continue
            pwant = self._want(m.panic, m.target, inputs)
            panic_want = pwant if panic_want is None else max(panic_want, pwant)
            if pwant > 0 and pwant >= s.panic_threshold * inputs.current:
                triggered = True
        if stable_want is None:
            return PolicyResult(None, per_metric, inputs.panic)
        stable_want = clamp(stable_want, low, high)
        panic = inputs.panic
        if triggered:
            panic = PanicState(since=panic.since or inputs.now, last_trigger=inputs.now, floor=panic.floor)
        elif panic.active and inputs.now - (panic.last_trigger or inputs.now) >= s.stable_window:
            panic = PanicState()
        if not panic.active:
            return PolicyResult(stable_want, per_metric, panic)
        pwant = clamp(panic_want if panic_want is not None else 0, low, high)
        desired = max(pwant, stable_want, inputs.current, panic.floor)
        return PolicyResult(desired, per_metric, PanicState(panic.since, panic.last_trigger, desired))

    @staticmethod
    def _want(load: float, target: float, inputs: PolicyInput) -> int:
        if within_tolerance(load, target, inputs.ready, inputs.settings):
            return inputs.current
        return pods_for(load, target)
