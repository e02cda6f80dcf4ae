"""A flood of droppable datagrams neither blocks a non-blocking receive nor holds a timed one
past its deadline: the mode and deadline are fixed when the call starts and checked after
every drop (t_flood_timeout.py, made deterministic: the flood is queued before the call, the
clock is a counter)."""

from __future__ import annotations

import errno
import importlib
import socket as stdlib_socket

import pytest

from secsock._socket import SecureSocket
from secsock.sadb.store import MemoryStore
from tests.socket.helpers import Sockets, add_esp

# importlib: secsock re-exports the class under the module's name
secmod = importlib.import_module("secsock._socket")
FLOOD = 200


def _flooded(socks: Sockets) -> tuple[SecureSocket, stdlib_socket.socket]:
    """A socket requiring ESP with FLOOD clear datagrams (each a policy drop) queued."""
    b = socks.secure("127.0.0.2")
    b.set_ipsec_policy("in ipsec esp/transport//require")
    b.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 1 << 22)
    p = socks.plain("127.0.0.1")
    for _ in range(FLOOD):  # on loopback each is queued at b when sendto returns
        p.sendto(b"x" * 32, b.getsockname())
    return b, p


def test_nonblocking_recv_gives_up_after_a_bounded_number_of_drops(
    socks: Sockets, store: MemoryStore,
) -> None:
    add_esp(store, 0x1001, "127.0.0.1", "127.0.0.2")
    b, _p = _flooded(socks)
    a = socks.secure("127.0.0.1")
    a.set_ipsec_policy("out ipsec esp/transport//require")
    a.sendto(b"behind the flood", b.getsockname())
    b.setblocking(False)
    with pytest.raises(BlockingIOError) as info:
        b.recv(100)
    assert info.value.errno == errno.EAGAIN
    assert b.ipsec_stats().in_polvio == secmod._DROP_BURST
    # each call drops at most a burst; the good datagram behind the flood comes with the call
    # that reaches it
    again = 0
    for _ in range(FLOOD):
        try:
            got = b.recv(100)
            break
        except BlockingIOError:
            again += 1
    assert got == b"behind the flood"
    assert again == FLOOD // secmod._DROP_BURST - 1
    assert b.ipsec_stats().in_polvio == FLOOD


def test_msg_dontwait_is_bounded_too(socks: Sockets) -> None:
    b, _p = _flooded(socks)
    b.settimeout(None)
    with pytest.raises(BlockingIOError):
        b.recv(100, secmod.MSG_DONTWAIT)
    assert b.ipsec_stats().in_polvio == secmod._DROP_BURST


def test_timed_recv_checks_its_deadline_after_every_drop(
    socks: Sockets, monkeypatch: pytest.MonkeyPatch,
) -> None:
    b, _p = _flooded(socks)
    clock = [1000.0]

    def tick() -> float:
        clock[0] += 1.0  # every clock read "takes" a second
        return clock[0]

    class NoPoll:
        def register(self, fd: int, event: int) -> None:
            pass

        def poll(self, ms: int) -> list[tuple[int, int]]:
            raise AssertionError("the queue never ran empty; no wait was due")

    monkeypatch.setattr(secmod, "_monotonic", tick)
    monkeypatch.setattr(secmod, "_poll", NoPoll)
    b.settimeout(5.0)
    with pytest.raises(TimeoutError, match="timed out"):
        b.recv(100)
    # deadline read at 1001 -> 1006; checks at 1002..1006: five drops, not the whole flood
    assert b.ipsec_stats().in_polvio == 5


def test_a_good_datagram_behind_a_few_drops_is_still_returned(socks: Sockets) -> None:
    b = socks.secure("127.0.0.2")
    p = socks.plain("127.0.0.1")
    b.set_ipsec_policy("in ipsec esp/transport//require")
    for _ in range(10):
        p.sendto(b"dropped", b.getsockname())
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(100)
    assert b.ipsec_stats().in_polvio == 10  # fewer than the burst: all read in one call
