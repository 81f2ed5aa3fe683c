"""guidellm, a load generator this project did not write, as a second opinion on ``flotilla bench``'s figures.

Why: every routing figure in docs/benchmarks.md comes from this project's own client (bench/client.py). A bug
in how it schedules, streams or times requests — or a gateway that behaves differently for it than for other
clients — would go unseen as long as the same client measured every contender. guidellm (PyPI, the vLLM
project's benchmarking tool) sends the same kind of workload with its own scheduler, HTTP client and
statistics; the cross-check (bench/crosscheck.py) compares what the two tools say.

This module is the adaptor, kept free of orchestration so it can be tested on a recorded report:

* :func:`scenario` — the guidellm scenario (JSON) for the shared-prefix shape: ``prefix_buckets`` of N
  prefixes, a synthetic question, ``ignore_eos`` outputs, Poisson arrivals at the suite's rate, a request
  count, guidellm's own 10 % warm-up.
* :func:`offline_env` — guidellm runs in its own virtualenv (it pulls torch and transformers; never the
  project's dependencies) with the Hugging Face stack forced offline, telemetry off and proxies bypassed, so
  nothing is fetched from a hub and no request leaves loopback.
* :func:`write_tokenizer` — the tokenizer guidellm sizes its prompts with is made here, by
  :mod:`flotilla.tokenizer_files`, trained on guidellm's own Faker text (made in its venv,
  :func:`faker_corpus`) with a vocabulary that holds every word of it. Each English word is then one token,
  as the engines' default tokenizer counts it, so "2,048 prefix tokens" is ~2,048 tokens on the engines too
  (the engines' reported prompt tokens are checked in the report).
* :func:`parse_report` — guidellm's ``benchmarks.json``: its own per-request TTFTs (from the actual send),
  its own summary percentiles, and the run's throughput.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import BenchError

#: the version the cross-check was written against (its report schema and scenario fields); pinned in the
#: ``crosscheck`` extra of pyproject.toml
GUIDELLM_VERSION = "0.8.1"
#: Faker texts in the corpus (~2.8 MB), enough that an 8,000-token BPE holds every word of Faker's list
CORPUS_LINES = 3000
VOCAB_SIZE = 8000
INSTALL_HINT = (
    f"python3 -m venv .venv-xc && .venv-xc/bin/pip install 'guidellm=={GUIDELLM_VERSION}' "
    "(a separate venv: it pulls torch and transformers), or point FLOTILLA_GUIDELLM at its guidellm executable"
)

#: Hugging Face / datasets / telemetry switches: nothing may be downloaded at run time
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "NO_PROXY": "*",
    "no_proxy": "*",
}
_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@dataclass(frozen=True)
class Shape:
    """The shared-prefix workload both tools send: ``prefixes`` system prompts, a question, a fixed output."""

    prefixes: int
    prefix_tokens: int
    question_tokens: int
    output_tokens: int
    requests: int
    rate: float  # requests/s, Poisson
    warmup: float = 0.1  # fraction of the first requests (send order) left out of latency figures
    #: guidellm worker processes (its default is 10; fewer keeps its CPU modest on a shared 2-core machine)
    workers: int = 2


@dataclass
class ToolRun:
    """One load generator's run as the tool itself reported it (guidellm's, or flotilla bench's folded in)."""

    requests: int
    ok: int
    #: TTFT (s) of every request after the warm-up, in send order; None = failed or incomplete (+inf)
    ttft_samples: list[float | None] = field(default_factory=list)
    #: guidellm's own summary percentiles of successful requests (s), after its own warm-up
    reported_p50: float = math.nan
    reported_p90: float = math.nan
    #: completed requests ÷ (last completion − first send), from the tool's own per-request timestamps
    req_s: float = math.nan
    #: median prompt tokens per request as the server reported them (usage)
    prompt_tokens: float = math.nan
    #: the largest (actual send − scheduled send), s: the load generator's health
    send_lag: float = math.nan
    #: wall-clock (epoch s) first send and last completion: the window the load was on
    window: tuple[float, float] = (math.nan, math.nan)


