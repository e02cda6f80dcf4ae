"""Secure sockets with their own SADBs sharing one encapsulation port (or raw socket): a
datagram is delivered only to a socket whose SADB is the store that authenticated it."""

from __future__ import annotations

import socket as stdlib_socket

from secsock._socket import SecureSocket
from secsock._stats import stats as process_stats
from secsock.errors import DropReason
from secsock.sadb.store import MemoryStore
from tests.socket.helpers import GCM_KEY2, Sockets, add_esp, both_policies

A, B = "127.0.0.1", "127.0.0.2"
REQ = "esp/transport//require"


def _free_port(addr: str) -> int:
    with stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM) as s:
        s.bind((addr, 0))
        port: int = s.getsockname()[1]
        return port


def test_shared_encap_port_delivers_only_to_the_store_that_authenticated(
    socks: Sockets,
) -> None:
    sport, dport = _free_port(A), _free_port(B)
    sx, sy = MemoryStore(), MemoryStore()
    # Only X's SADB holds SA 0x3001; Y's holds its own SA 0x3002 (another key) on the same
    # NAT-T ports, so both arrive through one encapsulation endpoint, in order.
    add_esp(sx, 0x3001, A, B, natt=(sport, dport))
    add_esp(sy, 0x3002, A, B, natt=(sport, dport), key=GCM_KEY2)
    x = socks.secure(B, store=sx)
    y = socks.secure(B, store=sy)
    px = socks.secure(A, store=sx)
    py = socks.secure(A, store=sy)
    for s in (x, y, px, py):
        both_policies(s, REQ)
    before = process_stats()
    # sealed with an SA only X's SADB holds, addressed to Y's port
    px.sendto(b"for Y, authenticated by X's SADB", y.getsockname())
    py.sendto(b"for Y, authenticated by Y's SADB", y.getsockname())
    assert y.recvfrom(100) == (b"for Y, authenticated by Y's SADB", py.getsockname())
    diff = process_stats() - before
    assert diff.drops[DropReason.NO_SA] == 1
    assert y.ipsec_stats().in_success == 1
    # X's own traffic still flows through the shared port
    px.sendto(b"for X", x.getsockname())
    assert x.recvfrom(100) == (b"for X", px.getsockname())


def test_process_sadb_datagram_is_not_delivered_to_a_private_store_socket(
    socks: Sockets,
) -> None:
    """A datagram whose SA only the process-wide SADB holds (the fallback of the shared
    endpoint) does not reach a socket with its own SADB."""
    from secsock.sadb.store import default_sadb

    sport, dport = _free_port(A), _free_port(B)
    private = MemoryStore()
    add_esp(private, 0x3102, A, B, natt=(sport, dport), key=GCM_KEY2)
    default = default_sadb()
    sa = add_esp(default, 0x3101, A, B, natt=(sport, dport))
    try:
        y = socks.secure(B, store=private)
        both_policies(y, REQ)
        p_default = SecureSocket(spd=socks.spd)
        p_default.bind((A, 0))
        try:
            both_policies(p_default, REQ)
            py = socks.secure(A, store=private)
            both_policies(py, REQ)
            before = process_stats()
            p_default.sendto(b"authenticated by the process SADB", y.getsockname())
            py.sendto(b"authenticated by y's SADB", y.getsockname())
            assert y.recv(100) == b"authenticated by y's SADB"
            assert (process_stats() - before).drops[DropReason.NO_SA] == 1
        finally:
            p_default.close()
    finally:
        default.delete(sa.dst, sa.proto, sa.spi)
