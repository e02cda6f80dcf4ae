"""IPv4-mapped addresses (::ffff:0:0/96) never carry IPv4 past the IPv4 policies: every secure
AF_INET6 socket is IPv6-only, refuses to become dual-stack and refuses mapped destinations."""

from __future__ import annotations

import errno
import socket as stdlib_socket
import struct
from ipaddress import ip_address

import pytest

from secsock import _transport


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
