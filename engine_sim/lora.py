"""Runtime LoRA adapters with vLLM's API semantics (reference/vllm-interface.md §2).

* Each new name gets the next integer id (a counter, as vLLM's ``lora_int_id``).
* Loading takes ``lora_load_latency`` simulated seconds; loads of one name are serialised.
* A loaded adapter stays registered (listed, usable) until unloaded. Only ``max_cpu_loras`` of them are
  *resident* in the worker's CPU cache (LRU, vLLM's default capacity = ``max_loras``); a step that needs a
  non-resident adapter reloads it and takes ``lora_load_latency`` longer, as vLLM's worker loads adapters
  synchronously before running the batch. The scheduler separately limits a step to ``max_loras`` distinct
  adapters (GPU slots).
* "No adapter found": a path that looks like a local file path (``/…``, ``./…``, ``file://…``) and does not
  exist. Any other path (hub id, ``s3://…``) loads, since the simulator has no weights to read.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engine_sim.errors import SimError


@dataclass(frozen=True, slots=True)
class Adapter:
    name: str
    path: str
    int_id: int


class LoraRegistry:
    def __init__(
        self,
        *,
        max_cpu_loras: int,
        sleep: Callable[[float], Awaitable[None]],
        latency: float,
        on_load: Callable[[str], None] | None = None,
    ) -> None:
        self.max_cpu_loras = max_cpu_loras
        self.adapters: dict[str, Adapter] = {}
        self.resident: OrderedDict[str, None] = OrderedDict()
        self._next_id = 1
        self._locks: dict[str, asyncio.Lock] = {}
        self._sleep = sleep
        self._latency = latency
        #: called after every successful runtime load (the ``flotilla_sim_lora_loads_total`` counter)
        self._on_load = on_load

    def get(self, name: str) -> Adapter | None:
        return self.adapters.get(name)

    def make_resident(self, name: str) -> bool:
        """Mark ``name`` used by a step; False if it had to be (re)loaded into the CPU cache first."""
        if name in self.resident:
            self.resident.move_to_end(name)
            return True
        self.resident[name] = None
        while len(self.resident) > self.max_cpu_loras:
            self.resident.popitem(last=False)
        return False

    def ids(self) -> dict[str, int]:
        return {a.name: a.int_id for a in self.adapters.values()}

    def add_static(self, name: str, path: str) -> Adapter:
        adapter = Adapter(name, path, self._next_id)
        self._next_id += 1
        self.adapters[name] = adapter
        self.make_resident(name)
        return adapter

    async def load(self, name: str, path: str, *, load_inplace: bool = False) -> Adapter:
        if not name or not path:
            raise SimError(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if name in self.adapters and not load_inplace:
                raise SimError(
                    400,
                    f"The lora adapter '{name}' has already been loaded. "
                    "If you want to load the adapter in place, set 'load_inplace' to True.",
                    "InvalidUserInput",
                )
            if _missing_local_path(path):
                raise SimError(
                    404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError"
                )
            await self._sleep(self._latency)
            old = self.adapters.get(name)
            adapter = Adapter(name, path, old.int_id if old else self._next_id)
            if old is None:
                self._next_id += 1
            self.adapters[name] = adapter
            self.make_resident(name)
            if self._on_load is not None:
                self._on_load(name)
            return adapter

    def unload(self, name: str) -> None:
        if not name:
            raise SimError(
                400, "'lora_name' needs to be provided to unload a LoRA adapter.", "InvalidUserInput"
            )
        self.resident.pop(name, None)
        if self.adapters.pop(name, None) is None:
            raise SimError(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")


def _missing_local_path(path: str) -> bool:
    local = path.removeprefix("file://")
    if not (local.startswith(("/", "./", "../")) or path.startswith("file://")):
        return False
    return not os.path.exists(local)
