"""Which engine pods should hold which LoRA adapters: a pure function of pods, wishes and what is loaded.

Inputs, all plain data (no Kubernetes, no HTTP, no clock):

* the base model's **ready pods**, each with ``slots`` = vLLM's ``--max-loras`` (adapters one batch can run);
* the **adapters** with their desired ``replicas`` and a ``weight`` (expected share of traffic, default 1);
* what is **loaded where** right now, as the engines themselves report it (``/v1/models``).

Output: the target assignment adapter → pods, the adapters that could not get all their replicas
(``shortfall``) and the load/unload actions that turn the current state into the target.

The algorithm, in three passes:

1. **Keep.** Every (adapter, pod) pair that is loaded on a ready pod and still wanted is kept. Only two things
   break a kept pair: the adapter has more replicas than it wants (then the copies on the most loaded pods go),
   or a pod holds more adapters than it has slots (``max_loras`` was lowered; then the adapters that have the
   most other replicas, lightest first, go). Adapters nobody manages (static ``--lora-modules``, loaded by
   hand) occupy their slot and are never touched.
2. **Place, round by round.** Round *r* gives replica *r + 1* to every adapter that still needs one, heaviest
   per-replica weight first. So under scarce capacity every adapter gets its first replica before any gets a
   second, and the hottest adapters get the emptiest pods. Replicas of one adapter always land on distinct
   pods (two copies on one engine add no capacity).
3. **Pick a pod** by the policy's key among pods with a free slot that do not hold the adapter yet:

   * ``LeastLoaded`` (default, density-aware): the pod whose *load density* — summed per-replica weight of its
     adapters ÷ its slots — is lowest after adding this replica, then the lowest slot use, then the name.
     Weight, not count, is what a pod's batches will carry: a pod with one hot adapter is "fuller" than a pod
     with two cold ones, so a second hot adapter goes elsewhere, and each adapter's traffic spreads over its
     replicas (weight ÷ replicas per copy).
   * ``Packed``: the pod with the highest slot use first (best-fit), keeping other pods free of adapters;
   * ``Spread``: pods on nodes that hold no replica of the adapter first, then as ``LeastLoaded``.

Why stable: a load costs seconds of engine time (weights from disk or the Hub) and every move opens a window
in which requests for the adapter have fewer pods, so a placement that is fine is never "improved". Why
deterministic (ties broken by name): a controller that restarts in the middle of placing recomputes the *same*
target from the same inputs, so an in-flight load it cannot see yet is requested on the same pod again (the
engine answers "already loaded") instead of being duplicated on another pod.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Policy = Literal["LeastLoaded", "Packed", "Spread"]
POLICIES: tuple[Policy, ...] = ("LeastLoaded", "Packed", "Spread")


@dataclass(frozen=True, slots=True)
class Pod:
    """A ready engine pod of the base model."""

    name: str
    #: adapters that can be active at once (vLLM ``--max-loras``)
    slots: int
    #: node of the pod, for the Spread policy ("" = unknown)
    node: str = ""


@dataclass(frozen=True, slots=True)
class Adapter:
    """An adapter the controller manages: how many pods should hold it, and how much traffic it brings."""

    name: str
    #: desired replicas; 0 = unload everywhere (the adapter is being deleted)
    replicas: int
    #: expected share of traffic (any unit, only ratios matter)
    weight: float = 1.0
    policy: Policy = "LeastLoaded"


@dataclass(frozen=True)
class Plan:
    """The target assignment and the steps from the current state to it."""

    #: adapter -> pods that should hold it (every managed adapter appears, maybe with an empty set)
    target: Mapping[str, frozenset[str]]
    #: adapter -> replicas that found no pod (no free slot on a pod without it)
    shortfall: Mapping[str, int]
    #: (adapter, pod) pairs to load, in placement order
    loads: tuple[tuple[str, str], ...]
    #: (adapter, pod) pairs to unload (do these first: they free slots)
    unloads: tuple[tuple[str, str], ...]
    #: free slots per pod after the plan
    free: Mapping[str, int] = field(default_factory=dict)

    def pods_of(self, adapter: str) -> frozenset[str]:
        return self.target.get(adapter, frozenset())


def _per_replica(adapter: Adapter) -> float:
    return adapter.weight / max(adapter.replicas, 1)


@dataclass
class _Board:
    """Mutable working state of one ``place`` call."""

    pods: dict[str, Pod]
    adapters: dict[str, Adapter]
    foreign: dict[str, int]
    hosted: dict[str, set[str]]  # pod -> managed adapters
    holders: dict[str, set[str]]  # adapter -> pods

    def used(self, pod: str) -> int:
        return self.foreign[pod] + len(self.hosted[pod])

    def load(self, pod: str) -> float:
        # an unmanaged adapter counts as an average one: its traffic is unknown
        return self.foreign[pod] + sum(_per_replica(self.adapters[a]) for a in self.hosted[pod])

    def add(self, adapter: str, pod: str) -> None:
        self.hosted[pod].add(adapter)
        self.holders[adapter].add(pod)

    def drop(self, adapter: str, pod: str) -> None:
        self.hosted[pod].discard(adapter)
        self.holders[adapter].discard(pod)


def place(
    pods: Sequence[Pod],
    adapters: Sequence[Adapter],
    loaded: Mapping[str, Collection[str]],
) -> Plan:
    """The target assignment for ``adapters`` on ``pods`` given ``loaded`` (pod -> adapter names on it).

    ``loaded`` may mention pods that are no longer ready (ignored: they are gone or going) and adapters that
    are not managed (they keep their slot).
    """
    pods = sorted(pods, key=lambda p: p.name)  # input order must not matter (see "deterministic" above)
    adapters = sorted(adapters, key=lambda a: a.name)
    board = _Board(
        pods={p.name: p for p in pods},
        adapters={a.name: a for a in adapters},
        foreign={p.name: 0 for p in pods},
        hosted={p.name: set() for p in pods},
        holders={a.name: set() for a in adapters},
    )
    for pod in board.pods:
        for name in sorted(loaded.get(pod, ())):
            if name in board.adapters:
                board.add(name, pod)
            else:
                board.foreign[pod] += 1
    _trim(board)
    shortfall = _fill(board)
    current = {(a, p) for p, names in loaded.items() if p in board.pods for a in names if a in board.adapters}
    # unloads also cover pods that left ``pods`` but still answer (e.g. not ready): nothing is lost by
    # cleaning up there only when the adapter is going away entirely
    gone = {
        (a, p) for p, names in loaded.items() if p not in board.pods for a in names
        if a in board.adapters and board.adapters[a].replicas == 0
    }  # fmt: skip
    target_pairs = {(a, p) for a, ps in board.holders.items() for p in ps}
    loads = _ordered(target_pairs - current, board)
    unloads = tuple(sorted((current - target_pairs) | gone))
    return Plan(
        target={a: frozenset(ps) for a, ps in board.holders.items()},
        shortfall={a: n for a, n in shortfall.items() if n > 0},
        loads=loads,
        unloads=unloads,
        free={p: board.pods[p].slots - board.used(p) for p in board.pods},
    )


def _trim(board: _Board) -> None:
    """Pass 1: drop only what must go — surplus replicas and adapters on over-full pods."""
    for name, adapter in board.adapters.items():
        surplus = len(board.holders[name]) - adapter.replicas
        if surplus > 0:
            for pod in sorted(board.holders[name], key=lambda p: (board.load(p), p), reverse=True)[:surplus]:
                board.drop(name, pod)
    for pod, spec in board.pods.items():
        over = board.used(pod) - spec.slots
        if over <= 0:
            continue
        # most other replicas first, then lightest, then the last name (the first name stays, as above)
        victims = sorted(
            board.hosted[pod],
            key=lambda a: (len(board.holders[a]), -_per_replica(board.adapters[a]), a),
            reverse=True,
        )
        for name in victims[:over]:
            board.drop(name, pod)


def _key(board: _Board, adapter: Adapter, pod: str) -> tuple[float | str, ...]:
    spec = board.pods[pod]
    density = (board.load(pod) + _per_replica(adapter)) / spec.slots
    fill = board.used(pod) / spec.slots
    if adapter.policy == "Packed":
        return (-fill, density, pod)
    if adapter.policy == "Spread":
        nodes = {board.pods[p].node for p in board.holders[adapter.name]}
        same_node = 1 if spec.node and spec.node in nodes else 0
        return (same_node, density, fill, pod)
    return (density, fill, pod)


def _fill(board: _Board) -> dict[str, int]:
    """Pass 2 and 3: add missing replicas round by round; returns what could not be placed."""
    shortfall: dict[str, int] = {}
    rounds = max((a.replicas for a in board.adapters.values()), default=0)
    for r in range(rounds):
        needy = [a for a in board.adapters.values() if a.replicas > r and len(board.holders[a.name]) <= r]
        needy.sort(key=lambda a: (-_per_replica(a), a.name))
        for adapter in needy:
            free = [
                p for p in board.pods
                if board.used(p) < board.pods[p].slots and p not in board.holders[adapter.name]
            ]  # fmt: skip
            if not free:
                continue
            best = min(free, key=lambda p: _key(board, adapter, p))
            board.add(adapter.name, best)
    for adapter in board.adapters.values():
        shortfall[adapter.name] = adapter.replicas - len(board.holders[adapter.name])
    return shortfall


def _ordered(pairs: set[tuple[str, str]], board: _Board) -> tuple[tuple[str, str], ...]:
    """Loads heaviest adapter first, so the traffic that matters most is served soonest."""
    return tuple(sorted(pairs, key=lambda ap: (-_per_replica(board.adapters[ap[0]]), ap[0], ap[1])))
