"""Request bodies of the OpenAI/vLLM endpoints (pydantic at the edge) and their validation errors.

Unknown fields are accepted and ignored, as vLLM accepts the OpenAI fields it does not use. Values the
simulator cannot honour (``n > 1``, several prompts in one completion request) get a clear 400 instead of a
silently different answer.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine_sim.errors import SimError

T = TypeVar("T", bound=BaseModel)


class StreamOptions(BaseModel):
    include_usage: bool = True
    continuous_usage_stats: bool = False


class SamplingBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    stop: str | list[str] | None = None
    ignore_eos: bool = False
    cache_salt: str | None = None
    priority: int = 0
    logprobs: bool | int | None = None
    prompt_logprobs: int | None = None
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)

    @field_validator("n")
    @classmethod
    def _n(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"n must be at least 1, got {v}.")
        if v > 1:
            raise ValueError("n > 1 is not supported by engine_sim (one choice per request).")
        return v

    @field_validator("max_tokens", "max_completion_tokens", check_fields=False)
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"max_tokens must be at least 1, got {v}.")
        return v

    @field_validator("logprobs", "top_logprobs", "prompt_logprobs", check_fields=False)
    @classmethod
    def _no_logprobs(cls, v: object) -> object:
        if v not in (None, False, 0):
            raise ValueError("logprobs are not simulated by engine_sim")
        return v

    @model_validator(mode="after")
    def _stream_options(self) -> SamplingBody:
        if self.stream_options is not None and not self.stream:
            raise ValueError("Stream options can only be defined when `stream=True`.")
        return self

    def token_limit(self) -> int | None:
        return self.max_tokens

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else [s for s in self.stop if s]


class ChatBody(SamplingBody):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = None
    top_logprobs: int | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    #: rendered by the chat template, as vLLM does
    tools: list[dict[str, Any]] | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionBody(SamplingBody):
    prompt: str | list[int] | list[str] | list[list[int]]
    echo: bool = False

    def single_prompt(self) -> str | list[int]:
        p = self.prompt
        if isinstance(p, str):
            return p
        if not p:
            raise SimError(400, "prompt must not be empty", param="prompt")
        if all(isinstance(x, int) for x in p):
            return [int(x) for x in p]  # type: ignore[arg-type]
        if len(p) != 1:
            raise SimError(400, "engine_sim accepts one prompt per completion request", param="prompt")
        first = p[0]
        if isinstance(first, str):
            return first
        if isinstance(first, list):
            return [int(x) for x in first]
        raise SimError(
            400, "prompt must be a string, a list of strings or a list of token ids", param="prompt"
        )


class TokenizeBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    return_token_strs: bool = False
    continue_final_message: bool = False
    tools: list[dict[str, Any]] | None = None
    chat_template_kwargs: dict[str, Any] | None = None


class DetokenizeBody(BaseModel):
    model: str | None = None
    tokens: list[int]


class EmbeddingBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]]
    dimensions: int | None = Field(default=None, ge=1, le=8192)

    def items(self) -> list[str | list[int]]:
        x = self.input
        if isinstance(x, str):
            return [x]
        out: list[str | list[int]] = []
        if x and all(isinstance(t, int) for t in x):
            return [[int(t) for t in x if isinstance(t, int)]]
        for item in x:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, list):
                out.append([int(t) for t in item])
        return out


class LoadLoraBody(BaseModel):
    lora_name: str
    lora_path: str
    load_inplace: bool = False


class UnloadLoraBody(BaseModel):
    lora_name: str
    lora_int_id: int | None = None


def parse(raw: bytes, model: type[T]) -> T:
    """Parse a JSON body into ``model`` or raise vLLM's 400 (``N validation error(s): …``)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SimError(400, f"1 validation error: body: JSON decode error ({exc})", param="body") from exc
    if not isinstance(data, dict):
        raise SimError(400, "1 validation error: body: Input should be a valid dictionary", param="body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        parts = []
        for e in errors:
            loc = ".".join(str(x) for x in e["loc"])
            parts.append(f"{loc}: {e['msg']}" if loc else str(e["msg"]))
        n = len(errors)
        param = ".".join(str(x) for x in errors[0]["loc"]) or None
        label = "validation error" if n == 1 else "validation errors"
        raise SimError(400, f"{n} {label}: " + "; ".join(parts), param=param) from exc
