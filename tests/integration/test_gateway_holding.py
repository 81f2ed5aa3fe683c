"""Requests for a declared model with no ready endpoint are held and then served, never refused too early.

Scale from zero (a model declared, its first engine added while the request waits), an adapter declared and
loaded on an engine while the request waits, and the demand gauges the autoscaler reads meanwhile.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import openai
import pytest

from flotilla.demand import parse_demand
from gateway.endpoints import EndpointSpec
from tests.fleet import sim_fleet
from tests.integration.gateway_harness import RunningGateway, running_gateway

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _client(url: str, timeout: float = 30) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=timeout)


def _in_background(gw: RunningGateway, model: str) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def send() -> None:
        started = time.monotonic()
        try:
            with _client(gw.base_url) as client:
                out["reply"] = client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=2
                )
        except Exception as exc:  # reported to the test thread
            out["error"] = exc
        out["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=send)
    thread.start()
    return thread, out


def _demand(gw: RunningGateway) -> dict[str, Any]:
    return parse_demand(httpx.get(gw.url + "/metrics").text)


def test_a_declared_model_at_zero_engines_is_held_until_an_engine_joins() -> None:
    with running_gateway(hold_timeout=20) as gw, sim_fleet(1, extra_args=["--time-scale", "0.1"]) as fleet:
        gw.call(gw.gateway.fleet.catalog.declare, "test", {MODEL: None})
        with _client(gw.base_url) as client:
            assert [m.id for m in client.models.list().data] == [MODEL]  # listed while at zero
        thread, out = _in_background(gw, MODEL)
        gw.wait_until(lambda g: g.fleet.holding.queued.get(MODEL) == 1, what="request held")
        assert _demand(gw)[MODEL].queued == 1
        time.sleep(0.5)
        assert thread.is_alive(), out  # still waiting, not refused
        gw.call(gw.gateway.set_endpoints, [EndpointSpec(url=fleet.urls[0])])
        thread.join(20)
        assert "reply" in out, out
        assert out["reply"].choices[0].message.content
        demand = _demand(gw)[MODEL]
        assert demand.queued == 0
        assert demand.in_flight == 0
        assert demand.arrivals == 1  # the offered load counts the held request once


def test_an_adapter_being_loaded_is_served_as_soon_as_it_is_there() -> None:
    with (
        sim_fleet(2, extra_args=["--time-scale", "0.1", "--enable-lora", "--max-loras", "2"]) as fleet,
        running_gateway(engines=fleet.urls, hold_timeout=20, models_interval=60) as gw,
    ):
        gw.wait_healthy(2)
        gw.call(gw.gateway.fleet.catalog.declare, "test", {"sql-lora": MODEL})
        with _client(gw.base_url) as client:
            cards = {m.id: m for m in client.models.list().data}
        assert cards["sql-lora"].model_extra is not None
        assert cards["sql-lora"].model_extra["parent"] == MODEL
        thread, out = _in_background(gw, "sql-lora")
        gw.wait_until(lambda g: g.fleet.holding.queued.get("sql-lora") == 1, what="request held")
        loaded_at = time.monotonic()
        r = httpx.post(
            fleet.urls[1] + "/v1/load_lora_adapter", json={"lora_name": "sql-lora", "lora_path": "x"}
        )
        assert r.status_code == 200, r.text
        thread.join(20)
        assert "reply" in out, out
        # found by the held request's own /v1/models refresh, not the 60 s models interval
        assert time.monotonic() - loaded_at < 5


def test_an_unknown_model_is_still_404_at_once() -> None:
    with sim_fleet(1, extra_args=["--time-scale", "0.1"]) as fleet, running_gateway(engines=fleet.urls) as gw:
        gw.wait_healthy(1)
        started = time.monotonic()
        with _client(gw.base_url) as client, pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
        assert time.monotonic() - started < 2


def test_a_declared_model_that_never_comes_up_is_503_after_the_hold_timeout() -> None:
    with running_gateway(hold_timeout=0.5, retry_after=4) as gw:
        gw.call(gw.gateway.fleet.catalog.declare, "test", {MODEL: None})
        with _client(gw.base_url) as client, pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        assert info.value.status_code == 503
        assert info.value.response.headers["retry-after"] == "4"
        assert "none became ready within 0.5 s" in str(info.value)
        assert gw.gateway.fleet.holding.total == 0


def test_held_requests_beyond_the_queue_bound_are_refused_at_once() -> None:
    with running_gateway(hold_timeout=5, hold_max_queued=1) as gw:
        gw.call(gw.gateway.fleet.catalog.declare, "test", {MODEL: None})
        thread, out = _in_background(gw, MODEL)
        gw.wait_until(lambda g: g.fleet.holding.total == 1, what="first request held")
        started = time.monotonic()
        with _client(gw.base_url) as client, pytest.raises(openai.InternalServerError, match="queue is full"):
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        assert time.monotonic() - started < 2
        thread.join(10)
        assert isinstance(out.get("error"), openai.InternalServerError)  # the held one timed out with 503


def test_ready_means_something_to_serve_or_hold() -> None:
    with running_gateway() as gw:
        assert httpx.get(gw.url + "/ready").status_code == 503  # nothing to serve, nothing declared
        gw.call(gw.gateway.fleet.catalog.declare, "test", {MODEL: None})
        ready = httpx.get(gw.url + "/ready")
        assert (
            ready.status_code == 200
        )  # a model at zero replicas: requests for it are held, stay in rotation
        assert ready.json()["declared_models"] == 1
