"""The router: resolves a profile, runs filters → scorers → picker, returns endpoints in try order."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field

from gateway.endpoints import Endpoint
from gateway.routing.plans import RoutingPlans
from gateway.routing.registry import BUILTIN_PROFILES, FILTERS, PICKERS, SCORERS, build
from gateway.routing.types import Filter, Picker, RoutingRequest, Scorer
from gateway.settings import ProfileConfig

#: (mode, hashes, endpoint keys) -> endpoint key -> matched leading blocks
MatchFn = Callable[[str, Sequence[int], Collection[str]], Awaitable[dict[str, int]]]


@dataclass(slots=True)
class Profile:
    name: str
    filters: list[Filter]
    scorers: list[tuple[Scorer, float]]
    picker: Picker
    #: which index the profile reads ("approximate" / "precise"), or None: fixed by its scorers, so set once
    needs_matches: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.needs_matches = next((s.needs_matches for s, w in self.scorers if s.needs_matches and w), None)


def build_profile(
    name: str, config: ProfileConfig, prefix_mode: str, plans: RoutingPlans | None = None
) -> Profile:
    for plugin in config.params:
        if plugin not in (*config.filters, *config.scorers, config.picker):
            raise ValueError(f"profile {name!r}: params for {plugin!r}, which the profile does not use")
    return Profile(
        name=name,
        filters=[build(FILTERS, f, config.params.get(f, {}), prefix_mode, plans) for f in config.filters],
        scorers=[
            (build(SCORERS, s, config.params.get(s, {}), prefix_mode), w) for s, w in config.scorers.items()
        ],
        picker=build(PICKERS, config.picker, config.params.get(config.picker, {}), prefix_mode),
    )


@dataclass(slots=True)
class Decision:
    ranked: list[Endpoint]
    profile: str
    seconds: float
    #: matched ÷ total prompt blocks on the first choice (None when the profile reads no index)
    match_ratio: float | None


class Router:
    def __init__(
        self,
        *,
        profiles: dict[str, ProfileConfig] | None = None,
        default_profile: str = "default",
        model_profiles: dict[str, str] | None = None,
        prefix_mode: str = "approximate",
        plans: RoutingPlans | None = None,
    ) -> None:
        configs = {**BUILTIN_PROFILES, **(profiles or {})}
        #: size -> GPU type plans of ModelGroups (discovery or --routing-plan), read by the gpu-plan filter
        self.plans = plans if plans is not None else RoutingPlans()
        self.profiles = {
            name: build_profile(name, cfg, prefix_mode, self.plans) for name, cfg in configs.items()
        }
        self.model_profiles = dict(model_profiles or {})
        for name in (default_profile, *self.model_profiles.values()):
            if name not in self.profiles:
                raise ValueError(
                    f"unknown routing profile {name!r}; known: {', '.join(sorted(self.profiles))}"
                )
        self.default_profile = default_profile

        #: per-model profiles asked for by the models' owners (ModelDeployment spec.routingProfile, read from
        #: pod annotations by discovery); the gateway's own ``model_profiles`` win over them
        self.discovered_profiles: dict[str, str] = {}

    def discover_profiles(self, wanted: dict[str, str]) -> list[str]:
        """Adopt ``model -> profile`` from discovery; returns the names it ignored (no such profile)."""
        unknown = sorted({p for p in wanted.values() if p not in self.profiles})
        self.discovered_profiles = {m: p for m, p in wanted.items() if p in self.profiles}
        return unknown

    def profile_for(self, model: str, requested: str | None) -> Profile | None:
        """The profile to use, or None if ``requested`` (the header) names no profile.

        Precedence: the request's header, the gateway's ``model_profiles``, the model's own (discovered),
        the gateway's default."""
        if requested:
            return self.profiles.get(requested)
        name = self.model_profiles.get(model) or self.discovered_profiles.get(model, self.default_profile)
        return self.profiles[name]

    async def route(
        self, profile: Profile, request: RoutingRequest, candidates: list[Endpoint], match: MatchFn
    ) -> Decision:
        started = time.perf_counter()
        kind = profile.needs_matches
        if kind and request.hashes and candidates:
            request.matches = await match(kind, request.hashes, [e.key for e in candidates])
        endpoints = candidates
        for f in profile.filters:
            kept = f.filter(request, endpoints)
            if kept:
                endpoints = kept
        totals = [0.0] * len(endpoints)
        if len(endpoints) > 1:  # scorers are pure: with one endpoint left there is nothing to rank
            for scorer, weight in profile.scorers:
                if not weight:
                    continue
                for i, s in enumerate(scorer.score(request, endpoints)):
                    totals[i] += weight * s
        ranked = profile.picker.rank(request, endpoints, totals)
        # endpoints dropped by a filter stay usable as retry targets, after the ranked ones
        if len(endpoints) != len(candidates):
            chosen = set(map(id, ranked))
            ranked += [e for e in candidates if id(e) not in chosen]
        ratio = None
        if kind and request.hashes and ranked:
            ratio = request.matches.get(ranked[0].key, 0) / len(request.hashes)
        return Decision(ranked, profile.name, time.perf_counter() - started, ratio)
