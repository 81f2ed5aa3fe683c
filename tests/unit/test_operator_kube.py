"""Translation of client errors into the operator's tree (the one boundary)."""

from __future__ import annotations

import json

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from flotilla_operator.errors import Forbidden, NotFound, Rejected, Unavailable
from flotilla_operator.kube import translate


def api_error(status: int, message: str = "", retry_after: str | None = None) -> ApiException:
    exc = ApiException(status=status, reason="r", body=json.dumps({"message": message}))
    exc.headers = {"Retry-After": retry_after} if retry_after else {}
    return exc


CASES = [
    pytest.param(api_error(404), NotFound, None, id="404"),
    pytest.param(api_error(422, "spec.replicas: Invalid value"), Rejected, None, id="422"),
    pytest.param(api_error(403, "forbidden"), Forbidden, None, id="403"),
    pytest.param(api_error(409, "conflict"), Unavailable, 5.0, id="409-default-delay"),
    pytest.param(api_error(429, "slow down", retry_after="3"), Unavailable, 3.0, id="429-retry-after"),
    pytest.param(api_error(503), Unavailable, 5.0, id="503"),
    pytest.param(urllib3.exceptions.MaxRetryError(None, "/x"), Unavailable, 5.0, id="connection"),
]


@pytest.mark.parametrize(("exc", "kind", "delay"), CASES)
def test_translate(exc: BaseException, kind: type[Exception], delay: float | None) -> None:
    out = translate(exc, "PATCH /x")
    assert type(out) is kind
    assert str(out).startswith("PATCH /x")
    if delay is not None:
        assert isinstance(out, Unavailable)
        assert out.retry_after == delay


def test_message_carries_the_servers_explanation() -> None:
    assert "spec.replicas: Invalid value" in str(
        translate(api_error(422, "spec.replicas: Invalid value"), "x")
    )
