"""HTTP details beyond the openai client: natural stops, cache_salt, aborts on disconnect, usage streaming,
tokenize/detokenize/embeddings, /sim/stats."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from flotilla.tokenizer import synthetic_text
from tests.fleet import SimFleet, sim_fleet

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    with sim_fleet(1, extra_args=["--time-scale", "0.05", "--output-len", "3:6"]) as f:
        yield f


def post(fleet: SimFleet, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(fleet.urls[0] + path, json=body, timeout=30)


def metric(fleet: SimFleet, line_prefix: str) -> float:
    for line in httpx.get(fleet.urls[0] + "/metrics").text.splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(line_prefix)


def test_natural_length_stops_with_stop(fleet: SimFleet) -> None:
    reasons = set()
    for i in range(8):
        r = post(
            fleet, "/v1/completions", {"model": MODEL, "prompt": f"natural {i}", "max_tokens": 100}
        ).json()
        assert 3 <= r["usage"]["completion_tokens"] <= 6
        reasons.add(r["choices"][0]["finish_reason"])
    assert reasons == {"stop"}
    short = post(fleet, "/v1/completions", {"model": MODEL, "prompt": "natural 0", "max_tokens": 2}).json()
    assert short["choices"][0]["finish_reason"] == "length"


def test_cache_salt_isolates_the_prefix_cache(fleet: SimFleet) -> None:
    prompt = synthetic_text(range(7000, 7200))
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 1}
    post(fleet, "/v1/completions", body)
    assert post(fleet, "/v1/completions", body).json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    salted = post(fleet, "/v1/completions", {**body, "cache_salt": "tenant-b"}).json()
    assert salted["usage"]["prompt_tokens_details"] is None


def test_client_disconnect_aborts_the_request(fleet: SimFleet) -> None:
    before = metric(fleet, 'vllm:request_success_total{engine="0",finished_reason="abort"')
    body = {"model": MODEL, "prompt": "long stream", "max_tokens": 5000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", fleet.urls[0] + "/v1/completions", json=body, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if metric(fleet, 'vllm:request_success_total{engine="0",finished_reason="abort"') > before:
            break
        time.sleep(0.05)
    assert metric(fleet, 'vllm:request_success_total{engine="0",finished_reason="abort"') == before + 1
    assert httpx.get(fleet.urls[0] + "/sim/stats").json()["running"] == 0


def test_client_disconnect_aborts_a_non_streaming_request(fleet: SimFleet) -> None:
    abort = 'vllm:request_success_total{engine="0",finished_reason="abort"'
    before = metric(fleet, abort)
    body = {"model": MODEL, "prompt": "long wait", "max_tokens": 5000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(fleet.urls[0] + "/v1/completions", json=body, timeout=httpx.Timeout(30, read=0.5))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and metric(fleet, abort) == before:
        time.sleep(0.05)
    assert metric(fleet, abort) == before + 1
    assert httpx.get(fleet.urls[0] + "/sim/stats").json()["running"] == 0


def test_continuous_usage_stats(fleet: SimFleet) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "count"}],
        "max_tokens": 4,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    with httpx.stream("POST", fleet.urls[0] + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [orjson.loads(line[6:]) for line in lines[:-1]]
    completion = [c["usage"]["completion_tokens"] for c in chunks if c["choices"]]
    assert completion == sorted(completion)
    assert completion[-1] == 4
    assert chunks[-1]["choices"] == []


def test_stream_options_without_stream_is_rejected(fleet: SimFleet) -> None:
    r = post(
        fleet, "/v1/completions", {"model": MODEL, "prompt": "x", "stream_options": {"include_usage": True}}
    )
    assert r.status_code == 400
    assert "stream=True" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "expected_first"),
    [
        ({"prompt": "ka zu"}, 128000),
        ({"prompt": "ka zu", "add_special_tokens": False}, 256 + 10100 + 35),  # bare "ka"
        ({"messages": [{"role": "user", "content": "hi"}]}, 128000),
    ],
    ids=["prompt", "prompt-no-bos", "chat"],
)
def test_tokenize_forms(fleet: SimFleet, body: dict[str, object], expected_first: int) -> None:
    r = post(fleet, "/tokenize", {"model": MODEL, **body}).json()
    assert r["tokens"][0] == expected_first
    assert r["count"] == len(r["tokens"])
    assert r["max_model_len"] == 131072
    text = post(fleet, "/detokenize", {"model": MODEL, "tokens": r["tokens"]}).json()["prompt"]
    if "prompt" in body:
        assert text.endswith("ka zu")


def test_embeddings_are_deterministic_unit_vectors(fleet: SimFleet) -> None:
    r = post(
        fleet, "/v1/embeddings", {"model": MODEL, "input": ["a b c", "a b c", "other"], "dimensions": 32}
    ).json()
    vecs = [d["embedding"] for d in r["data"]]
    assert len(vecs) == 3
    assert len(vecs[0]) == 32
    assert vecs[0] == vecs[1] != vecs[2]
    assert sum(x * x for x in vecs[0]) == pytest.approx(1.0)
    assert r["usage"]["prompt_tokens"] > 0
    assert post(fleet, "/v1/embeddings", {"model": "nope", "input": "x"}).status_code == 404


def test_sim_stats_and_version(fleet: SimFleet) -> None:
    stats = httpx.get(fleet.urls[0] + "/sim/stats").json()
    assert {"running", "waiting", "steps", "sim_time", "kv_usage", "free_blocks"} <= set(stats)
    assert httpx.get(fleet.urls[0] + "/version").json()["version"].startswith("engine_sim-")


def test_sleep_mode_last(fleet: SimFleet) -> None:
    """Clears the engine's cache: tests relying on a warm cache must come before it."""
    url = fleet.urls[0]
    body = {"model": MODEL, "prompt": synthetic_text(range(8000, 8100)), "max_tokens": 1}
    post(fleet, "/v1/completions", body)
    assert httpx.get(url + "/is_sleeping").json() == {"is_sleeping": False}
    assert httpx.post(url + "/sleep?level=3").status_code == 400
    assert httpx.post(url + "/sleep?level=1").status_code == 200
    assert httpx.get(url + "/is_sleeping").json() == {"is_sleeping": True}
    assert (
        metric(
            fleet,
            'vllm:engine_sleep_state{engine="0",model_name="' + MODEL + '",sleep_state="weights_offloaded"}',
        )
        == 1
    )
    asleep = post(fleet, "/v1/completions", body)
    assert asleep.status_code == 503
    assert "sleeping" in asleep.json()["error"]["message"]
    assert httpx.get(url + "/health").status_code == 200  # alive, just asleep
    assert httpx.post(url + "/wake_up", timeout=30).status_code == 200
    assert httpx.get(url + "/is_sleeping").json() == {"is_sleeping": False}
    # sleeping cleared the KV cache: no prefix hit for the prompt served before
    assert post(fleet, "/v1/completions", body).json()["usage"]["prompt_tokens_details"] is None


def test_priority_needs_the_priority_policy(fleet: SimFleet) -> None:
    r = post(fleet, "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 1, "priority": 3})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Priority scheduling is not enabled."
