"""One simulated vLLM engine: the scheduler's step loop as an owned asyncio task, plus per-request streams.

The loop: take a step decision from the scheduler, wait the step's simulated duration (scaled to wall time),
apply it, then deliver each sampled token to its request's stream, observe metrics and publish the step's KV
events as one batch. With nothing to do it sleeps on an event, so an idle engine costs no CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from engine_sim.blocks import BlockPool
from engine_sim.clock import SimClock
from engine_sim.config import EngineConfig
from engine_sim.errors import EngineDead, SimError
from engine_sim.hashing import BlockHasher, none_hash
from engine_sim.kv_events import KVEventPublisher, to_wire
from engine_sim.latency import LatencyModel
from engine_sim.lora import LoraRegistry
from engine_sim.metrics import EngineMetrics
from engine_sim.request import Request, Status, Timing, natural_length, prompt_seed
from engine_sim.scheduler import Scheduler
from flotilla.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger("engine_sim")


@dataclass(slots=True)
class TokenEvent:
    token: int
    finish_reason: str | None


class RequestHandle:
    """A submitted request: iterate it for tokens; ``abort`` or ``stop`` it early."""

    def __init__(self, engine: Engine, req: Request, max_tokens_param: int | None) -> None:
        self.engine = engine
        self.request = req
        self.max_tokens_param = max_tokens_param
        self.queue: asyncio.Queue[TokenEvent] = asyncio.Queue()

    async def __aiter__(self) -> AsyncIterator[TokenEvent]:
        while True:
            event = await self.queue.get()
            yield event
            if event.finish_reason is not None:
                return

    async def batches(self) -> AsyncIterator[list[TokenEvent]]:
        """Like iteration, but yields everything queued at once (for consumers that may fall behind)."""
        queue = self.queue
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            yield batch
            if any(ev.finish_reason is not None for ev in batch):
                return

    def finish(self, reason: str = "abort") -> None:
        self.engine.finish(self, reason)

    @property
    def finished(self) -> bool:
        return self.request.status is Status.FINISHED


class Engine:
    def __init__(self, config: EngineConfig, tokenizer: Tokenizer | None = None) -> None:
        self.config = c = config
        self.tokenizer = tokenizer or load_tokenizer(c.tokenizer, chat_template=c.chat_template)
        self.pool = BlockPool(c.gpu_blocks, c.block_size, record_events=c.kv_events)
        capacity = self.pool.usable * c.block_size
        self.max_model_len = min(c.max_model_len, capacity)
        if self.max_model_len < c.max_model_len:
            log.warning("max_model_len %d capped to the KV capacity of %d tokens", c.max_model_len, capacity)
        self.scheduler = Scheduler(
            self.pool,
            max_num_seqs=c.seqs_limit,
            max_num_batched_tokens=c.token_budget,
            max_loras=c.max_loras,
            enable_prefix_caching=c.enable_prefix_caching,
            policy=c.scheduling_policy,
        )
        self.latency = LatencyModel(c.profile)
        self.clock = SimClock(c.time_scale)
        self.metrics = EngineMetrics(
            model_name=c.name,
            engine=c.engine_index,
            max_model_len=self.max_model_len,
            cache_info=self._cache_info(),
        )
        self.lora = LoraRegistry(
            max_cpu_loras=c.max_cpu_loras or c.max_loras,
            sleep=self.sleep,
            latency=c.lora_load_latency,
            on_load=self.metrics.lora_loaded,
        )
        for name, path in c.lora_modules.items():
            self.lora.add_static(name, path)
        if c.enable_lora:
            self.metrics.enable_lora_info()
        self.root_hash = none_hash(c.seed)
        self.rng = random.Random(c.seed * 1_000_003 + c.engine_index)  # faults: independent per engine
        self.faults = c.faults.model_copy()
        self.handles: dict[Request, RequestHandle] = {}
        self.publisher: KVEventPublisher | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._v = 0.0
        self._busy = False
        self._step_start = 0.0
        self._step_end = 0.0
        self._ready_at = 0.0
        self._idle_stamp: float | None = None
        #: 0 awake, 1 weights offloaded, 2 weights discarded (see engine_sim.sleep)
        self.sleep_level = 0
        self.steps = 0
        self._synced = (0, 0, 0, 0, 0)

    def _cache_info(self) -> dict[str, str]:
        c = self.config
        return {
            "block_size": str(c.block_size),
            "cache_dtype": "auto",
            "enable_prefix_caching": str(c.enable_prefix_caching),
            "gpu_memory_utilization": "0.9",
            "num_cpu_blocks": "None",
            "num_gpu_blocks": str(c.gpu_blocks),
            "prefix_caching_hash_algo": "sha256_cbor",
            "engine": str(c.engine_index),
        }

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        c = self.config
        if c.kv_events:
            endpoint = c.kv_events_endpoint or "tcp://127.0.0.1:5557"
            self.publisher = KVEventPublisher(
                endpoint,
                topic=c.topic,
                rank=c.engine_index,
                fmt=c.kv_events_format,
                replay_endpoint=c.kv_events_replay_endpoint,
                buffer_steps=c.kv_events_buffer_steps,
            )
            self.publisher.start()
        self._ready_at = time.monotonic() + c.startup_delay * c.time_scale
        self.clock.reanchor(0.0)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"engine-{c.engine_index}")
        self._task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        """A crashed step loop must not leave a healthy-looking engine that never answers: mark it dead."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("engine %d step loop crashed", self.config.engine_index, exc_info=task.exception())
        self.faults = self.faults.model_copy(update={"dead": True})
        for handle in list(self.handles.values()):
            self.finish(handle, "error")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        for handle in list(self.handles.values()):
            self.finish(handle, "abort")
        if self.publisher is not None:
            await self.publisher.close()
            self.publisher = None

    @property
    def ready(self) -> bool:
        return time.monotonic() >= self._ready_at

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(sim_seconds * self.config.time_scale)

    def now(self) -> float:
        """Simulated time of a new arrival (within the running step if busy; see :mod:`engine_sim.clock`)."""
        if self._busy:
            return min(max(self.clock.mapped(), self._step_start), self._step_end)
        return self._idle_stamp if self._idle_stamp is not None else max(self.clock.mapped(), self._v)

    def _arrival(self) -> float:
        if self._busy:
            return self.now()
        if self._idle_stamp is None:
            # every arrival before the loop wakes shares one stamp: they arrived "together" as far as the
            # engine can tell, and wall-clock jitter (amplified by a small time_scale) stays out of timings
            self._idle_stamp = max(self.clock.mapped(), self._v)
        return self._idle_stamp

    # ------------------------------------------------------------------ requests
    def resolve_model(self, model: str | None) -> str | None:
        """The LoRA name a ``model`` field selects (``None`` = base model); vLLM's 404 otherwise."""
        if model is None or model in (self.config.name, self.config.model):
            return None
        if self.config.enable_lora and self.lora.get(model) is not None:
            return model
        raise SimError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")

    def submit(
        self,
        prompt: list[int],
        *,
        max_tokens: int | None,
        ignore_eos: bool = False,
        lora_name: str | None = None,
        cache_salt: str | None = None,
        request_id: str = "",
        priority: int = 0,
    ) -> RequestHandle:
        if self.faults.dead:
            raise EngineDead()
        if priority and self.config.scheduling_policy != "priority":
            raise SimError(400, "Priority scheduling is not enabled.", param="priority")
        n = len(prompt)
        limit = self.max_model_len
        if n >= limit:
            raise SimError(
                400,
                f"This model's maximum context length is {limit} tokens. However, your request has {n} input "
                "tokens. Please reduce the length of the input messages.",
                param="input_tokens",
            )
        if max_tokens is not None and n + max_tokens > limit:
            raise SimError(
                400,
                f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's maximum "
                f"context length is {limit} tokens and your request has {n} input tokens "
                f"({max_tokens} > {limit} - {n}).",
                param="max_tokens",
            )
        c = self.config
        seed = prompt_seed(c.seed, prompt, lora_name)
        req = Request(
            request_id=request_id,
            prompt_len=n,
            tokens=list(prompt),
            max_tokens=max_tokens if max_tokens is not None else limit - n,
            natural_len=None if ignore_eos else natural_length(seed, c.output_len_min, c.output_len_max),
            stream_seed=seed,
            hasher=BlockHasher(self.root_hash, c.block_size, lora_name, cache_salt),
            lora_name=lora_name,
            priority=priority,
            max_model_len=limit,
            timing=Timing(self._arrival()),
        )
        handle = RequestHandle(self, req, max_tokens)
        self.handles[req] = handle
        self.scheduler.add(req)
        self._wake.set()
        return handle

    def finish(self, handle: RequestHandle, reason: str) -> None:
        req = handle.request
        if self.scheduler.finish(req, reason):
            req.timing.finished = self.now()
            self._finished(req, handle)
            handle.queue.put_nowait(TokenEvent(-1, reason))

    def _finished(self, req: Request, handle: RequestHandle) -> None:
        self.handles.pop(req, None)
        self.metrics.observe_finished(req, handle.max_tokens_param)

    def reset_prefix_cache(self) -> None:
        self.pool.reset_prefix_cache()
        self._publish()

    # ------------------------------------------------------------------ the step loop
    async def _run(self) -> None:
        sched = self.scheduler
        while True:
            if not sched.has_work():
                self._busy = False
                self._update_gauges()
                self._wake.clear()
                await self._wake.wait()
            if not self._busy:
                # leaving idle: start at the arrival stamp, not at the (load-dependent) moment this task woke
                self._v = max(self._v, self._idle_stamp or 0.0)
                self._idle_stamp = None
                self.clock.reanchor(self._v)
            if not await self._step():
                # nothing schedulable (e.g. every request aborted mid-step): wait for news, do not spin
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.05)

    async def _step(self) -> bool:
        sched = self.scheduler
        start = self._v
        step = sched.schedule()
        for req in step.first_scheduled:
            if req.timing.scheduled is None:
                req.timing.scheduled = start
        if not step.scheduled:
            return False
        dt = self.latency.step_time(step.shape)
        if self.config.enable_lora:
            loras = {r.lora_name for r, _ in step.scheduled if r.lora_name}
            if loras:
                dt *= 1.0 + self.config.lora_step_overhead
                reloads = sum(not self.lora.make_resident(name) for name in loras)
                self.metrics.lora_reloaded(reloads)
                dt += reloads * self.config.lora_load_latency
        if self.faults.latency_spike_rate and self.rng.random() < self.faults.latency_spike_rate:
            dt *= self.faults.latency_spike_factor
        end = start + dt
        self._busy, self._step_start, self._step_end = True, start, end
        delay = self.clock.wall_of(end) - time.monotonic()
        await asyncio.sleep(delay if delay > 0 else 0)
        self._v = end
        self.steps += 1
        done = sched.complete(step)
        m = self.metrics
        for req, tok in done.tokens:
            t = req.timing
            if t.first_token is None:
                t.first_token = end
                m.ttft.observe(end - t.arrival)
            elif t.last_token is not None:
                itl = end - t.last_token
                m.itl.observe(itl)
                m.tpot_legacy.observe(itl)
            t.last_token = end
            handle = self.handles.get(req)
            if handle is not None:
                handle.queue.put_nowait(TokenEvent(tok, req.finish_reason))
        for req in done.finished:
            req.timing.finished = end
            handle = self.handles.get(req)
            if handle is not None:
                self._finished(req, handle)
        m.iteration.observe(step.shape.tokens)
        self._sync_counters()
        self._update_gauges()
        self._publish()
        return True

    def _sync_counters(self) -> None:
        """Move the scheduler's plain-int counters into Prometheus (one inc per counter per step at most)."""
        s, m = self.scheduler.stats, self.metrics
        now = (s.prefix_queries, s.prefix_hits, s.prompt_tokens, s.generation_tokens, s.preemptions)
        counters = (m.prefix_queries, m.prefix_hits, m.prompt_tokens, m.generation_tokens, m.preemptions)
        for counter, value, seen in zip(counters, now, self._synced, strict=True):
            if value != seen:
                counter.inc(value - seen)
        self._synced = now

    def _update_gauges(self) -> None:
        sched = self.scheduler
        lag = max(0.0, self.clock.mapped() - self._v) if self._busy else 0.0
        self.metrics.set_gauges(len(sched.running), len(sched.waiting), self.pool.usage(), lag)
        if self.config.enable_lora:
            running = sorted({r.lora_name for r in sched.running if r.lora_name})
            waiting = sorted({r.lora_name for r in sched.waiting if r.lora_name})
            self.metrics.lora_info(self.config.max_loras, ",".join(running), ",".join(waiting))

    def _publish(self) -> None:
        events = self.pool.drain_events()
        if events and self.publisher is not None:
            self.publisher.publish(to_wire(events, self.config.block_size, self.lora.ids()))
