"""The vLLM OpenAI-compatible HTTP surface of one engine: ``create_app(engine_or_config) -> FastAPI``.

Routes, status codes and JSON shapes are vLLM's (reference/vllm-interface.md §1–2); errors go through one
handler that renders :class:`~engine_sim.errors.SimError` as vLLM ≥ 0.10.1's nested error object. Bodies are
parsed by hand (orjson + pydantic) so malformed JSON and schema errors both get vLLM's 400 wording.

Simulator-only routes live under ``/sim/``: ``GET/POST /sim/faults`` (read or change fault injection at
runtime) and ``GET /sim/stats`` (engine state and simulated clock).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from engine_sim.config import EngineConfig, Faults
from engine_sim.engine import Engine, RequestHandle
from engine_sim.errors import SimError
from engine_sim.output import TextAccumulator, embedding, sim_headers, usage
from engine_sim.protocol import (
    ChatBody,
    CompletionBody,
    DetokenizeBody,
    EmbeddingBody,
    LoadLoraBody,
    TokenizeBody,
    UnloadLoraBody,
    parse,
)
from engine_sim.sleep import sleep_router
from flotilla import __version__
from flotilla.asgi import unless_disconnected
from flotilla.chat_template import ChatTemplateError
from flotilla.tokenizer import VOCAB_SIZE

log = logging.getLogger("engine_sim.server")

DONE = b"data: [DONE]\n\n"


class StreamKilled(Exception):
    """Raised inside a streaming body to cut the connection (fault ``die_mid_stream_rate``)."""


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def _sse(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def create_app(target: Engine | EngineConfig) -> FastAPI:
    engine = target if isinstance(target, Engine) else Engine(target)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()

    app = FastAPI(title="engine_sim", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine = engine
    cfg = engine.config
    tok = engine.tokenizer

    @app.exception_handler(SimError)
    async def _sim_error(_: Request, exc: SimError) -> Response:
        return _json(exc.body(), exc.status)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> Response:
        # vLLM's error shape even for bugs; Starlette still re-raises, so uvicorn logs the traceback
        return _json(SimError(500, f"{type(exc).__name__}: {exc}", "InternalServerError").body(), 500)

    def check_ready() -> None:
        if engine.faults.dead:
            raise SimError(500, "The engine is dead (fault injection).", "InternalServerError")
        if not engine.ready:
            raise SimError(503, "The engine is starting up.", "ServiceUnavailableError")
        if engine.sleep_level:
            raise SimError(503, "The engine is sleeping (POST /wake_up).", "ServiceUnavailableError")

    def chat_ids(body: ChatBody | TokenizeBody) -> list[int]:
        """The chat prompt as vLLM builds it: the template rendered, then encoded; 400 when it cannot be."""
        assert body.messages is not None
        try:
            return tok.encode_chat(
                body.messages,
                add_generation_prompt=body.add_generation_prompt,
                continue_final_message=body.continue_final_message,
                tools=body.tools,
                template_kwargs=body.chat_template_kwargs,
            )
        except ChatTemplateError as exc:
            raise SimError(400, str(exc), param="messages") from exc

    # ------------------------------------------------------------------ generation
    async def generate(request: Request, chat: bool) -> Response:
        check_ready()
        raw = await request.body()
        body: ChatBody | CompletionBody = parse(raw, ChatBody) if chat else parse(raw, CompletionBody)
        lora = engine.resolve_model(body.model)
        if isinstance(body, ChatBody):
            prompt = chat_ids(body)
        else:
            single = body.single_prompt()
            if isinstance(single, str):
                prompt = tok.encode_prompt(single)
            else:
                _check_ids(single, "prompt")
                prompt = single
            if not prompt:
                raise SimError(400, "The decoder prompt cannot be empty.", param="prompt")
        echo = ""
        if isinstance(body, CompletionBody) and body.echo:
            # vLLM echoes the prompt as given (text), or decoded when it came as token ids
            echo = single if isinstance(single, str) else tok.decode(single)
        rate = engine.faults.failure_rate
        if rate and engine.rng.random() < rate:
            raise SimError(500, "Simulated engine failure (failure_rate).", "InternalServerError")
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        handle = engine.submit(
            prompt,
            max_tokens=body.token_limit(),
            ignore_eos=body.ignore_eos,
            lora_name=lora,
            cache_salt=body.cache_salt,
            request_id=rid,
            priority=body.priority,
        )
        ctx = _Ctx(
            id=("chatcmpl-" if chat else "cmpl-") + rid,
            model=body.model or cfg.name,
            chat=chat,
            created=int(time.time()),
            echo=echo,
        )
        acc = TextAccumulator(tok, body.stops())
        if body.stream:
            opts = body.stream_options
            kill = (
                engine.faults.die_mid_stream_rate > 0
                and engine.rng.random() < engine.faults.die_mid_stream_rate
            )
            return StreamingResponse(
                stream(handle, acc, ctx, opts is not None and opts.include_usage,
                       opts is not None and opts.continuous_usage_stats, kill),
                media_type="text/event-stream",
                headers={"x-request-id": rid},
            )  # fmt: skip
        return await _unless_disconnected(request, complete(handle, acc, ctx))

    async def complete(handle: RequestHandle, acc: TextAccumulator, ctx: _Ctx) -> Response:
        try:
            async for ev in handle:
                if ev.token >= 0:
                    acc.feed(ev.token)
                    if acc.stopped_by is not None:
                        handle.finish("stop")
                        break
        finally:
            if not handle.finished:
                handle.finish("abort")
        req = handle.request
        if req.finish_reason == "error":
            raise SimError(500, "The engine failed while generating.", "InternalServerError")
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": req.finish_reason,
                                  "stop_reason": acc.stopped_by}  # fmt: skip
        if ctx.chat:
            choice["message"] = {"role": "assistant", "content": acc.text, "tool_calls": []}
        else:
            choice["text"] = ctx.echo + acc.text
        data = {
            "id": ctx.id,
            "object": "chat.completion" if ctx.chat else "text_completion",
            "created": ctx.created,
            "model": ctx.model,
            "choices": [choice],
            "usage": usage(req, details=cfg.enable_prompt_tokens_details),
        }
        return _json(data, headers={"x-request-id": req.request_id, **sim_headers(req)})

    async def stream(
        handle: RequestHandle,
        acc: TextAccumulator,
        ctx: _Ctx,
        include_usage: bool,
        continuous: bool,
        kill: bool,
    ) -> AsyncIterator[bytes]:
        obj = "chat.completion.chunk" if ctx.chat else "text_completion"
        head = {"id": ctx.id, "object": obj, "created": ctx.created, "model": ctx.model}
        req = handle.request
        details = cfg.enable_prompt_tokens_details

        def chunk(text: str | None, reason: str | None) -> bytes:
            choice: dict[str, Any] = {"index": 0}
            if ctx.chat:
                choice["delta"] = (
                    {"content": text} if text is not None else {"role": "assistant", "content": ""}
                )
            else:
                choice["text"] = ctx.echo + (text or "")
                ctx.echo = ""  # the prompt is echoed once, in the first chunk
            choice["logprobs"] = None
            choice["finish_reason"] = reason
            if reason is not None:
                choice["stop_reason"] = acc.stopped_by
            data: dict[str, Any] = {**head, "choices": [choice]}
            if continuous:
                data["usage"] = _stream_usage(usage(req, details=details))
            return _sse(data)

        # Tokens already queued when this consumer wakes are coalesced into one chunk and one socket write,
        # as vLLM's output handler merges deltas for a consumer that fell behind; the role chunk goes out
        # with the first output, as in vLLM (it is emitted on the first engine output, after prefill).
        try:
            out = bytearray(chunk(None, None) if ctx.chat else b"")
            sent = 0
            reason: str | None = None
            async for batch in handle.batches():
                parts = []
                for ev in batch:
                    if ev.token >= 0:
                        parts.append(acc.feed(ev.token))
                    if acc.stopped_by is not None:
                        handle.finish("stop")
                    if ev.finish_reason or acc.stopped_by:
                        reason = req.finish_reason
                        break
                text = "".join(parts)
                if reason is not None:
                    text += acc.flush()
                if reason == "error":
                    out += _sse(
                        SimError(500, "The engine failed while generating.", "InternalServerError").body()
                    )
                    break
                if text or reason:
                    out += chunk(text, reason)
                    sent += 1
                if kill and sent:
                    yield bytes(out)
                    raise StreamKilled(f"request {req.request_id}: connection cut (die_mid_stream_rate)")
                if reason is not None:
                    break
                if out:
                    yield bytes(out)
                    out.clear()
            if include_usage and reason != "error":
                out += _sse({**head, "choices": [], "usage": _stream_usage(usage(req, details=details))})
            out += DONE
            yield bytes(out)
        finally:
            if not handle.finished:
                handle.finish("abort")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await generate(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, chat=False)

    # ------------------------------------------------------------------ models, tokens, embeddings
    @app.get("/v1/models")
    async def models() -> Response:
        check_ready()
        created = int(time.time())
        perm = [{"id": f"modelperm-{cfg.seed}", "object": "model_permission", "created": created,
                 "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                 "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                 "organization": "*", "group": None, "is_blocking": False}]  # fmt: skip
        cards = [{"id": cfg.name, "object": "model", "created": created, "owned_by": "vllm", "root": cfg.model,
                  "parent": None, "max_model_len": engine.max_model_len, "permission": perm}]  # fmt: skip
        if cfg.enable_lora:
            cards.extend({"id": a.name, "object": "model", "created": created, "owned_by": "vllm", "root": a.path,
                          "parent": cfg.name, "max_model_len": None, "permission": perm}
                         for a in engine.lora.adapters.values())  # fmt: skip
        return _json({"object": "list", "data": cards})

    @app.post("/tokenize")
    async def tokenize(request: Request) -> Response:
        body = parse(await request.body(), TokenizeBody)
        engine.resolve_model(body.model)
        if body.messages is not None:
            ids = chat_ids(body)
        elif body.prompt is not None:
            ids = tok.encode_prompt(body.prompt, add_special_tokens=body.add_special_tokens is not False)
        else:
            raise SimError(400, "Either 'prompt' or 'messages' must be provided.", param="prompt")
        strs = [tok.decode([t]) for t in ids] if body.return_token_strs else None
        return _json(
            {"count": len(ids), "max_model_len": engine.max_model_len, "tokens": ids, "token_strs": strs}
        )

    @app.post("/detokenize")
    async def detokenize(request: Request) -> Response:
        body = parse(await request.body(), DetokenizeBody)
        engine.resolve_model(body.model)
        try:
            return _json({"prompt": tok.decode(body.tokens)})
        except ValueError as exc:
            raise SimError(400, str(exc), param="tokens") from exc

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        check_ready()
        body = parse(await request.body(), EmbeddingBody)
        engine.resolve_model(body.model)
        dim = body.dimensions or 256
        data, total = [], 0
        for i, item in enumerate(body.items()):
            ids = tok.encode(item) if isinstance(item, str) else _check_ids(item, "input")
            total += len(ids)
            data.append({"object": "embedding", "index": i, "embedding": embedding(ids, dim)})
        return _json({"object": "list", "data": data, "model": body.model or cfg.name,
                      "usage": {"prompt_tokens": total, "total_tokens": total}})  # fmt: skip

    # ------------------------------------------------------------------ LoRA
    if cfg.enable_lora:

        @app.post("/v1/load_lora_adapter")
        async def load_lora(request: Request) -> Response:
            body = parse(await request.body(), LoadLoraBody)
            await engine.lora.load(body.lora_name, body.lora_path, load_inplace=body.load_inplace)
            return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")

        @app.post("/v1/unload_lora_adapter")
        async def unload_lora(request: Request) -> Response:
            body = parse(await request.body(), UnloadLoraBody)
            engine.lora.unload(body.lora_name)
            return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")

    # ------------------------------------------------------------------ operations
    @app.get("/health")
    async def health() -> Response:
        if engine.faults.dead:
            return Response(status_code=500)
        return Response(status_code=200 if engine.ready else 503)

    @app.get("/health/ready")
    async def health_ready() -> Response:
        return await health()

    @app.get("/ping")
    async def ping() -> Response:
        return await health()

    @app.get("/version")
    async def version() -> Response:
        return _json({"version": f"engine_sim-{__version__}"})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(engine.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/reset_prefix_cache")
    async def reset_prefix_cache() -> Response:
        engine.reset_prefix_cache()
        return Response(status_code=200)

    app.include_router(sleep_router(engine))

    @app.get("/sim/faults")
    async def get_faults() -> Response:
        return _json(engine.faults.model_dump())

    @app.post("/sim/faults")
    async def set_faults(request: Request) -> Response:
        update = parse(await request.body() or b"{}", _FaultsUpdate).model_dump(exclude_unset=True)
        engine.faults = Faults.model_validate({**engine.faults.model_dump(), **update})
        return _json(engine.faults.model_dump())

    @app.get("/sim/stats")
    async def stats() -> Response:
        s = engine.scheduler
        return _json({
            "running": len(s.running), "waiting": len(s.waiting), "steps": engine.steps,
            "sim_time": engine.now(), "kv_usage": engine.pool.usage(), "free_blocks": engine.pool.num_free,
            "cached_blocks": len(engine.pool.cached), "evictions": engine.pool.evictions,
            "preemptions": s.stats.preemptions, "max_model_len": engine.max_model_len,
            "preset": engine.config.preset, "time_scale": engine.config.time_scale,
        })  # fmt: skip

    return app


class _FaultsUpdate(Faults):
    """A partial update of :class:`Faults` (only the fields given change)."""


class _Ctx:
    __slots__ = ("chat", "created", "echo", "id", "model")

    def __init__(self, *, id: str, model: str, chat: bool, created: int, echo: str = "") -> None:
        self.id, self.model, self.chat, self.created, self.echo = id, model, chat, created, echo


def _check_ids(ids: list[int], param: str) -> list[int]:
    if any(not 0 <= t < VOCAB_SIZE for t in ids):
        raise SimError(400, f"Token id out of vocabulary range [0, {VOCAB_SIZE})", param=param)
    return ids


def _stream_usage(u: dict[str, Any]) -> dict[str, Any]:
    """Streams omit ``prompt_tokens_details`` when there are no cached tokens (vLLM's truthy check)."""
    if u.get("prompt_tokens_details") is None:
        u.pop("prompt_tokens_details", None)
    return u


async def _unless_disconnected(request: Request, work: Coroutine[Any, Any, Response]) -> Response:
    """Run a non-streaming handler, cancelling it when the client goes away (vLLM's ``with_cancellation``).

    Cancellation reaches ``complete``'s ``finally``, which aborts the engine request and frees its KV blocks.
    """
    response = await unless_disconnected(work, request.receive)
    if response is not None:
        return response
    return Response(status_code=499)  # nobody is listening; the status shows in access logs
