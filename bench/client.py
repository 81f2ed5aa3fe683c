"""The open-loop streaming load generator.

A dispatcher sleeps until each request's scheduled time and starts it as its own task, so a slow server never
delays later sends (no coordinated omission); every latency is measured from the scheduled time. Responses are
streamed (SSE) and timed per content chunk: TTFT is the first chunk that carries text, ITL the gaps between
such chunks, e2e the end of the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx
import orjson

from bench.results import RequestResult
from bench.workloads import BenchRequest

#: the session header every contender gets (Flotilla's session affinity; vllm-router reads X-Session-ID)
SESSION_HEADER = "x-session-id"


def request_body(request: BenchRequest, model: str) -> dict[str, Any]:
    """An OpenAI chat body: streamed with usage, exactly ``max_tokens`` output (``ignore_eos``, vLLM extension)."""
    return {
        "model": request.model or model,
        "messages": list(request.messages),
        "max_tokens": request.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        "temperature": 0.0,
    }


def _chunk_text(chunk: Mapping[str, Any]) -> str:
    text = ""
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            text += str(delta.get("content") or "")
        else:
            text += str(choice.get("text") or "")
    return text


async def send_one(
    client: httpx.AsyncClient,
    url: str,
    request: BenchRequest,
    *,
    model: str,
    headers: Mapping[str, str],
    start: float,
    scheduled: float,
) -> RequestResult:
    """Send one streaming chat request and time it against ``start + scheduled`` (perf_counter seconds)."""
    result = RequestResult(index=request.index, scheduled=scheduled)
    due = start + scheduled
    result.send_lag = time.perf_counter() - due
    hdrs = {**headers, SESSION_HEADER: request.session}
    try:
        async with client.stream(
            "POST", url, content=orjson.dumps(request_body(request, model)),
            headers={"content-type": "application/json", **hdrs},
        ) as response:  # fmt: skip
            result.status = response.status_code
            if response.status_code != 200:
                body = (await response.aread())[:200].decode(errors="replace")
                result.error = f"HTTP {response.status_code}: {body}"
                return result
            last = math.nan
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    result.ok = not result.error
                    break
                now = time.perf_counter()
                chunk = orjson.loads(payload)
                if "error" in chunk:
                    result.error = f"stream error: {str(chunk['error'])[:200]}"
                    continue
                usage = chunk.get("usage")
                if usage:
                    result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                    result.completion_tokens = int(usage.get("completion_tokens") or 0)
                    details = usage.get("prompt_tokens_details") or {}
                    result.cached_tokens = int(details.get("cached_tokens") or 0)
                if _chunk_text(chunk):
                    result.chunks += 1
                    if math.isnan(last):
                        result.ttft = now - due
                    else:
                        result.itls.append(now - last)
                    last = now
            if not result.ok and not result.error:
                result.error = "stream ended without [DONE]"
            result.e2e = time.perf_counter() - due
    except (httpx.HTTPError, ValueError) as exc:  # transport errors, malformed SSE JSON
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    return result


async def run_open_loop(
    *,
    base_url: str,
    requests: Sequence[BenchRequest],
    offsets: Sequence[float],
    model: str,
    headers: Mapping[str, str] | None = None,
    drain_timeout: float = 60.0,
    request_timeout: float = 120.0,
    on_done: Callable[[RequestResult], None] | None = None,
) -> tuple[list[RequestResult], float]:
    """Send ``requests`` at ``offsets`` (seconds) to ``base_url``/chat/completions; returns results and wall time.

    Requests still running ``drain_timeout`` seconds after the last scheduled send are cancelled and count as
    failures ("timeout"), so an overloaded contender ends the run instead of stalling it.
    """
    if len(requests) != len(offsets):
        raise ValueError(f"{len(requests)} requests but {len(offsets)} send times")
    url = base_url.rstrip("/") + "/chat/completions"
    results: dict[int, RequestResult] = {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    timeout = httpx.Timeout(request_timeout, connect=10.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        tasks: dict[asyncio.Task[RequestResult], BenchRequest] = {}

        def finished(task: asyncio.Task[RequestResult]) -> None:
            if task.cancelled() or task.exception() is not None:
                return
            result = task.result()
            results[result.index] = result
            if on_done is not None:
                on_done(result)

        start = time.perf_counter()
        for request, offset in zip(requests, offsets, strict=True):
            delay = start + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(
                send_one(
                    client, url, request, model=model, headers=headers or {}, start=start, scheduled=offset
                )
            )
            task.add_done_callback(finished)
            tasks[task] = request
        await wait_or_cancel(tasks, drain_timeout)
        wall = time.perf_counter() - start
    out: list[RequestResult] = []
    for request, offset in zip(requests, offsets, strict=True):
        result = results.get(request.index)
        if result is None:
            result = RequestResult(index=request.index, scheduled=offset, error="timeout: cancelled at drain")
            if on_done is not None:
                on_done(result)
        out.append(result)
    return out, wall


async def wait_or_cancel(tasks: Iterable[asyncio.Task[Any]], within: float) -> None:
    """Wait up to ``within`` seconds for ``tasks``, then cancel those still running and reap them (a sender's
    end: what did not finish is reported as a timeout by the caller, never waited for)."""
    tasks = list(tasks)
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=within)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_closed_loop(
    *,
    base_url: str,
    requests: Sequence[BenchRequest],
    concurrency: int,
    duration: float,
    model: str,
    headers: Mapping[str, str] | None = None,
    request_timeout: float = 30.0,
    max_requests: int | None = None,
) -> tuple[list[RequestResult], float]:
    """``concurrency`` workers each sending back-to-back requests (cycling ``requests``) for ``duration`` s
    or until ``max_requests`` have been sent.

    Used only by the overhead mode to find a router's ceiling (requests/s, chunks/s); latencies there are
    measured from the actual send time, since a closed loop has no schedule.
    """
    if concurrency <= 0 or duration <= 0 or not requests:
        raise ValueError("closed loop needs concurrency > 0, duration > 0 and at least one request")
    url = base_url.rstrip("/") + "/chat/completions"
    results: list[RequestResult] = []
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(
        limits=limits, timeout=httpx.Timeout(request_timeout), trust_env=False
    ) as client:
        start = time.perf_counter()
        stop_at = start + duration
        sent = [0]

        async def worker(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop_at and (max_requests is None or sent[0] < max_requests):
                sent[0] += 1
                request = requests[i % len(requests)]
                i += concurrency
                scheduled = time.perf_counter() - start
                results.append(
                    await send_one(
                        client,
                        url,
                        request,
                        model=model,
                        headers=headers or {},
                        start=start,
                        scheduled=scheduled,
                    )
                )

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        wall = time.perf_counter() - start
    return results, wall
