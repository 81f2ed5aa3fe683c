"""Contenders: what the load generator talks to, all in front of the same simulated fleet.

* ``direct`` — every request to engine 0, no router (the baseline a single vLLM gives you).
* ``flotilla:<strategy>`` — Flotilla's gateway (``flotilla gateway``), one fresh process per strategy so its
  index starts as cold as the engines; the strategy is chosen per request with ``x-routing-strategy``.
* ``sglang:<policy>`` — the SGLang router from PyPI (``sglang-router``), e.g. ``cache_aware``, ``round_robin``.
* ``vllm-router:<policy>`` — the vLLM router from PyPI (``vllm-router``, a Rust fork of the SGLang router);
  ``kv_aware`` subscribes to the engines' vLLM KV events, so it is the precise-index peer; ``consistent_hash``
  hashes the ``X-Session-ID`` header (the peer of session affinity); ``power_of_two`` picks the less loaded
  of two random engines.
* Peers' documented knobs are set in the spec: ``sglang:cache_aware/cache-threshold=0.5/balance-abs-threshold=8``
  (the standard suite runs the defaults and the best of a small sweep, see ``bench/suites.py``).

Peer routers are launched as documented (shared/reference/anchors.md §2), bound to 127.0.0.1. A peer whose
package is not installed is *skipped with a message* (``pip install -e '.[peers]'``), never silently dropped.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import yaml

from bench.procs import Proc, StartError, flotilla_argv, free_port, wait_http
from flotilla.labels import HEADER_ROUTING_STRATEGY


class Contender(Protocol):
    """A routing setup under test: started in front of ``engines``, then addressed at :attr:`base_url`."""

    name: str
    headers: dict[str, str]

    @property
    def base_url(self) -> str: ...

    def unavailable(self) -> str | None:
        """Why this contender cannot run here (e.g. package missing), or None."""

    async def start(self, engines: Sequence[str], *, model: str, kv_events: Sequence[str]) -> None: ...

    def pin(self, cpus: set[int]) -> bool: ...

    def stop(self) -> None: ...


@dataclass
class Direct:
    """No router: the client talks to the first engine."""

    name: str = "direct"
    headers: dict[str, str] = field(default_factory=dict)
    _url: str = ""

    @property
    def base_url(self) -> str:
        return self._url + "/v1"

    def unavailable(self) -> str | None:
        return None

    async def start(self, engines: Sequence[str], *, model: str, kv_events: Sequence[str]) -> None:
        self._url = engines[0]

    def pin(self, cpus: set[int]) -> bool:
        return False

    def stop(self) -> None:
        pass


@dataclass
class _ProcessContender:
    """A router run as a child process on a free loopback port."""

    name: str
    headers: dict[str, str] = field(default_factory=dict)
    startup_timeout: float = 60.0
    #: extra environment (e.g. quieter logs: every contender logs at warning level, none per request)
    env: dict[str, str] = field(default_factory=dict)
    proc: Proc | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def unavailable(self) -> str | None:
        return None

    def argv(self, engines: Sequence[str], model: str, kv_events: Sequence[str]) -> list[str]:
        raise NotImplementedError

    async def start(self, engines: Sequence[str], *, model: str, kv_events: Sequence[str]) -> None:
        self.port = free_port()
        self.proc = Proc(
            re.sub(r"[^A-Za-z0-9_.-]", "-", self.name), self.argv(engines, model, kv_events), env=self.env
        )
        try:
            # Ready means routing works end to end, not just that the port is open.
            await wait_http(
                self.proc, self.base_url + "/chat/completions", method="POST", within=self.startup_timeout,
                json={"model": model, "messages": [{"role": "user", "content": " ba"}], "max_tokens": 1},
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise

    def pin(self, cpus: set[int]) -> bool:
        return self.proc.pin(cpus) if self.proc is not None else False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc.cleanup()
            self.proc = None


@dataclass
class FlotillaGateway(_ProcessContender):
    """``flotilla gateway`` over an engines file, with the strategy as default profile and per-request header.

    ``precise-prefix`` runs the gateway in precise prefix mode (fed by the engines' KV events); every other
    strategy runs the default approximate mode, learned from the gateway's own routing decisions, unless the
    spec names the mode: ``flotilla:default@precise``.
    """

    strategy: str = ""
    engines_file: Path | None = None

    def argv(self, engines: Sequence[str], model: str, kv_events: Sequence[str]) -> list[str]:
        entries: list[dict[str, str]] = []
        for i, url in enumerate(engines):
            entry = {"url": url}
            if i < len(kv_events):
                entry["kv_events"] = kv_events[i]
            entries.append(entry)
        fd, name = tempfile.mkstemp(prefix="flotilla-bench-engines-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump({"engines": entries}, f)
        self.engines_file = Path(name)
        strategy, _, mode = self.strategy.partition("@")
        if not mode:
            mode = "precise" if strategy.startswith("precise") else "approximate"
        args = ["gateway", "--host", "127.0.0.1", "--port", str(self.port), "--engines-file", name,
                "--strategy", strategy, "--prefix-mode", mode, "--log-text"]  # fmt: skip
        return flotilla_argv(*args)

    def stop(self) -> None:
        super().stop()
        if self.engines_file is not None:
            self.engines_file.unlink(missing_ok=True)
            self.engines_file = None


def flotilla(strategy: str) -> FlotillaGateway:
    return FlotillaGateway(
        name=f"flotilla:{strategy}", headers={HEADER_ROUTING_STRATEGY: strategy.partition("@")[0]},
        strategy=strategy,
        env={"FLOTILLA_GATEWAY_LOG_LEVEL": "WARNING"},
    )  # fmt: skip


@dataclass
class _RustRouter(_ProcessContender):
    """The SGLang router and its vLLM fork share a launcher and flags."""

    module: str = ""
    package: str = ""
    policy: str = ""
    #: documented routing knobs (``--cache-threshold`` …) from the spec's ``/knob=value`` parts
    knobs: tuple[tuple[str, str], ...] = ()

    def unavailable(self) -> str | None:
        if importlib.util.find_spec(self.module.split(".")[0]) is None:
            return f"{self.package} is not installed (pip install -e '.[peers]')"
        return None

    def argv(self, engines: Sequence[str], model: str, kv_events: Sequence[str]) -> list[str]:
        return [
            sys.executable, "-m", self.module,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--worker-urls", *engines,
            "--policy", self.policy,
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
            "--log-level", "warn" if self.package == "sglang-router" else "warning",
            # the defaults queue at 100 waiting requests and retry failures: measure the routing, not these
            "--queue-size", "10000",
            "--worker-startup-check-interval", "1",
            *(arg for knob, value in self.knobs for arg in (f"--{knob}", value)),
            *self.kv_event_args(engines, model, kv_events),
        ]  # fmt: skip

    def kv_event_args(self, engines: Sequence[str], model: str, kv_events: Sequence[str]) -> list[str]:
        """vllm-router's ``kv_aware`` policy subscribes to the engines' vLLM KV events (a precise peer)."""
        if self.policy != "kv_aware":
            return []
        if len(kv_events) != len(engines):
            raise StartError(f"{self.name} needs engines that publish KV events (flotilla sim --kv-events)")
        args = ["--kv-event-block-size", "16", "--kv-event-model", model]
        for url, endpoint in zip(engines, kv_events, strict=True):
            args += ["--kv-event-source", f"{url}={endpoint}"]
        return args


#: the peers' documented cache-aware knobs a spec may set: ``sglang:cache_aware/cache-threshold=0.5``
KNOBS = ("cache-threshold", "balance-abs-threshold", "balance-rel-threshold")


def parse_knobs(spec: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """``policy/knob=value/…`` → (policy, ((knob, value), …)); a clear error for an unknown knob or bad value."""
    policy, *parts = spec.split("/")
    knobs = []
    for part in parts:
        knob, sep, value = part.partition("=")
        if knob not in KNOBS or not sep:
            raise StartError(f"bad router knob {part!r}: use one of {', '.join(KNOBS)} as knob=value")
        try:
            float(value)
        except ValueError:
            raise StartError(f"router knob {knob} needs a number, got {value!r}") from None
        knobs.append((knob, value))
    return policy, tuple(knobs)


def sglang(spec: str) -> _RustRouter:
    policy, knobs = parse_knobs(spec)
    return _RustRouter(
        name=f"sglang:{spec}", module="sglang_router.launch_router", package="sglang-router", policy=policy,
        knobs=knobs,
    )  # fmt: skip


def vllm_router(spec: str) -> _RustRouter:
    policy, knobs = parse_knobs(spec)
    return _RustRouter(
        name=f"vllm-router:{spec}", module="vllm_router.launch_router", package="vllm-router", policy=policy,
        knobs=knobs,
    )  # fmt: skip


#: contender kind -> factory(policy or strategy); "direct" takes none
FACTORIES: dict[str, Callable[[str], Contender]] = {
    "flotilla": flotilla,
    "sglang": sglang,
    "vllm-router": vllm_router,
}


def parse(spec: str) -> Contender:
    """``direct``, ``flotilla:<strategy>``, ``sglang:<policy>`` or ``vllm-router:<policy>``; a Flotilla spec may
    end in ``+NAME=VALUE`` parts, extra environment for its gateway (one setting A/B'd side by side:
    ``flotilla:default+FLOTILLA_GATEWAY_PREFIX_HASH=tokens``)."""
    if spec == "direct":
        return Direct()
    base, *assignments = spec.split("+")
    kind, sep, arg = base.partition(":")
    if kind not in FACTORIES or not sep or not arg or (assignments and kind != "flotilla"):
        raise StartError(
            f"bad contender {spec!r}: use direct, flotilla:<strategy>[+ENV=VALUE…], sglang:<policy> or "
            "vllm-router:<policy>"
        )
    contender = FACTORIES[kind](arg)
    assert isinstance(contender, _ProcessContender)
    for assignment in assignments:
        name, eq, value = assignment.partition("=")
        if not eq or not name:
            raise StartError(f"bad contender {spec!r}: {assignment!r} is not NAME=VALUE")
        contender.env[name] = value
    contender.name = spec
    return contender
