"""Contender specs and the command lines they launch (no processes started)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench import contenders
from bench.procs import StartError

ENGINES = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
EVENTS = ["tcp://127.0.0.1:9101", "tcp://127.0.0.1:9102"]


@pytest.mark.parametrize(
    ("spec", "name", "header"),
    [
        ("direct", "direct", None),
        ("flotilla:prefix-cache", "flotilla:prefix-cache", "prefix-cache"),
        ("flotilla:default@precise", "flotilla:default@precise", "default"),
        ("sglang:cache_aware", "sglang:cache_aware", None),
        ("vllm-router:kv_aware", "vllm-router:kv_aware", None),
    ],
    ids=["direct", "flotilla", "flotilla-mode", "sglang", "vllm-router"],
)
def test_parse(spec: str, name: str, header: str | None) -> None:
    c = contenders.parse(spec)
    assert c.name == name
    assert c.headers.get("x-routing-strategy") == header


def test_flotilla_spec_carries_extra_environment() -> None:
    c = contenders.parse("flotilla:default+FLOTILLA_GATEWAY_PREFIX_HASH=tokens+X=a=b")
    assert c.name == "flotilla:default+FLOTILLA_GATEWAY_PREFIX_HASH=tokens+X=a=b"
    assert c.headers.get("x-routing-strategy") == "default"
    assert c.env["FLOTILLA_GATEWAY_PREFIX_HASH"] == "tokens"
    assert c.env["X"] == "a=b"
    assert c.env["FLOTILLA_GATEWAY_LOG_LEVEL"] == "WARNING"  # the contender's own environment is kept


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "flotilla",
        "flotilla:",
        "nginx:rr",
        "sglang",
        "sglang:cache_aware+X=1",
        "flotilla:default+X",
        "flotilla:default+=1",
    ],
    ids=str,
)
def test_bad_spec_is_a_clear_error(spec: str) -> None:
    with pytest.raises(StartError, match="bad contender"):
        contenders.parse(spec)


@pytest.mark.parametrize(
    ("strategy", "mode"),
    [("default", "approximate"), ("precise-prefix", "precise"), ("default@precise", "precise")],
    ids=["approximate", "precise-strategy", "explicit-mode"],
)
def test_flotilla_argv_and_engines_file(strategy: str, mode: str) -> None:
    c = contenders.flotilla(strategy)
    c.port = 8123
    argv = c.argv(ENGINES, "m", EVENTS)
    try:
        assert argv[argv.index("--strategy") + 1] == strategy.partition("@")[0]
        assert argv[argv.index("--prefix-mode") + 1] == mode
        assert argv[argv.index("--host") + 1] == "127.0.0.1"
        engines = yaml.safe_load(Path(argv[argv.index("--engines-file") + 1]).read_text())["engines"]
        assert engines == [{"url": u, "kv_events": e} for u, e in zip(ENGINES, EVENTS, strict=True)]
    finally:
        c.stop()
    assert c.engines_file is None


def test_peer_argv_binds_loopback_and_lists_workers() -> None:
    c = contenders.sglang("cache_aware")
    c.port = 8124
    argv = c.argv(ENGINES, "m", [])
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--prometheus-host") + 1] == "127.0.0.1"
    assert argv[argv.index("--worker-urls") + 1 : argv.index("--worker-urls") + 3] == ENGINES
    assert argv[argv.index("--policy") + 1] == "cache_aware"
    assert "--kv-event-source" not in argv


def test_kv_aware_subscribes_to_every_engine() -> None:
    c = contenders.vllm_router("kv_aware")
    argv = c.argv(ENGINES, "m", EVENTS)
    sources = [argv[i + 1] for i, a in enumerate(argv) if a == "--kv-event-source"]
    assert sources == [f"{u}={e}" for u, e in zip(ENGINES, EVENTS, strict=True)]
    with pytest.raises(StartError, match="needs engines that publish KV events"):
        c.argv(ENGINES, "m", [])
