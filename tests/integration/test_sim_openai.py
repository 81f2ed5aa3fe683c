"""The official openai client against real ``flotilla sim`` processes: shapes, usage, streaming, errors."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from flotilla.tokenizer import synthetic_text
from tests.fleet import SimFleet, sim_fleet

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
LONG = synthetic_text(range(300, 300 + 400))  # 400 syllable-word tokens


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    with sim_fleet(1, extra_args=["--time-scale", "0.05", "--max-model-len", "2048"]) as f:
        yield f


@pytest.fixture
def client(fleet: SimFleet) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fleet.urls[0] + "/v1", api_key="sim", max_retries=0, timeout=30) as c:
        yield c


def test_models_list(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert models.data[0].owned_by == "vllm"


def test_chat_non_streaming_usage(client: openai.OpenAI, fleet: SimFleet) -> None:
    messages = [{"role": "user", "content": "tell me a story about ships"}]
    resp = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=7,
        extra_body={"ignore_eos": True},  # type: ignore[arg-type]
    )
    counted = httpx.post(fleet.urls[0] + "/tokenize", json={"model": MODEL, "messages": messages}).json()
    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-")
    assert resp.choices[0].finish_reason == "length"
    assert resp.choices[0].message.role == "assistant"
    assert resp.usage is not None
    assert resp.usage.completion_tokens == 7
    assert resp.usage.prompt_tokens == counted["count"]
    assert resp.usage.total_tokens == counted["count"] + 7
    # the text round-trips through the shared tokenizer: 7 tokens of text
    text = resp.choices[0].message.content or ""
    assert (
        httpx.post(fleet.urls[0] + "/tokenize", json={"prompt": text, "add_special_tokens": False}).json()[
            "count"
        ]
        == 7
    )


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completions"])
def test_streaming_matches_non_streaming(client: openai.OpenAI, chat: bool) -> None:
    kw = {"model": MODEL, "max_tokens": 9, "extra_body": {"ignore_eos": True}}
    if chat:
        msgs = [{"role": "user", "content": "deterministic please"}]
        full = client.chat.completions.create(messages=msgs, **kw)  # type: ignore[call-overload]
        chunks = list(
            client.chat.completions.create(
                messages=msgs, stream=True, stream_options={"include_usage": True}, **kw
            )  # type: ignore[call-overload]
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        expected = full.choices[0].message.content
        assert chunks[0].choices[0].delta.role == "assistant"
    else:
        full = client.completions.create(prompt="deterministic please", **kw)  # type: ignore[call-overload]
        chunks = list(
            client.completions.create(
                prompt="deterministic please", stream=True, stream_options={"include_usage": True}, **kw
            )  # type: ignore[call-overload]
        )
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        expected = full.choices[0].text
    assert text == expected
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert finals[0].choices[0].finish_reason == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 9
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model=MODEL, prompt="hi", max_tokens=3, stream=True))
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_repeated_prompt_reports_cached_tokens(client: openai.OpenAI) -> None:
    first = client.completions.create(model=MODEL, prompt="first " + LONG, max_tokens=2)
    second = client.completions.create(model=MODEL, prompt="first " + LONG, max_tokens=2)
    assert first.usage is not None
    assert second.usage is not None
    assert first.usage.prompt_tokens_details is None
    assert second.usage.prompt_tokens_details is not None
    cached = second.usage.prompt_tokens_details.cached_tokens or 0
    # whole blocks only, and at most prompt - 1 tokens
    assert cached % 16 == 0
    assert second.usage.prompt_tokens - 16 <= cached <= second.usage.prompt_tokens - 1


def test_stop_string(client: openai.OpenAI) -> None:
    full = client.completions.create(
        model=MODEL, prompt="stop test", max_tokens=12, extra_body={"ignore_eos": True}
    )
    words = full.choices[0].text.split()
    stop = " " + words[3]
    cut = client.completions.create(model=MODEL, prompt="stop test", max_tokens=12, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == full.choices[0].text.split(stop)[0]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"model": "no-such-model"}, openai.NotFoundError),
        ({"max_tokens": 0}, openai.BadRequestError),
        ({"max_tokens": -3}, openai.BadRequestError),
        ({"prompt": LONG * 6}, openai.BadRequestError),
        ({"max_tokens": 5000}, openai.BadRequestError),
        ({"n": 2}, openai.BadRequestError),
    ],
    ids=[
        "unknown-model",
        "max-tokens-zero",
        "max-tokens-negative",
        "prompt-too-long",
        "max-tokens-too-large",
        "n-2",
    ],
)
def test_errors_raise_openai_types(
    client: openai.OpenAI, kwargs: dict[str, object], error: type[Exception]
) -> None:
    args: dict[str, object] = {"model": MODEL, "prompt": "hello", "max_tokens": 4, **kwargs}
    with pytest.raises(error) as info:
        client.completions.create(**args)  # type: ignore[call-overload]
    assert isinstance(info.value, openai.APIStatusError)
    body = info.value.body
    assert isinstance(body, dict)
    # vLLM >= 0.10.1 shape; the SDK unwraps "error"
    assert body["code"] == info.value.status_code
    assert body["message"]


def test_errors_on_chat_too(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": LONG * 6}])


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1, 2]", b'{"model": "m"}', b'{"prompt": "x", "max_tokens": "many"}'],
    ids=["malformed", "not-object", "missing-prompt", "wrong-type"],
)
def test_bad_bodies_get_vllm_400(fleet: SimFleet, raw: bytes) -> None:
    r = httpx.post(
        fleet.urls[0] + "/v1/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == 400
    assert err["type"] == "BadRequestError"
    assert "validation error" in err["message"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_completion_echo(client: openai.OpenAI, stream: bool) -> None:
    kw = {
        "model": MODEL,
        "prompt": " ka zu be",
        "max_tokens": 3,
        "echo": True,
        "extra_body": {"ignore_eos": True},
    }
    if stream:
        text = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw) if c.choices)  # type: ignore[call-overload]
    else:
        text = client.completions.create(**kw).choices[0].text  # type: ignore[call-overload]
    assert text.startswith(" ka zu be ")
    assert len(text.split()) == 3 + 3  # the prompt as given, then 3 generated words


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.completions.create(model=MODEL, prompt="x", max_tokens=2, logprobs=2),
        lambda c: c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], logprobs=True
        ),
    ],
    ids=["completion-logprobs", "chat-logprobs"],
)
def test_logprobs_are_refused_clearly(client: openai.OpenAI, call) -> None:
    with pytest.raises(openai.BadRequestError, match="logprobs are not simulated"):
        call(client)


def test_token_id_prompts(client: openai.OpenAI, fleet: SimFleet) -> None:
    ids = [128000, *range(300, 340)]
    resp = client.completions.create(model=MODEL, prompt=ids, max_tokens=2)
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == len(ids)
    batch_of_one = client.completions.create(model=MODEL, prompt=[ids], max_tokens=2)
    assert batch_of_one.choices[0].text == resp.choices[0].text
    with pytest.raises(openai.BadRequestError, match="vocabulary"):
        client.completions.create(model=MODEL, prompt=[1, 2, 10**7], max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="one prompt"):
        client.completions.create(model=MODEL, prompt=["a", "b"], max_tokens=2)
