"""Client for vLLM's runtime LoRA API: list, load and unload adapters on one engine, idempotently.

The API (reference/vllm-interface.md §2) is not idempotent itself — loading a loaded name is a 400, unloading
an unknown one a 404 — but a controller must be: it restarts, retries and races with pods that restart and
forget everything. So:

* ``load`` treats "has already been loaded" as success (and says it did nothing), ``unload`` treats
  "cannot be found" as success; the controller always reads ``/v1/models`` first, so these are the rare races;
* connection errors, timeouts, 5xx and 429 are retried with exponential backoff (``Retry``), then raised as
  ``EngineUnavailable`` — a pod that vanished costs a few hundred milliseconds, not a stuck controller;
* every httpx error and every error body is translated here, at one boundary, into ``lora_manager.errors``.

Transport and sleep are injected (``httpx.MockTransport`` / ``ASGITransport`` and a fake sleep in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from lora_manager.errors import (
    EngineError,
    EngineRejected,
    EngineUnavailable,
    LoraDisabled,
    SourceRefused,
)

LOAD = "/v1/load_lora_adapter"
UNLOAD = "/v1/unload_lora_adapter"
MODELS = "/v1/models"


@dataclass(frozen=True)
class Retry:
    """Backoff for transient failures: ``base`` seconds, doubled per attempt up to ``cap``."""

    attempts: int = 4
    base: float = 0.2
    cap: float = 2.0

    def delay(self, attempt: int) -> float:
        return float(min(self.cap, self.base * (2**attempt)))


def _message(response: httpx.Response) -> str:
    """The error text of a vLLM error body (nested ≥ 0.10.1, flat before, FastAPI's ``detail``)."""
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict):
            inner = body.get("error")
            if isinstance(inner, dict) and inner.get("message"):
                return str(inner["message"])
            if body.get("message"):
                return str(body["message"])
            if body.get("detail"):
                return str(body["detail"])
    return response.text[:500]


def _is_route_missing(response: httpx.Response) -> bool:
    """404 from the router itself (no runtime LoRA API), not vLLM's NotFoundError about an adapter."""
    with contextlib.suppress(ValueError):
        body = response.json()
        return isinstance(body, dict) and body.get("detail") == "Not Found"
    return False


class EngineClient:
    """One shared client for every engine; methods take the engine's base URL (``http://ip:port``)."""

    def __init__(
        self,
        *,
        timeout: float | httpx.Timeout = 30.0,
        retry: Retry | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)
        self._retry = retry or Retry()
        self._sleep = sleep

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> EngineClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def adapters(self, endpoint: str) -> dict[str, str]:
        """Adapters loaded on ``endpoint``: name -> path (model cards with a parent)."""
        response = await self._call(endpoint, "GET", MODELS, None)
        if response.status_code != 200:
            raise EngineRejected(
                f"GET {MODELS}: {response.status_code} {_message(response)}",
                endpoint=endpoint,
                status=response.status_code,
            )
        try:
            cards: list[dict[str, Any]] = response.json()["data"]
            return {str(c["id"]): str(c.get("root") or "") for c in cards if c.get("parent")}
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineRejected(f"GET {MODELS}: unreadable body", endpoint=endpoint) from exc

    async def load(self, endpoint: str, name: str, path: str) -> bool:
        """Load ``name`` from ``path``; True if this call loaded it, False if it was loaded already."""
        response = await self._call(endpoint, "POST", LOAD, {"lora_name": name, "lora_path": path})
        if response.status_code == 200:
            return True
        message = _message(response)
        status = response.status_code
        if status == 400 and "already been loaded" in message:
            return False
        if status == 404 and _is_route_missing(response):
            raise LoraDisabled(
                f"{endpoint} has no runtime LoRA API (needs --enable-lora and "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=true)",
                endpoint=endpoint,
                status=status,
            )
        if status == 404 or (status == 400 and "Loading lora" in message):
            raise SourceRefused(message, endpoint=endpoint, status=status)
        raise EngineRejected(f"load {name}: {status} {message}", endpoint=endpoint, status=status)

    async def unload(self, endpoint: str, name: str) -> bool:
        """Unload ``name``; True if this call unloaded it, False if it was not loaded."""
        response = await self._call(endpoint, "POST", UNLOAD, {"lora_name": name})
        if response.status_code == 200:
            return True
        status = response.status_code
        if status == 404 and _is_route_missing(response):
            raise LoraDisabled(f"{endpoint} has no runtime LoRA API", endpoint=endpoint, status=status)
        if status == 404:
            return False
        raise EngineRejected(
            f"unload {name}: {status} {_message(response)}", endpoint=endpoint, status=status
        )

    async def _call(
        self, endpoint: str, method: str, path: str, body: dict[str, Any] | None
    ) -> httpx.Response:
        """One request with retries; returns any non-transient response, raises ``EngineUnavailable``."""
        url = endpoint.rstrip("/") + path
        last = ""
        for attempt in range(self._retry.attempts):
            if attempt:
                await self._sleep(self._retry.delay(attempt - 1))
            try:
                response = await self._http.request(method, url, json=body)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code < 500 and response.status_code != 429:
                return response
            last = f"{response.status_code} {_message(response)}"
        raise EngineUnavailable(
            f"{method} {url} failed after {self._retry.attempts} attempts: {last}", endpoint=endpoint
        )


__all__ = ["EngineClient", "EngineError", "Retry"]
