"""The simulator runs the operator's own engine container: the builder's command and args, then the official
openai client, /metrics, the runtime LoRA API and KV events against that process.

No cluster: the pure builder (``flotilla_operator.builders``) makes the container of a sample ModelDeployment
with ``engine.type: simulator``; its ``command`` (``flotilla sim serve ...``) and ``args`` (vLLM's flags) are
executed verbatim, with only ``flotilla`` resolved to this interpreter.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
import zmq

from engine_sim.kv_events import decode_batch
from flotilla.crds import ModelDeploymentSpec
from flotilla_operator import builders
from tests.fleet import SimFleet, sim_argv
from tests.support import free_port

SERVED = "chat"


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[SimFleet, dict[str, object]]]:
    port, kv_port = free_port(), free_port()
    spec = ModelDeploymentSpec.model_validate({
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "servedModelName": SERVED,
        "engine": {
            "type": "simulator",
            "port": port,
            "maxModelLen": 2048,
            # a flag written for real vLLM and one the simulator has never heard of: accepted, logged
            "args": ["--gpu-memory-utilization", "0.9", "--a-future-vllm-flag"],
            "simulator": {"preset": "zero"},
        },
        "resources": {"gpus": 0},
        "lora": {"enabled": True, "maxLoras": 2},
        "kvEvents": {"enabled": True, "port": kv_port},
    })  # fmt: skip
    container = builders.engine_container(spec, simulator_image="flotilla:test")
    command, args = container["command"], container["args"]
    assert command[:3] == ["flotilla", "sim", "serve"]
    with sim_argv([*command[1:], *args], port, kv_port) as fleet:
        yield fleet, container


@pytest.fixture
def client(engine: tuple[SimFleet, dict[str, object]]) -> Iterator[openai.OpenAI]:
    url = engine[0].urls[0]
    with openai.OpenAI(base_url=url + "/v1", api_key="sim", max_retries=0, timeout=30) as c:
        yield c


def test_serves_the_operators_names_and_limits(client: openai.OpenAI) -> None:
    (card,) = client.models.list().data
    assert card.id == SERVED
    assert card.model_extra is not None
    assert card.model_extra["max_model_len"] == 2048
    with pytest.raises(openai.BadRequestError, match="maximum context length is 2048"):
        client.completions.create(model=SERVED, prompt="word " * 3000, max_tokens=1)


def test_chat_and_streaming_through_the_official_client(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model=SERVED, messages=[{"role": "user", "content": "hello"}], max_tokens=5
    )
    assert resp.model == SERVED
    assert resp.choices[0].message.content
    assert resp.usage is not None
    assert 0 < resp.usage.completion_tokens <= 5
    stream = client.chat.completions.create(
        model=SERVED,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens >= 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_block_size_and_lora_flags_took_effect(engine: tuple[SimFleet, dict[str, object]]) -> None:
    url = engine[0].urls[0]
    metrics = httpx.get(url + "/metrics", timeout=10).text
    assert 'block_size="16"' in metrics
    assert f'model_name="{SERVED}"' in metrics
    # --enable-lora mapped: the runtime adapter API exists
    r = httpx.post(
        url + "/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": "org/adapter-a"}, timeout=30
    )
    assert r.status_code == 200, r.text


def test_kv_events_publish_on_the_operators_endpoint(
    engine: tuple[SimFleet, dict[str, object]], client: openai.OpenAI
) -> None:
    fleet, _ = engine
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        # the operator's config binds tcp://*:PORT, so a subscriber reaches it on loopback (in a pod: the pod IP)
        sock.connect(fleet.kv_event_endpoints[0])
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        batches = []
        for i in range(20):  # the subscription needs a moment to reach the publisher (ZMQ slow joiner)
            # a new prompt each time: a cached one stores no new blocks, so publishes nothing
            client.completions.create(model=SERVED, prompt=f"kv{i} " * 64, max_tokens=1)
            if sock.poll(250):
                batches.append(sock.recv_multipart())
                break
        assert batches, "no KV event batch arrived"
        topic, _, payload = batches[0]
        assert topic == b"kv-events"  # the CRD's default topic, as the operator wrote it
        assert decode_batch(payload).events
    finally:
        sock.close(0)
        ctx.term()


def test_unknown_and_gpu_only_flags_are_logged_not_fatal(engine: tuple[SimFleet, dict[str, object]]) -> None:
    fleet, _ = engine
    log = fleet.procs[0].log.read_text()
    assert "--gpu-memory-utilization 0.9" in log
    assert "--a-future-vllm-flag" in log
    assert fleet.alive(0)
