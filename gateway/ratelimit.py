"""Per-key requests-per-minute and tokens-per-minute limits, shared by gateway replicas through Redis.

Fixed one-minute windows (aligned to the wall clock, so every replica agrees without coordination). One
request costs 1 request and its estimated tokens (prompt + max_tokens, or a default for the output). The check
and the increment are one atomic Lua call in Redis; a request over either limit is refused and its increment
undone, so refused requests do not consume quota. While Redis is unreachable the limiter falls back to
per-replica counters (limits then hold per replica) and retries Redis after a pause.

Headers follow OpenAI: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``; a 429 carries
``Retry-After`` = seconds until the window ends.

The token charge is an estimate (``max_tokens`` is an upper bound, 256 when unset); when the engine's response
reports ``usage``, :meth:`Limiter.adjust` moves the key's window by the difference, so a key is charged what it
used. A request whose estimate alone exceeds the key's TPM can never pass; the gateway answers it with 400
before it gets here rather than a 429 that invites retrying.

Only a *connection* failure marks Redis down (for everyone, ``retry_after`` s); a command error concerns one
request (its arguments), so that request alone is counted per replica. Otherwise one crafted request could
turn every key's shared limit into a per-replica one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("flotilla.gateway")

WINDOW = 60

_ADJUST = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  local t = redis.call('INCRBY', KEYS[1], ARGV[1])
  if t < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') end
end
return 0
"""

_LUA = """
local r = redis.call('INCRBY', KEYS[1], 1)
local t = redis.call('INCRBY', KEYS[2], ARGV[1])
if r == 1 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
if t == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
if (rpm > 0 and r > rpm) or (tpm > 0 and t > tpm) then
  redis.call('DECRBY', KEYS[1], 1)
  redis.call('DECRBY', KEYS[2], ARGV[1])
  return {0, r - 1, t - tonumber(ARGV[1])}
end
return {1, r, t}
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    headers: dict[str, str]
    retry_after: int


def verdict(allowed: bool, used_r: int, used_t: int, rpm: int | None, tpm: int | None, now: float) -> Verdict:
    reset = WINDOW - (now % WINDOW)
    headers: dict[str, str] = {}
    if rpm:
        headers["x-ratelimit-limit-requests"] = str(rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, rpm - used_r))
        headers["x-ratelimit-reset-requests"] = f"{reset:.0f}s"
    if tpm:
        headers["x-ratelimit-limit-tokens"] = str(tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, tpm - used_t))
        headers["x-ratelimit-reset-tokens"] = f"{reset:.0f}s"
    retry = max(1, math.ceil(reset))
    if not allowed:
        headers["retry-after"] = str(retry)
    return Verdict(allowed, headers, retry)


class Limiter(Protocol):
    async def acquire(self, key_id: str, tokens: int, rpm: int | None, tpm: int | None) -> Verdict: ...

    async def adjust(self, key_id: str, tokens: int) -> None:
        """Add ``tokens`` (negative: give back) to the key's current window, once the real usage is known."""

    async def close(self) -> None: ...


class MemoryLimiter:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._counts: dict[str, tuple[int, int, int]] = {}  # key -> (window, requests, tokens)
        self._clock = clock

    async def acquire(self, key_id: str, tokens: int, rpm: int | None, tpm: int | None) -> Verdict:
        now = self._clock()
        window = int(now // WINDOW)
        w, r, t = self._counts.get(key_id, (window, 0, 0))
        if w != window:
            r, t = 0, 0
            if len(self._counts) > 100_000:  # drop stale windows of keys that went quiet
                self._counts = {k: v for k, v in self._counts.items() if v[0] == window}
        r, t = r + 1, t + tokens
        if (rpm and r > rpm) or (tpm and t > tpm):
            self._counts[key_id] = (window, r - 1, t - tokens)
            return verdict(False, r - 1, t - tokens, rpm, tpm, now)
        self._counts[key_id] = (window, r, t)
        return verdict(True, r, t, rpm, tpm, now)

    async def adjust(self, key_id: str, tokens: int) -> None:
        window = int(self._clock() // WINDOW)
        current = self._counts.get(key_id)
        if current is not None and current[0] == window:  # a past window's charge no longer matters
            self._counts[key_id] = (window, current[1], max(0, current[2] + tokens))

    async def close(self) -> None:
        return None


class RedisLimiter:
    """Atomic limits in Redis; :class:`MemoryLimiter` while Redis is down (retried every ``retry_after`` s)."""

    def __init__(self, url: str, *, retry_after: float = 5.0, timeout: float = 0.25) -> None:
        import redis.asyncio as aioredis

        self._redis: Any = aioredis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._script = self._redis.register_script(_LUA)
        self._adjust = self._redis.register_script(_ADJUST)
        self._fallback = MemoryLimiter()
        self._retry_after = retry_after
        self._down_until = 0.0
        self.errors = 0

    async def acquire(self, key_id: str, tokens: int, rpm: int | None, tpm: int | None) -> Verdict:
        now = time.time()
        if time.monotonic() >= self._down_until:
            window = int(now // WINDOW)
            keys = [f"flotilla:rl:{key_id}:{window}:r", f"flotilla:rl:{key_id}:{window}:t"]
            try:
                allowed, used_r, used_t = await self._script(
                    keys=keys, args=[tokens, rpm or 0, tpm or 0, WINDOW + 1]
                )
                return verdict(bool(allowed), int(used_r), int(used_t), rpm, tpm, now)
            except Exception as exc:  # redis errors of every kind: fall back, never fail the request
                self._failed(exc)
        return await self._fallback.acquire(key_id, tokens, rpm, tpm)

    async def adjust(self, key_id: str, tokens: int) -> None:
        window = int(time.time() // WINDOW)
        if time.monotonic() >= self._down_until:
            try:
                await self._adjust(keys=[f"flotilla:rl:{key_id}:{window}:t"], args=[tokens])
                return
            except Exception as exc:
                self._failed(exc)
        await self._fallback.adjust(key_id, tokens)

    def _failed(self, exc: Exception) -> None:
        import redis

        self.errors += 1
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
            log.warning("rate-limit store unreachable (%s); using per-replica limits", type(exc).__name__)
            self._down_until = time.monotonic() + self._retry_after
        else:  # a command error is about this request's arguments, not about Redis: nobody else falls back
            log.warning("rate-limit store refused a command (%s)", type(exc).__name__)

    async def close(self) -> None:
        await self._redis.aclose()
