"""The gateway's tokenisation of requests: parse a body, compute the token ids and block hashes routing uses,
and keep the event loop free while doing it.

Only the first ``max_prefix_blocks`` × ``block_size`` ids are computed (:mod:`flotilla.prefix`: exact, from a
bounded head of the prompt). A body of ``tokenize_thread_bytes`` or more is parsed, tokenised and hashed on a
worker thread; HF tokenizers release the GIL while they encode, so ``/health`` and streams in flight keep
being served while a megabyte prompt is tokenised. A chat the gateway cannot render (no template in its
tokenizer directory, or the template fails on it) gets its ids from the chosen engine's own ``/tokenize``.

With ``prefix_hash="chars"`` (the default in approximate mode) nothing is tokenised: the prompt's canonical
text is cut into character blocks and hashed (:mod:`gateway.chars`), and token counts are estimated. Only
``max_prefix_blocks`` blocks of text are rendered and hashed, so a large body's cost is its JSON parse; it
still goes to the worker thread by the same size rule.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

import httpx

from flotilla.tokenizer import Tokenizer, load_tokenizer
from gateway.chars import char_block_hashes
from gateway.parsing import ParsedRequest, parse, parse_chars
from gateway.settings import GatewaySettings
from kvcache import block_hashes

log = logging.getLogger("flotilla.gateway")

#: the request fields vLLM's /tokenize (chat form) renders a template with, besides the messages
_CHAT_FIELDS = ("add_generation_prompt", "continue_final_message", "tools", "chat_template_kwargs")


class Prompts:
    """The engines' tokenizer, a worker pool for large bodies, and the engine fallback (one per gateway)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.tokenizer: Tokenizer = load_tokenizer(settings.tokenizer, chat_template=settings.chat_template)
        self.limit = settings.max_prefix_blocks * settings.block_size
        self.chars = settings.prefix_hash == "chars"
        #: characters per block, and the most characters routing renders and hashes
        self.block_chars = settings.block_size * settings.chars_per_token
        self.max_chars = settings.max_prefix_blocks * self.block_chars
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.tokenize_threads, thread_name_prefix="flotilla-tokenize"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def parse(self, raw: bytes, kind: str) -> ParsedRequest:
        """Parse and tokenise only the blocks routing can use; a large body on a worker thread."""
        if len(raw) < self.settings.tokenize_thread_bytes:
            return (
                self._parse_and_hash(raw, kind)
                if self.chars
                else parse(raw, kind, self.tokenizer, self.limit)
            )
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._parse_and_hash, raw, kind)

    def _parse_and_hash(self, raw: bytes, kind: str) -> ParsedRequest:
        """Parse and hash (pure: the body, settings); on the worker thread for a large request."""
        if self.chars:
            parsed = parse_chars(raw, kind, self.max_chars, self.settings.chars_per_token)
        else:
            parsed = parse(raw, kind, self.tokenizer, self.limit)
        parsed.hashes = self.block_hashes(parsed)
        parsed.text = None  # up to max_chars per request in flight: not held once hashed
        return parsed

    def block_hashes(self, parsed: ParsedRequest) -> list[int]:
        s = self.settings
        if parsed.text is not None:
            return char_block_hashes(
                parsed.text, block_chars=self.block_chars, seed=s.hash_seed, scope=parsed.model
            )
        return block_hashes(
            parsed.prompt_ids[: self.limit], block_size=s.block_size, seed=s.hash_seed, scope=parsed.model
        )

    async def from_engine(
        self, client: httpx.AsyncClient, parsed: ParsedRequest, url: str, request_id: str
    ) -> None:
        """The chat's ids from the engine at ``url`` (vLLM's ``POST /tokenize``, chat form) into ``parsed``. If
        the engine cannot say either, ``parsed`` is left without prefix ids: the request is routed without
        them and the engine answers it itself (a template's refusal reaches the client as the engine's 400)."""
        body = parsed.body
        payload = {"model": parsed.model, "messages": body["messages"]}
        payload.update({name: body[name] for name in _CHAT_FIELDS if name in body})
        try:
            response = await client.post(url + "/tokenize", json=payload)
            response.raise_for_status()
            tokens = response.json()["tokens"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.debug("engine /tokenize failed for request %s: %s", request_id, exc)
            return
        if isinstance(tokens, list) and all(isinstance(t, int) for t in tokens):
            parsed.prompt_ids = tokens[: self.limit]
            parsed.prompt_tokens = parsed.first_tokens = len(tokens)
            parsed.hashes = None
