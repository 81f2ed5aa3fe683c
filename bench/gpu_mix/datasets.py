"""Mélange's three workload shapes as request-size samplers (prompt tokens, output tokens).

* ``short`` — Chatbot-Arena-like conversations: prompts with a median of ~70 tokens and a long tail, answers
  with a median of ~180;
* ``long``  — PubMed-summarisation-like documents: prompts of ~3k tokens (1k–8k), summaries of ~250;
* ``mixed`` — 80 % short, 20 % long (the paper's mix).

Lognormal shapes with medians and spreads read off the datasets' published length distributions (Mélange
§6.1 and its Figure 2); they are shapes, not the datasets themselves. Outputs are capped at 512 tokens (a
``max_tokens`` typical of chat serving), prompts at 8k (Llama-3-8B's context).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

Sampler = Callable[[random.Random], tuple[int, int]]


def _lognormal(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return int(min(high, max(low, round(rng.lognormvariate(math.log(median), sigma)))))


def short(rng: random.Random) -> tuple[int, int]:
    return _lognormal(rng, 70, 1.0, 4, 2048), _lognormal(rng, 180, 0.8, 4, 512)


def long(rng: random.Random) -> tuple[int, int]:
    return _lognormal(rng, 3000, 0.4, 1024, 8000), _lognormal(rng, 250, 0.3, 32, 512)


def mixed(rng: random.Random) -> tuple[int, int]:
    return short(rng) if rng.random() < 0.8 else long(rng)


DATASETS: dict[str, Sampler] = {"short": short, "long": long, "mixed": mixed}
