"""The reliability report (Markdown) and its results.json, both pure functions of a :class:`ReliabilityResult`.

``--rerender`` reads results.json back, so the report can be regenerated without re-running the faults.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import orjson

from bench.reliability.gateway_state import EndpointState, GatewayState
from bench.reliability.runner import Check, ReliabilityResult, Tally
from bench.report import table

COLUMNS = ("ok", "error", "unclear", "hung", "truncated", "disconnected")


def _rate(ok: int, sent: int) -> str:
    return "–" if not sent else f"{ok}/{sent} ({ok / sent:.1%})"


def _row(t: Tally, first: list[str]) -> list[str]:
    return [*first, str(t.sent), *(str(t.count(c)) for c in COLUMNS),
            _rate(t.nonstream_ok, t.nonstream_sent), _rate(t.stream_ok, t.stream_sent), f"{t.slowest:.1f}"]  # fmt: skip


def _state_table(state: GatewayState) -> list[str]:
    rows = [
        [f"`{e.endpoint}`", f"{e.in_flight:g}", f"{e.active_blocks:g}", f"{e.pending_prefill_blocks:g}",
         "yes" if e.healthy == 1 else "no", e.breaker]
        for e in state.endpoints
    ]  # fmt: skip
    return [
        *table(
            ["endpoint", "in flight", "active blocks", "pending prefill blocks", "healthy", "breaker"], rows
        ),
        "",
        f"Per model: {state.model_in_flight:g} in flight, {state.model_queued:g} held.",
    ]


def _settings(env: Any) -> str:
    prefix = "FLOTILLA_GATEWAY_"
    return ", ".join(f"{k.removeprefix(prefix).lower()}={v}" for k, v in dict(env).items())


def render(result: ReliabilityResult, heading: str = "#") -> str:
    s = result.setup
    verdict = "**PASSED**" if result.passed else "**FAILED**"
    out = [
        f"{heading} Reliability under faults ({result.suite}): {verdict}",
        "",
        f"`{result.command}`",
        "",
        f"{s['engines']} simulated engines (`{s['preset']}`, one process each), a real redis-server shared by the "
        f"gateway for its prefix index and rate limits, {s['rate']} req/s Poisson for {s['seconds']:g} s; output "
        f"{s['tokens'][0]}–{s['tokens'][1]} tokens; a request is hung after {s['hung_after']:g} s. Gateway "
        f"settings: {_settings(s['gateway_env'])}.",
        "",
        f"{heading}# Outcomes by phase (of the requests sent during it)",
        "",
        *table(
            ["phase", "fault", "sent", *COLUMNS, "non-streaming ok", "streaming ok", "slowest (s)"],
            [*(_row(p, [p.name, p.fault]) for p in result.phases), _row(result.total, ["**total**", ""])],
        ),
        "",
        "`error` = an OpenAI-shaped JSON error or an in-stream error event then `[DONE]`; `unclear` = a failure "
        "without one; `truncated` = a stream without `[DONE]`/error event or an incomplete 200 body; "
        "`disconnected` = the client left on purpose before the answer ended. Streaming = normal and slow readers. "
        "`error` includes the deliberately bad requests, refused as they should be (see by behaviour).",
        "",
        "What the gateway's `/metrics` showed meanwhile (sampled every 0.5 s): the faults were felt, and seen.",
        "",
        *table(
            [
                "phase",
                "most requests in flight",
                "some breaker not closed (s)",
                "some endpoint out of rotation (s)",
            ],
            [
                [p.name, f"{p.max_in_flight:g}", f"{p.breaker_seconds:g}", f"{p.unhealthy_seconds:g}"]
                for p in result.phases
            ],
        ),
        "",
        f"{heading}# Outcomes by client behaviour",
        "",
        *table(
            ["behaviour", "sent", *COLUMNS, "slowest (s)"],
            [
                [t.name, str(t.sent), *(str(t.count(c)) for c in COLUMNS), f"{t.slowest:.1f}"]
                for t in result.behaviours
            ],
        ),
        "",
        f"{heading}# Acceptance",
        "",
        *table(
            ["check", "result", "detail"],
            [[c.name, "pass" if c.passed else "**FAIL**", c.detail] for c in result.checks],
        ),
        "",
        f"{heading}# Gateway state after the load drained",
        "",
        "When the last request ended:",
        "",
        *_state_table(result.drained),
        "",
        "Settled"
        + (
            f" after {result.settle_seconds:.1f} s:"
            if result.settle_seconds is not None
            else " — never (last seen):"
        ),
        "",
        *_state_table(result.final),
        "",
    ]
    if result.details:
        out += [f"{heading}# Failures seen (most frequent first)", ""]
        for kind, items in result.details.items():
            out += [f"- {kind}: " + "; ".join(f"{detail} ×{n}" for detail, n in items)]
        out += [""]
    out += [f"{heading}# Fault timeline (seconds from the start of the load)", ""]
    out += [f"- {t:6.1f} s  {event}" for t, event in result.faults]
    out += ["", *(f"- {n}" for n in result.notes), ""]
    return "\n".join(out)


def to_json(result: ReliabilityResult) -> bytes:
    data = dataclasses.asdict(result)
    data["passed"] = result.passed
    return orjson.dumps(
        data,
        option=orjson.OPT_INDENT_2,
        default=lambda v: None if isinstance(v, float) and math.isnan(v) else v,
    )


_GAUGES = [f.name for f in dataclasses.fields(EndpointState) if f.name != "endpoint"]


def _state(data: dict[str, Any]) -> GatewayState:
    return GatewayState(
        endpoints=[
            EndpointState(e["endpoint"], *(math.nan if e[f] is None else e[f] for f in _GAUGES))
            for e in data["endpoints"]
        ],
        model_in_flight=data["model_in_flight"],
        model_queued=data["model_queued"],
    )


def from_json(raw: bytes) -> ReliabilityResult:
    data = orjson.loads(raw)
    return ReliabilityResult(
        suite=data["suite"],
        command=data["command"],
        setup=data["setup"],
        phases=[Tally(**t) for t in data["phases"]],
        behaviours=[Tally(**t) for t in data["behaviours"]],
        total=Tally(**data["total"]),
        faults=[(t, e) for t, e in data["faults"]],
        drained=_state(data["drained"]),
        final=_state(data["final"]),
        settle_seconds=data["settle_seconds"],
        details={k: [(d, n) for d, n in v] for k, v in data["details"].items()},
        checks=[Check(**c) for c in data["checks"]],
        notes=data["notes"],
    )
