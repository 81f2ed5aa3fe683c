"""The operator's exception tree; Kubernetes client errors are translated into it in ``kube.py`` only.

::

    OperatorError
    ├── InvalidSpec          the object asks for something impossible; retrying cannot help (-> PermanentError)
    └── KubeError            a call to the API server failed
        ├── NotFound         404
        ├── Rejected         400/403/422: the server refused this request as it is (-> PermanentError)
        └── Unavailable      409/429/5xx/connection errors: worth retrying (-> TemporaryError)

Handlers map ``InvalidSpec``/``Rejected`` to ``kopf.PermanentError`` (reported as a Degraded condition) and
``Unavailable`` to ``kopf.TemporaryError`` with the server's suggested delay.
"""

from __future__ import annotations


class OperatorError(Exception):
    """Base of every error the operator raises on purpose."""


class InvalidSpec(OperatorError):
    """The spec is valid per the CRD schema but cannot be realised (e.g. it overrides reserved labels)."""


class KubeError(OperatorError):
    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(KubeError):
    pass


class Rejected(KubeError):
    pass


class Forbidden(Rejected):
    """403: the operator's ServiceAccount lacks a verb. Not the user's spec, and fixable without touching it
    (RBAC granted later), so the handlers retry instead of giving up."""


class Unavailable(KubeError):
    def __init__(self, message: str, *, status: int | None = None, retry_after: float = 5.0) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after
