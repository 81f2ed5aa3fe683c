"""One request's state inside the engine, and its deterministic output.

Output tokens are a pure function of ``(seed, prompt ids, position)``: the same prompt under the same seed
always generates the same text on every engine, so tests and benchmarks are reproducible and the text
round-trips through the tokenizer (only spaced syllable words are produced).

Output length: with ``ignore_eos`` the request runs to ``max_tokens``. Otherwise it has a *natural length*,
seeded uniform in ``[output_len_min, output_len_max]`` (config), at which it stops with ``finish_reason:
"stop"`` (as if EOS were sampled; the EOS token itself is not counted or rendered); ``max_tokens`` or
``max_model_len`` cut it earlier with ``"length"``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import xxhash

from engine_sim.hashing import BlockHasher
from flotilla.tokenizer import SPACED_WORD_BASE, WORDS_PER_FORM

_M64 = (1 << 64) - 1


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def prompt_seed(seed: int, prompt: list[int], lora_name: str | None) -> int:
    h = xxhash.xxh3_64()
    h.update(seed.to_bytes(8, "little", signed=True))
    h.update(b"".join(t.to_bytes(4, "little") for t in prompt[-64:]))
    h.update(len(prompt).to_bytes(8, "little"))
    if lora_name:
        h.update(lora_name.encode())
    return h.intdigest()


def output_token(stream_seed: int, index: int) -> int:
    """The ``index``-th output token: splitmix64 of the stream, a spaced syllable word."""
    return SPACED_WORD_BASE + _mix((stream_seed + (index + 1) * 0x9E3779B97F4A7C15) & _M64) % WORDS_PER_FORM


def natural_length(stream_seed: int, low: int, high: int) -> int:
    return low + _mix(stream_seed ^ 0x5DEECE66D) % (high - low + 1)


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(slots=True)
class Timing:
    """Simulated timestamps (engine clock seconds) of one request."""

    arrival: float
    scheduled: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    finished: float | None = None
    #: step times of every token after the first (inter-token latencies)
    itls: list[float] = field(default_factory=list)

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.arrival

    @property
    def queue_time(self) -> float | None:
        return None if self.scheduled is None else self.scheduled - self.arrival


@dataclass(slots=True, eq=False)
class Request:
    request_id: str
    prompt_len: int
    tokens: list[int]
    max_tokens: int
    #: output tokens at which the request stops on its own (``None`` with ignore_eos)
    natural_len: int | None
    stream_seed: int
    hasher: BlockHasher
    lora_name: str | None = None
    #: lower is served first under the ``priority`` scheduling policy
    priority: int = 0
    max_model_len: int = 1 << 30
    status: Status = Status.WAITING
    num_computed: int = 0
    block_ids: list[int] = field(default_factory=list)
    #: blocks of ``block_ids`` already in the prefix-cache index
    num_stored: int = 0
    #: prompt tokens served from the prefix cache at first scheduling
    cached_tokens: int = 0
    num_preemptions: int = 0
    first_scheduled: bool = False
    finish_reason: str | None = None
    timing: Timing = field(default_factory=lambda: Timing(0.0))

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def num_output(self) -> int:
        return len(self.tokens) - self.prompt_len

    def output_ids(self) -> list[int]:
        return self.tokens[self.prompt_len :]

    def sample(self) -> int:
        """Append the next output token and return it."""
        tok = output_token(self.stream_seed, self.num_output)
        self.tokens.append(tok)
        return tok

    def check_finished(self) -> str | None:
        """Finish reason after a new token, or ``None`` to continue."""
        n = self.num_output
        if self.natural_len is not None and n >= self.natural_len and n <= self.max_tokens:
            return "stop"
        if n >= self.max_tokens or len(self.tokens) >= self.max_model_len:
            return "length"
        return None
