"""The FastAPI application: built by :func:`create_app` from :class:`GatewaySettings`, never at import time."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from flotilla.asgi import unless_disconnected
from gateway import api_models as m
from gateway.errors import GatewayError, PayloadTooLarge, error_reply, install_handlers, valid_request_id
from gateway.replies import AsResponse, Reply, Sendable
from gateway.service import Gateway
from gateway.settings import GatewaySettings
from gateway.telemetry import GatewayStats, configure_logging


async def read_body(headers: Mapping[str, str], receive: Receive, limit: int) -> bytes | None:
    """The request body from ASGI ``receive``, at most ``limit`` bytes (413 beyond, before reading it if the
    declared length says so); None if the client disconnected first."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


_COMPLETION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The engine's response: JSON, or an SSE stream when `stream` is true",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Completion"}},
            "text/event-stream": {},
        },
    },
    **m.ERRORS,
}


log = logging.getLogger("flotilla.gateway")


#: path -> request kind, for the routes proxied to engines
PROXIED = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/embeddings": "embeddings"}


class FastPath:
    """Serves ``POST`` on the proxied paths directly, before FastAPI (:class:`GatewayApp` calls it first).

    The proxied routes are also declared as FastAPI routes (so ``/openapi.json`` documents them, and they work
    if this fast path is absent), but FastAPI's per-request routing, dependency solving and middleware stack
    (exception middleware, body limit, its native OpenTelemetry check, which reads the environment on every
    request) cost about a quarter of the gateway's CPU per request in profiles; the gateway has its own
    metrics and request log. Here the body is read from ``receive`` and the reply sent with raw ``send`` calls
    (gateway/replies.py), without Starlette's ``Request`` and ``Response`` objects; the request's headers are
    one dict (the first of repeated names wins, as with Starlette's ``Headers``). Errors, bugs included, are
    answered by the same OpenAI-shaped :func:`error_reply`. One watcher task per request cancels the work when
    the client goes away (flotilla/asgi.py).
    """

    def __init__(self, gateway: Gateway, limit: int) -> None:
        self.gateway = gateway
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send, kind: str) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}
        try:
            raw = await read_body(headers, receive, self.limit)
        except GatewayError as exc:
            await self._refused(exc, scope["path"], headers).send(send)
            return
        if raw is None:  # the client left while sending its body: nobody to answer, nothing held yet
            log.debug("%s: client left before its request body was complete", scope["path"])
            return
        # None: the client left; the upstream request or stream was cancelled and closed
        await unless_disconnected(self._serve(scope["path"], kind, raw, headers, send), receive)

    async def _serve(self, path: str, kind: str, raw: bytes, headers: dict[str, str], send: Send) -> None:
        reply: Sendable
        try:
            reply = await self.gateway.handle(path, kind, raw, headers)
        except GatewayError as exc:
            reply = self._refused(exc, path, headers)
        except Exception:  # a bug must still answer in OpenAI shape, and be logged with its traceback
            log.exception("internal error on %s", path)
            reply = error_reply(GatewayError("internal gateway error"), headers.get("x-request-id"))
        await reply.send(send)

    @staticmethod
    def _refused(exc: GatewayError, path: str, headers: dict[str, str]) -> Reply:
        request_id = headers.get("x-request-id")
        if request_id is not None and not valid_request_id(request_id):
            request_id = None  # neither echoed nor logged: it may be megabytes
        log.info(
            "%s refused: %s %s",
            path,
            exc.status,
            exc.type,
            extra={
                "fields": {
                    "request_id": request_id,
                    "status": exc.status,
                    "error": exc.type,
                    "param": exc.param,
                }
            },
        )
        return error_reply(exc, request_id)


class GatewayApp(FastAPI):
    """The FastAPI app, with the proxied ``POST`` requests handed to :class:`FastPath` before anything else."""

    fast_path: FastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path is not None and scope["type"] == "http" and scope["method"] == "POST":
            kind = PROXIED.get(scope["path"])
            if kind is not None:
                await self.fast_path(scope, receive, send, kind)
                return
        await super().__call__(scope, receive, send)


