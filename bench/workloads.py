"""Seeded synthetic workloads, generated as token ids and sent as chat text.

Every workload is a pure function of its parameters and a seed, so two runs (and every contender within one
run) replay exactly the same requests in the same order. Text is made with :func:`flotilla.tokenizer.synthetic_text`,
whose tokenisation is exactly the generated ids, so the prompt ids the engines see — and that the
infinite-cache oracle replays — are known without asking the engines.

The shapes follow the public benchmarks in ``shared/reference/routing.md`` §4, scaled to a small machine:

* ``gsp`` — SGLang's *generated shared prefix*: groups of prompts sharing a long system prompt, shuffled.
* ``multiturn`` — production-stack's *multi-round QA*: users with a shared system prompt and a private history,
  each turn resending the whole conversation so far (assistant answers are pre-generated, not the engine's,
  so the trace is deterministic).
* ``tenants`` — llm-d's *shared_prefix* capacity test: many tenants' long contexts with Zipf popularity, sized so
  the working set exceeds one engine's KV cache but fits the cluster's.
* ``sharegpt`` — a low-sharing control with ShareGPT-like lognormal lengths (synthetic; no dataset download).
* ``agentic`` — tool-using agent sessions (Preble-like): a shared tool catalogue, then each step appends the
  previous action and tool result, so step k's prompt extends step k−1's.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flotilla.tokenizer import FlotillaTokenizer, synthetic_ids, synthetic_text

Message = dict[str, str]


@dataclass(frozen=True)
class BenchRequest:
    """One request of a workload: chat messages, the output length, and the key of the session it belongs to."""

    index: int
    session: str
    messages: tuple[Message, ...]
    max_tokens: int
    #: the model (or LoRA adapter) this request names; None = the run's model
    model: str | None = None

    def prompt_ids(self, tokenizer: FlotillaTokenizer) -> list[int]:
        """The token ids the engine computes for this request (chat template included)."""
        return tokenizer.encode_chat(self.messages)


@dataclass(frozen=True)
class Workload:
    """A named, ordered list of requests plus a line saying what it is (for the report)."""

    name: str
    description: str
    requests: tuple[BenchRequest, ...]
    #: distinct prompt tokens that are worth caching (shared prefixes, histories), for working set ÷ KV capacity
    working_set_tokens: int
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.requests)


class _Ids:
    """Distinct, reproducible token streams: each (seed, purpose, key) draws its own splitmix64 stream."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def text(self, purpose: str, key: int, count: int) -> str:
        stream = (self.seed * 1_000_003 + _purpose_code(purpose)) * 1_000_033 + key
        return synthetic_text(synthetic_ids(stream, count))


def _purpose_code(purpose: str) -> int:
    return sum((i + 1) * ord(c) for i, c in enumerate(purpose)) % 1_000_000


def _system(text: str) -> Message:
    return {"role": "system", "content": text}


def _user(text: str) -> Message:
    return {"role": "user", "content": text}


def _assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}


def _positive(**values: int) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"workload parameter {name} must be positive, got {value}")


def gsp(
    *,
    seed: int,
    groups: int = 64,
    prompts_per_group: int = 16,
    system_len: int = 2048,
    question_len: int = 128,
    output_len: int = 256,
) -> Workload:
    """SGLang generated-shared-prefix: ``groups`` system prompts × ``prompts_per_group`` questions, shuffled."""
    _positive(groups=groups, prompts_per_group=prompts_per_group, system_len=system_len)
    _positive(question_len=question_len, output_len=output_len)
    ids = _Ids(seed)
    pairs = [(g, i) for g in range(groups) for i in range(prompts_per_group)]
    random.Random(seed).shuffle(pairs)
    systems = [ids.text("gsp-system", g, system_len) for g in range(groups)]
    requests = tuple(
        BenchRequest(
            index=n,
            session=f"group-{g}",
            messages=(
                _system(systems[g]),
                _user(ids.text("gsp-question", g * prompts_per_group + i, question_len)),
            ),
            max_tokens=output_len,
        )
        for n, (g, i) in enumerate(pairs)
    )
    return Workload(
        name="gsp",
        description=(
            f"generated shared prefix: {groups} groups × {prompts_per_group} prompts, {system_len}-token system "
            f"prompt, {question_len}-token question, {output_len} output tokens, shuffled"
        ),
        requests=requests,
        working_set_tokens=groups * system_len,
        params={"groups": groups, "prompts_per_group": prompts_per_group, "system_len": system_len,
                "question_len": question_len, "output_len": output_len},
    )  # fmt: skip


