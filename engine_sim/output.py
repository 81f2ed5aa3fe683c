"""Turning engine tokens into OpenAI response text: detokenisation, stop strings, usage.

Stop strings are matched on the generated text as vLLM does: the text is cut before the stop string (which is
reported as ``stop_reason``), and while streaming, up to ``len(longest stop) - 1`` characters are held back so
a stop string split across tokens is never half-emitted.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from engine_sim.request import Request
from flotilla.tokenizer import Tokenizer


class TextAccumulator:
    def __init__(self, tokenizer: Tokenizer, stops: list[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.text = ""
        self.emitted = 0
        self.stopped_by: str | None = None

    def feed(self, token: int) -> str:
        """Add one token; return the text that may be emitted now. Sets ``stopped_by`` on a stop string."""
        self.text += self.tokenizer.decode([token])
        if self.stops:
            start = max(0, self.emitted - self.hold)
            found = [(i, s) for s in self.stops if (i := self.text.find(s, start)) >= 0]
            if found:
                cut, stop = min(found)
                self.text = self.text[:cut]
                self.stopped_by = stop
                return self.flush()
            safe = len(self.text) - self.hold
            if safe <= self.emitted:
                return ""
            delta = self.text[self.emitted : safe]
            self.emitted = safe
            return delta
        return self.flush()

    def flush(self) -> str:
        delta = self.text[self.emitted :]
        self.emitted = len(self.text)
        return delta


def usage(req: Request, *, details: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": req.prompt_len,
        "total_tokens": req.prompt_len + req.num_output,
        "completion_tokens": req.num_output,
        "prompt_tokens_details": None,
    }
    if details and req.cached_tokens:
        out["prompt_tokens_details"] = {"cached_tokens": req.cached_tokens}
    return out


def sim_headers(req: Request) -> dict[str, str]:
    """Simulated per-request timings (seconds on the engine clock) as response headers, for tests and bench."""
    t = req.timing
    out = {}
    if t.ttft is not None:
        out["x-sim-ttft"] = f"{t.ttft:.6f}"
    if t.queue_time is not None:
        out["x-sim-queue-time"] = f"{t.queue_time:.6f}"
    if t.finished is not None:
        out["x-sim-e2e"] = f"{t.finished - t.arrival:.6f}"
    if t.first_token is not None and t.last_token is not None and req.num_output > 1:
        out["x-sim-tpot"] = f"{(t.last_token - t.first_token) / (req.num_output - 1):.6f}"
    return out


def embedding(ids: list[int], dim: int) -> list[float]:
    """A deterministic unit vector from the token ids (similar prompts are not close; it is a stand-in)."""
    seed = hashlib.sha256(b"".join(t.to_bytes(4, "little") for t in ids)).digest()
    out = []
    for i in range(dim):
        h = hashlib.blake2b(seed + i.to_bytes(4, "little"), digest_size=4).digest()
        out.append(int.from_bytes(h, "little") / 2**31 - 1.0)
    norm = math.sqrt(sum(x * x for x in out)) or 1.0
    return [x / norm for x in out]
