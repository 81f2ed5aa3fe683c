"""vLLM V1 continuous batching, one step at a time (``vllm/v1/core/sched/scheduler.py``), without I/O.

A step has a budget of ``max_num_batched_tokens`` tokens and at most ``max_num_seqs`` running requests:

1. Running requests first, in order: each gets its remaining prefill (chunked to the budget) or one decode
   token. If its KV blocks cannot grow, the **most recently added** running request is preempted (blocks
   freed, progress reset, put at the **front** of the waiting queue) until the allocation fits or the
   request preempted itself. Under the ``priority`` policy the victim is the running request with the largest
   (priority, arrival) instead, and the waiting queue is ordered by (priority, arrival).
2. Then, unless something was preempted this step, waiting requests are admitted FCFS while budget, slots,
   KV blocks and LoRA slots (at most ``max_loras`` distinct adapters per step) allow. On admission the longest
   cached prefix chain is reused (capped at ⌊(P−1)/B⌋ blocks: the last prompt token is always recomputed),
   and the prompt remainder is chunked to the budget. A request for an adapter with no free slot is skipped
   (it keeps its place); any other request that does not fit stops admission (head-of-line, as FCFS does).

:meth:`Scheduler.schedule` decides a step; :meth:`Scheduler.complete` applies it once the simulated step time
has passed: computed tokens advance, newly full blocks enter the prefix cache, sequences whose prefill is done
sample a token, finished requests free their blocks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from engine_sim.blocks import BlockPool
from engine_sim.latency import StepShape
from engine_sim.request import Request, Status


@dataclass(slots=True)
class SchedulerStats:
    prefix_queries: int = 0
    prefix_hits: int = 0
    preemptions: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0


@dataclass(slots=True)
class Step:
    #: (request, tokens scheduled)
    scheduled: list[tuple[Request, int]] = field(default_factory=list)
    shape: StepShape = field(default_factory=StepShape)
    preempted: list[Request] = field(default_factory=list)
    #: requests admitted from the waiting queue for the first time in this step
    first_scheduled: list[Request] = field(default_factory=list)


@dataclass(slots=True)
class Completion:
    #: (request, new token) for every request that sampled a token in this step
    tokens: list[tuple[Request, int]] = field(default_factory=list)
    finished: list[Request] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        pool: BlockPool,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_loras: int = 1,
        enable_prefix_caching: bool = True,
        policy: str = "fcfs",
    ) -> None:
        if policy not in ("fcfs", "priority"):
            raise ValueError(f"unknown scheduling policy {policy!r}")
        self.policy = policy
        self.pool = pool
        self.max_num_seqs = max_num_seqs
        self.budget = max_num_batched_tokens
        self.max_loras = max_loras
        self.enable_prefix_caching = enable_prefix_caching
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.stats = SchedulerStats()

    # ------------------------------------------------------------------ lifecycle
    def add(self, req: Request) -> None:
        req.status = Status.WAITING
        if self.policy == "priority":
            self._insert_by_priority(req)
        else:
            self.waiting.append(req)

    def _insert_by_priority(self, req: Request) -> None:
        """Keep the queue ordered by (priority, arrival): lower values first, as vLLM's priority queue."""
        key = (req.priority, req.timing.arrival)
        for i, other in enumerate(self.waiting):
            if key < (other.priority, other.timing.arrival):
                self.waiting.insert(i, req)
                return
        self.waiting.append(req)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, req: Request, reason: str) -> bool:
        """Finish ``req`` now (abort, stop string); returns False if it had already finished."""
        if req.status is Status.FINISHED:
            return False
        if req.status is Status.RUNNING:
            self.running.remove(req)
        else:
            self.waiting.remove(req)
        self._free(req)
        req.status = Status.FINISHED
        req.finish_reason = reason
        return True

    def _free(self, req: Request) -> None:
        self.pool.release(req.block_ids)
        req.block_ids = []
        req.num_stored = 0

    def _blocks_needed(self, req: Request, upto: int) -> int:
        bs = self.pool.block_size
        return -(-upto // bs) - len(req.block_ids)

    def _grow(self, req: Request, upto: int) -> bool:
        need = self._blocks_needed(req, upto)
        if need <= 0:
            return True
        got = self.pool.allocate(need)
        if got is None:
            return False
        req.block_ids.extend(got)
        return True

    def _preempt(self, step: Step) -> Request:
        if self.policy == "priority":
            victim = max(self.running, key=lambda r: (r.priority, r.timing.arrival))
            self.running.remove(victim)
        else:
            victim = self.running.pop()
        self._free(victim)
        victim.num_computed = 0
        victim.num_preemptions += 1
        victim.status = Status.WAITING
        if self.policy == "priority":
            self._insert_by_priority(victim)
        else:
            self.waiting.appendleft(victim)
        self.stats.preemptions += 1
        step.preempted.append(victim)
        return victim

    # ------------------------------------------------------------------ one step
    def schedule(self) -> Step:
        step = Step()
        budget = self.budget
        scheduled_loras: set[str] = set()

        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(req.num_tokens - req.num_computed, budget)
            ok = True
            while not self._grow(req, req.num_computed + n):
                victim = self._preempt(step)
                if victim is req:
                    ok = False
                    break
                # under the priority policy the victim may have been scheduled earlier in this step:
                # take it back out and return its tokens to the budget (vLLM does the same)
                for k, (r, taken) in enumerate(step.scheduled):
                    if r is victim:
                        del step.scheduled[k]
                        budget += taken
                        i -= 1
                        break
            if not ok:
                break
            step.scheduled.append((req, n))
            if req.lora_name:
                scheduled_loras.add(req.lora_name)
            budget -= n
            i += 1

        skipped: list[Request] = []
        if not step.preempted:
            while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
                req = self.waiting[0]
                if (
                    req.lora_name
                    and req.lora_name not in scheduled_loras
                    and len(scheduled_loras) >= self.max_loras
                ):
                    skipped.append(self.waiting.popleft())
                    continue
                if not self._admit(step, req, budget):
                    break
                self.waiting.popleft()
                req.status = Status.RUNNING
                self.running.append(req)
                if req.lora_name:
                    scheduled_loras.add(req.lora_name)
                budget -= step.scheduled[-1][1]
        # skipped LoRA requests keep their place at the head of the queue
        self.waiting.extendleft(reversed(skipped))
        for req, n in step.scheduled:
            self._account(step.shape, req, n)
        return step

    def _admit(self, step: Step, req: Request, budget: int) -> bool:
        bs = self.pool.block_size
        hits: list[int] = []
        if self.enable_prefix_caching:
            req.hasher.extend(req.tokens)
            max_blocks = (req.num_tokens - 1) // bs
            hits = self.pool.longest_cached_prefix(req.hasher.hashes[:max_blocks])
        cached = len(hits) * bs
        n = min(req.num_tokens - cached, budget)
        need = -(-(cached + n) // bs) - len(hits)
        if need + self.pool.evictable_among(hits) > self.pool.num_free:
            return False
        self.pool.touch(hits)
        req.block_ids = list(hits)
        req.num_stored = len(hits)
        req.num_computed = cached
        got = self.pool.allocate(need) if need > 0 else []
        assert got is not None  # checked above
        req.block_ids.extend(got)
        if not req.first_scheduled:
            req.first_scheduled = True
            req.cached_tokens = cached
            self.stats.prefix_queries += req.num_tokens
            self.stats.prefix_hits += cached
            step.first_scheduled.append(req)
        step.scheduled.append((req, n))
        return True

    @staticmethod
    def _account(shape: StepShape, req: Request, n: int) -> None:
        before = req.num_computed
        if before + n >= req.num_tokens and before >= req.prompt_len:
            shape.decode_tokens += n
        else:
            shape.prefill_tokens += n
            shape.attention_pairs += n * (before + n / 2)
        shape.context_tokens += before + n

    # ------------------------------------------------------------------ after the step
    def complete(self, step: Step) -> Completion:
        out = Completion()
        bs = self.pool.block_size
        for req, n in step.scheduled:
            if req.status is not Status.RUNNING:
                continue  # finished (aborted) while the step ran
            req.num_computed += n
            if self.enable_prefix_caching:
                self._store(req, bs)
            if req.num_computed >= req.num_tokens:
                tok = req.sample()
                self.stats.generation_tokens += 1
                if req.num_output == 1:
                    self.stats.prompt_tokens += req.prompt_len
                out.tokens.append((req, tok))
                reason = req.check_finished()
                if reason is not None:
                    self.finish(req, reason)
                    out.finished.append(req)
        return out

    def _store(self, req: Request, bs: int) -> None:
        full = req.num_computed // bs
        if full <= req.num_stored:
            return
        req.hasher.extend(req.tokens)
        start = req.num_stored
        hashes = req.hasher.hashes[start:full]
        parent = req.hasher.hashes[start - 1] if start else None
        self.pool.store(
            req.block_ids[start:full],
            hashes,
            parent,
            req.tokens[start * bs : full * bs],
            req.lora_name,
            req.hasher.extra[start:full],
        )
        req.num_stored = full
