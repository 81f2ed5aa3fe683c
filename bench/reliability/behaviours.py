"""Client behaviours of the reliability load, and how every answer is classified.

Outcomes, from the client's side only (what a user of the gateway would see):

* ``ok`` — a complete answer: a non-streaming body that is complete JSON with a finished choice, or a stream
  with a finished choice, no error event and ``data: [DONE]``;
* ``error`` — a failure stated clearly: an OpenAI-shaped JSON error (``{"error": {"message", …}}``) with a
  4xx/5xx status, or an in-stream error event followed by ``[DONE]``;
* ``unclear`` — a failure without such a statement: a non-JSON error body, or the connection closed with no
  response at all;
* ``hung`` — no complete answer within ``hung_after`` seconds (the request is then cancelled);
* ``truncated`` — a silent cut: a stream that ended without ``[DONE]`` (or without a finished choice) and
  without an error event, or a 200 body that is not complete JSON;
* a deliberately **bad request** (``bad-request``) must be refused with a 4xx OpenAI error; a 5xx or a 200
  for it counts as ``unclear``;
* ``disconnected`` — the client left on purpose (one of the disconnecting behaviours) before the answer was
  complete; it has no outcome of its own, but the gateway must release what the request held.

A disconnecting behaviour whose answer completed before its planned disconnect is classified like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from bench.client import request_body
from bench.workloads import BenchRequest

OUTCOMES = ("ok", "error", "unclear", "hung", "truncated", "disconnected")
BEHAVIOURS = (
    "nonstream",
    "stream",
    "cancel-before-first-byte",
    "cancel-mid-stream",
    "slow-reader",
    "abort-upload",
    "bad-request",
)
#: bad requests the gateway must refuse with a clear 4xx (each once leaked load or crashed a gateway somewhere)
BAD_REQUESTS = ("9 kB x-request-id", "malformed JSON", "max_tokens 2^63", "unknown model")
#: behaviours whose client leaves on purpose
DISCONNECTING = ("cancel-before-first-byte", "cancel-mid-stream", "abort-upload")


@dataclass
class Outcome:
    index: int
    phase: str
    behaviour: str
    outcome: str = ""
    status: int = 0
    detail: str = ""
    seconds: float = 0.0


class _Leave(Exception):
    """The client leaves now (a disconnecting behaviour reached its planned point)."""


def is_openai_error(body: bytes) -> bool:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    error = data.get("error") if isinstance(data, dict) else None
    return isinstance(error, dict) and isinstance(error.get("message"), str) and bool(error["message"])


def classify_json(status: int, body: bytes) -> tuple[str, str]:
    """(outcome, detail) of a complete non-streaming answer."""
    if status != 200:
        if is_openai_error(body):
            return "error", f"HTTP {status}: {orjson.loads(body)['error']['message'][:160]}"
        return "unclear", f"HTTP {status} without an OpenAI error body: {body[:120]!r}"
    try:
        data = orjson.loads(body)
        choice = data["choices"][0]
        finished = choice.get("finish_reason") is not None and isinstance(choice["message"]["content"], str)
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        return "truncated", f"200 body is not a complete completion ({len(body)} bytes)"
    return ("ok", "") if finished else ("truncated", "200 body without a finished choice")


class StreamState:
    """What a client has seen of an SSE stream so far."""

    def __init__(self) -> None:
        self.buffer = b""
        self.content_chunks = 0
        self.finished = False
        self.error: str | None = None
        self.done = False

    def feed(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for raw in lines:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                continue
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                self.error = self.error or "malformed SSE event"
                continue
            if "error" in chunk:
                message = chunk["error"].get("message") if isinstance(chunk["error"], dict) else None
                self.error = f"stream error: {str(message)[:160]}"
                continue
            for choice in chunk.get("choices") or ():
                if (choice.get("delta") or {}).get("content"):
                    self.content_chunks += 1
                if choice.get("finish_reason") is not None:
                    self.finished = True

    def verdict(self) -> tuple[str, str]:
        """(outcome, detail) of a stream that ended (the connection closed or ``[DONE]`` arrived)."""
        if self.error is not None:
            return ("error", self.error) if self.done else ("truncated", self.error + ", then no [DONE]")
        if self.done and self.finished:
            return "ok", ""
        if self.done:
            return "truncated", "[DONE] without a finished choice"
        return "truncated", f"stream ended without [DONE] after {self.content_chunks} content chunks"


class Behaviours:
    """Sends one request of a given behaviour to the gateway and classifies what came back."""

    def __init__(
        self, client: httpx.AsyncClient, base_url: str, *, model: str, hung_after: float, slow_pause: float
    ) -> None:
        self.client = client
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.hung_after = hung_after
        self.slow_pause = slow_pause

    def body(self, request: BenchRequest, stream: bool) -> bytes:
        body: dict[str, Any] = request_body(request, self.model)
        if not stream:
            body["stream"] = False
            body.pop("stream_options")
        return orjson.dumps(body)

    async def run(self, behaviour: str, request: BenchRequest, phase: str, rng: random.Random) -> Outcome:
        out = Outcome(index=request.index, phase=phase, behaviour=behaviour)
        started = time.perf_counter()
        leave_after = rng.uniform(0.0, 0.3)  # cancel-before-first-byte: long before a 16+ token answer
        leave_at_chunk = rng.randint(1, 3)  # cancel-mid-stream: after this many content chunks
        try:
            async with asyncio.timeout(self.hung_after):
                if behaviour == "bad-request":
                    await self._bad_request(request, out, rng)
                elif behaviour == "abort-upload":
                    await self._abort_upload(request, rng)
                    out.outcome, out.detail = "disconnected", "closed while sending the body"
                elif behaviour in ("nonstream", "cancel-before-first-byte"):
                    leave = leave_after if behaviour == "cancel-before-first-byte" else None
                    await self._nonstream(request, out, leave)
                else:
                    leave_chunk = leave_at_chunk if behaviour == "cancel-mid-stream" else None
                    pause = self.slow_pause if behaviour == "slow-reader" else 0.0
                    await self._stream(request, out, leave_chunk, pause)
        except TimeoutError:
            out.outcome, out.detail = "hung", f"no complete answer after {self.hung_after:.0f}s"
        except _Leave as leave:
            out.outcome, out.detail = "disconnected", str(leave)
        out.seconds = time.perf_counter() - started
        return out

    async def _nonstream(self, request: BenchRequest, out: Outcome, leave_after: float | None) -> None:
        send = self.client.post(
            self.url, content=self.body(request, False), headers={"content-type": "application/json"}
        )
        task = asyncio.ensure_future(send)
        try:
            if leave_after is not None:
                done, _ = await asyncio.wait({task}, timeout=leave_after)
                if not done:
                    raise _Leave(f"left after {leave_after * 1000:.0f} ms, before any byte")
            response = await task
        except httpx.HTTPError as exc:
            out.outcome, out.detail = "unclear", f"no response: {type(exc).__name__}: {exc}"[:200]
            return
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                    await task
        out.status = response.status_code
        out.outcome, out.detail = classify_json(response.status_code, response.content)

    async def _stream(
        self, request: BenchRequest, out: Outcome, leave_at_chunk: int | None, pause: float
    ) -> None:
        state = StreamState()
        headers_seen = False
        try:
            async with self.client.stream(
                "POST", self.url, content=self.body(request, True), headers={"content-type": "application/json"}
            ) as response:  # fmt: skip
                headers_seen = True
                out.status = response.status_code
                if response.status_code != 200:
                    out.outcome, out.detail = classify_json(response.status_code, await response.aread())
                    return
                async for data in response.aiter_raw():
                    state.feed(data)
                    if state.done:
                        break
                    if leave_at_chunk is not None and state.content_chunks >= leave_at_chunk:
                        raise _Leave(f"left mid-stream after {state.content_chunks} content chunks")
                    if pause:
                        await asyncio.sleep(pause)
        except httpx.HTTPError as exc:
            if not headers_seen:
                out.outcome, out.detail = "unclear", f"no response: {type(exc).__name__}: {exc}"[:200]
                return
            # after the head, a broken connection is judged by what the stream said before it broke
        out.outcome, out.detail = state.verdict()

    async def _bad_request(self, request: BenchRequest, out: Outcome, rng: random.Random) -> None:
        kind = rng.choice(BAD_REQUESTS)
        body: dict[str, Any] = orjson.loads(self.body(request, False))
        headers = {"content-type": "application/json"}
        content = b""
        if kind == "9 kB x-request-id":
            headers["x-request-id"] = "r" * 9000
        elif kind == "max_tokens 2^63":
            body["max_tokens"] = 2**63
        elif kind == "unknown model":
            body["model"] = "no-such-model"
        else:
            content = orjson.dumps(body)[:-7]
        try:
            response = await self.client.post(
                self.url, content=content or orjson.dumps(body), headers=headers
            )
        except httpx.HTTPError as exc:
            out.outcome, out.detail = "unclear", f"{kind}: no response: {type(exc).__name__}"
            return
        out.status = response.status_code
        out.outcome, detail = classify_json(response.status_code, response.content)
        if out.outcome == "error" and not 400 <= response.status_code < 500:
            # a client's mistake answered as the server's (5xx), or served: not a clear refusal
            out.outcome = "unclear"
        elif out.outcome == "ok":
            out.outcome, detail = "unclear", "a bad request was served (HTTP 200)"
        out.detail = f"{kind}: {detail}"

    async def _abort_upload(self, request: BenchRequest, rng: random.Random) -> None:
        """Send the head and part of the body on a raw connection, then close it."""
        parts = urlsplit(self.url)
        body = self.body(request, rng.random() < 0.5)
        _reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            head = (
                f"POST {parts.path} HTTP/1.1\r\nhost: {parts.netloc}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n\r\n"
            ).encode()
            writer.write(head + body[: len(body) // 2])
            await writer.drain()
            await asyncio.sleep(rng.uniform(0.0, 0.2))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def pick(mix: Mapping[str, float], rng: random.Random) -> str:
    names = list(mix)
    return rng.choices(names, weights=[mix[n] for n in names])[0]
