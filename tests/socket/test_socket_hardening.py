"""Smaller hardening of the secure socket and engine (review nits): send flags, the order of
the inbound checks, the bounded queue of shared carriers, wrapped connected descriptors."""

from __future__ import annotations

import errno
import importlib
import os
import socket as stdlib_socket

import pytest

from secsock._socket import SecureSocket
from secsock._stats import stats as process_stats
from secsock.engine import Decapsulated, Outbound
from secsock.errors import DropReason
from secsock.sadb.store import MemoryStore
from tests.socket.helpers import Sockets, Tap, add_esp, both_policies, ip

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


# --- RFC 4301 §5.2 before the replay window moves ------------------------------------------


def _free_port(addr: str) -> int:
    with stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM) as s:
        s.bind((addr, 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("natt", [False, True], ids=["own-port", "esp-udp"])
def test_a_copy_from_another_source_does_not_suppress_the_genuine_packet(
    socks: Sockets, store: MemoryStore, natt: bool,
) -> None:
    """t_natt: a genuine packet's copy injected from 127.0.0.3 just before it arrives is a
    policy drop -- and must not have moved the replay window, or the genuine packet that
    follows is dropped as a replay."""
    ports = (_free_port(A), _free_port(B)) if natt else None
    add_esp(store, 0x1001, A, B, natt=ports)
    a, b = socks.secure(A), socks.secure(B)
    both_policies(a, REQ)
    both_policies(b, REQ)
    injector = socks.plain("127.0.0.3")

    def inject_first(out: Outbound) -> None:  # called just before the genuine packet leaves
        injector.sendto(out.data, (str(out.dst), out.dport))

    a.set_wire_tap(inject_first)
    before = process_stats()
    a.sendto(b"genuine", b.getsockname())
    assert b.recvfrom(100) == (b"genuine", a.getsockname())
    drops = (process_stats() - before).drops  # a shared port's drops are process-wide
    assert drops[DropReason.POLICY] == 1
    assert drops[DropReason.REPLAY] == 0


# --- the queue of datagrams from shared carriers is bounded ---------------------------------


def test_the_inbox_is_bounded_and_overflows_are_counted(socks: Sockets) -> None:
    secmod = importlib.import_module("secsock._socket")
    b = socks.secure(B)
    limit = secmod.INBOX_MAX
    src, dst = ip(A), ip(B)
    port = b.getsockname()[1]
    for i in range(limit + 5):  # what a dispatcher hands over, faster than b reads
        b._enqueue(Decapsulated(b"%d" % i, src, dst, 4000, port, ()))
    assert len(b._inbox) == limit
    assert b.inbox_overflows == 5
    assert b.recvfrom(100) == (b"0", (A, 4000))  # the oldest ones were kept
    b._inbox.clear()


# --- wrapped descriptors that the kernel has connected -----------------------------------------


def test_a_kernel_connected_descriptor_is_refused(socks: Sockets) -> None:
    """t_fileno_connected: a connected descriptor would filter the shared carriers' wakeups
    and has a kernel peer the secure socket knows nothing of."""
    sniff = socks.plain(B)
    plain = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    plain.bind((A, 0))
    plain.connect(sniff.getsockname())
    fd = plain.detach()
    try:
        with pytest.raises(ValueError, match="connected"):
            SecureSocket(fileno=fd, sadb=socks.store, spd=socks.spd)
        with stdlib_socket.socket(fileno=fd) as again:  # still the caller's, open, connected
            fd = -1
            assert again.getpeername() == sniff.getsockname()
    finally:
        if fd >= 0:
            os.close(fd)
    unconnected = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    unconnected.bind((A, 0))
    wrapped = SecureSocket(fileno=unconnected.detach(), sadb=socks.store, spd=socks.spd)
    wrapped.close()


def test_sendmsg_afalg_is_refused(socks: Sockets) -> None:
    sniff = socks.plain(B)
    s = socks.secure(A)
    s.set_ipsec_policy(f"out ipsec {REQ}")
    with pytest.raises(OSError) as info:
        s.sendmsg_afalg([b"SECRET"], op=0)
    assert info.value.errno == errno.EOPNOTSUPP
    socks.plain(A).sendto(b"marker", sniff.getsockname())
    assert sniff.recv(100) == b"marker"  # nothing else arrived before it
