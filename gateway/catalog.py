"""Models that exist even while no endpoint serves them: the gateway's catalog.

Endpoint discovery only knows what ready engines serve. A model scaled to zero, or a LoRA adapter that is
being loaded or re-placed, has no endpoint for a while, and answering 404 ("model does not exist") for it
would be wrong: a second later it would have been served. The catalog holds what the *control plane* says
exists — ModelDeployments and LoRAAdapters in Kubernetes mode, the command line in ``flotilla up`` — so the
gateway can hold such requests instead (:mod:`gateway.holding`) and list the models in ``/v1/models``.

Each source (``"kube-models"``, ``"kube-adapters"``, ``"up"`` …) declares its whole set at once, so a source
that lost an object removes it by declaring again without it; sources never overwrite each other.
"""

from __future__ import annotations

from collections.abc import Mapping


class Catalog:
    def __init__(self) -> None:
        self._by_source: dict[str, dict[str, str | None]] = {}
        self._merged: dict[str, str | None] = {}

    def declare(self, source: str, entries: Mapping[str, str | None]) -> None:
        """Replace everything ``source`` declared: name -> base model (adapters) or None (base models)."""
        if entries:
            self._by_source[source] = dict(entries)
        else:
            self._by_source.pop(source, None)
        merged: dict[str, str | None] = {}
        for declared in self._by_source.values():
            for name, base in declared.items():
                if merged.get(name) is None:  # an adapter's parent wins over a bare declaration
                    merged[name] = base
        self._merged = merged

    def __contains__(self, model: object) -> bool:
        return model in self._merged

    def __len__(self) -> int:
        return len(self._merged)

    def base_of(self, model: str) -> str | None:
        """The base model of a declared adapter; None for base models and unknown names."""
        return self._merged.get(model)

    def names(self) -> list[str]:
        return sorted(self._merged)

    def items(self) -> list[tuple[str, str | None]]:
        return sorted(self._merged.items())
