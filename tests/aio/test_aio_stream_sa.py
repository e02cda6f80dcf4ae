"""Which SA a secure stream's frames use while the SADB changes under it.

A stream keeps its outbound SA (and the inbound SA of the last SPI) only while the store's
``generation`` says a new lookup would give the same answer, so every SADB change shows at the
next frame: a deleted SA, one that became dying (a mature one is preferred), one that a hard
byte lifetime ended in the middle of a write (the rest of the write goes on the next SA).
Sender and receiver have their own stores here, as two hosts would.
"""

from __future__ import annotations

import random
import struct
import time
from ipaddress import ip_address

import pytest

from secsock.asyncio._channel import PREFIX, SecureStreamConnection
from secsock.asyncio._protector import StreamSecurity, stream_policy
from secsock.errors import DropReason, NoSAError
from secsock.policy.model import Policy
from secsock.sadb.lifetime import Lifetime
from secsock.sadb.model import SAProtocol, SecurityAssociation
from secsock.sadb.store import MemoryStore
from tests.aio.aio_helpers import add_pair

POLICY = "out ipsec esp/transport//require"
A, B = "127.0.0.1", "127.0.0.2"
NOW = 1_700_000_000.0


def _stores(
    *, soft: Lifetime | None = None, hard: Lifetime | None = None
) -> tuple[MemoryStore, MemoryStore]:
    """The sender's and the receiver's store, each with the SA pair 0x1001/0x1002."""
    sa, sb = MemoryStore(), MemoryStore()
    for store in (sa, sb):
        add_pair(store, A, B, soft=soft or Lifetime(), hard=hard or Lifetime())
    return sa, sb


def _add_second(store: MemoryStore) -> None:
    """A second SA A->B (0x2001), younger than 0x1001 (and its reverse, 0x2002)."""
    add_pair(store, A, B, spi_ab=0x2001, spi_ba=0x2002)


def _pair(
    store_a: MemoryStore, store_b: MemoryStore
) -> tuple[SecureStreamConnection, SecureStreamConnection]:
    policy_a = stream_policy((Policy.parse(POLICY),), store_a)
    policy_b = stream_policy((Policy.parse(POLICY),), store_b)
    ca = StreamSecurity(sadb=store_a, policy=policy_a, local=(A, 40000), peer=(B, 4500))
    cb = StreamSecurity(sadb=store_b, policy=policy_b, local=(B, 4500), peer=(A, 40000))
    client = SecureStreamConnection(ca, local=(A, 40000), peer=(B, 4500), initiator=True)
    server = SecureStreamConnection(cb, local=(B, 4500), peer=(A, 40000), initiator=False)
    return client, server


def _spis(wire: bytes) -> list[int]:
    """The SPI of every frame of ``wire``."""
    wire = wire.removeprefix(PREFIX)
    spis: list[int] = []
    pos = 0
    while pos < len(wire):
        length, spi = struct.unpack_from("!HI", wire, pos)
        spis.append(spi)
        pos += length
    return spis


def _deliver(server: SecureStreamConnection, wire: bytes) -> bytes:
    payloads, error = server.receive_data(wire, now=NOW)
    assert error is None
    return b"".join(payloads)


def test_a_deleted_outbound_sa_is_noticed_at_the_next_write() -> None:
    sa, sb = _stores()
    client, server = _pair(sa, sb)
    assert _deliver(server, b"".join(client.send_pieces(b"one", now=NOW))) == b"one"
    sa.delete(B, "esp", 0x1001)
    with pytest.raises(NoSAError):
        client.send_pieces(b"two", now=NOW)
    # Nothing changed: with an SA again, the stream goes on where it stopped.
    _add_second(sa)
    _add_second(sb)
    wire = b"".join(client.send_pieces(b"three", now=NOW))
    assert _spis(wire) == [0x2001]
    assert _deliver(server, wire) == b"three"


def test_a_dying_sa_gives_way_to_a_mature_one() -> None:
    sa, sb = _stores(soft=Lifetime(bytes=1000))
    _add_second(sa)
    _add_second(sb)
    client, server = _pair(sa, sb)
    first = b"".join(client.send_pieces(random.Random(1).randbytes(2000), now=NOW))
    second = b"".join(client.send_pieces(b"after the soft limit", now=NOW))
    assert _spis(first) == [0x1001]  # the oldest mature SA
    assert _spis(second) == [0x2001]  # 0x1001 is dying now
    assert _deliver(server, first + second).endswith(b"after the soft limit")


