import socket

import pytest

from tests.support import is_loopback


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.1.0.7", True),
        ("::1", True),
        ("localhost", True),
        ("10.0.0.1", False),
        ("192.168.1.1", False),
        ("172.16.0.1", False),
        ("8.8.8.8", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_guard_blocks_private_address() -> None:
    with socket.socket() as s, pytest.raises(ConnectionRefusedError, match="non-loopback"):
        s.connect(("10.255.255.1", 9))
