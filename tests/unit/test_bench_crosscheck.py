"""The guidellm cross-check's own code (bench/crosscheck*.py): the report parser on a recorded guidellm 0.8.1
report, the scenario and offline environment it writes, the tokenizer it trains, the agreement test and the
CPU sampler's arithmetic. guidellm itself is not a test dependency (it pulls torch): nothing here runs it."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from bench.crosscheck import crosscheck_spec, round_order, span_rate
from bench.crosscheck_cpu import Samples, group_cpu, group_wait
from bench.crosscheck_guidellm import OFFLINE, offline_env, parse_report, scenario, write_tokenizer
from bench.crosscheck_report import XRun, analyse, overlap, render, runs_from_json, to_json
from bench.results import RequestResult
from bench.stats import Estimate
from flotilla.tokenizer import FlotillaTokenizer

RECORDED = Path(__file__).parent / "data" / "guidellm-0.8.1-benchmarks.json"


@pytest.fixture(scope="module")
def recorded() -> dict[str, object]:
    data: dict[str, object] = json.loads(RECORDED.read_text())
    return data


def test_parse_report_reads_guidellm_own_figures(recorded: dict[str, object]) -> None:
    run = parse_report(recorded, warmup=0.1)
    assert (run.requests, run.ok) == (40, 40)
    assert len(run.ttft_samples) == 36  # the first 4 sends are the warm-up
    assert all(s is not None and 0.005 < s < 0.5 for s in run.ttft_samples)
    # guidellm's summary, in seconds
    assert run.reported_p50 == pytest.approx(0.0333185, rel=1e-5)
    assert run.reported_p90 == pytest.approx(0.0691030, rel=1e-5)
    assert run.prompt_tokens == 655  # usage.prompt_tokens as the engine counted them: 512 + 128 + template
    assert 5 < run.req_s < 25  # Poisson at 20 req/s, 40 requests
    assert run.window[0] < run.window[1]
    assert 0 < run.send_lag < 1


def test_parse_report_keeps_send_order_and_counts_failures_as_inf(recorded: dict[str, object]) -> None:
    data = copy.deepcopy(recorded)
    bench = data["benchmarks"][0]  # type: ignore[index]
    records = bench["requests"]["successful"]
    first = min(records, key=lambda r: r["request_start_time"])
    late = max(records, key=lambda r: r["request_start_time"])
    records.remove(late)
    bench["requests"]["errored"] = [late]  # the last send failed
    run = parse_report(data, warmup=0.1)
    assert (run.requests, run.ok) == (40, 39)
    assert run.ttft_samples[-1] is None
    assert first["time_to_first_token_ms"] / 1000 not in run.ttft_samples  # the first send is warm-up


@pytest.mark.parametrize(
    "broken", [{}, {"benchmarks": []}, {"benchmarks": [{"requests": {}}]}, {"benchmarks": "x"}]
)
def test_parse_report_rejects_what_is_not_a_guidellm_report(broken: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"guidellm|benchmark"):
        parse_report(broken)


def test_scenario_is_the_suite_gsp_shape() -> None:
    spec = crosscheck_spec(quick=False, seed=0, seeds=None, contenders=None)
    shape = spec.shape
    assert (shape.prefixes, shape.prefix_tokens, shape.question_tokens, shape.output_tokens) == (
        24,
        2048,
        128,
        32,
    )
    assert (shape.requests, shape.rate) == (192, 60.0)
    assert spec.suite.seeds == (101, 102, 103, 104, 105)
    s = scenario(
        shape, target="http://127.0.0.1:9", model="m", tokenizer=Path("/t"), seed=7, out=Path("/o.json")
    )
    data = s["spec"]["data"][0]
    assert data["prefix_buckets"] == [{"prefix_count": 24, "prefix_tokens": 2048}]
    assert (data["prompt_tokens"], data["output_tokens"]) == (128, 32)
    assert s["spec"]["profile"] == {
        "kind": "poisson",
        "rate": [60.0],
        "warmup": {"mode": "requests", "percent": 0.1},
    }
    assert s["spec"]["constraints"] == [{"kind": "max_requests", "count": 192}]
    assert s["spec"]["tokenizer"]["model"] == "/t"
    assert s["spec"]["backend"]["target"] == "http://127.0.0.1:9"


def test_offline_env_drops_proxies_and_sets_the_switches() -> None:
    env = offline_env({"HTTPS_PROXY": "http://proxy:3128", "http_proxy": "x", "PATH": "/bin"}, workers=2)
    assert "HTTPS_PROXY" not in env
    assert "http_proxy" not in env
    assert env["PATH"] == "/bin"
    assert env["GUIDELLM__MAX_WORKER_PROCESSES"] == "2"
    assert all(env[k] == v for k, v in OFFLINE.items())
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"


def test_tokenizer_trained_on_the_corpus_counts_words_as_the_engines_do(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    words = [
        "speech",
        "site",
        "hundred",
        "ability",
        "kid",
        "simple",
        "middle",
        "admit",
        "score",
        "couple",
        "drive",
        "decision",
    ]

    def line(i: int) -> str:  # two six-word sentences, as Faker writes them
        w = [words[(i + j) % len(words)] for j in range(12)]
        return f"{' '.join(w[:6]).capitalize()}. {' '.join(w[6:]).capitalize()}."

    directory = write_tokenizer(tmp_path / "tok", [line(i) for i in range(400)])
    assert json.loads((directory / "tokenizer_config.json").read_text())["bos_token"] == "<|begin_of_text|>"
    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    text = "Couple drive decision. Simple middle admit score kid ability hundred site speech."
    ours = len(tok.encode(text, add_special_tokens=False).ids)
    assert ours == len(FlotillaTokenizer().encode(text)) == 14  # 12 words and two full stops


def _run(tool: str, contender: str, seed: int, ttft: float, *, spread: float = 0.02) -> XRun:
    samples: list[float | None] = [ttft * (1 + spread * ((i % 7) - 3)) for i in range(60)]
    return XRun(
        tool=tool, contender=contender, seed=seed, position=0, requests=64, ok=64, ttft_samples=samples,
        reported_p50=ttft, reported_p90=ttft, req_s=50.0, hit_rate=0.8, engine_prompt_tokens=2190.0,
        engine_ttft_p90=0.2,
    )  # fmt: skip


def test_tools_agree_when_their_ratios_overlap_and_not_otherwise() -> None:
    runs = []
    for seed in (1, 2, 3):
        runs += [_run("flotilla-bench", "ours", seed, 0.2), _run("flotilla-bench", "peer", seed, 0.1)]
        runs += [
            _run("guidellm", "ours", seed, 0.3),
            _run("guidellm", "peer", seed, 0.15),
        ]  # slower, same ratio
    report = analyse(runs, ours="ours", peer="peer")
    assert [r.p90.value for r in report.ratios] == pytest.approx([2.0, 2.0])
    assert report.agree_p50
    assert report.agree_p90
    assert report.tool_vs_tool["ours"][1].value == pytest.approx(1.5)
    for r in runs:
        if r.tool == "guidellm" and r.contender == "ours":
            r.ttft_samples = [
                v / 4 for v in r.ttft_samples if v is not None
            ]  # guidellm: ours now twice as fast
    disagree = analyse(runs, ours="ours", peer="peer")
    assert disagree.ratios[1].p90.value == pytest.approx(0.5)
    assert not disagree.agree_p90
    text = render(disagree, command="flotilla bench --suite crosscheck", notes=["a note"])
    assert "p90 **no**" in text
    assert "> a note" in text


def test_a_round_missing_a_run_is_left_out_and_results_round_trip() -> None:
    runs = [
        _run(t, c, s, 0.1) for s in (1, 2) for t in ("flotilla-bench", "guidellm") for c in ("ours", "peer")
    ]
    runs.append(_run("guidellm", "ours", 3, 9.0))  # round 3 is incomplete
    report = analyse(runs, ours="ours", peer="peer")
    assert {c.rounds for c in report.cells} == {2}
    runs[0].ttft_samples[5] = None
    runs[0].req_s = math.nan
    back = runs_from_json(
        orjson.loads(orjson.dumps(to_json(report, runs, {"meta": {}})))
    )  # NaN is stored as null
    assert back[0].ttft_samples[5] is None
    assert math.isnan(back[0].req_s)
    assert back[1].ttft_samples == pytest.approx([v for v in runs[1].ttft_samples if v is not None], abs=1e-5)


def test_overlap() -> None:
    assert overlap(Estimate(1, 0.9, 1.2), Estimate(1.1, 1.2, 1.4))
    assert not overlap(Estimate(1, 0.9, 1.1), Estimate(1.3, 1.2, 1.4))
    assert not overlap(Estimate(1, math.nan, math.nan), Estimate(1, 0, 2))


def test_round_order_is_seeded_and_complete() -> None:
    order = round_order(101, ("ours", "peer"))
    assert order == round_order(101, ("ours", "peer"))
    assert sorted(order) == sorted((t, c) for t in ("flotilla-bench", "guidellm") for c in ("ours", "peer"))
    assert any(round_order(s, ("ours", "peer")) != order for s in range(102, 110))


def test_span_rate_counts_completions_over_the_sending_span() -> None:
    results = [RequestResult(index=i, scheduled=i * 0.1, ok=True, e2e=0.5, send_lag=0.0) for i in range(10)]
    results.append(RequestResult(index=10, scheduled=1.0, ok=False, send_lag=0.0))
    assert span_rate(results) == pytest.approx(10 / 1.4)  # first send 0.0, last completion 0.9 + 0.5


def test_samples_interpolate_cpu_over_a_window() -> None:
    samples = Samples()
    for t, cpu in ((10.0, 1.0), (11.0, 2.0), (12.0, 4.0)):
        samples.add(t, {"router": cpu})
    assert samples.between("router", 10.5, 11.5) == pytest.approx(1.5)
    assert samples.between("router", 0.0, 99.0) == pytest.approx(3.0)  # clamped to the samples
    assert math.isnan(samples.between("tool", 10.0, 12.0))


def test_group_cpu_reads_this_process_group() -> None:
    sum(i * i for i in range(200_000))  # burn a little CPU
    assert group_cpu(os.getpgid(0)) > 0
    assert group_cpu(2**22 + 12345) == 0  # no such group


@pytest.mark.skipif(not Path("/proc/self/schedstat").exists(), reason="the kernel exposes no schedstat")
def test_group_wait_counts_time_runnable_but_not_running() -> None:
    """Busy processes pinned to one CPU: each runs at most 1/n of the time and waits the rest, so their
    group's run-queue wait grows faster than wall time, while their CPU time cannot."""
    spin = (
        "import os, time\nos.sched_setaffinity(0, {0})\nkids = [os.fork() for _ in range(2)]\n"
        "end = time.time() + 1.5\nwhile time.time() < end: pass\nfor k in kids: k and os.waitpid(k, 0)"
    )  # three or more spinners (forks of forks) in one new process group, all on CPU 0
    leader = subprocess.Popen([sys.executable, "-c", spin], start_new_session=True)
    try:
        time.sleep(0.3)
        before = group_wait(leader.pid)
        time.sleep(0.8)
        waited = group_wait(leader.pid) - before
    finally:
        leader.wait(timeout=10)
    assert waited > 1.0  # ≥ 3 spinners on one CPU for 0.8 s: ≥ 1.6 s waited, at most 0.8 s of CPU
    assert math.isnan(group_wait(2**22 + 12345))  # no such group
