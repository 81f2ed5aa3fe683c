"""Contenders: what the load generator talks to, all in front of the same simulated fleet.

* ``direct`` — every request to engine 0, no router (the baseline a single vLLM gives you).
* ``flotilla:<strategy>`` — Flotilla's gateway (``flotilla gateway``), one fresh process per strategy so its
  index starts as cold as the engines; the strategy is chosen per request with ``x-routing-strategy``.
* ``sglang:<policy>`` — the SGLang router from PyPI (``sglang-router``), e.g. ``cache_aware``, ``round_robin``.
* ``vllm-router:<policy>`` — the vLLM router from PyPI (``vllm-router``, a Rust fork of the SGLang router).

Peer routers are launched as documented (shared/reference/anchors.md §2), bound to 127.0.0.1. A peer whose
package is not installed is *skipped with a message* (``pip install -e '.[peers]'``), never silently dropped.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

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
        self.proc = Proc(self.name.replace(":", "-"), self.argv(engines, model, kv_events))
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
    """``flotilla gateway --engine URL …`` with the strategy chosen per request by header."""

    strategy: str = ""

    def argv(self, engines: Sequence[str], model: str, kv_events: Sequence[str]) -> list[str]:
        args = ["gateway", "--host", "127.0.0.1", "--port", str(self.port), "--model", model]
        for url in engines:
            args += ["--engine", url]
        for endpoint in kv_events:
            args += ["--kv-events", endpoint]
        return flotilla_argv(*args)


def flotilla(strategy: str) -> FlotillaGateway:
    return FlotillaGateway(
        name=f"flotilla:{strategy}", headers={HEADER_ROUTING_STRATEGY: strategy}, strategy=strategy
    )


@dataclass
class _RustRouter(_ProcessContender):
    """The SGLang router and its vLLM fork share a launcher and flags."""

    module: str = ""
    package: str = ""
    policy: str = ""

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
        ]  # fmt: skip


def sglang(policy: str) -> _RustRouter:
    return _RustRouter(
        name=f"sglang:{policy}", module="sglang_router.launch_router", package="sglang-router", policy=policy
    )


def vllm_router(policy: str) -> _RustRouter:
    return _RustRouter(
        name=f"vllm-router:{policy}", module="vllm_router.launch_router", package="vllm-router", policy=policy
    )


#: contender kind -> factory(policy or strategy); "direct" takes none
FACTORIES: dict[str, Callable[[str], Contender]] = {
    "flotilla": flotilla,
    "sglang": sglang,
    "vllm-router": vllm_router,
}


def parse(spec: str) -> Contender:
    """``direct``, ``flotilla:<strategy>``, ``sglang:<policy>`` or ``vllm-router:<policy>``."""
    if spec == "direct":
        return Direct()
    kind, sep, arg = spec.partition(":")
    if kind not in FACTORIES or not sep or not arg:
        raise StartError(
            f"bad contender {spec!r}: use direct, flotilla:<strategy>, sglang:<policy> or vllm-router:<policy>"
        )
    return FACTORIES[kind](arg)
