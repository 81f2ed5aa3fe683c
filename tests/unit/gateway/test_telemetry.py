"""The per-endpoint gauges a reliability check reads after load: in flight, queued prefill and breaker state."""

from __future__ import annotations

import json

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.attempt import Attempt
from gateway.endpoints import EndpointPool, EndpointSpec, Lease
from gateway.lifecycle import RequestContext, TelemetryHook
from gateway.parsing import ParsedRequest
from gateway.telemetry import GatewayMetrics, configure_logging


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


def test_cached_children_count_into_the_same_series_as_labels() -> None:
    """A child resolved through ``Children`` is the metric's own child: the exposition shows one series per
    label combination, whichever way it was incremented, and each combination is resolved once."""
    pool, _ = _pool()
    metrics = GatewayMetrics(pool)
    first = metrics.requests_of("m", "127.0.0.1:1", "200")
    assert metrics.requests_of("m", "127.0.0.1:1", "200") is first
    assert metrics.requests_of("m", "127.0.0.1:1", "503") is not first
    first.inc()
    metrics.requests.labels("m", "127.0.0.1:1", "200").inc()
    metrics.requests_of("m", "127.0.0.1:1", "503").inc(3)
    metrics.e2e_of("m").observe(0.02)
    text = generate_latest(metrics.registry).decode()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    ok = (("endpoint", "127.0.0.1:1"), ("model", "m"), ("status", "200"))
    failed = (("endpoint", "127.0.0.1:1"), ("model", "m"), ("status", "503"))
    assert values[("flotilla_gateway_requests_total", ok)] == 2.0
    assert values[("flotilla_gateway_requests_total", failed)] == 3.0
    assert values[("flotilla_gateway_e2e_seconds_count", (("model", "m"),))] == 1.0
    assert values[("flotilla_gateway_e2e_seconds_bucket", (("le", "0.025"), ("model", "m")))] == 1.0


@pytest.mark.parametrize(
    ("level", "lines"),
    [pytest.param("INFO", 1, id="info-one-access-line"), pytest.param("WARNING", 0, id="warning-no-line")],
)
def test_finished_request_is_counted_and_logged_once_at_info(
    level: str, lines: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """The access line is built only for a log that keeps it; the metrics are counted either way."""
    pool, _ = _pool()
    metrics = GatewayMetrics(pool)
    counted: list[int] = []
    hook = TelemetryHook(metrics, counted.append)
    parsed = ParsedRequest(
        body={}, model="m", stream=False, max_tokens=16, prompt_ids=[1, 2], prompt_tokens=2
    )
    ctx = RequestContext(path="/v1/completions", request_id="r-1", parsed=parsed, key=None)
    ctx.attempt = Attempt(model="m", blocks=1, request_id="r-1", tries=1, endpoint=pool.get("127.0.0.1:2"))
    ctx.attempt.status = 200
    ctx.routed_by.append(hook)
    capsys.readouterr()
    detach = configure_logging(json_logs=True, level=level)
    try:
        ctx.finish()
        ctx.finish()  # idempotent: one count, one line
    finally:
        detach()
    out = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert counted == [200]
    sample = {"model": "m", "endpoint": "127.0.0.1:2", "status": "200"}
    assert metrics.registry.get_sample_value("flotilla_gateway_requests_total", sample) == 1.0
    assert len(out) == lines
    if lines:
        assert {
            k: out[0][k] for k in ("request_id", "model", "endpoint", "status", "tries", "prompt_tokens")
        } == {
            "request_id": "r-1",
            "model": "m",
            "endpoint": "127.0.0.1:2",
            "status": 200,
            "tries": 1,
            "prompt_tokens": 2,
        }
