"""Request bodies: parsed once with orjson, checked only as far as routing needs, forwarded as the original bytes.

The engine validates sampling parameters itself (and answers 400 in OpenAI shape, which we pass through), so
the gateway does not re-validate a large body with pydantic on the hot path. It does check what it reads:
``model``, ``stream``, ``max_tokens``, and the prompt fields it tokenises for prefix routing (or, with
``prefix_hash="chars"``, renders as text: :func:`parse_chars`, the same checks and errors).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from flotilla.chat_template import ChatTemplateError
from flotilla.tokenizer import Tokenizer
from gateway.chars import chat_text, estimate_chat_tokens, estimate_tokens
from gateway.errors import MAX_REQUEST_ID, BadRequest, valid_request_id

#: expected output tokens when a request sets no max_tokens (load accounting only)
DEFAULT_EXPECTED_OUTPUT = 256


@dataclass(slots=True)
class ParsedRequest:
    #: the parsed JSON, kept only while the gateway still needs it (a chat for the engine's /tokenize): a
    #: megabyte prompt is not held twice, as bytes to forward and as a string, for the whole request
    body: dict[str, Any]
    model: str
    stream: bool
    max_tokens: int
    #: the leading token ids the engine will see for the (first) prompt, as many as routing can use
    #: (``limit``); routing hashes their blocks
    prompt_ids: list[int]
    #: total prompt tokens across all prompts (rate limiting, load); estimated beyond what was encoded
    prompt_tokens: int
    #: max_tokens as the client sent it (None = unset; ``max_tokens`` then holds the default expectation)
    requested_max_tokens: int | None = None
    #: the gateway could not render this chat (no template, or the template failed): ask an engine's /tokenize
    engine_tokenize: bool = False
    #: tokens of the (first) prompt, whose leading ids are ``prompt_ids`` (estimated beyond them)
    first_tokens: int = 0
    #: block hashes of ``prompt_ids``, when computed with them (off the event loop, for large bodies)
    hashes: list[int] | None = None
    #: ``prefix_hash="chars"``: the (first) prompt's canonical text, as far as routing hashes it (None: a
    #: prompt of token ids, hashed by ids; and once ``hashes`` are computed from it)
    text: str | None = None
    #: the token counts are estimates from characters (chars ÷ chars_per_token), not a tokenizer's
    estimated: bool = False

    def __post_init__(self) -> None:
        self.first_tokens = self.first_tokens or len(self.prompt_ids)


def _object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


#: no model has a context this long; a larger max_tokens is a mistake or an attack on the TPM counters
#: (2**63 overflowed Redis' INCRBY)
MAX_TOKENS_CEILING = 1 << 24


def _int_field(body: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BadRequest(f"'{name}' must be a non-negative integer", param=name)
        if value > MAX_TOKENS_CEILING:
            raise BadRequest(f"'{name}' must be at most {MAX_TOKENS_CEILING}", param=name)
        return value
    return None


def check_request_id(value: str | None) -> str | None:
    """A client's ``x-request-id`` (None when absent); 400 unless it is 1..128 visible ASCII characters."""
    if not value:
        return None
    if not valid_request_id(value):
        raise BadRequest(
            f"x-request-id must be 1 to {MAX_REQUEST_ID} visible ASCII characters", param="x-request-id"
        )
    return value


def max_model_len(endpoints: Iterable[Any], model: str) -> int | None:
    """The context length the engines report for ``model`` (vLLM's ``/v1/models`` ``max_model_len``);
    for an adapter, its base model's. None when no engine says."""
    for endpoint in endpoints:
        parent: str | None = None
        for card in endpoint.cards:
            if card.get("id") == model:
                limit = card.get("max_model_len")
                if isinstance(limit, int) and limit > 0:
                    return limit
                parent = card.get("parent")
        if parent:
            for card in endpoint.cards:
                limit = card.get("max_model_len")
                if card.get("id") == parent and isinstance(limit, int) and limit > 0:
                    return limit
    return None


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value
    )


