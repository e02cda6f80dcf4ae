"""IPv4-mapped addresses (::ffff:0:0/96) never carry IPv4 past the IPv4 policies: every secure
AF_INET6 socket is IPv6-only, refuses to become dual-stack and refuses mapped destinations."""

from __future__ import annotations

import errno
import os
import socket as stdlib_socket
import struct
from ipaddress import ip_address

import pytest

from secsock import _transport
from secsock._socket import SecureSocket
from secsock.engine import Carrier, Delivered, Dropped, Flow, IPsecEngine
from secsock.errors import DropReason
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore
from tests.socket.helpers import Sockets, ip, spdadd

V4_REQUIRE = "esp/transport//require"


@pytest.fixture
def v4_require(spd: SPD) -> SPD:
    """The SPD requires ESP for UDP between 127.0.0.1 and 127.0.0.2, both ways; no SA."""
    for src, dst in (("127.0.0.1/32", "127.0.0.2/32"), ("127.0.0.2/32", "127.0.0.1/32")):
        spdadd(spd, src, dst, f"out ipsec {V4_REQUIRE}")
        spdadd(spd, src, dst, f"in ipsec {V4_REQUIRE}")
    return spd


def test_is_v4_mapped() -> None:
    assert _transport.is_v4_mapped(ip_address("::ffff:127.0.0.2"))
    assert _transport.is_v4_mapped("::ffff:10.0.0.1")
    assert _transport.is_v4_mapped("::ffff:10.0.0.1%1")
    assert not _transport.is_v4_mapped(ip_address("::1"))
    assert not _transport.is_v4_mapped(ip_address("127.0.0.2"))
    assert not _transport.is_v4_mapped("::127.0.0.2")  # IPv4-compatible, deprecated, not mapped
    assert not _transport.is_v4_mapped("64:ff9b::7f00:2")  # NAT64, not mapped
    assert not _transport.is_v4_mapped("example.org")


def test_refuse_v4_mapped() -> None:
    _transport.refuse_v4_mapped(ip_address("::1"))
    with pytest.raises(OSError, match="IPv4-mapped") as info:
        _transport.refuse_v4_mapped(ip_address("::ffff:127.0.0.2"))
    assert info.value.errno == errno.EAFNOSUPPORT


def test_set_v6only_sets_it_and_refuses_a_bound_dual_stack_descriptor() -> None:
    ipv6, v6only = stdlib_socket.IPPROTO_IPV6, _transport.IPV6_V6ONLY
    with stdlib_socket.socket(stdlib_socket.AF_INET6, stdlib_socket.SOCK_DGRAM) as s:
        s.setsockopt(ipv6, v6only, 0)
        _transport.set_v6only(s)
        assert s.getsockopt(ipv6, v6only) == 1
        s.bind(("::1", 0))
        _transport.set_v6only(s)  # already IPv6-only: fine even though bound
    with stdlib_socket.socket(stdlib_socket.AF_INET6, stdlib_socket.SOCK_DGRAM) as s:
        s.setsockopt(ipv6, v6only, 0)
        s.bind(("::", 0))  # (bound to ::1 the kernel makes it IPv6-only by itself)
        with pytest.raises(OSError, match="dual-stack") as info:
            _transport.set_v6only(s)
        assert info.value.errno == errno.EINVAL
    with stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM) as s:
        _transport.set_v6only(s)  # nothing to do for IPv4


@pytest.mark.parametrize("value", [0, None, b"\0\0\0\0", b"\x01", b""])
def test_check_v6only_option_refuses_clearing(value: object) -> None:
    with pytest.raises(OSError, match="IPv6-only") as info:
        _transport.check_v6only_option(stdlib_socket.IPPROTO_IPV6, _transport.IPV6_V6ONLY,
                                       value)
    assert info.value.errno == errno.EINVAL


def test_check_v6only_option_setting_and_other_options() -> None:
    v6only = _transport.IPV6_V6ONLY
    assert _transport.check_v6only_option(stdlib_socket.IPPROTO_IPV6, v6only, 1)
    assert _transport.check_v6only_option(stdlib_socket.IPPROTO_IPV6, v6only,
                                          struct.pack("=i", 1))
    assert not _transport.check_v6only_option(stdlib_socket.IPPROTO_IPV6,
                                              stdlib_socket.IPV6_UNICAST_HOPS, 0)
    assert not _transport.check_v6only_option(stdlib_socket.IPPROTO_IP, v6only, 0)


# --- the secure socket -----------------------------------------------------------------------


def test_dual_stack_receive_is_closed(socks: Sockets, v4_require: SPD) -> None:
    """A clear IPv4 datagram never reaches an AF_INET6 secure socket bound to '::' (it would
    have been judged as ::ffff:127.0.0.2 -> ::ffff:127.0.0.1, outside the IPv4 SPD entries)."""
    rx = socks.secure("::")
    assert rx.getsockopt(stdlib_socket.IPPROTO_IPV6, _transport.IPV6_V6ONLY) == 1
    port = rx.getsockname()[1]
    evil = socks.plain("127.0.0.2")
    evil.sendto(b"UNAUTHENTICATED over IPv4", ("127.0.0.1", port))
    v6 = socks.plain("::1")
    v6.sendto(b"clear over IPv6", ("::1", port))  # no IPv6 SPD entry: def_policy lets it in
    data, addr = rx.recvfrom(100)
    assert (data, addr[0]) == (b"clear over IPv6", "::1")
    assert rx.ipsec_stats().in_clear == 1