def scenario(
    shape: Shape, *, target: str, model: str, tokenizer: Path, seed: int, out: Path
) -> dict[str, Any]:
    """The guidellm scenario for one run against ``target`` (a base URL without ``/v1``)."""
    return {
        "metadata": {"name": "flotilla-crosscheck", "description": "shared-prefix (gsp-like) cross-check"},
        "spec": {
            "backend": {
                "kind": "openai_http", "target": target, "model": model, "request_format": "/v1/chat/completions",
                "http2": False, "timeout": 120.0,
            },
            "profile": {
                "kind": "poisson", "rate": [shape.rate],
                "warmup": {"mode": "requests", "percent": shape.warmup},
            },
            "constraints": [{"kind": "max_requests", "count": shape.requests}],
            "tokenizer": {"kind": "huggingface_auto", "model": str(tokenizer)},
            "data": [{
                "kind": "synthetic_text", "prompt_tokens": shape.question_tokens,
                "output_tokens": shape.output_tokens,
                "prefix_buckets": [{"prefix_count": shape.prefixes, "prefix_tokens": shape.prefix_tokens}],
            }],
            "seed": {"kind": "static", "value": seed},
            "outputs": [{"kind": "json", "path": str(out)}],
        },
    }  # fmt: skip


def offline_env(base: Mapping[str, str], *, workers: int) -> dict[str, str]:
    """``base`` without proxy settings, plus the offline switches and guidellm's worker count."""
    env = {k: v for k, v in base.items() if k not in _PROXIES}
    env.update(OFFLINE)
    env["GUIDELLM__MAX_WORKER_PROCESSES"] = str(workers)
    return env


def _seconds(ms: Any) -> float:
    return float(ms) / 1000 if isinstance(ms, int | float) else math.nan


def _start(record: Mapping[str, Any]) -> float:
    start = record.get("request_start_time")
    if isinstance(start, int | float):
        return float(start)
    timings = (record.get("info") or {}).get("timings") or {}
    for key in ("request_start", "resolve_start", "targeted_start", "queued"):
        if isinstance(timings.get(key), int | float):
            return float(timings[key])
    return math.inf  # never sent: sorts last, counts as a failure


def _lags(records: Sequence[Mapping[str, Any]]) -> list[float]:
    """Actual send − guidellm's own target time per request. guidellm 0.8.1 sometimes records a target of 0
    (seen once in 1,920 requests), which would make its own ``request_targeted_start_delay_avg`` 25 years: such
    entries are skipped."""
    out = []
    for r in records:
        timings = (r.get("info") or {}).get("timings") or {}
        start, target = timings.get("request_start"), timings.get("targeted_start")
        if isinstance(start, int | float) and isinstance(target, int | float) and 0 <= start - target < 3600:
            out.append(float(start - target))
    return out


