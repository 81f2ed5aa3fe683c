"""The gateway's exception tree, and the one place errors become OpenAI-shaped JSON.

::

    GatewayError                   status  type
    ├── BadRequest                 400     invalid_request_error
    │   └── PayloadTooLarge        413     invalid_request_error
    ├── Unauthorized               401     authentication_error
    ├── ModelNotFound              404     invalid_request_error (code model_not_found)
    ├── RateLimited                429     rate_limit_exceeded   (+ Retry-After, x-ratelimit-*)
    ├── NoEndpoint                 503     service_unavailable   (+ Retry-After)
    └── UpstreamError              502     upstream_error        (every try failed before the first byte)

Errors from httpx, Redis and the Kubernetes client are translated where they occur (``raise … from``); the
handler installed by :func:`install_handlers` is the only code that renders an error body, so every failure a
client sees has the same shape: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gateway.replies import Reply, encode

log = logging.getLogger("flotilla.gateway")


class GatewayError(Exception):
    status = 500
    type = "internal_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class PayloadTooLarge(BadRequest):
    status = 413
    code = "payload_too_large"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"


class NoEndpoint(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "no_healthy_endpoint"


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_unavailable"


#: x-request-id is echoed to the engine, the client and the log: bounded, and visible ASCII only
MAX_REQUEST_ID = 128


def valid_request_id(value: str) -> bool:
    return 0 < len(value) <= MAX_REQUEST_ID and all("!" <= c <= "~" for c in value)


def _headers(exc: GatewayError, request_id: str | None) -> dict[str, str]:
    headers = dict(exc.headers)
    if request_id and valid_request_id(request_id):  # never echo what the request was refused for
        headers["x-request-id"] = request_id
    return headers


def error_response(exc: GatewayError, request_id: str | None = None) -> Response:
    return Response(
        orjson.dumps(exc.body()),
        status_code=exc.status,
        media_type="application/json",
        headers=_headers(exc, request_id),
    )


def error_reply(exc: GatewayError, request_id: str | None = None) -> Reply:
    """The same error as :func:`error_response`, as a raw ASGI reply (the gateway's fast path)."""
    headers = encode(_headers(exc, request_id))
    headers.append((b"content-type", b"application/json"))
    return Reply(exc.status, headers, orjson.dumps(exc.body()))


def sse_error(message: str, *, type_: str = "upstream_error", code: int = 502) -> bytes:
    """The in-stream error vLLM itself sends after the stream started, followed by ``[DONE]``."""
    payload = orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})
    return b"data: " + payload + b"\n\ndata: [DONE]\n\n"


def install_handlers(app: FastAPI) -> None:
    async def on_gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return error_response(exc, request.headers.get("x-request-id"))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        err = GatewayError(str(exc.detail), headers=dict(exc.headers or {}))
        err.status = exc.status_code
        err.type = "invalid_request_error" if exc.status_code < 500 else "internal_error"
        err.code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(err)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(
            BadRequest(f"{len(errors)} validation error(s): {first.get('msg', '')}", param=loc or None)
        )

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.error("internal error on %s", request.url.path, exc_info=exc)
        return error_response(GatewayError("internal gateway error"))

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(Exception, on_unexpected)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
