"""Request and response shapes for the OpenAPI schema only.

The hot path never validates a body with these (see :mod:`gateway.parsing`); they exist so ``/openapi.json``
documents the API accurately for clients and for schemathesis. ``extra="allow"``: engines accept many more
sampling fields than are listed here, and the gateway forwards them untouched.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ContentPart(_Open):
    type: str
    text: str | None = None


class ChatMessage(_Open):
    role: str
    content: str | list[ContentPart] | None = None


class StreamOptions(_Open):
    include_usage: bool | None = None


class ChatCompletionRequest(_Open):
    model: str = Field(min_length=1, description="Served model or LoRA adapter name", examples=["llama-3-8b"])
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None


class CompletionRequest(_Open):
    model: str = Field(min_length=1, examples=["llama-3-8b"])
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="Text, texts, token ids or lists of them"
    )
    max_tokens: int | None = Field(default=None, ge=0)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None


class EmbeddingRequest(_Open):
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelCard(_Open):
    id: str
    object: Literal["model"] = "model"
    owned_by: str | None = None
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Completion(_Open):
    """An OpenAI chat.completion / text_completion / embedding list object, as the engine returned it."""

    object: str
    model: str | None = None
    choices: list[dict[str, Any]] | None = None
    usage: dict[str, Any] | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "Malformed request",
        401: "Missing or invalid API key",
        404: "Unknown model",
        413: "Body too large",
        429: "Rate limit reached (Retry-After, x-ratelimit-*)",
        502: "Every upstream try failed",
        503: "No healthy endpoint (Retry-After)",
    }.items()
}
