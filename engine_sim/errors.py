"""engine_sim's exception tree; the server renders it as vLLM's error JSON in one handler.

::

    SimError(status, message, type, param)   an API error with vLLM's status code and ``type``
    └── EngineDead                            the engine was killed by fault injection (HTTP 500)

The JSON shape is vLLM ≥ 0.10.1's nested ``{"error": {"message", "type", "param", "code"}}`` where ``code``
is the integer HTTP status (reference/vllm-interface.md §1.4).
"""

from __future__ import annotations

from typing import Any


class SimError(Exception):
    def __init__(
        self, status: int, message: str, err_type: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_type = err_type or default_type(status)
        self.param = param

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.err_type,
                "param": self.param,
                "code": self.status,
            }
        }


class EngineDead(SimError):
    def __init__(self, message: str = "The engine is dead (fault injection).") -> None:
        super().__init__(500, message, "InternalServerError")


def default_type(status: int) -> str:
    return {
        400: "BadRequestError",
        404: "NotFoundError",
        429: "RateLimitError",
        501: "NotImplementedError",
        503: "ServiceUnavailableError",
    }.get(status, "InternalServerError" if status >= 500 else "BadRequestError")
