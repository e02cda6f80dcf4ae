"""Smaller hardening of the secure socket and engine (review nits): send flags, the order of
the inbound checks, the bounded queue of shared carriers, wrapped connected descriptors."""

from __future__ import annotations

import errno
import socket as stdlib_socket

import pytest

from secsock.sadb.store import MemoryStore
from tests.socket.helpers import Sockets, Tap, add_esp

A, B = "127.0.0.1", "127.0.0.2"
REQ = "esp/transport//require"


# --- send flags ------------------------------------------------------------------------------


@pytest.mark.parametrize("protected", [True, False], ids=["esp", "clear"])
def test_msg_more_does_not_cork_datagrams_together(socks: Sockets, store: MemoryStore,
                                                   protected: bool) -> None:
    """t_msg_more: with MSG_MORE reaching the kernel the two ESP packets left as one UDP
    datagram, dropped by the receiver, while both sends reported success."""
    add_esp(store, 0x1001, A, B)
    a, b = socks.secure(A), socks.secure(B)
    if protected:
        a.set_ipsec_policy(f"out ipsec {REQ}")
        b.set_ipsec_policy(f"in ipsec {REQ}")
    assert a.sendto(b"first", stdlib_socket.MSG_MORE, b.getsockname()) == 5
    assert a.sendto(b"second", b.getsockname()) == 6
    assert b.recv(100) == b"first"
    assert b.recv(100) == b"second"
    assert b.ipsec_stats().dropped == 0


def test_harmless_flags_pass_and_msg_oob_is_refused(socks: Sockets, store: MemoryStore) -> None:
    add_esp(store, 0x1001, A, B)
    a, b = socks.secure(A), socks.secure(B)
    a.set_ipsec_policy(f"out ipsec {REQ}")
    b.set_ipsec_policy(f"in ipsec {REQ}")
    tap = Tap(a)
    with pytest.raises(OSError) as info:
        a.sendto(b"urgent", stdlib_socket.MSG_OOB, b.getsockname())
    assert info.value.errno == errno.EOPNOTSUPP
    assert tap.sent == []  # refused before anything was sealed
    flags = stdlib_socket.MSG_DONTWAIT | stdlib_socket.MSG_CONFIRM | stdlib_socket.MSG_NOSIGNAL
    a.sendto(b"with flags", flags, b.getsockname())
    a.connect(b.getsockname())
    a.send(b"connected, with flags", stdlib_socket.MSG_DONTROUTE | stdlib_socket.MSG_EOR)
    assert b.recv(100) == b"with flags"
    assert b.recv(100) == b"connected, with flags"
    assert [o.seq for o in tap.sent] == [1, 2]
