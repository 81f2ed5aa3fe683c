"""API keys and per-key limits through the official client; limits shared by two replicas through Redis."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.auth import digest
from tests.fleet import SimFleet, sim_fleet
from tests.integration.gateway_harness import fresh_rate_window, running_gateway

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    with sim_fleet(1, extra_args=["--time-scale", "0.05"]) as f:
        yield f


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text(
        "keys:\n"
        f"  - name: team-a\n    sha256: {digest('sk-team-a-secret')}\n    rpm: 3\n"
        "  - name: team-b\n    key: sk-team-b-secret\n    tpm: 100\n"
    )
    return path


def _ask(client: openai.OpenAI, max_tokens: int = 2):
    return client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=max_tokens
    )


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage() + str(getattr(record, "fields", "")))


def test_keys_and_limits(fleet: SimFleet, keys_file: Path) -> None:
    records = _Records()
    logging.getLogger("flotilla.gateway").addHandler(records)
    with running_gateway(engines=fleet.urls, api_keys_file=keys_file) as gw:
        gw.wait_healthy(1)
        fresh_rate_window()
        with (
            openai.OpenAI(base_url=gw.base_url, api_key="sk-wrong", max_retries=0) as c,
            pytest.raises(openai.AuthenticationError),
        ):
            _ask(c)
        missing = httpx.post(gw.base_url + "/chat/completions", json={"model": MODEL, "messages": []})
        assert missing.status_code == 401
        assert missing.json()["error"]["type"] == "authentication_error"
        with openai.OpenAI(base_url=gw.base_url, api_key="sk-team-a-secret", max_retries=0) as a:
            first = _ask(a)
            assert first.headers["x-ratelimit-limit-requests"] == "3"
            assert first.headers["x-ratelimit-remaining-requests"] == "2"
            _ask(a)
            _ask(a)
            with pytest.raises(openai.RateLimitError) as info:
                _ask(a)
            headers = info.value.response.headers
            assert int(headers["retry-after"]) >= 1
            assert headers["x-ratelimit-remaining-requests"] == "0"
            assert info.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
        with openai.OpenAI(base_url=gw.base_url, api_key="sk-team-b-secret", max_retries=0) as b:
            ok = _ask(b, max_tokens=10)  # ~14 prompt + 10 output tokens of 100
            assert int(ok.headers["x-ratelimit-remaining-tokens"]) < 100
            with pytest.raises(openai.RateLimitError):
                _ask(b, max_tokens=70)  # fits the limit, not what is left of this minute
            with pytest.raises(openai.BadRequestError) as too_large:
                _ask(b, max_tokens=90)  # can never fit: a 400, not a 429 that invites retrying
            assert too_large.value.body["code"] == "request_too_large"  # type: ignore[index]
    logging.getLogger("flotilla.gateway").removeHandler(records)
    logged = "\n".join(records.lines)
    assert "team-a" in logged
    assert "sk-team-a-secret" not in logged
    assert "sk-team-b-secret" not in logged


def test_limits_are_shared_by_replicas_through_redis(
    fleet: SimFleet, keys_file: Path, redis_url: str
) -> None:
    settings = {
        "engines": fleet.urls,
        "api_keys_file": keys_file,
        "redis_url": redis_url,
        "ratelimit_backend": "redis",
    }
    with contextlib.ExitStack() as stack:
        replicas = [stack.enter_context(running_gateway(**settings)) for _ in range(2)]
        for r in replicas:
            r.wait_healthy(1)
        fresh_rate_window()
        clients = [
            stack.enter_context(openai.OpenAI(base_url=r.base_url, api_key="sk-team-a-secret", max_retries=0))
            for r in replicas
        ]
        _ask(clients[0])
        _ask(clients[1])
        _ask(clients[0])
        for client in clients:  # the key's 3 rpm are used up across both replicas
            with pytest.raises(openai.RateLimitError):
                _ask(client)