def test_a_hard_lifetime_ended_in_a_write_sends_the_rest_on_the_next_sa() -> None:
    sa, sb = _stores(hard=Lifetime(bytes=100_000))
    _add_second(sa)
    _add_second(sb)
    client, server = _pair(sa, sb)
    data = random.Random(2).randbytes(3 * client.max_chunk)
    wire = b"".join(client.send_pieces(data, now=NOW))
    # The second packet reaches the limit: it is still sent, the SA dies, the third moves on.
    assert _spis(wire) == [0x1001, 0x1001, 0x2001]
    assert _deliver(server, wire) == data
    assert sa.get(B, "esp", 0x1001) is None  # dead and removed
    assert sa.get(B, "esp", 0x2001) is not None


def test_a_hard_lifetime_without_a_next_sa_fails_the_rest_of_the_write() -> None:
    sa, sb = _stores(hard=Lifetime(bytes=100_000))
    client, server = _pair(sa, sb)
    with pytest.raises(NoSAError):
        client.send_pieces(random.Random(3).randbytes(3 * client.max_chunk), now=NOW)
    # The failed write left the stream as it was: nothing of it counts as sent.
    _add_second(sa)
    _add_second(sb)
    wire = b"".join(client.send_pieces(b"next", now=NOW))
    assert _spis(wire) == [0x2001]
    assert _deliver(server, wire) == b"next"


def test_an_inbound_sa_deleted_after_use_drops_the_next_frame() -> None:
    sa, sb = _stores()
    client, server = _pair(sa, sb)
    assert _deliver(server, b"".join(client.send_pieces(b"first", now=NOW))) == b"first"
    sb.delete(B, "esp", 0x1001)
    payloads, error = server.receive_data(b"".join(client.send_pieces(b"x", now=NOW)), now=NOW)
    assert payloads == []
    assert error is not None
    assert error.reason is DropReason.NO_SA


def _rekey(store: MemoryStore, key: bytes) -> None:
    """Replace the SA A->B 0x1001 with one of the same SPI and another key."""
    store.delete(B, "esp", 0x1001)
    store.add(
        SecurityAssociation(spi=0x1001, proto=SAProtocol.ESP, src=ip_address(A),
                            dst=ip_address(B), enc="aes-gcm-16", enc_key=key),
        now=NOW,
    )


def test_an_sa_rekeyed_under_the_same_spi_is_used_afresh() -> None:
    sa, sb = _stores()
    client, server = _pair(sa, sb)
    assert _deliver(server, b"".join(client.send_pieces(b"first", now=NOW))) == b"first"
    # Both ends re-key: had either kept the old key, the ICV would fail.
    for store in (sa, sb):
        _rekey(store, bytes(range(50, 70)))
    assert _deliver(server, b"".join(client.send_pieces(b"second", now=NOW))) == b"second"
    # Only the receiver re-keys: it must use its new key, and so reject the frame.
    _rekey(sb, bytes(range(80, 100)))
    payloads, error = server.receive_data(b"".join(client.send_pieces(b"x", now=NOW)), now=NOW)
    assert payloads == []
    assert error is not None
    assert error.reason is DropReason.AUTH_FAILED


def test_the_sadb_generation_is_read_not_time() -> None:
    # A route kept across writes is still the store's current answer: the generation moves
    # when a lookup would change, here by adding a second SA that is not preferred.
    sa, sb = _stores()
    client, server = _pair(sa, sb)
    before = sa.generation
    _add_second(sa)
    assert sa.generation != before
    wire = b"".join(client.send_pieces(b"still the oldest", now=time.time()))
    assert _spis(wire) == [0x1001]
    assert _deliver(server, wire) == b"still the oldest"


@pytest.mark.parametrize("side", ["sender", "receiver"])
def test_a_raising_sadb_subscriber_neither_breaks_nor_loses_the_stream(
    side: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A key manager's callback that raises on the SoftExpire event (published inside the
    # per-frame store call) is logged; the write and the delivery go on, nothing is lost.
    sa, sb = _stores(soft=Lifetime(bytes=1000))
    client, server = _pair(sa, sb)
    seen: list[object] = []

    def buggy(event: object) -> None:
        seen.append(event)
        raise RuntimeError("key manager bug")

    (sa if side == "sender" else sb).subscribe(buggy)
    data = random.Random(3).randbytes(3000)
    with caplog.at_level("ERROR", logger="secsock"):
        wire = b"".join(client.send_pieces(data, now=NOW))
        wire += b"".join(client.send_pieces(b"and more", now=NOW))
        assert _deliver(server, wire) == data + b"and more"
    assert seen  # the callback did run (and raised)
    assert "subscriber raised RuntimeError" in caplog.text
