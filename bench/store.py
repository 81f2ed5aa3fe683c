"""results.json: the full result of a run, so a report can be re-rendered (``flotilla bench --rerender``)
without re-running anything. NaN is stored as null (JSON has no NaN) and read back as NaN."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import orjson

from bench.overhead import OverheadRow
from bench.results import RunSummary
from bench.runner import SuiteResult, WorkloadInfo

_DERIVED = {"success_rate", "hit_vs_oracle"}


def to_json(result: SuiteResult) -> bytes:
    data: dict[str, Any] = dataclasses.asdict(result)
    data["runs"] = [r.to_json() for r in result.runs]
    return orjson.dumps(data, option=orjson.OPT_INDENT_2)


def _fields(cls: Any, data: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in data and f.name not in _DERIVED:
            value = data[f.name]
            out[f.name] = math.nan if value is None and f.type in ("float", float) else value
    return out


def from_json(raw: bytes) -> SuiteResult:
    data = orjson.loads(raw)
    return SuiteResult(
        suite=data["suite"],
        command=data["command"],
        fleet=data["fleet"],
        workloads=[WorkloadInfo(**_fields(WorkloadInfo, w)) for w in data["workloads"]],
        runs=[RunSummary(**_fields(RunSummary, r)) for r in data["runs"]],
        overhead=[OverheadRow(**_fields(OverheadRow, o)) for o in data["overhead"]],
        notes=list(data["notes"]),
        seeds=list(data.get("seeds") or [data["fleet"].get("seed", 0)]),
        warmup=float(data.get("warmup") or 0.0),
    )


def load(path: Path) -> SuiteResult:
    try:
        return from_json(path.read_bytes())
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read results from {path}: {exc}") from exc
