"""LoRA load/unload with vLLM's responses and errors; fault injection; kill/restart through the fleet fixture."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from flotilla.tokenizer import synthetic_text
from tests.fleet import SimFleet, sim_fleet

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture(scope="module")
def lora_fleet() -> Iterator[SimFleet]:
    args = ["--time-scale", "0.02", "--enable-lora", "--max-loras", "1", "--lora-load-latency", "0.5",
            "--lora-modules", "static-a=org/static-a"]  # fmt: skip
    with sim_fleet(1, extra_args=args) as f:
        yield f


@pytest.mark.parametrize(
    ("path", "body", "status", "err_type", "message"),
    [
        ("load", {"lora_name": "", "lora_path": "x"}, 400, "InvalidUserInput", "must be provided"),
        (
            "load",
            {"lora_name": "static-a", "lora_path": "org/a"},
            400,
            "InvalidUserInput",
            "already been loaded",
        ),
        (
            "load",
            {"lora_name": "ghost", "lora_path": "/no/such/dir"},
            404,
            "NotFoundError",
            "No adapter found",
        ),
        ("load", {"lora_path": "x"}, 400, "BadRequestError", "lora_name"),
        ("unload", {"lora_name": "never-loaded"}, 404, "NotFoundError", "cannot be found"),
        ("unload", {"lora_name": ""}, 400, "InvalidUserInput", "needs to be provided"),
    ],
    ids=["empty-name", "duplicate", "missing-path", "missing-field", "unload-unknown", "unload-empty"],
)
def test_lora_errors(
    lora_fleet: SimFleet, path: str, body: dict[str, str], status: int, err_type: str, message: str
) -> None:
    r = httpx.post(f"{lora_fleet.urls[0]}/v1/{path}_lora_adapter", json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["type"] == err_type
    assert err["code"] == status
    assert message in err["message"]


def test_lora_lifecycle_with_openai_client(lora_fleet: SimFleet) -> None:
    url = lora_fleet.urls[0]
    client = openai.OpenAI(base_url=url + "/v1", api_key="sim", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="sql-lora", prompt="hi", max_tokens=2)

    r = httpx.post(url + "/v1/load_lora_adapter", json={"lora_name": "sql-lora", "lora_path": "org/sql-lora"})
    assert r.status_code == 200
    assert r.text == "Success: LoRA adapter 'sql-lora' added successfully."
    assert not r.headers["content-type"].startswith("application/json")

    cards = {m.id: m for m in client.models.list().data}
    assert set(cards) == {MODEL, "static-a", "sql-lora"}
    assert cards["sql-lora"].parent == MODEL  # type: ignore[attr-defined]
    assert cards[MODEL].parent is None  # type: ignore[attr-defined]

    prompt = synthetic_text(range(100, 300))
    base = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=3, extra_body={"ignore_eos": True}
    )
    lora = client.completions.create(
        model="sql-lora", prompt=prompt, max_tokens=3, extra_body={"ignore_eos": True}
    )
    assert lora.model == "sql-lora"
    assert lora.usage is not None
    # block hashes include the adapter name: the base model's cached prompt is no hit for the adapter
    assert lora.usage.prompt_tokens_details is None
    assert base.choices[0].text != lora.choices[0].text

    metrics = httpx.get(url + "/metrics").text
    assert 'vllm:lora_requests_info{max_lora="1"' in metrics

    r = httpx.post(url + "/v1/unload_lora_adapter", json={"lora_name": "sql-lora"})
    assert r.status_code == 200
    assert r.text == "Success: LoRA adapter 'sql-lora' removed successfully."
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="sql-lora", prompt="hi", max_tokens=2)


def test_lora_routes_absent_without_enable_lora() -> None:
    with sim_fleet(1, extra_args=["--preset", "zero"]) as fleet:
        r = httpx.post(fleet.urls[0] + "/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": "b"})
        assert r.status_code == 404


def test_faults_failure_rate_dead_engine_and_runtime_switch() -> None:
    with sim_fleet(1, extra_args=["--preset", "zero", "--failure-rate", "1.0"]) as fleet:
        url = fleet.urls[0]
        client = openai.OpenAI(base_url=url + "/v1", api_key="sim", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            client.completions.create(model=MODEL, prompt="hi", max_tokens=2)
        assert httpx.post(url + "/sim/faults", json={"failure_rate": 0.0}).json()["failure_rate"] == 0.0
        assert client.completions.create(model=MODEL, prompt="hi", max_tokens=2).choices[0].text
        assert httpx.post(url + "/sim/faults", json={"failure_rate": 2}).status_code == 400
        httpx.post(url + "/sim/faults", json={"dead": True})
        assert httpx.get(url + "/health").status_code == 500
        with pytest.raises(openai.InternalServerError):
            client.completions.create(model=MODEL, prompt="hi", max_tokens=2)


def test_die_mid_stream_cuts_the_connection() -> None:
    with sim_fleet(1, extra_args=["--preset", "zero", "--die-mid-stream-rate", "1.0"]) as fleet:
        client = openai.OpenAI(base_url=fleet.urls[0] + "/v1", api_key="sim", max_retries=0)
        got: list[str] = []
        with pytest.raises((openai.APIError, httpx.HTTPError)):  # noqa: PT012
            for chunk in client.completions.create(model=MODEL, prompt="hi", max_tokens=50, stream=True):
                got.append(chunk.choices[0].text)  # noqa: PERF401 - keep what arrived before the cut
        assert 1 <= len(got) < 50
        # non-streaming requests are unaffected; the engine lives on
        assert client.completions.create(model=MODEL, prompt="hi", max_tokens=2).choices[0].text


def test_slow_start_then_ready() -> None:
    with sim_fleet(1, extra_args=["--time-scale", "0.1", "--startup-delay", "30"], wait=False) as fleet:
        url = fleet.urls[0]
        health: set[int] = set()
        models: set[int] = set()
        for _ in range(600):
            try:
                status = httpx.get(url + "/health").status_code
            except httpx.HTTPError:
                status = 0  # not listening yet
            health.add(status)
            if status == 200:
                break
            if status == 503:
                models.add(httpx.get(url + "/v1/models").status_code)
            time.sleep(0.05)
        assert 503 in health
        assert 200 in health
        assert 503 in models  # the API is unavailable while starting


def test_kill_and_restart_one_engine() -> None:
    with sim_fleet(2, extra_args=["--preset", "zero"]) as fleet:
        fleet.kill(0)
        assert not fleet.alive(0)
        with pytest.raises(httpx.ConnectError):
            httpx.get(fleet.urls[0] + "/health")
        assert httpx.get(fleet.urls[1] + "/health").status_code == 200
        fleet.restart(0)
        assert httpx.get(fleet.urls[0] + "/health").status_code == 200


def test_one_process_fleet_serves_consecutive_ports() -> None:
    with sim_fleet(3, extra_args=["--preset", "zero"], one_process_per_engine=False) as fleet:
        assert fleet.ports == list(range(fleet.ports[0], fleet.ports[0] + 3))
        for url in fleet.urls:
            r = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2})
            assert r.status_code == 200
        engines = {
            line.split('engine="')[1][0]
            for url in fleet.urls
            for line in httpx.get(url + "/metrics").text.splitlines()
            if line.startswith("vllm:num_requests_running")
        }
        assert engines == {"0", "1", "2"}
