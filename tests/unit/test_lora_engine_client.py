"""Error translation and retries of the LoRA engine client, on an in-memory transport and a fake sleep."""

from __future__ import annotations

import httpx
import pytest

from lora_manager import EngineClient, EngineRejected, EngineUnavailable, Retry, SourceRefused


def client(responses: list[httpx.Response | Exception]) -> tuple[EngineClient, list[float], list[str]]:
    slept: list[float] = []
    seen: list[str] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        item = responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    transport = httpx.MockTransport(handler)
    return (
        EngineClient(retry=Retry(attempts=3, base=0.1, cap=1), transport=transport, sleep=sleep),
        slept,
        seen,
    )


async def test_transient_failures_are_retried_with_backoff() -> None:
    c, slept, seen = client([
        httpx.ConnectError("refused"),
        httpx.Response(503, json={"error": {"message": "starting", "code": 503}}),
        httpx.Response(200, text="Success: LoRA adapter 'a' added successfully."),
    ])  # fmt: skip
    assert await c.load("http://127.0.0.1:1", "a", "org/a") is True
    assert slept == [0.1, 0.2]
    assert seen == ["/v1/load_lora_adapter"] * 3


async def test_gives_up_as_engine_unavailable() -> None:
    c, slept, _ = client([httpx.ConnectError("refused")] * 3)
    with pytest.raises(EngineUnavailable, match="after 3 attempts") as info:
        await c.adapters("http://127.0.0.1:1")
    assert info.value.endpoint == "http://127.0.0.1:1"
    assert slept == [0.1, 0.2]


@pytest.mark.parametrize(
    ("response", "error", "match"),
    [
        (httpx.Response(404, json={"error": {"message": "Loading lora a failed: No adapter found for /x",
                                              "type": "NotFoundError", "code": 404}}),
         SourceRefused, "No adapter found"),
        (httpx.Response(400, json={"object": "error", "message": "Loading lora a failed: bad config",
                                   "type": "BadRequestError", "code": 400}),
         SourceRefused, "bad config"),
        (httpx.Response(400, json={"error": {"message": "Both 'lora_name' and 'lora_path' must be provided.",
                                              "code": 400}}),
         EngineRejected, "must be provided"),
    ],
    ids=["no-adapter-found", "old-flat-load-failure", "bad-request"],
)  # fmt: skip
async def test_load_errors_are_translated(
    response: httpx.Response, error: type[Exception], match: str
) -> None:
    c, slept, _ = client([response])
    with pytest.raises(error, match=match):
        await c.load("http://127.0.0.1:1", "a", "/x")
    assert slept == []  # permanent errors are not retried
