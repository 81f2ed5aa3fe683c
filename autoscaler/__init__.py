"""Flotilla's autoscaler: KPA/APA on vLLM engine metrics and gateway demand, as pure clock-injected code.

Layers, each usable on its own:

- ``Collector`` (I/O, httpx client injected): scrapes engine pods and gateways → ``Scrape``;
- ``Sampler`` (pure): successive scrapes → ``FleetSample`` (fleet totals, counter/histogram deltas);
- ``Autoscaler`` (pure, ``now`` passed in): samples → ``Decision`` (desired replicas and why), with a
  ``ScalerState`` to persist across restarts;
- policies (``KPA``, ``APA``) behind the ``ScalingPolicy`` protocol, registered by name in ``POLICIES``.

The operator's ModelAutoscaler controller and ``flotilla up --autoscale``/``flotilla bench`` drive the same
loop; docs/autoscaler.md has the formulas and defaults.
"""

from autoscaler.apa import APA
from autoscaler.collector import Collector, GatewayScrape, PodScrape, Scrape, gateway_metrics_url
from autoscaler.kpa import KPA
from autoscaler.policy import MetricLoad, PanicState, PolicyInput, PolicyResult, ScalingPolicy
from autoscaler.registry import POLICIES, policy_named
from autoscaler.sampling import FleetSample, Sampler, histogram_quantile
from autoscaler.scaler import (
    HELD_METRICS_MISSING,
    HELD_PODS_NOT_READY,
    HELD_SCALE_DOWN_COOLDOWN,
    HELD_SCALE_UP_COOLDOWN,
    HELD_WINDOW_FILLING,
    LIMITED_DOWN_RATE,
    LIMITED_MAX,
    LIMITED_MIN,
    LIMITED_UP_RATE,
    Autoscaler,
    Decision,
    ScalerState,
)
from autoscaler.settings import (
    ARRIVALS,
    DEMAND,
    KV_CACHE,
    METRICS,
    RPS,
    RUNNING,
    TTFT_P95,
    WAITING,
    MetricTarget,
    ScalerSettings,
)

__all__ = [
    "APA",
    "ARRIVALS",
    "DEMAND",
    "HELD_METRICS_MISSING",
    "HELD_PODS_NOT_READY",
    "HELD_SCALE_DOWN_COOLDOWN",
    "HELD_SCALE_UP_COOLDOWN",
    "HELD_WINDOW_FILLING",
    "KPA",
    "KV_CACHE",
    "LIMITED_DOWN_RATE",
    "LIMITED_MAX",
    "LIMITED_MIN",
    "LIMITED_UP_RATE",
    "METRICS",
    "POLICIES",
    "RPS",
    "RUNNING",
    "TTFT_P95",
    "WAITING",
    "Autoscaler",
    "Collector",
    "Decision",
    "FleetSample",
    "GatewayScrape",
    "MetricLoad",
    "MetricTarget",
    "PanicState",
    "PodScrape",
    "PolicyInput",
    "PolicyResult",
    "Sampler",
    "ScalerSettings",
    "ScalerState",
    "ScalingPolicy",
    "Scrape",
    "gateway_metrics_url",
    "histogram_quantile",
    "policy_named",
]
