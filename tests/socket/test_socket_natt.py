"""ESP-in-UDP with esp-udp SAs: the shared encapsulation port, demultiplexing by the inner UDP
header, NAT keepalives and IKE datagrams (RFC 3948), over IPv4 and IPv6 loopback."""

from __future__ import annotations

import select
import socket as stdlib_socket
from collections.abc import Iterator

import pytest

from secsock._socket import SecureSocket, set_ike_handler
from secsock._stats import stats as process_stats
from secsock.core import esp
from secsock.core.algorithms import encryption_algorithm
from secsock.core.upper import parse_udp_untrusted
from secsock.engine import Carrier
from secsock.sadb.store import MemoryStore
from tests.socket.helpers import GCM_KEY, Sockets, Tap, add_esp, both_policies, ip

REQ = "esp/transport//require"


def _free_port(addr: str) -> int:
    family = stdlib_socket.AF_INET6 if ":" in addr else stdlib_socket.AF_INET
    with stdlib_socket.socket(family, stdlib_socket.SOCK_DGRAM) as s:
        s.bind((addr, 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(params=["127.0.0.1", "::1"], ids=["ipv4", "ipv6"])
def addr(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def natt_port(addr: str, store: MemoryStore) -> int:
    port = _free_port(addr)
    add_esp(store, 0x5000, addr, addr, natt=(port, port))
    return port


@pytest.fixture
def ike_calls() -> Iterator[list[tuple[bytes, tuple[str, int], tuple[str, int]]]]:
    calls: list[tuple[bytes, tuple[str, int], tuple[str, int]]] = []
    set_ike_handler(lambda msg, peer, local: calls.append((msg, peer, local)))
    try:
        yield calls
    finally:
        set_ike_handler(None)


def _inner_ports(packet: bytes, src: str, dst: str) -> tuple[int, int]:
    ctx = esp.EspContext.create(enc=encryption_algorithm("aes-gcm-16"), enc_key=GCM_KEY,
                                auth=None, auth_key=None)
    opened = esp.open_untrusted(ctx, packet)
    assert opened.next_header == 17
    sport, dport, _ = parse_udp_untrusted(opened.payload, ip(src).packed, ip(dst).packed)
    return sport, dport


def test_shared_port_demuxes_by_inner_port(socks: Sockets, addr: str, natt_port: int) -> None:
    a, b1, b2 = socks.secure(addr), socks.secure(addr), socks.secure(addr)
    for s in (a, b1, b2):
        both_policies(s, REQ)
    tap = Tap(a)
    a.sendto(b"to b1", b1.getsockname())
    a.sendto(b"to b2", b2.getsockname())
    assert b2.recvfrom(100) == (b"to b2", a.getsockname())
    assert b1.recvfrom(100) == (b"to b1", a.getsockname())
    first = tap.sent[0]
    assert first.carrier == Carrier.NATT
    assert (first.sport, first.dport) == (natt_port, natt_port)
    assert _inner_ports(first.data, addr, addr) == (a.getsockname()[1], b1.getsockname()[1])
    # the reply travels the same way
    b1.sendto(b"reply", a.getsockname())
    assert a.recv(100) == b"reply"
    assert b1.ipsec_stats().in_success == 1
    assert b1.ipsec_stats().out_success == 1


def test_dispatched_datagram_makes_the_descriptor_readable(socks: Sockets, addr: str,
                                                            natt_port: int) -> None:
    a, b = socks.secure(addr), socks.secure(addr)
    both_policies(a, REQ)
    both_policies(b, REQ)
    b.setblocking(False)
    assert select.select([b], [], [], 0)[0] == []
    a.sendto(b"wake up", b.getsockname())
    assert select.select([b], [], [], 5)[0] == [b]
    assert b.recv(100) == b"wake up"
    with pytest.raises(BlockingIOError):
        b.recv(100)


def test_blocking_recv_is_woken_by_the_dispatcher(socks: Sockets, addr: str,
                                                  natt_port: int) -> None:
    import threading

    a, b = socks.secure(addr), socks.secure(addr)
    both_policies(a, REQ)
    both_policies(b, REQ)
    b.settimeout(None)
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(b.recv(100)))
    t.start()
    a.sendto(b"later", b.getsockname())
    t.join(10)
    assert got == [b"later"]


def test_keepalives_and_ike_never_reach_the_application(
    socks: Sockets, addr: str, natt_port: int,
    ike_calls: list[tuple[bytes, tuple[str, int], tuple[str, int]]],
) -> None:
    a, b = socks.secure(addr), socks.secure(addr)
    both_policies(a, REQ)
    both_policies(b, REQ)
    p = socks.plain(addr)
    before = process_stats()
    p.sendto(b"\xff", (addr, natt_port))
    p.sendto(b"\x00\x00\x00\x00" + b"IKE_SA_INIT", (addr, natt_port))
    a.sendto(b"after", b.getsockname())  # same queue, so processed after the two above
    assert b.recv(100) == b"after"
    delta = process_stats() - before
    assert delta.in_keepalive == 1
    assert delta.in_ike == 1
    assert ike_calls == [(b"IKE_SA_INIT", (addr, p.getsockname()[1]), (addr, natt_port))]


def test_socket_bound_before_the_sa_exists_still_receives(socks: Sockets, store: MemoryStore,
                                                          addr: str) -> None:
    a, b = socks.secure(addr), socks.secure(addr)
    both_policies(a, REQ)
    both_policies(b, REQ)
    port = _free_port(addr)
    add_esp(store, 0x5001, addr, addr, natt=(port, port))  # after both sockets were bound
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(10)  # rescans the SADB before it would wait
    a.sendto(b"late SA", b.getsockname())
    b.settimeout(5)
    assert b.recv(100) == b"late SA"


def test_forged_packets_on_the_shared_port_are_dropped_process_wide(
    socks: Sockets, addr: str, natt_port: int,
) -> None:
    a, b = socks.secure(addr), socks.secure(addr)
    both_policies(a, REQ)
    both_policies(b, REQ)
    tap = Tap(a)
    a.sendto(b"one", b.getsockname())
    assert b.recv(100) == b"one"
    p = socks.plain(addr)
    before = process_stats()
    forged = bytearray(tap.last.data)
    forged[12] ^= 0x80
    p.sendto(tap.last.data, (addr, natt_port))  # replay
    p.sendto(bytes(forged), (addr, natt_port))
    p.sendto(b"\x00\x00\x77\x77" + bytes(20), (addr, natt_port))  # unknown SPI
    a.sendto(b"two", b.getsockname())
    assert b.recv(100) == b"two"
    delta = process_stats() - before
    assert (delta.in_replay, delta.in_nosa, delta.in_success) == (2, 1, 1)
    # (the forged copy carries the replayed sequence number: the window refuses it first)


def test_sockets_with_private_stores_share_one_port(socks: Sockets, addr: str) -> None:
    """Each socket may bring its own SADB; the shared port finds the SA in the right one."""
    port = _free_port(addr)
    s1, s2 = MemoryStore(), MemoryStore()
    add_esp(s1, 0x6001, addr, addr, natt=(port, port))
    add_esp(s2, 0x6002, addr, addr, natt=(port, port), key=bytes(20))
    a1, b1 = socks.secure(addr, store=s1), socks.secure(addr, store=s1)
    a2, b2 = socks.secure(addr, store=s2), socks.secure(addr, store=s2)
    for s in (a1, b1, a2, b2):
        both_policies(s, REQ)
    a1.sendto(b"store one", b1.getsockname())
    a2.sendto(b"store two", b2.getsockname())
    assert b1.recv(100) == b"store one"
    assert b2.recv(100) == b"store two"


def test_secure_socket_types_are_plain_sockets(socks: Sockets) -> None:
    assert isinstance(socks.secure(), stdlib_socket.socket)
    assert issubclass(SecureSocket, stdlib_socket.socket)


def test_a_failing_ike_handler_does_not_stop_the_port(socks: Sockets, addr: str,
                                                      natt_port: int) -> None:
    def handler(msg: bytes, peer: tuple[str, int], local: tuple[str, int]) -> None:
        raise RuntimeError("the IKE daemon's own bug")

    a, b = socks.secure(addr), socks.secure(addr)
    both_policies(a, REQ)
    both_policies(b, REQ)
    set_ike_handler(handler)
    try:
        socks.plain(addr).sendto(b"\x00\x00\x00\x00IKE", (addr, natt_port))
        a.sendto(b"still served", b.getsockname())
        assert b.recv(100) == b"still served"
    finally:
        set_ike_handler(None)


@pytest.mark.parametrize(("timeout", "blocking"), [(None, True), (0.0, False)])
def test_detach_hands_the_descriptor_back_in_its_mode(
    socks: Sockets, timeout: float | None, blocking: bool,
) -> None:
    import os

    s = socks.secure()
    s.settimeout(timeout)  # internally the descriptor is always non-blocking
    fd = s.detach()
    try:
        assert os.get_blocking(fd) is blocking
    finally:
        os.close(fd)