def multiturn(
    *,
    seed: int,
    users: int = 10,
    rounds: int = 5,
    system_len: int = 1000,
    history_len: int = 2000,
    question_len: int = 64,
    answer_len: int = 100,
) -> Workload:
    """production-stack multi-round QA: turn r of every user before turn r+1 of any (users interleave)."""
    _positive(users=users, rounds=rounds, system_len=system_len, history_len=history_len)
    _positive(question_len=question_len, answer_len=answer_len)
    ids = _Ids(seed)
    system = _system(ids.text("mt-system", 0, system_len))
    requests: list[BenchRequest] = []
    conversations: list[list[Message]] = [
        [system, _user(ids.text("mt-history", u, history_len))] for u in range(users)
    ]
    order = list(range(users))
    rng = random.Random(seed)
    for r in range(rounds):
        rng.shuffle(order)
        for u in order:
            conversation = conversations[u]
            question = ids.text("mt-question", u * rounds + r, question_len)
            if r == 0:
                conversation[-1] = _user(conversation[-1]["content"] + question)
            else:
                conversation.append(_user(question))
            requests.append(
                BenchRequest(len(requests), f"user-{u}", tuple(conversation), max_tokens=answer_len)
            )
            conversation.append(_assistant(ids.text("mt-answer", u * rounds + r, answer_len)))
    per_user = history_len + rounds * (question_len + answer_len)
    return Workload(
        name="multiturn",
        description=(
            f"multi-round QA: {users} users × {rounds} rounds, {system_len}-token shared system prompt, "
            f"{history_len}-token private history, {question_len}-token questions, {answer_len}-token answers"
        ),
        requests=tuple(requests),
        working_set_tokens=system_len + users * per_user,
        params={"users": users, "rounds": rounds, "system_len": system_len, "history_len": history_len,
                "question_len": question_len, "answer_len": answer_len},
    )  # fmt: skip