def _prompts(value: Any, field: str) -> list[str | list[int]]:
    """A completion prompt / embedding input: str, [str], [int] or [[int]] → a list of prompts."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(p, str) for p in value):
            return list(value)
        if _is_ids(value):
            return [list(value)]
        if all(_is_ids(p) and p for p in value):
            return list(value)
    raise BadRequest(
        f"'{field}' must be a string, a list of strings, a list of token ids or a list of lists", param=field
    )


def chat_options(body: dict[str, Any]) -> dict[str, Any]:
    """What vLLM renders a chat template with besides the messages: ``add_generation_prompt``,
    ``continue_final_message``, ``tools`` and ``chat_template_kwargs`` (wrong types are left to the engine's own
    400)."""
    add = body.get("add_generation_prompt", True)
    tools = body.get("tools")
    kwargs = body.get("chat_template_kwargs")
    final = body.get("continue_final_message", False)
    return {
        "add_generation_prompt": add if isinstance(add, bool) else True,
        "continue_final_message": final if isinstance(final, bool) else False,
        "tools": tools if isinstance(tools, list) and tools else None,
        "template_kwargs": kwargs if isinstance(kwargs, dict) else None,
    }


def _common(raw: bytes) -> tuple[dict[str, Any], str, bool, int | None]:
    """The body, ``model``, ``stream`` and the requested ``max_tokens``, checked."""
    body = _object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string", param="model")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", param="stream")
    return body, model, stream, _int_field(body, "max_completion_tokens", "max_tokens")


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string 'role'", param=f"messages.{i}")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise BadRequest(
                f"messages[{i}].content must be a string, a list of parts or null",
                param=f"messages.{i}.content",
            )
    return messages


def parse(raw: bytes, kind: str, tokenizer: Tokenizer, limit: int = 1 << 30) -> ParsedRequest:
    """Parse a ``chat`` / ``completions`` / ``embeddings`` body; raise :class:`BadRequest` on what we cannot route.

    Only the first ``limit`` token ids (the blocks the prefix index can use) are computed exactly; the rest of
    a long prompt is counted by estimate."""
    body, model, stream, max_tokens = _common(raw)
    if kind == "chat":
        messages = _messages(body)
        try:
            ids, total, _ = tokenizer.chat_prefix(messages, limit, **chat_options(body))
            first = total
        except ChatTemplateError:
            expected = DEFAULT_EXPECTED_OUTPUT if max_tokens is None else max_tokens
            # the engine renders (or refuses) it; until it says, count the body's bytes as a rough estimate
            return ParsedRequest(
                body, model, stream, expected, [], len(raw) // 4, max_tokens, True, first_tokens=len(raw) // 4
            )
    else:
        field = "prompt" if kind == "completions" else "input"
        prompts = _prompts(body.get(field), field)
        encoded = [
            (p, len(p)) if isinstance(p, list) else tokenizer.prompt_prefix(p, limit)[:2] for p in prompts
        ]
        ids, first = encoded[0][0][:limit], encoded[0][1]
        total = sum(n for _, n in encoded)
        if kind == "embeddings":
            stream, max_tokens = False, 0
    expected = DEFAULT_EXPECTED_OUTPUT if max_tokens is None else max_tokens
    return ParsedRequest({}, model, stream, expected, ids, total, max_tokens, first_tokens=first)


def parse_chars(raw: bytes, kind: str, max_chars: int, chars_per_token: int) -> ParsedRequest:
    """As :func:`parse` (the same checks, the same errors) without a tokenizer (``prefix_hash="chars"``).

    The (first) prompt's canonical text, up to ``max_chars`` characters, goes to ``ParsedRequest.text`` for
    :func:`gateway.chars.char_block_hashes`; token counts are estimated from characters. A prompt of token ids
    keeps its ids (``prompt_ids``) and exact counts."""
    body, model, stream, max_tokens = _common(raw)
    text: str | None
    if kind == "chat":
        messages = _messages(body)
        text, chars = chat_text(messages, max_chars)
        ids: list[int] = []
        first = total = estimate_chat_tokens(chars, len(messages), chars_per_token)
        estimated = True
    else:
        field = "prompt" if kind == "completions" else "input"
        prompts = _prompts(body.get(field), field)
        counts = [
            len(p) if isinstance(p, list) else estimate_tokens(len(p), chars_per_token) for p in prompts
        ]
        head = prompts[0]
        text, ids = (None, head) if isinstance(head, list) else (head[:max_chars], [])
        first, total = counts[0], sum(counts)
        estimated = any(isinstance(p, str) for p in prompts)
        if kind == "embeddings":
            stream, max_tokens = False, 0
    expected = DEFAULT_EXPECTED_OUTPUT if max_tokens is None else max_tokens
    return ParsedRequest(
        {},
        model,
        stream,
        expected,
        ids,
        total,
        max_tokens,
        first_tokens=first,
        text=text,
        estimated=estimated,
    )


def header_map(headers: Any) -> Mapping[str, str]:
    """The request's headers as a plain dict, decoded once.

    Starlette's ``Headers`` scans its raw list and lower-cases the name on every lookup (~1.5 µs each), and a
    request looks up about sixteen (request id, key, strategy, session, the forwarded ones): ~20 µs, against
    ~7 µs for this one pass. Names in ASGI are already lower-case; of repeated headers the first wins, as
    ``Headers.get`` answers. A mapping without ``raw`` (a dict from a test or another caller) is used as is.
    """
    raw = getattr(headers, "raw", None)
    if raw is None:
        return headers  # type: ignore[no-any-return]
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(raw)}
