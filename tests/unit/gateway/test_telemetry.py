"""The per-endpoint gauges a reliability check reads after load: in flight, queued prefill and breaker state."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.endpoints import EndpointPool, EndpointSpec, Lease
from gateway.telemetry import GatewayMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _gauges(metrics: GatewayMetrics, name: str) -> dict[str, float]:
    text = generate_latest(metrics.registry).decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[sample.labels["endpoint"]] = sample.value
    return out


BREAKER = "flotilla_gateway_endpoint_breaker_state"


def _pool() -> tuple[EndpointPool, Clock]:
    clock = Clock()
    pool = EndpointPool(breaker_failures=2, breaker_cooldown=5.0, clock=clock)
    pool.upsert(EndpointSpec(url="http://127.0.0.1:1", model="m"))
    pool.upsert(EndpointSpec(url="http://127.0.0.1:2", model="m"))
    return pool, clock


@pytest.mark.parametrize(
    ("failures", "elapsed", "trial_outcome", "expected"),
    [
        pytest.param(0, 0.0, None, 0.0, id="closed"),
        pytest.param(1, 0.0, None, 0.0, id="one-failure-below-threshold-closed"),
        pytest.param(2, 0.0, None, 2.0, id="open"),
        pytest.param(2, 4.9, None, 2.0, id="still-open-before-cooldown"),
        pytest.param(2, 5.0, None, 1.0, id="half-open-after-cooldown"),
        pytest.param(2, 5.0, "success", 0.0, id="trial-succeeded-closed"),
        pytest.param(2, 5.0, "failure", 2.0, id="trial-failed-reopened"),
        pytest.param(2, 5.0, "abandon", 1.0, id="trial-abandoned-half-open"),
    ],
)
def test_breaker_state_gauge(
    failures: int, elapsed: float, trial_outcome: str | None, expected: float
) -> None:
    pool, clock = _pool()
    metrics = GatewayMetrics(pool)
    sick = pool.get("127.0.0.1:1")
    assert sick is not None
    for _ in range(failures):
        sick.breaker.on_failure()
    clock.now += elapsed
    if trial_outcome is not None:
        lease = Lease(sick, blocks=1, prefill=1)
        if trial_outcome == "success":
            lease.succeeded()
        elif trial_outcome == "failure":
            lease.failed()
        lease.release()
    assert _gauges(metrics, BREAKER) == {"127.0.0.1:1": expected, "127.0.0.1:2": 0.0}


def test_load_gauges_follow_the_lease() -> None:
    pool, _ = _pool()
    metrics = GatewayMetrics(pool)
    endpoint = pool.get("127.0.0.1:2")
    assert endpoint is not None
    lease = Lease(endpoint, blocks=3, prefill=2)
    assert _gauges(metrics, "flotilla_gateway_endpoint_in_flight")["127.0.0.1:2"] == 1.0
    assert _gauges(metrics, "flotilla_gateway_endpoint_pending_prefill_blocks")["127.0.0.1:2"] == 2.0
    lease.first_byte()
    assert _gauges(metrics, "flotilla_gateway_endpoint_pending_prefill_blocks")["127.0.0.1:2"] == 0.0
    lease.release()
    assert _gauges(metrics, "flotilla_gateway_endpoint_in_flight")["127.0.0.1:2"] == 0.0
