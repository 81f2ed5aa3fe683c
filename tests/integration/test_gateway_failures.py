"""Failure handling with real engines: killed mid-stream, down before the request, all down, Redis down."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from flotilla.labels import HEADER_ENDPOINT as ENDPOINT_HEADER
from flotilla.vllm_metrics import parse_metrics
from tests.fleet import sim_fleet
from tests.integration.gateway_harness import running_gateway
from tests.support import RedisServer

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=30)


def test_engine_killed_mid_stream_ends_the_stream_with_an_error_promptly() -> None:
    # real time (time-scale 1): 400 tokens take seconds, so the kill lands mid-stream
    with sim_fleet(2, extra_args=["--time-scale", "1"]) as fleet, running_gateway(engines=fleet.urls) as gw:
        gw.wait_healthy(2)
        with _client(gw.base_url) as client:
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=[{"role": "user", "content": "a long story"}],
                max_tokens=400,
                stream=True,
                extra_body={"ignore_eos": True},
            )
            victim = fleet.urls.index("http://" + raw.headers[ENDPOINT_HEADER])
            stream = raw.parse()
            received = 0
            killed_at = None

            def consume() -> None:
                nonlocal received, killed_at
                for _chunk in stream:
                    received += 1
                    if received == 3:
                        fleet.kill(victim)
                        killed_at = time.monotonic()

            with pytest.raises(openai.APIError, match="failed mid-stream"):
                consume()
            assert killed_at is not None
            assert time.monotonic() - killed_at < 10
            assert received < 400
        # the gateway's counters are released and the next request goes to the survivor
        gw.wait_until(
            lambda g: all(e.in_flight == e.prefilling == e.pending_blocks == 0 for e in g.fleet.pool),
            what="in-flight released",
        )
        with _client(gw.base_url) as client:
            ok = client.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": "still there?"}], max_tokens=2
            )
            assert ok.headers[ENDPOINT_HEADER] == fleet.urls[1 - victim].removeprefix("http://")


def test_engine_down_requests_are_retried_elsewhere() -> None:
    # a long scrape interval: the gateway does not notice the death, so the proxy's retry must save requests
    with (
        sim_fleet(2, extra_args=["--time-scale", "0.1"]) as fleet,
        running_gateway(engines=fleet.urls, scrape_interval=60, breaker_failures=100) as gw,
    ):
        gw.wait_healthy(2)
        fleet.kill(0)
        with _client(gw.base_url) as client:
            for i in range(8):
                raw = client.chat.completions.with_raw_response.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": f"retry {i}"}],
                    max_tokens=2,
                    extra_headers={"x-routing-strategy": "round-robin"},
                )
                assert raw.headers[ENDPOINT_HEADER] == fleet.urls[1].removeprefix("http://")
        retries = gw.gateway.metrics.retries.labels("connect")._value.get()
        assert retries >= 3  # round-robin sent about half of the 8 to the dead engine first


def test_breaker_takes_a_dead_engine_out_of_the_first_try() -> None:
    with (
        sim_fleet(2, extra_args=["--time-scale", "0.1"]) as fleet,
        running_gateway(
            engines=fleet.urls, scrape_interval=60, breaker_failures=2, breaker_cooldown=60
        ) as gw,
    ):
        gw.wait_healthy(2)
        fleet.kill(0)
        with _client(gw.base_url) as client:
            for i in range(10):
                client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": f"b {i}"}],
                    max_tokens=2,
                    extra_headers={"x-routing-strategy": "round-robin"},
                )
        dead = gw.gateway.fleet.pool.get(fleet.urls[0].removeprefix("http://"))
        assert dead is not None
        assert dead.breaker.state == "open"
        assert dead.failed == 2  # after two failures it is skipped


def test_all_engines_down_is_503_with_retry_after() -> None:
    with sim_fleet(2, extra_args=["--time-scale", "0.1"]) as fleet, running_gateway(engines=fleet.urls) as gw:
        gw.wait_healthy(2)
        fleet.kill(0)
        fleet.kill(1)
        with _client(gw.base_url) as client:
            # before and after the health check notices: 503 either way, never a hang or a 500
            for _ in range(2):
                with pytest.raises(openai.InternalServerError) as info:
                    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
                assert info.value.status_code == 503
                assert info.value.response.headers["retry-after"] == "1"
                gw.wait_until(lambda g: not any(e.available for e in g.fleet.pool), what="all unhealthy")
        fleet.restart(0)
        gw.wait_healthy(1)
        with _client(gw.base_url) as client:
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "back"}], max_tokens=2
            )


def test_gateway_without_any_reachable_engine_is_503() -> None:
    from tests.support import free_port

    with (
        running_gateway(engines=[f"http://127.0.0.1:{free_port()}"], hold_timeout=0.5) as gw,
        _client(gw.base_url) as client,
    ):
        assert client.models.list().data == []
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        assert info.value.status_code == 503
        assert "no endpoint is reachable" in str(info.value)


def test_redis_killed_routing_and_limits_continue(redis_private: RedisServer) -> None:
    with (
        sim_fleet(2, extra_args=["--time-scale", "0.1"]) as fleet,
        running_gateway(
            engines=fleet.urls, redis_url=redis_private.url, ratelimit_backend="redis", rpm_limit=1000
        ) as gw,
        _client(gw.base_url) as client,
    ):
        gw.wait_healthy(2)
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "before"}], max_tokens=2
        )
        redis_private.stop()
        results: list[int] = []

        def worker() -> None:
            for i in range(5):
                r = client.chat.completions.with_raw_response.create(
                    model=MODEL, messages=[{"role": "user", "content": f"after {i}"}], max_tokens=2
                )
                results.append(r.status_code)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == [200] * 10
        assert gw.gateway.limiter.errors >= 1  # type: ignore[attr-defined]
        redis_private.start()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_client_disconnect_aborts_the_engine_request(stream: bool) -> None:
    with sim_fleet(1, extra_args=["--time-scale", "1"]) as fleet, running_gateway(engines=fleet.urls) as gw:
        gw.wait_healthy(1)
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "a long answer please"}],
            "max_tokens": 2000,  # ~20 s of decoding on the simulated A100
            "ignore_eos": True,
            "stream": stream,
        }

        def abandon() -> None:
            with httpx.Client(timeout=httpx.Timeout(10, read=1.0)) as client:
                if stream:
                    with client.stream("POST", gw.base_url + "/chat/completions", json=body) as r:
                        for _ in r.iter_raw():
                            raise httpx.ReadTimeout("the client gives up after the first chunk")
                else:
                    client.post(gw.base_url + "/chat/completions", json=body)

        with pytest.raises(httpx.ReadTimeout):
            abandon()
        # the gateway stops waiting at once and records the abandoned request as 499
        gw.wait_until(
            lambda g: all(e.in_flight == e.prefilling == e.pending_blocks == 0 for e in g.fleet.pool),
            timeout=5,
            what="in-flight released",
        )
        assert 'status="499"' in httpx.get(gw.url + "/metrics").text
        if not stream:
            # engine_sim (unlike vLLM's with_cancellation) finishes non-streaming requests whose client left,
            # so the engine side is only checked for streams
            return
        # the engine stops working on it long before the 20 s it would take
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            if parse_metrics(httpx.get(fleet.urls[0] + "/metrics").text).running == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("engine still running the abandoned request")
