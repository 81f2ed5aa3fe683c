"""The autoscaler's public face is pinned: the bench and `flotilla up` build on it (coord: AUTOSCALER_API.md),
so removing or renaming a name must be deliberate."""

import autoscaler

PINNED = [
    "APA", "ARRIVALS", "DEMAND", "HELD_METRICS_MISSING", "HELD_PODS_NOT_READY", "HELD_SCALE_DOWN_COOLDOWN",
    "HELD_SCALE_UP_COOLDOWN", "HELD_WINDOW_FILLING", "KPA", "KV_CACHE", "LIMITED_DOWN_RATE", "LIMITED_MAX",
    "LIMITED_MIN", "LIMITED_UP_RATE", "METRICS", "POLICIES", "RPS", "RUNNING", "TTFT_P95", "WAITING",
    "Autoscaler", "Collector", "Decision", "FleetSample", "GatewayScrape", "MetricLoad", "MetricTarget",
    "PanicState", "PodScrape", "PolicyInput", "PolicyResult", "Sampler", "ScalerSettings", "ScalerState",
    "ScalingPolicy", "Scrape", "gateway_metrics_url", "histogram_quantile", "policy_named",
]  # fmt: skip


def test_exports_are_pinned() -> None:
    assert sorted(autoscaler.__all__) == sorted(PINNED)
    missing = [name for name in PINNED if not hasattr(autoscaler, name)]
    assert missing == []


def test_every_registered_policy_has_its_registry_name() -> None:
    assert {name: policy.name for name, policy in autoscaler.POLICIES.items()} == {"KPA": "KPA", "APA": "APA"}
