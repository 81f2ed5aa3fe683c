"""Table tests of the gateway's pure parts: body parsing, keys, limits, breaker, retry budget, discovery."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from flotilla import labels
from flotilla.tokenizer import FlotillaTokenizer
from gateway.auth import KeyStore, digest, parse_keys
from gateway.discovery.kube import pod_to_spec, selector
from gateway.discovery.static import parse_engines, static_specs
from gateway.endpoints import CircuitBreaker, EndpointPool, EndpointSpec, endpoint_key
from gateway.errors import BadRequest, Unauthorized
from gateway.parsing import DEFAULT_EXPECTED_OUTPUT, parse
from gateway.proxy import RetryBudget
from gateway.ratelimit import MemoryLimiter
from gateway.scraper import parse_models

TOK = FlotillaTokenizer()


@pytest.mark.parametrize(
    ("raw", "kind", "param"),
    [
        (b"", "chat", None),
        (b"{", "chat", None),
        (b"[]", "chat", None),
        (b'{"messages":[{"role":"user","content":"x"}]}', "chat", "model"),
        (b'{"model":"","messages":[{"role":"user","content":"x"}]}', "chat", "model"),
        (b'{"model":5,"messages":[{"role":"user","content":"x"}]}', "chat", "model"),
        (b'{"model":"m","messages":[]}', "chat", "messages"),
        (b'{"model":"m","messages":"hi"}', "chat", "messages"),
        (b'{"model":"m","messages":[{"content":"x"}]}', "chat", "messages.0"),
        (b'{"model":"m","messages":[{"role":"user","content":5}]}', "chat", "messages.0.content"),
        (b'{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}', "chat", "stream"),
        (b'{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1}', "chat", "max_tokens"),
        (b'{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.5}', "chat", "max_tokens"),
        (b'{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":true}', "chat", "max_tokens"),
        (b'{"model":"m"}', "completions", "prompt"),
        (b'{"model":"m","prompt":[]}', "completions", "prompt"),
        (b'{"model":"m","prompt":[1,"a"]}', "completions", "prompt"),
        (b'{"model":"m","prompt":[[1],[]]}', "completions", "prompt"),
        (b'{"model":"m","prompt":[-1]}', "completions", "prompt"),
        (b'{"model":"m","input":{}}', "embeddings", "input"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_bodies(raw: bytes, kind: str, param: str | None) -> None:
    with pytest.raises(BadRequest) as info:
        parse(raw, kind, TOK)
    assert info.value.param == param
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("raw", "kind", "ids", "total", "max_tokens", "stream"),
    [
        (b'{"model":"m","messages":[{"role":"user","content":"ba be"}]}', "chat",
         TOK.encode_chat([{"role": "user", "content": "ba be"}]), None, DEFAULT_EXPECTED_OUTPUT, False),
        (b'{"model":"m","prompt":"ba be","max_tokens":7,"stream":true}', "completions", TOK.encode_prompt("ba be"), None, 7, True),
        (b'{"model":"m","prompt":[5,6,7],"max_completion_tokens":3}', "completions", [5, 6, 7], None, 3, False),
        (b'{"model":"m","prompt":[[5,6],[7]]}', "completions", [5, 6], 3, DEFAULT_EXPECTED_OUTPUT, False),
        (b'{"model":"m","prompt":["ba","be"]}', "completions", TOK.encode_prompt("ba"), 4, DEFAULT_EXPECTED_OUTPUT, False),
        (b'{"model":"m","input":"ba","stream":null}', "embeddings", TOK.encode_prompt("ba"), None, 0, False),
    ],
    ids=["chat", "completion-text", "completion-ids", "completion-batch-ids", "completion-batch-text", "embeddings"],
)  # fmt: skip
def test_good_bodies(raw, kind, ids, total, max_tokens, stream) -> None:
    parsed = parse(raw, kind, TOK)
    assert parsed.prompt_ids == ids
    assert parsed.prompt_tokens == (total if total is not None else len(ids))
    assert parsed.max_tokens == max_tokens
    assert parsed.stream is stream


def test_keys_are_hashed_and_checked() -> None:
    store = KeyStore.load([SecretStr("sk-one")], None)
    assert store.authenticate("Bearer sk-one") is not None
    assert "sk-one" not in repr(store.__dict__)
    for header in (None, "sk-one", "Bearer sk-two", "Basic sk-one"):
        with pytest.raises(Unauthorized):
            store.authenticate(header)
    assert KeyStore([]).authenticate(None) is None


def test_keys_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(
        f"keys:\n  - name: a\n    key: sk-a\n    rpm: 5\n  - name: b\n    sha256: {digest('sk-b')}\n    tpm: 100\n"
    )
    store = KeyStore.load([], path)
    a, b = store.authenticate("Bearer sk-a"), store.authenticate("bearer sk-b")
    assert (a.name, a.rpm, b.name, b.tpm) == ("a", 5, "b", 100)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"keys": "x"},
        {"keys": [{"name": "a"}]},
        {"keys": [{"sha256": "zz"}]},
        {"keys": [{"key": "k", "rpm": 0}]},
    ],
    ids=["empty", "not-list", "no-key", "bad-digest", "bad-limit"],
)
def test_bad_keys_file(data) -> None:
    with pytest.raises(ValueError, match="api keys file"):
        parse_keys(data)


async def test_memory_limiter_rpm_tpm_and_headers() -> None:
    now = [120.0]
    limiter = MemoryLimiter(clock=lambda: now[0])
    first = await limiter.acquire("k", 10, 2, 100)
    assert first.allowed
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-remaining-tokens"] == "90"
    assert (await limiter.acquire("k", 10, 2, 100)).allowed
    third = await limiter.acquire("k", 10, 2, 100)
    assert not third.allowed
    assert int(third.headers["retry-after"]) >= 1
    assert not (await limiter.acquire("t", 101, None, 100)).allowed  # one request over the token limit
    assert (await limiter.acquire("t", 100, None, 100)).allowed  # the refused one consumed nothing
    now[0] += 60  # the next minute starts afresh
    assert (await limiter.acquire("k", 10, 2, 100)).allowed


def test_circuit_breaker_opens_half_opens_and_closes() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown=0.05)
    breaker.on_failure()
    assert breaker.allows()
    breaker.on_failure()
    assert breaker.state == "open"
    assert not breaker.allows()
    time.sleep(0.06)
    assert breaker.state == "half-open"
    assert breaker.allows()
    breaker.on_attempt()
    assert not breaker.allows()  # only one trial at a time
    breaker.on_failure()
    assert breaker.state == "open"
    time.sleep(0.06)
    breaker.on_attempt()
    breaker.on_success()
    assert breaker.state == "closed"
    assert breaker.allows()


def test_retry_budget_limits_retries_to_a_fraction() -> None:
    budget = RetryBudget(ratio=0.1, min_per_second=0.0, cap=2.0)
    assert budget.withdraw()
    assert budget.withdraw()
    assert not budget.withdraw()
    for _ in range(10):
        budget.deposit()
    assert budget.withdraw()
    assert not budget.withdraw()


def _pod(**over):
    pod = {
        "metadata": {
            "name": "p",
            "namespace": "n",
            "labels": {labels.MODEL: "llama", labels.COMPONENT: "engine"},
            "annotations": {},
        },
        "status": {
            "phase": "Running",
            "podIP": "127.0.0.5",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    for path, value in over.items():
        section, key = path.split("__")
        pod[section][key] = value
    return pod


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        (_pod(), EndpointSpec(url="http://127.0.0.5:8000", model="llama")),
        (_pod(metadata__annotations={labels.ENGINE_PORT: "9000", labels.SERVED_MODEL_NAME: "org/llama"}),
         EndpointSpec(url="http://127.0.0.5:9000", model="org/llama")),
        (_pod(metadata__labels={labels.MODEL: "l", labels.KV_EVENTS: "true"}, metadata__annotations={labels.KV_EVENTS_PORT: "5600"}),
         EndpointSpec(url="http://127.0.0.5:8000", model="l", kv_events="tcp://127.0.0.5:5600")),
        (_pod(status__phase="Pending"), None),
        (_pod(status__conditions=[{"type": "Ready", "status": "False"}]), None),
        (_pod(status__podIP=None), None),
        (_pod(metadata__deletionTimestamp="2026-01-01T00:00:00Z"), None),
        (_pod(status__podIP="::1"), EndpointSpec(url="http://[::1]:8000", model="llama")),
        (_pod(metadata__annotations={labels.ROUTING_PROFILE: "round-robin"}),
         EndpointSpec(url="http://127.0.0.5:8000", model="llama", routing_profile="round-robin")),
    ],
    ids=["ready", "port-and-served-name", "kv-events", "pending", "not-ready", "no-ip", "terminating", "ipv6",
         "routing-profile"],
)  # fmt: skip
def test_pod_to_spec(pod, expected) -> None:
    assert pod_to_spec(pod) == expected


def test_selector() -> None:
    assert selector() == f"{labels.COMPONENT}={labels.COMPONENT_ENGINE}"
    assert selector("a=b").endswith(",a=b")


def test_static_discovery(tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text("engines:\n  - 127.0.0.1:1\n  - url: http://127.0.0.1:2/\n    model: m\n")
    specs = static_specs(["http://127.0.0.1:1"], path)
    assert [s.key for s in specs] == ["127.0.0.1:1", "127.0.0.1:2"]
    assert specs[1].model == "m"
    for bad in ({"engines": 1}, {"engines": [{"host": "x"}]}, {"engines": [{"url": "x", "extra": 1}]}):
        with pytest.raises(ValueError, match="engines file"):
            parse_engines(bad)


def test_pool_membership() -> None:
    pool = EndpointPool()
    a = pool.upsert(EndpointSpec(url="http://127.0.0.1:1", model="m"))
    a.in_flight = 3
    assert pool.upsert(EndpointSpec(url="http://127.0.0.1:1", model="m")) is a
    b = pool.upsert(EndpointSpec(url="http://127.0.0.1:1", model="m2"))
    assert b.in_flight == 3
    assert pool.hosting("m2") == [b]
    assert pool.replace_all([EndpointSpec(url="http://127.0.0.1:2")]) == ["127.0.0.1:1"]
    assert endpoint_key("http://h") == "h:80"


def test_parse_models() -> None:
    ids, adapters, cards = parse_models(
        {
            "object": "list",
            "data": [{"id": "base", "parent": None}, {"id": "lora-a", "parent": "base"}, {"x": 1}],
        }
    )
    assert ids == {"base", "lora-a"}
    assert adapters == {"lora-a"}
    assert len(cards) == 2
    with pytest.raises(ValueError, match="model list"):
        parse_models([1])


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.9.0.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("10.1.2.3", False), ("gateway.example", False)],
)  # fmt: skip
def test_only_loopback_binds_skip_the_no_keys_warning(host: str, loopback: bool) -> None:
    from gateway.cli import _loopback

    assert _loopback(host) is loopback


def test_kvcache_logs_go_through_the_gateways_json_handler(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import logging

    from gateway.telemetry import configure_logging

    detach = configure_logging(json_logs=True, level="INFO")
    try:
        logging.getLogger("flotilla.kvcache.redis").warning("redis index unreachable")
    finally:
        detach()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert (record["logger"], record["msg"]) == ("flotilla.kvcache.redis", "redis index unreachable")


def test_backend_errors_count_the_stores_failures() -> None:
    from prometheus_client import generate_latest

    from gateway.endpoints import EndpointPool
    from gateway.telemetry import GatewayMetrics

    failures = {"ratelimit": 0}
    metrics = GatewayMetrics(EndpointPool())
    metrics.watch_backend_errors({"ratelimit": lambda: failures["ratelimit"], "prefix_index": lambda: 0})
    failures["ratelimit"] = 3
    text = generate_latest(metrics.registry).decode()
    assert 'flotilla_gateway_backend_errors_total{backend="ratelimit"} 3.0' in text


def test_header_map_answers_as_starlette_headers_do() -> None:
    """The pipeline reads headers from a dict decoded once; it must answer every lookup as ``Headers`` does,
    repeated headers included (the first wins)."""
    from starlette.datastructures import Headers

    from gateway.parsing import header_map

    raw = [
        (b"content-type", b"application/json"),
        (b"x-session-id", b"first"),
        (b"traceparent", b"00-abc-def-01"),
        (b"x-session-id", b"second"),
        (b"user-agent", b"caf\xe9"),  # latin-1, as ASGI servers deliver it
    ]
    headers = Headers(raw=raw)
    plain = header_map(headers)
    for name in ("content-type", "x-session-id", "traceparent", "user-agent", "authorization", "tracestate"):
        assert plain.get(name) == headers.get(name), name
        assert (name in plain) == (name in headers), name
    given = {"x-request-id": "r-1"}
    assert header_map(given) is given
