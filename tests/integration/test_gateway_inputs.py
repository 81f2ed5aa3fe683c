"""Bad input gets a clear OpenAI-shaped 4xx, never a 5xx: a table of cases, then schemathesis on the OpenAPI schema."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.fleet import SimFleet, sim_fleet
from tests.integration.gateway_harness import RunningGateway, running_gateway

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
CHAT = "/v1/chat/completions"
OK_MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    with sim_fleet(2, extra_args=["--time-scale", "0.05", "--max-model-len", "4096"]) as f:
        yield f


@pytest.fixture(scope="module", params=["chars", "tokens"])
def gw(fleet: SimFleet, request: pytest.FixtureRequest) -> Iterator[RunningGateway]:
    """Both prefix hashes: the chars path parses bodies with the same checks and must give the same errors."""
    with running_gateway(engines=fleet.urls, max_body_bytes=64 * 1024, prefix_hash=request.param) as g:
        g.wait_healthy(2)
        yield g


def _chunks(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), 4096):
        yield data[i : i + 4096]


CASES: list[tuple[str, str, str, Any, dict[str, str], int, str | None]] = [
    # id, method, path, body (bytes | json | callable), headers, status, error type
    ("not-json", "POST", CHAT, b"{nope", {}, 400, "invalid_request_error"),
    ("empty-body", "POST", CHAT, b"", {}, 400, "invalid_request_error"),
    ("json-array", "POST", CHAT, [], {}, 400, "invalid_request_error"),
    ("no-model", "POST", CHAT, {"messages": OK_MESSAGES}, {}, 400, "invalid_request_error"),
    ("model-not-string", "POST", CHAT, {"model": 1, "messages": OK_MESSAGES}, {}, 400, "invalid_request_error"),
    ("unknown-model", "POST", CHAT, {"model": "nope", "messages": OK_MESSAGES}, {}, 404, "invalid_request_error"),
    ("no-messages", "POST", CHAT, {"model": MODEL}, {}, 400, "invalid_request_error"),
    ("message-no-role", "POST", CHAT, {"model": MODEL, "messages": [{"content": "x"}]}, {}, 400, "invalid_request_error"),
    ("stream-not-bool", "POST", CHAT, {"model": MODEL, "messages": OK_MESSAGES, "stream": "yes"}, {}, 400, "invalid_request_error"),
    ("negative-max-tokens", "POST", CHAT, {"model": MODEL, "messages": OK_MESSAGES, "max_tokens": -1}, {}, 400, "invalid_request_error"),
    # the engine validates sampling fields; its 400 passes through unchanged
    ("engine-rejects-temperature", "POST", CHAT, {"model": MODEL, "messages": OK_MESSAGES, "temperature": "hot"}, {}, 400, None),
    ("engine-rejects-too-long", "POST", CHAT, {"model": MODEL, "messages": OK_MESSAGES, "max_tokens": 10_000}, {}, 400, None),
    ("prompt-bad-ids", "POST", "/v1/completions", {"model": MODEL, "prompt": [1, "a"]}, {}, 400, "invalid_request_error"),
    ("prompt-out-of-vocab", "POST", "/v1/completions", {"model": MODEL, "prompt": [10**9]}, {}, 400, None),
    ("embeddings-bad-input", "POST", "/v1/embeddings", {"model": MODEL, "input": {}}, {}, 400, "invalid_request_error"),
    ("bad-strategy", "POST", CHAT, {"model": MODEL, "messages": OK_MESSAGES}, {"x-routing-strategy": "teleport"}, 400, "invalid_request_error"),
    ("too-large", "POST", CHAT, {"model": MODEL, "messages": [{"role": "user", "content": "ba " * 40_000}]}, {}, 413, "invalid_request_error"),
    ("too-large-chunked", "POST", CHAT, lambda: _chunks(b'{"model":"x","p":"' + b"a" * 100_000 + b'"}'), {}, 413, "invalid_request_error"),
    ("wrong-method", "GET", CHAT, None, {}, 405, "invalid_request_error"),
    ("unknown-path", "POST", "/v1/nothing", {}, {}, 404, "invalid_request_error"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case_id", "method", "path", "body", "headers", "status", "etype"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_input(gw: RunningGateway, case_id, method, path, body, headers, status, etype) -> None:
    kwargs: dict[str, Any] = {"headers": headers}
    if isinstance(body, bytes):
        kwargs["content"] = body
    elif callable(body):
        kwargs["content"] = body()
    elif body is not None:
        kwargs["json"] = body
    response = httpx.request(method, gw.url + path, timeout=30, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if etype is not None:
        assert error["type"] == etype


def test_schemathesis_no_5xx(gw: RunningGateway) -> None:
    """Every operation of /openapi.json, bodies generated from the schema (bounded examples): no 5xx."""
    schema = schemathesis.openapi.from_url(gw.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        CHAT,
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/health",
    }
    calls = 0
    statuses: Counter[tuple[str, int]] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=20,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )  # the same examples every run: CI must not depend on luck
        def check(case: Any) -> None:
            nonlocal calls
            # half of the generated bodies name the real model, so requests also reach the engines
            body = case.body
            if isinstance(body, dict) and isinstance(body.get("model"), str) and len(body["model"]) % 2 == 0:
                body["model"] = MODEL
            response = case.call(timeout=60)
            calls += 1
            statuses[(case.operation.path, response.status_code)] += 1
            assert response.status_code < 500, (
                case.operation.path,
                response.status_code,
                response.text[:300],
                body,
            )

        check()
    assert calls >= 40
    # generated requests did reach the engines, not only the gateway's own validation
    assert statuses[(CHAT, 200)] + statuses[("/v1/completions", 200)] > 0, statuses
