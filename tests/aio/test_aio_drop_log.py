"""Secure streams log their drops when the ipsec(4) debug sysctl is on, as the engine does.

One DEBUG line on the ``secsock`` logger per drop: ``drop reason=... spi=0x... seq=N ...``;
never a key or payload byte. Nothing is logged with the sysctl off.
"""

from __future__ import annotations

import logging

import pytest

from secsock import sysctl
from secsock.asyncio._channel import PREFIX, SecureStreamConnection
from secsock.asyncio._protector import StreamSecurity, stream_policy
from secsock.errors import DropReason
from secsock.policy.model import Policy
from tests.aio.aio_helpers import GCM, direct_store

A, B = "127.0.0.1", "127.0.0.2"
NOW = 1_700_000_000.0
POLICY = "out ipsec esp/transport//require"
SECRET = b"PAYLOAD-THAT-MUST-NOT-BE-LOGGED"


def _pair() -> tuple[SecureStreamConnection, SecureStreamConnection]:
    store = direct_store(A, B)
    policy = stream_policy((Policy.parse(POLICY),), store)
    ca = StreamSecurity(sadb=store, policy=policy, local=(A, 40000), peer=(B, 4500))
    cb = StreamSecurity(sadb=store, policy=policy, local=(B, 4500), peer=(A, 40000))
    return (SecureStreamConnection(ca, local=(A, 40000), peer=(B, 4500), initiator=True),
            SecureStreamConnection(cb, local=(B, 4500), peer=(A, 40000), initiator=False))


def _drop_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "secsock" and r.levelno == logging.DEBUG
            and r.getMessage().startswith("drop ")]


def _forged(client: SecureStreamConnection) -> bytes:
    wire = bytearray(b"".join(client.send(SECRET, now=NOW)))
    wire[-1] ^= 1  # the ICV's last byte
    return bytes(wire)


def _no_secrets(lines: list[str]) -> None:
    for line in lines:
        assert SECRET.decode() not in line
        assert GCM.enc_key.hex() not in line
        assert repr(GCM.enc_key) not in line


@pytest.mark.parametrize("tree", ["net.inet.ipsec.debug", "net.inet6.ipsec6.debug"])
def test_stream_drop_is_logged_with_reason_spi_seq(caplog: pytest.LogCaptureFixture,
                                                   tree: str) -> None:
    client, server = _pair()
    caplog.set_level(logging.DEBUG, logger="secsock")
    with sysctl.override({tree: 1}):
        _payloads, error = server.receive_data(_forged(client), now=NOW)
    assert error is not None
    assert error.reason is DropReason.AUTH_FAILED
    lines = _drop_lines(caplog)
    assert len(lines) == 1, lines
    assert lines[0].startswith("drop reason=auth-failed spi=0x00001001 seq=1 ")
    _no_secrets(lines)


def test_stream_level_drop_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A drop the stream decides itself (a frame out of order) is logged too."""
    client, server = _pair()
    first = b"".join(client.send(b"first", now=NOW))[len(PREFIX):]
    second = b"".join(client.send(SECRET, now=NOW))
    caplog.set_level(logging.DEBUG, logger="secsock")
    with sysctl.override({"net.inet.ipsec.debug": 1}):
        _payloads, error = server.receive_data(PREFIX + second, now=NOW)
    assert error is not None
    assert error.reason is DropReason.REPLAY
    lines = _drop_lines(caplog)
    assert len(lines) == 1, lines
    assert lines[0].startswith("drop reason=replay spi=0x00001001 seq=2 "), lines
    _no_secrets(lines)
    assert first  # sent, never delivered: the gap is what the stream refused


def test_nothing_is_logged_with_debug_off(caplog: pytest.LogCaptureFixture) -> None:
    client, server = _pair()
    caplog.set_level(logging.DEBUG, logger="secsock")
    assert not sysctl.debug_enabled()
    _payloads, error = server.receive_data(_forged(client), now=NOW)
    assert error is not None
    assert _drop_lines(caplog) == []