def test_mapped_destination_is_refused_and_nothing_leaves(socks: Sockets,
                                                          v4_require: SPD) -> None:
    tx = socks.secure("::")
    sniff = socks.plain("127.0.0.2")
    dest = ("::ffff:127.0.0.2", sniff.getsockname()[1])
    with pytest.raises(OSError, match="IPv4-mapped") as info:
        tx.sendto(b"SECRET", dest)
    assert info.value.errno == errno.EAFNOSUPPORT
    with pytest.raises(OSError) as info:
        tx.connect(dest)
    assert info.value.errno == errno.EAFNOSUPPORT
    assert tx.connect_ex(dest) == errno.EAFNOSUPPORT
    marker = socks.plain("127.0.0.1")
    marker.sendto(b"marker", sniff.getsockname())
    assert sniff.recv(100) == b"marker"  # the first datagram there: nothing else came
    stats = tx.ipsec_stats()
    assert stats.out_clear == stats.out_success == 0
    # the AF_INET control: the SPD applies
    s4 = socks.secure("127.0.0.1")
    from secsock.errors import NoSAError

    with pytest.raises(NoSAError):
        s4.sendto(b"SECRET", sniff.getsockname())


def test_v6only_cannot_be_cleared(socks: Sockets) -> None:
    s = socks.secure("::1")
    ipv6 = stdlib_socket.IPPROTO_IPV6
    for value in (0, struct.pack("=i", 0)):
        with pytest.raises(OSError, match="IPv6-only") as info:
            s.setsockopt(ipv6, _transport.IPV6_V6ONLY, value)
        assert info.value.errno == errno.EINVAL
    s.setsockopt(ipv6, _transport.IPV6_V6ONLY, 1)  # already so: accepted
    assert s.getsockopt(ipv6, _transport.IPV6_V6ONLY) == 1
    unbound = socks.secure("::", bind=False)
    with pytest.raises(OSError, match="IPv6-only"):
        unbound.setsockopt(ipv6, _transport.IPV6_V6ONLY, 0)
    unbound.bind(("::", 0))
    assert unbound.getsockopt(ipv6, _transport.IPV6_V6ONLY) == 1
    s.setsockopt(ipv6, stdlib_socket.IPV6_UNICAST_HOPS, 7)  # other options pass through
    assert s.getsockopt(ipv6, stdlib_socket.IPV6_UNICAST_HOPS) == 7


def test_wrapped_descriptors(store: MemoryStore, spd: SPD) -> None:
    ipv6 = stdlib_socket.IPPROTO_IPV6
    plain = stdlib_socket.socket(stdlib_socket.AF_INET6, stdlib_socket.SOCK_DGRAM)
    plain.setsockopt(ipv6, _transport.IPV6_V6ONLY, 0)
    s = SecureSocket(fileno=plain.detach(), sadb=store, spd=spd)  # unbound: made IPv6-only
    try:
        assert s.family == stdlib_socket.AF_INET6  # read from the descriptor
        assert s.getsockopt(ipv6, _transport.IPV6_V6ONLY) == 1
    finally:
        s.close()
    plain = stdlib_socket.socket(stdlib_socket.AF_INET6, stdlib_socket.SOCK_DGRAM)
    plain.setsockopt(ipv6, _transport.IPV6_V6ONLY, 0)
    plain.bind(("::", 0))
    fd = plain.detach()
    try:
        with pytest.raises(OSError, match="dual-stack"):
            SecureSocket(fileno=fd, sadb=store, spd=spd)
        # refused, and the descriptor is still the caller's, open
        with stdlib_socket.socket(fileno=fd) as again:
            fd = -1
            assert again.getsockopt(ipv6, _transport.IPV6_V6ONLY) == 0
    finally:
        if fd >= 0:
            os.close(fd)


# --- the engine (for every adapter) ----------------------------------------------------------


def test_engine_drops_mapped_sources_and_refuses_mapped_flows(store: MemoryStore) -> None:
    """Whatever an adapter hands it, the engine judges no datagram with a mapped address by
    the IPv6 policies: inbound a policy drop, outbound a discard."""
    engine = IPsecEngine(sadb=store, spd=SPD())  # entrust, empty SPD, def_policy 1 (none)
    mapped, local = ip("::ffff:127.0.0.2"), ip("::ffff:127.0.0.1")
    result = engine.receive(b"clear", carrier=Carrier.UDP, src=mapped, dst=ip("::1"),
                            sport=1000, dport=2000, now=0.0)
    assert isinstance(result, Dropped)
    assert result.reason is DropReason.POLICY
    assert "IPv4-mapped" in result.detail
    result = engine.receive(b"clear", carrier=Carrier.CLEAR, src=ip("::1"), dst=local,
                            sport=1000, dport=2000, now=0.0)
    assert isinstance(result, Dropped)
    assert result.reason is DropReason.POLICY
    with pytest.raises(PermissionError, match="IPv4-mapped"):
        engine.protect_one(Flow(ip("::1"), mapped, 1000, 2000), b"x", now=0.0)
    with pytest.raises(PermissionError, match="IPv4-mapped"):
        engine.protect_one(Flow(local, ip("::1"), 1000, 2000), b"x", now=0.0)
    stats = engine.statistics()
    assert (stats.in_polvio, stats.out_polvio, stats.in_clear, stats.out_clear) == (2, 2, 0, 0)
    # plain IPv6 still flows
    ok = engine.receive(b"clear", carrier=Carrier.UDP, src=ip("::1"), dst=ip("::1"),
                        sport=1000, dport=2000, now=0.0)
    assert isinstance(ok, Delivered)
