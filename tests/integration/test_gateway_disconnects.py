"""A client that leaves while still sending its request body is not a gateway error.

Found by the reliability suite (``flotilla bench --suite reliability``): every such client produced an
``ERROR internal error`` line with a traceback (starlette's ``ClientDisconnect`` reached the catch-all
handler) and a 500 written to a closed socket, so the log cried wolf once per impatient client.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fleet import SimFleet, sim_fleet
from tests.integration.gateway_harness import running_gateway

CHAT = {
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 4,
}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    with sim_fleet(1, extra_args=["--time-scale", "0.02"]) as f:
        yield f


def test_a_client_leaving_mid_body_is_not_an_internal_error(fleet: SimFleet) -> None:
    records = Records()
    logger = logging.getLogger("flotilla.gateway")
    with running_gateway(engines=fleet.urls, log_level="DEBUG") as gw:
        logger.addHandler(records)
        try:
            gw.wait_healthy(1)
            port = int(gw.url.rsplit(":", 1)[1])
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(
                        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                        b'content-length: 1000\r\n\r\n{"model": "meta-llama'
                    )
                    time.sleep(0.05)
            deadline = time.monotonic() + 10
            while sum("before its request body" in r.getMessage() for r in records.records) < 3:
                assert time.monotonic() < deadline, [r.getMessage() for r in records.records]
                time.sleep(0.05)
            assert [r.getMessage() for r in records.records if r.levelno >= logging.ERROR] == []
            assert httpx.post(gw.base_url + "/chat/completions", json=CHAT).status_code == 200
            assert all(e.in_flight == 0 for e in gw.gateway.fleet.pool)
        finally:
            logger.removeHandler(records)