def freeze_startup_heap() -> int:
    """Exclude what is alive now from every later cyclic GC pass (``gc.freeze()``), once per process.

    A started gateway holds about 100,000 long-lived objects (FastAPI, pydantic, aiohttp, the settings
    and pools) that the collector cannot free but walks again on every full collection, a stop-the-world pause
    on the request path; frozen, its passes scan only what requests allocate. Reference counting still frees
    frozen objects; only a reference cycle among them would outlive its use. A collection first keeps startup
    garbage out; a process that already froze (a second app in the same process, a host that did it) is left
    alone. SGLang and Ray Serve do the same after warm-up. Returns how many objects were frozen (0: already).
    """
    if gc.get_freeze_count():
        return 0
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("froze %d startup objects out of the cyclic garbage collector", frozen)
    return frozen


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """Build a gateway app. ``app.state.gateway`` is the :class:`Gateway`; see :func:`live_stats`."""
    settings = settings or GatewaySettings()
    gw = Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        detach = configure_logging(settings.log_json, settings.log_level)
        await gw.start()
        if settings.gc_freeze:
            freeze_startup_heap()
        try:
            yield
        finally:
            await gw.stop()
            detach()

    app = GatewayApp(title="Flotilla gateway", version="0.1.0", lifespan=lifespan)
    app.state.gateway = gw
    install_handlers(app)
    limit = settings.max_body_bytes
    app.fast_path = FastPath(gw, limit)

    async def proxied(request: Request, path: str, kind: str) -> Response:
        raw = await read_body(request.headers, request.receive, limit)
        if raw is None:
            raise ClientDisconnect()  # as Request.stream() does: nobody to answer
        return AsResponse(await gw.handle(path, kind, raw, request.headers))

    @app.post(
        "/v1/chat/completions",
        openapi_extra=_body_doc(m.ChatCompletionRequest),
        responses=_COMPLETION_RESPONSES,
    )
    async def chat_completions(request: Request) -> Response:
        """OpenAI chat completions, routed to the best engine; SSE passes through unbuffered."""
        return await proxied(request, "/v1/chat/completions", "chat")

    @app.post(
        "/v1/completions", openapi_extra=_body_doc(m.CompletionRequest), responses=_COMPLETION_RESPONSES
    )
    async def completions(request: Request) -> Response:
        """OpenAI completions (prompt as text, texts or token ids)."""
        return await proxied(request, "/v1/completions", "completions")

    @app.post("/v1/embeddings", openapi_extra=_body_doc(m.EmbeddingRequest), responses=_COMPLETION_RESPONSES)
    async def embeddings(request: Request) -> Response:
        """OpenAI embeddings, routed by load."""
        return await proxied(request, "/v1/embeddings", "embeddings")

    @app.get("/v1/models", response_model=m.ModelList)
    async def models() -> Response:
        """Models and LoRA adapters served by any healthy endpoint."""
        return JSONResponse(gw.fleet.models())

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the gateway process answers."""
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"description": "Nothing to serve or hold yet"}})
    async def ready() -> Response:
        """Readiness: discovery has run. In Kubernetes that is all: the gateway then answers for every model
        the cluster declares (serving it, holding its requests while it scales from zero, or a clear 404), so
        it belongs in rotation even before the first ModelDeployment exists (``helm install --wait``). With
        static endpoints, some endpoint must be healthy or some model declared."""
        fleet = gw.fleet
        healthy = sum(1 for e in fleet.pool if e.available)
        ok = fleet.discovered and (gw.settings.kubernetes or healthy > 0 or len(fleet.catalog) > 0)
        return JSONResponse(
            {"ready": ok, "healthy_endpoints": healthy, "declared_models": len(fleet.catalog)},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        """Prometheus metrics of this gateway replica."""
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (m.ChatCompletionRequest, m.CompletionRequest, m.EmbeddingRequest, m.Completion):
                doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(doc.pop("$defs", {}))
                components[model.__name__] = doc
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def live_stats(app: FastAPI) -> GatewayStats:
    """Requests served, per-endpoint in-flight and prefix hit ratios of a running app (cheap; no I/O)."""
    gateway: Gateway = app.state.gateway
    return gateway.stats()
