"""The reliability suite's judgements: how answers are classified, how the gateway's gauges are read, when the
acceptance checks pass, and that the report survives a results.json round trip."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest
from prometheus_client import generate_latest

from bench.reliability import from_json, render, to_json
from bench.reliability.behaviours import Outcome, StreamState, classify_json, is_openai_error
from bench.reliability.gateway_state import EndpointState, GatewayState, parse_state
from bench.reliability.runner import ReliabilityResult, judge, phase_at, tallies
from bench.reliability.spec import Phase, quick
from gateway.endpoints import EndpointPool, EndpointSpec, Lease
from gateway.telemetry import GatewayMetrics


def _chunk(content: str = "", finish: str | None = None) -> bytes:
    delta = {"content": content} if content else {}
    return b"data: " + orjson.dumps({"choices": [{"delta": delta, "finish_reason": finish}]}) + b"\n\n"


ERROR_EVENT = b'data: {"error": {"message": "upstream failed mid-stream: ReadError", "code": 502}}\n\n'
DONE = b"data: [DONE]\n\n"
COMPLETE = _chunk("he") + _chunk("llo") + _chunk(finish="length") + DONE


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(COMPLETE, "ok", id="complete"),
        pytest.param(_chunk("he") + ERROR_EVENT + DONE, "error", id="error-event-then-done"),
        pytest.param(_chunk("he") + ERROR_EVENT, "truncated", id="error-event-without-done"),
        pytest.param(_chunk("he") + _chunk("llo"), "truncated", id="cut-without-done"),
        pytest.param(_chunk("he") + DONE, "truncated", id="done-without-finished-choice"),
        pytest.param(b"", "truncated", id="nothing"),
    ],
)
def test_stream_verdict(body: bytes, expected: str) -> None:
    whole, split = StreamState(), StreamState()
    whole.feed(body)
    for i in range(0, len(body), 7):  # the same bytes in arbitrary pieces: lines split across reads
        split.feed(body[i : i + 7])
    assert whole.verdict()[0] == split.verdict()[0] == expected


def test_error_event_is_what_the_gateway_sends() -> None:
    from gateway.errors import sse_error

    state = StreamState()
    state.feed(_chunk("he") + sse_error("upstream failed mid-stream: ReadError"))
    assert state.verdict() == ("error", "stream error: upstream failed mid-stream: ReadError")


COMPLETION = orjson.dumps({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}], "usage": {}})
OPENAI_ERROR = b'{"error": {"message": "no healthy endpoint", "type": "service_unavailable", "code": null}}'


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(200, COMPLETION, "ok", id="complete"),
        pytest.param(200, COMPLETION[:-5], "truncated", id="cut-json"),
        pytest.param(200, b'{"choices": []}', "truncated", id="no-choice"),
        pytest.param(
            200,
            b'{"choices": [{"message": {"content": "x"}, "finish_reason": null}]}',
            "truncated",
            id="unfinished-choice",
        ),
        pytest.param(503, OPENAI_ERROR, "error", id="openai-error"),
        pytest.param(502, b"<html>Bad Gateway</html>", "unclear", id="html-error"),
        pytest.param(500, b'{"detail": "oops"}', "unclear", id="json-but-not-openai"),
        pytest.param(500, b'{"error": {"message": ""}}', "unclear", id="empty-message"),
    ],
)
def test_json_verdict(status: int, body: bytes, expected: str) -> None:
    assert classify_json(status, body)[0] == expected
    assert is_openai_error(body) == (expected == "error")


def test_gateway_state_is_read_from_the_gateways_own_metrics() -> None:
    pool = EndpointPool(breaker_failures=1, breaker_cooldown=60.0)
    busy = pool.upsert(EndpointSpec(url="http://127.0.0.1:1", model="m"))
    sick = pool.upsert(EndpointSpec(url="http://127.0.0.1:2", model="m"))
    busy.healthy = sick.healthy = True
    metrics = GatewayMetrics(pool)
    metrics.watch_demand({}, {"m": 1}, {}, lambda: ["m"])
    lease = Lease(busy, blocks=4, prefill=3)
    sick.breaker.on_failure()
    state = parse_state(generate_latest(metrics.registry).decode())
    by_key = {e.endpoint: e for e in state.endpoints}
    assert (by_key["127.0.0.1:1"].in_flight, by_key["127.0.0.1:1"].pending_prefill_blocks) == (1, 3)
    assert by_key["127.0.0.1:2"].breaker == "open"
    assert state.model_in_flight == 1
    assert not state.settled
    lease.release()
    sick.breaker.on_success()
    settled = parse_state(
        generate_latest(metrics.registry).decode().replace('flotilla_gateway_model_in_flight_requests{model="m"} 1.0',
                                                           'flotilla_gateway_model_in_flight_requests{model="m"} 0.0')
    )  # fmt: skip
    assert settled.settled, settled


def test_requests_routed_per_endpoint_sum_every_model_and_status() -> None:
    pool = EndpointPool()
    metrics = GatewayMetrics(pool)
    metrics.requests.labels("m", "127.0.0.1:1", "200").inc(3)
    metrics.requests.labels("m", "127.0.0.1:1", "500").inc()
    metrics.requests.labels("other", "127.0.0.1:1", "200").inc()
    metrics.requests.labels("m", "127.0.0.1:2", "200").inc(2)
    state = parse_state(generate_latest(metrics.registry).decode())
    assert state.routed == {"127.0.0.1:1": 5.0, "127.0.0.1:2": 2.0}


def test_a_gauge_not_exported_is_never_settled() -> None:
    text = 'flotilla_gateway_endpoint_in_flight{endpoint="a:1"} 0.0\nflotilla_gateway_endpoint_healthy{endpoint="a:1"} 1.0\n'
    state = parse_state(text)
    assert math.isnan(state.endpoints[0].breaker_state)
    assert state.endpoints[0].breaker == "not exported"
    assert not state.settled


def test_phase_at() -> None:
    phases = (Phase("a", "none", 2.0), Phase("b", "engine-kill", 3.0))
    assert [phase_at(phases, t).name for t in (0.0, 1.99, 2.0, 4.9, 5.0, 99.0)] == [
        "a",
        "a",
        "b",
        "b",
        "b",
        "b",
    ]


def _settled() -> GatewayState:
    return GatewayState([EndpointState("a:1", 0, 0, 0, 1, 0), EndpointState("b:2", 0, 0, 0, 1, 0)])


def _outcomes(nonstream_failures: int, extra: str | None = None) -> list[Outcome]:
    out = [Outcome(i, "baseline", "nonstream", "ok") for i in range(1000 - nonstream_failures)]
    out += [Outcome(i, "baseline", "nonstream", "error") for i in range(nonstream_failures)]
    out += [
        Outcome(0, "baseline", "stream", "error"),
        Outcome(0, "baseline", "cancel-mid-stream", "disconnected"),
    ]
    if extra:
        out.append(Outcome(0, "baseline", "stream", extra))
    return out


@pytest.mark.parametrize(
    ("outcomes", "state", "failed"),
    [
        pytest.param(_outcomes(1), _settled(), set(), id="all-good-one-in-a-thousand"),
        pytest.param(_outcomes(2), _settled(), {"non-streaming success ≥ 99.9%"}, id="two-in-a-thousand"),
        pytest.param(_outcomes(0, "hung"), _settled(), {"no request hung"}, id="hung"),
        pytest.param(_outcomes(0, "truncated"), _settled(), {"no silent truncation"}, id="truncated"),
        pytest.param(_outcomes(0, "unclear"), _settled(), {"every failure stated clearly"}, id="unclear"),
        pytest.param(_outcomes(0), GatewayState([EndpointState("a:1", 1, 0, 0, 1, 0)]),
                     {"in-flight counters back to 0"}, id="leaked-lease"),
        pytest.param(_outcomes(0), GatewayState([EndpointState("a:1", 0, 0, 0, 1, 0)], model_in_flight=1),
                     {"in-flight counters back to 0"}, id="leaked-model-demand"),
        pytest.param(_outcomes(0), GatewayState([EndpointState("a:1", 0, 0, 0, 1, 1)]),
                     {"breakers closed, endpoints healthy"}, id="half-open"),
        pytest.param(_outcomes(0), GatewayState([EndpointState("a:1", 0, 0, 0, 0, 0)]),
                     {"breakers closed, endpoints healthy"}, id="unhealthy"),
        pytest.param(_outcomes(0), GatewayState([]), {"breakers closed, endpoints healthy"}, id="no-endpoints"),
        pytest.param([*_outcomes(0), Outcome(0, "baseline", "bad-request", "unclear")], _settled(),
                     {"every failure stated clearly", "bad requests refused with a clear error"}, id="bad-served"),
    ],
)  # fmt: skip
def test_acceptance(outcomes: list[Outcome], state: GatewayState, failed: set[str]) -> None:
    spec = quick(0)
    spec = type(spec)(**{**spec.__dict__, "phases": (Phase("baseline", "none", 1.0),),
                         "min_nonstream_success": 0.999})  # fmt: skip
    _, kinds, total = tallies(spec, outcomes)
    checks = judge(spec, total, kinds, state, 1.0)
    assert {c.name for c in checks if not c.passed} == failed


def test_report_round_trips_through_results_json() -> None:
    spec = quick(0)
    outcomes = _outcomes(0, "truncated")
    outcomes[0].phase = outcomes[1].phase = spec.phases[1].name
    phases, kinds, total = tallies(spec, outcomes)
    drained = GatewayState([EndpointState("a:1", 2, 1, 1, 0, 2), EndpointState("b:2")])
    result = ReliabilityResult(
        suite=spec.name, command="flotilla bench --suite reliability --quick", setup={
            "engines": 3, "preset": "p", "time_scale": 1.0, "seed": 0, "rate": 15.0, "seconds": 37.0,
            "mix": spec.mix, "tokens": [16, 48], "kill_down": 2.5, "hang_seconds": 7.0, "redis_down": 3.0,
            "hung_after": 30.0, "gateway_env": spec.gateway_env},
        phases=phases, behaviours=kinds, total=total, faults=[(1.0, "engine 0 killed (SIGKILL)")],
        drained=drained, final=_settled(), settle_seconds=2.5, details={"truncated": [("stream: cut", 1)]},
        checks=judge(spec, total, kinds, _settled(), 2.5),
    )  # fmt: skip
    again = from_json(to_json(result))
    assert render(again) == render(result)
    text = render(result)
    assert "**FAILED**" in text
    assert "| no silent truncation | **FAIL** | 1 truncated |" in text
    assert "not exported" in text  # b:2 exported nothing: shown, not mistaken for closed
    assert "| engines killed | engine-kill | 2 |" in text


def test_cli_rejects_what_does_not_apply_and_rerenders(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bench.cli import bench

    runner = CliRunner()
    wrong = runner.invoke(bench, ["--suite", "reliability", "--contenders", "direct", "--out", str(tmp_path)])
    assert wrong.exit_code == 2
    assert "do not apply to the reliability suite" in wrong.output
    missing = runner.invoke(bench, ["--suite", "reliability", "--rerender", "--out", str(tmp_path)])
    assert missing.exit_code == 1
    assert "cannot read reliability results" in missing.output

    spec = quick(0)
    phases, kinds, total = tallies(spec, _outcomes(0))
    result = ReliabilityResult(
        suite=spec.name, command="c", setup={
            "engines": 3, "preset": "p", "time_scale": 1.0, "seed": 0, "rate": 15.0, "seconds": 41.0,
            "mix": spec.mix, "tokens": [16, 48], "hung_after": 30.0, "gateway_env": {}},
        phases=phases, behaviours=kinds, total=total, faults=[], drained=_settled(), final=_settled(),
        settle_seconds=0.0, details={}, checks=judge(spec, total, kinds, _settled(), 0.0),
    )  # fmt: skip
    (tmp_path / "results.json").write_bytes(to_json(result))
    ok = runner.invoke(bench, ["--suite", "reliability", "--rerender", "--out", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    assert "**PASSED**" in (tmp_path / "report.md").read_text()
    result.checks[0].passed = False
    (tmp_path / "results.json").write_bytes(to_json(result))
    failed = runner.invoke(bench, ["--suite", "reliability", "--rerender", "--out", str(tmp_path)])
    assert failed.exit_code == 1
    assert "reliability acceptance failed: no request hung" in failed.output