def zipf_weights(n: int, exponent: float) -> list[float]:
    """Normalised Zipf popularity of ranks 1..n (``exponent`` 0 = uniform)."""
    _positive(n=n)
    raw = [1.0 / (rank**exponent) for rank in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


def tenants(
    *,
    seed: int,
    tenants: int = 12,
    context_len: int = 4000,
    requests: int = 240,
    question_len: int = 64,
    output_len: int = 32,
    zipf: float = 0.6,
) -> Workload:
    """Many tenants' shared contexts (documents, system prompts) with Zipf popularity, llm-d style."""
    _positive(tenants=tenants, context_len=context_len, requests=requests)
    _positive(question_len=question_len, output_len=output_len)
    ids = _Ids(seed)
    contexts = [ids.text("tenant-context", t, context_len) for t in range(tenants)]
    rng = random.Random(seed)
    picks = rng.choices(range(tenants), weights=zipf_weights(tenants, zipf), k=requests)
    reqs = tuple(
        BenchRequest(
            n,
            f"tenant-{t}",
            (_system(contexts[t]), _user(ids.text("tenant-question", n, question_len))),
            max_tokens=output_len,
        )
        for n, t in enumerate(picks)
    )
    return Workload(
        name="tenants",
        description=(
            f"many-tenant shared context: {tenants} tenants × {context_len}-token context, Zipf {zipf} "
            f"popularity, {requests} requests, {question_len}-token questions, {output_len} output tokens"
        ),
        requests=reqs,
        working_set_tokens=tenants * context_len,
        params={"tenants": tenants, "context_len": context_len, "requests": requests,
                "question_len": question_len, "output_len": output_len, "zipf": zipf},
    )  # fmt: skip


def lognormal_lengths(
    rng: random.Random, count: int, *, median: float, sigma: float, low: int, high: int
) -> list[int]:
    """``count`` lognormal lengths clipped to [low, high] (ShareGPT's lengths are roughly lognormal)."""
    return [min(high, max(low, round(rng.lognormvariate(math.log(median), sigma)))) for _ in range(count)]


def sharegpt(
    *,
    seed: int,
    requests: int = 200,
    input_median: int = 220,
    output_median: int = 120,
    max_input: int = 2048,
    max_output: int = 256,
) -> Workload:
    """Low-sharing control: unique prompts with ShareGPT-like lognormal input/output lengths."""
    _positive(requests=requests, input_median=input_median, output_median=output_median)
    ids = _Ids(seed)
    rng = random.Random(seed)
    inputs = lognormal_lengths(rng, requests, median=input_median, sigma=1.0, low=4, high=max_input)
    outputs = lognormal_lengths(rng, requests, median=output_median, sigma=0.8, low=1, high=max_output)
    reqs = tuple(
        BenchRequest(n, f"conv-{n}", (_user(ids.text("sharegpt", n, inputs[n])),), max_tokens=outputs[n])
        for n in range(requests)
    )
    return Workload(
        name="sharegpt",
        description=(
            f"low-sharing control: {requests} unique prompts, lognormal lengths (input median {input_median}, "
            f"output median {output_median}, capped at {max_input}/{max_output})"
        ),
        requests=reqs,
        working_set_tokens=0,
        params={"requests": requests, "input_median": input_median, "output_median": output_median,
                "max_input": max_input, "max_output": max_output},
    )  # fmt: skip


def agentic(
    *,
    seed: int,
    sessions: int = 16,
    steps: int = 6,
    toolsets: int = 4,
    tools_len: int = 1500,
    task_len: int = 200,
    action_len: int = 48,
    result_len: int = 256,
    zipf: float = 1.1,
) -> Workload:
    """Agent sessions: a tool catalogue (Zipf-popular among ``toolsets``), then steps that grow the context."""
    _positive(sessions=sessions, steps=steps, toolsets=toolsets, tools_len=tools_len)
    _positive(task_len=task_len, action_len=action_len, result_len=result_len)
    ids = _Ids(seed)
    rng = random.Random(seed)
    catalogue = [ids.text("agent-tools", k, tools_len) for k in range(toolsets)]
    chosen = rng.choices(range(toolsets), weights=zipf_weights(toolsets, zipf), k=sessions)
    conversations: list[list[Message]] = [
        [_system(catalogue[chosen[s]]), _user(ids.text("agent-task", s, task_len))] for s in range(sessions)
    ]
    requests: list[BenchRequest] = []
    # Sessions start staggered and then interleave, like concurrent agents; step k+1 follows step k of its session.
    order = [(s, k) for k in range(steps) for s in range(sessions)]
    order.sort(key=lambda sk: (sk[1] + sk[0] * steps / sessions, sk[0]))
    for s, k in order:
        conversation = conversations[s]
        requests.append(BenchRequest(len(requests), f"agent-{s}", tuple(conversation), max_tokens=action_len))
        conversation.append(_assistant(ids.text("agent-action", s * steps + k, action_len)))
        conversation.append(_user(ids.text("agent-result", s * steps + k, result_len)))
    return Workload(
        name="agentic",
        description=(
            f"agentic sessions: {sessions} sessions × {steps} steps, {toolsets} tool catalogues of {tools_len} "
            f"tokens (Zipf {zipf}), {action_len}-token actions, {result_len}-token tool results"
        ),
        requests=tuple(requests),
        working_set_tokens=toolsets * tools_len + sessions * (task_len + steps * (action_len + result_len)),
        params={"sessions": sessions, "steps": steps, "toolsets": toolsets, "tools_len": tools_len,
                "task_len": task_len, "action_len": action_len, "result_len": result_len, "zipf": zipf},
    )  # fmt: skip


def mixed(*, seed: int, prefix_free_share: float = 0.5, **gsp_params: int) -> Workload:
    """Prefix-heavy (``gsp``) and prefix-free (ShareGPT-like) requests interleaved on one fleet: a router that
    piles the shared-prefix traffic onto few engines makes the prefix-free requests queue behind it."""
    if not 0 <= prefix_free_share < 1:
        raise ValueError(f"prefix_free_share must be in [0, 1), got {prefix_free_share}")
    heavy = gsp(seed=seed, **gsp_params)
    n_free = round(len(heavy) * prefix_free_share / (1 - prefix_free_share))
    free = sharegpt(seed=seed + 7_000_003, requests=max(1, n_free), input_median=220, output_median=32,
                    max_output=64)  # fmt: skip
    rng = random.Random(seed ^ 0x5EED)
    tagged = [("heavy", r) for r in heavy.requests] + [("free", r) for r in free.requests]
    rng.shuffle(tagged)
    reqs = tuple(
        BenchRequest(n, f"{kind}-{r.session}", r.messages, r.max_tokens) for n, (kind, r) in enumerate(tagged)
    )
    return Workload(
        name="mixed",
        description=f"mixed: {heavy.description}; interleaved with {len(free)} prefix-free ShareGPT-like requests",
        requests=reqs,
        working_set_tokens=heavy.working_set_tokens,
        params={"prefix_free_share": prefix_free_share, **gsp_params},
    )


#: name -> generator (one explicit registry; suites pick parameters)
GENERATORS: dict[str, Callable[..., Workload]] = {
    "gsp": gsp,
    "multiturn": multiturn,
    "tenants": tenants,
    "sharegpt": sharegpt,
    "agentic": agentic,
    "mixed": mixed,
}


def build(name: str, *, seed: int, params: dict[str, Any]) -> Workload:
    """The workload ``name`` with ``params``; a clear error for an unknown name or parameter."""
    try:
        generator = GENERATORS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(sorted(GENERATORS))}") from None
    try:
        return generator(seed=seed, **params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for workload {name!r}: {exc}") from exc


def prompt_ids(workload: Workload) -> list[list[int]]:
    """The engine-side prompt ids of every request, in send order (what the oracle replays)."""
    tokenizer = FlotillaTokenizer()
    return [request.prompt_ids(tokenizer) for request in workload.requests]


def total_prompt_tokens(prompts: Sequence[Sequence[int]]) -> int:
    return sum(len(p) for p in prompts)
