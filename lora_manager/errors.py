"""The LoRA manager's exception tree; HTTP errors are translated into it in ``engine.py`` only.

::

    LoraError
    └── EngineError              an engine call failed (``endpoint`` says which pod)
        ├── EngineUnavailable    connection refused / timeout / 5xx after the retries: the pod is gone or sick;
        │                        the controller re-places or retries on the next pass
        ├── SourceRefused        the engine cannot load the adapter from its source ("No adapter found",
        │                        a failed download); retrying the same source on another pod will not help
        ├── LoraDisabled         the engine has no runtime LoRA API (started without --enable-lora or without
        │                        VLLM_ALLOW_RUNTIME_LORA_UPDATING)
        └── EngineRejected       any other 4xx: the request itself is wrong (a bug on our side, reported)

The controller maps ``SourceRefused`` to the ``SourceRefused`` condition reason, ``LoraDisabled`` to
``LoraDisabled`` and the rest to ``EngineError``: each names something a user can act on.
"""

from __future__ import annotations


class LoraError(Exception):
    """Base of every error the LoRA manager raises on purpose."""


class EngineError(LoraError):
    def __init__(self, message: str, *, endpoint: str, status: int | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status


class EngineUnavailable(EngineError):
    pass


class SourceRefused(EngineError):
    pass


class LoraDisabled(EngineError):
    pass


class EngineRejected(EngineError):
    pass