def parse_report(data: Mapping[str, Any], *, warmup: float = 0.1) -> ToolRun:
    """The one benchmark of a guidellm ``benchmarks.json`` (a ``ValueError`` if it is not one)."""
    try:
        bench = data["benchmarks"]
        if not isinstance(bench, list) or len(bench) != 1:
            raise ValueError(
                f"expected one benchmark, found {len(bench) if isinstance(bench, list) else bench!r}"
            )
        requests = bench[0]["requests"]
        metrics = bench[0]["metrics"]
        ok_records = list(requests.get("successful") or [])
        failed = [*(requests.get("errored") or []), *(requests.get("incomplete") or [])]
        ttft = metrics["time_to_first_token_ms"]["successful"]["percentiles"]
        scheduler = bench[0].get("scheduler_metrics") or {}
        window = (
            float(scheduler.get("request_start_time", math.nan)),
            float(scheduler.get("request_end_time", math.nan)),
        )
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"not a guidellm {GUIDELLM_VERSION} report: missing {exc}") from None
    rows = sorted(
        [(_start(r), _seconds(r.get("time_to_first_token_ms"))) for r in ok_records]
        + [(_start(r), math.inf) for r in failed]
    )
    measured = rows[math.floor(len(rows) * warmup) :]
    samples = [None if math.isinf(t) or math.isnan(t) else t for _, t in measured]
    starts = [s for s, _ in rows if not math.isinf(s)]
    ends = [
        float(r["request_end_time"]) for r in ok_records if isinstance(r.get("request_end_time"), int | float)
    ]
    span = max(ends) - min(starts) if ends and starts else math.nan
    prompts = sorted(float(r["prompt_tokens"]) for r in ok_records if isinstance(r.get("prompt_tokens"), int))
    return ToolRun(
        requests=len(rows), ok=len(ok_records), ttft_samples=samples,
        reported_p50=_seconds(ttft.get("p50")), reported_p90=_seconds(ttft.get("p90")),
        req_s=len(ok_records) / span if span > 0 else math.nan,
        prompt_tokens=prompts[len(prompts) // 2] if prompts else math.nan,
        send_lag=max(_lags(ok_records), default=math.nan), window=window,
    )  # fmt: skip


_CORPUS_SCRIPT = """
import sys
from faker import Faker
faker = Faker()
faker.seed_instance(int(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    print(faker.text(max_nb_chars=1000))
"""


async def faker_corpus(python: Path, *, seed: int = 12345, lines: int = CORPUS_LINES) -> list[str]:
    """Faker text made by guidellm's own venv (guidellm's synthetic prompts are Faker text)."""
    proc = await asyncio.create_subprocess_exec(
        str(python), "-c", _CORPUS_SCRIPT, str(seed), str(lines),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=offline_env(os.environ, workers=1),
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise BenchError(f"{python} could not make the Faker corpus: {err.decode(errors='replace')[-300:]}")
    return out.decode().splitlines()


def write_tokenizer(directory: Path, corpus: Sequence[str]) -> Path:
    """A Llama-3-style tokenizer directory (flotilla.tokenizer_files) trained on ``corpus``."""
    from flotilla.tokenizer_files import write_llama3

    return write_llama3(directory, corpus=corpus, vocab_size=VOCAB_SIZE)


def _prepare(spec: Mapping[str, Any], workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "scenario.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


def _collect(code: int, spec: Mapping[str, Any], workdir: Path) -> ToolRun:
    out = Path(spec["spec"]["outputs"][0]["path"])
    if code != 0 or not out.exists():
        tail = (workdir / "guidellm.out").read_text(errors="replace")[-600:]
        raise BenchError(f"guidellm exited with code {code}:\n{tail}")
    try:
        return parse_report(json.loads(out.read_text()), warmup=spec["spec"]["profile"]["warmup"]["percent"])
    except ValueError as exc:
        raise BenchError(f"{out}: {exc}") from exc


async def run(
    exe: Path, spec: Mapping[str, Any], workdir: Path, *, workers: int, within: float,
    on_start: Callable[[int], None] | None = None,
) -> ToolRun:  # fmt: skip
    """Run guidellm once on ``spec`` (from :func:`scenario`) in ``workdir`` and parse its report; ``on_start``
    gets its pid, which leads its own process group (its workers are in it)."""
    path = await asyncio.to_thread(_prepare, spec, workdir)
    with (workdir / "guidellm.out").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            str(exe), "run", "--scenario", str(path), "--disable-progress",
            cwd=workdir, stdout=log, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
            env=offline_env(os.environ, workers=workers), start_new_session=True,
        )  # fmt: skip
        if on_start is not None:
            on_start(proc.pid)
        try:
            async with asyncio.timeout(within):
                code = await proc.wait()
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)  # its workers too
            await proc.wait()
            raise BenchError(
                f"guidellm did not finish within {within:.0f}s (log: {workdir / 'guidellm.out'})"
            ) from None
    return await asyncio.to_thread(_collect, code, spec, workdir)
