"""APA: AIBrix's application pod autoscaler — a tolerance band around the target, damped by cooldowns.

Per metric, with load L averaged over the stable window, per-pod target T and r = L ÷ (ready × T):

    r > 1 + up_tol    →  min(ceil(L ÷ T), ceil(max_up_rate × current))
    r < 1 − down_tol  →  max(ceil(L ÷ T), floor(current ÷ max_down_rate))
    otherwise         →  current

(AIBrix writes the first case as ``ceil(current × r)``; with r computed per *ready* pod that overshoots while
pods are still starting, so the fleet total is used: the two agree once every pod is ready.) The largest metric
wins. APA has no panic mode: its damping is the scaler's cooldowns, identical for both policies. With no ready
pod (scale from zero) the band is undefined and ``ceil(L ÷ T)`` is used directly.
"""

from __future__ import annotations

from autoscaler.policy import PolicyInput, PolicyResult, clamp, pods_for, rate_bounds, within_tolerance

__all__ = ["APA"]


class APA:
    name = "APA"

    def recommend(self, inputs: PolicyInput) -> PolicyResult:
        s = inputs.settings
        low, high = rate_bounds(inputs.current, s)
        per_metric: dict[str, int] = {}
        for m in inputs.metrics:
            if m.stable is None:
                continue
            in_band = within_tolerance(m.stable, m.target, inputs.ready, s)
            per_metric[m.name] = inputs.current if in_band else pods_for(m.stable, m.target)
        desired = clamp(max(per_metric.values()), low, high) if per_metric else None
        return PolicyResult(desired, per_metric, inputs.panic)
