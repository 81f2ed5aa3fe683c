"""Redis-backed prefix index, shared by gateway replicas, that never fails a request because Redis did.

* **One round trip per match**, whatever the prompt length: a Lua script (loaded once, run by EVALSHA)
  walks the prompt's blocks server-side and returns each candidate's leading-block count.
* **Writes are batched** (group commit): ``record``/``evict``/``remove_endpoint`` append to a buffer and
  return; one owned flusher task sends everything buffered in one EVALSHA, then whatever piled up during
  that round trip, and so on. A replica's own writes reach Redis within about one round trip.
* **Bounded**: every block key expires ``ttl`` after its last record; each endpoint keeps at most
  ``endpoint_capacity`` blocks (LRU, tail first). Give Redis a ``maxmemory`` with an LRU policy as well.
* **Local mirror**: every write also lands in an in-process :class:`MemoryIndex`. When Redis is unreachable
  (or answers with an error) the index marks itself down, answers ``match`` from the mirror, drops the write
  buffer, and a reconnector task retries with exponential backoff and jitter. Once Redis answers again the
  scripts are reloaded, endpoints removed meanwhile are deleted, and the mirror is replayed into Redis, so a
  restarted (empty) Redis regains this replica's knowledge. Blocks evicted locally while Redis was away stay
  in Redis until their TTL.
* **Errors**: redis-py errors and socket errors are translated to :class:`IndexUnavailable` in one place
  (``_command``); none of them escapes to the caller of the Protocol methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from kvcache import redis_scripts
from kvcache.errors import IndexUnavailable
from kvcache.memory import DEFAULT_CAPACITY, MemoryIndex

log = logging.getLogger("flotilla.kvcache.redis")

_MAX_ARGS = 50_000  # per write script call, so one flush never blocks Redis for long


@dataclass
class RedisIndexStats:
    round_trips: int = 0
    matches_remote: int = 0
    matches_local: int = 0
    flushes: int = 0
    write_ops: int = 0
    failures: int = 0
    connects: int = 0


class RedisIndex:
    def __init__(
        self,
        url: str,
        *,
        namespace: str = "flotilla:kv:",
        ttl: float | None = 1200.0,
        endpoint_capacity: int | None = 1_000_000,
        local_capacity: int = DEFAULT_CAPACITY,
        timeout: float = 0.5,
        backoff: tuple[float, float] = (0.05, 5.0),
    ) -> None:
        if ttl is not None and ttl <= 0:
            raise ValueError("ttl must be positive (or None for no expiry)")
        if endpoint_capacity is not None and endpoint_capacity <= 0:
            raise ValueError("endpoint_capacity must be positive (or None)")
        self.namespace = namespace
        self.ttl = ttl
        self.endpoint_capacity = endpoint_capacity
        self.backoff = backoff
        self.stats = RedisIndexStats()
        self.mirror = MemoryIndex(local_capacity, endpoint_capacity=endpoint_capacity, ttl=ttl)
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._ttl_ms = "0" if ttl is None else str(int(ttl * 1000))
        self._cap = "0" if endpoint_capacity is None else str(endpoint_capacity)
        self._match_sha = ""
        self._write_sha = ""
        self._healthy = False
        self._pending: list[tuple[str, str, Sequence[int]]] = []
        self._removed_while_down: set[str] = set()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set while nothing is buffered or in flight
        self._drained.set()
        self._flusher: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None
        self._closed = False
        self._connecting = asyncio.Lock()

    @property
    def healthy(self) -> bool:
        """True while matches are answered by Redis (False: from the local mirror)."""
        return self._healthy

    async def start(self) -> bool:
        """Connect now (instead of on first use); returns whether Redis answered. Never raises."""
        self._ensure_flusher(connect=False)
        if not self._healthy:
            try:
                await self._connect()
            except IndexUnavailable as exc:
                self._mark_down(exc)
        return self._healthy

    # ------------------------------------------------------------------ Protocol

    async def match(self, hashes: Sequence[int], endpoints: Collection[str]) -> dict[str, int]:
        if not hashes or not endpoints:
            return dict.fromkeys(endpoints, 0)
        self._ensure_flusher()
        if self._healthy:
            eps = list(dict.fromkeys(endpoints))
            try:
                depths = await self._command(
                    "EVALSHA", self._match_sha, 0, self.namespace, len(eps), *eps, *hashes
                )
            except IndexUnavailable as exc:
                self._mark_down(exc)
            else:
                self.stats.matches_remote += 1
                return dict(zip(eps, (int(d) for d in depths), strict=True))
        self.stats.matches_local += 1
        return self.mirror.match_now(hashes, endpoints)

    async def record(self, endpoint: str, hashes: Sequence[int]) -> None:
        if hashes:
            self.mirror.record_now(endpoint, hashes)
            self._enqueue("R", endpoint, hashes)

    async def evict(self, endpoint: str, hashes: Sequence[int]) -> None:
        if hashes:
            self.mirror.evict_now(endpoint, hashes)
            self._enqueue("E", endpoint, hashes)

    async def remove_endpoint(self, endpoint: str) -> None:
        self.mirror.remove_endpoint_now(endpoint)
        if not self._healthy:
            self._removed_while_down.add(endpoint)
        self._enqueue("X", endpoint, ())

    async def flush(self) -> None:
        """Wait until every write buffered so far has been sent (or dropped because Redis is down)."""
        self._ensure_flusher()
        await self._drained.wait()

    async def close(self) -> None:
        if self._closed:
            return
        if self._healthy and self._flusher is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), 2.0)
        self._closed = True
        for task in (self._flusher, self._reconnector):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._flusher = self._reconnector = None
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await self._client.aclose()

    # ------------------------------------------------------------------ the one redis boundary

    async def _command(self, *args: Any) -> Any:
        self.stats.round_trips += 1
        try:
            return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise IndexUnavailable(f"redis: {exc.__class__.__name__}: {exc}") from exc

    async def _connect(self) -> None:
        async with self._connecting:
            if not self._healthy:
                await self._load_and_replay()

    async def _load_and_replay(self) -> None:
        # drop pooled sockets from before the outage: each would fail once and trigger another replay
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await self._client.connection_pool.disconnect()
        self._match_sha = str(await self._command("SCRIPT", "LOAD", redis_scripts.MATCH), "ascii")
        self._write_sha = str(await self._command("SCRIPT", "LOAD", redis_scripts.WRITE), "ascii")
        for endpoint in self._removed_while_down:
            await self._write([("X", endpoint, ())])
        self._removed_while_down.clear()
        # replay the mirror (this replica's knowledge) so an emptied Redis relearns it; oldest first
        self._pending = [*self._mirror_snapshot(), *self._pending]
        self._healthy = True
        self.stats.connects += 1
        if self._pending:
            self._drained.clear()
            self._wake.set()

    # ------------------------------------------------------------------ writes

    def _enqueue(self, op: str, endpoint: str, hashes: Sequence[int]) -> None:
        if self._closed:
            return
        self._ensure_flusher()
        if self._healthy:
            self._pending.append((op, endpoint, hashes))
            self._drained.clear()
            self._wake.set()

    def _ensure_flusher(self, *, connect: bool = True) -> None:
        """Start the owned background tasks on first use (and the first connection attempt, lazily)."""
        if self._flusher is None and not self._closed:
            self._flusher = asyncio.create_task(self._flush_loop(), name="kvcache redis flusher")
            if connect and not self._healthy and self._reconnector is None:
                self._reconnector = asyncio.create_task(
                    self._reconnect_loop(), name="kvcache redis reconnect"
                )

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            try:
                if batch and self._healthy:
                    await self._write(batch)
                    self.stats.flushes += 1
            except IndexUnavailable as exc:
                self._mark_down(exc, batch)
            if self._pending:
                self._wake.set()
            else:
                self._drained.set()

    async def _write(self, batch: Sequence[tuple[str, str, Sequence[int]]]) -> None:
        head = [self.namespace, self._ttl_ms, self._cap]
        args: list[Any] = []
        for op, endpoint, hashes in batch:
            self.stats.write_ops += 1
            # a record's hashes are chunked so one call stays small; rank order restarts per chunk (harmless)
            for start in range(0, max(len(hashes), 1), _MAX_ARGS):
                chunk = hashes[start : start + _MAX_ARGS]
                args += (op, endpoint, len(chunk), *chunk)
                if len(args) >= _MAX_ARGS:
                    await self._command("EVALSHA", self._write_sha, 0, *head, *args)
                    args = []
        if args:
            await self._command("EVALSHA", self._write_sha, 0, *head, *args)

    def _mirror_snapshot(self) -> list[tuple[str, str, Sequence[int]]]:
        ops: list[tuple[str, str, Sequence[int]]] = []
        for endpoint in self.mirror.endpoints():
            # mirror LRU order is oldest first; a record call touches its list tail first, so reverse it
            held = self.mirror.recency(endpoint)
            if held:
                ops.append(("R", endpoint, held[::-1]))
        return ops

    # ------------------------------------------------------------------ failure handling

    def _mark_down(self, exc: Exception, unsent: Sequence[tuple[str, str, Sequence[int]]] = ()) -> None:
        self.stats.failures += 1
        if self._healthy:
            log.warning("kvcache: Redis unavailable, routing from the local mirror: %s", exc)
        self._healthy = False
        # records are replayed from the mirror on reconnect; endpoint removals must be remembered
        for op, endpoint, _ in [*unsent, *self._pending]:
            if op == "X":
                self._removed_while_down.add(endpoint)
        self._pending.clear()
        self._drained.set()
        if self._reconnector is None and not self._closed:
            self._reconnector = asyncio.create_task(self._reconnect_loop(), name="kvcache redis reconnect")

    async def _reconnect_loop(self) -> None:
        delay, ceiling = self.backoff
        try:
            while not self._healthy:
                try:
                    await self._connect()
                except IndexUnavailable:
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, ceiling)
                else:
                    log.info("kvcache: connected to Redis; replaying the local mirror")
        finally:
            self._reconnector = None
