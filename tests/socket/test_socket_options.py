"""setsockopt/getsockopt of IP_IPSEC_POLICY / IPV6_IPSEC_POLICY: the kernel's checks and errnos,
the getsockopt layout (inbound buffer then outbound buffer) and the convenience methods."""

from __future__ import annotations

import errno
import socket as stdlib_socket
import struct

import pytest

from secsock._socket import SecureSocket
from secsock.constants import IP_IPSEC_POLICY, IPV6_IPSEC_POLICY
from secsock.policy.libipsec import ipsec_dump_policy, ipsec_get_policylen, ipsec_set_policy
from secsock.policy.model import Policy
from tests.socket.helpers import Sockets

IP = stdlib_socket.IPPROTO_IP
IPV6 = stdlib_socket.IPPROTO_IPV6


def _split(buf: bytes) -> tuple[bytes, bytes]:
    n = ipsec_get_policylen(buf)
    return buf[:n], buf[n:]


def _errno_of(sock: SecureSocket, buf: object, level: int = IP,
              opt: int = IP_IPSEC_POLICY) -> int | None:
    try:
        sock.setsockopt(level, opt, buf)  # type: ignore[call-overload]
    except OSError as exc:
        return exc.errno
    return None


def test_getsockopt_returns_in_then_out(socks: Sockets) -> None:
    s = socks.secure()
    buf = s.getsockopt(IP, IP_IPSEC_POLICY, 1024)
    first, second = _split(buf)
    assert ipsec_dump_policy(first) == "in entrust"
    assert ipsec_dump_policy(second) == "out entrust"
    assert len(first) == len(second) == 16  # a bare sadb_x_policy, as FreeBSD returns entrust
    assert s.getsockopt(IP, IP_IPSEC_POLICY) == buf


@pytest.mark.parametrize(
    "text",
    [
        "out ipsec esp/transport//require",
        "in ipsec esp/transport//use ah/transport//require",
        "out bypass",
        "in entrust",
        "out ipsec esp/transport//unique:42",
        "out ipsec esp/tunnel/10.0.0.1-10.0.0.2/require",
    ],
)
def test_set_then_get_round_trips(socks: Sockets, text: str) -> None:
    s = socks.secure()
    buf = ipsec_set_policy(text)
    s.setsockopt(IP, IP_IPSEC_POLICY, buf)
    first, second = _split(s.getsockopt(IP, IP_IPSEC_POLICY, 4096))
    mine = first if text.startswith("in") else second
    assert mine == buf
    assert ipsec_dump_policy(mine) == text
    assert s.get_ipsec_policy("in" if text.startswith("in") else "out") == buf


@pytest.mark.parametrize(
    ("text", "err"),
    [
        ("out discard", errno.EINVAL),
        ("in none", errno.EINVAL),
        ("fwd ipsec esp/transport//require", errno.EINVAL),
    ],
)
def test_socket_rejects_what_kame_rejects(socks: Sockets, text: str, err: int) -> None:
    s = socks.secure()
    assert _errno_of(s, ipsec_set_policy(text)) == err
    assert s.ipsec_policy("in").to_text() == "in entrust"
    assert s.ipsec_policy("out").to_text() == "out entrust"


def _request_buffer(proto: int = 50, mode: int = 1, level: int = 2) -> bytes:
    # sadb_x_policy (24 bytes total, native order) + one 8-byte BSD request
    return struct.pack("=HHHBBII", 3, 18, 2, 2, 0, 0, 0) + struct.pack("=HHBBH", 8, proto,
                                                                        mode, level, 0)


def test_hand_built_buffer_is_accepted(socks: Sockets) -> None:
    s = socks.secure()
    s.setsockopt(IP, IP_IPSEC_POLICY, _request_buffer())
    assert s.ipsec_policy("out").to_text() == "out ipsec esp/transport//require"


@pytest.mark.parametrize(
    ("buf", "err"),
    [
        (b"", errno.EINVAL),
        (b"\x00" * 15, errno.EINVAL),
        (_request_buffer()[:20], errno.EINVAL),  # length field says 24
        (_request_buffer(proto=17), errno.EPROTONOSUPPORT),
        (_request_buffer(mode=0), errno.EINVAL),
        (_request_buffer(level=7), errno.EINVAL),
        (5, errno.EINVAL),
    ],
)
def test_bad_buffers_give_the_kernel_errno(socks: Sockets, buf: object, err: int) -> None:
    s = socks.secure()
    assert _errno_of(s, buf) == err


def test_option_must_match_the_family(socks: Sockets) -> None:
    v4, v6 = socks.secure(), socks.secure("::1")
    out_v6 = ipsec_set_policy("out ipsec esp/transport//require")
    assert _errno_of(v4, out_v6, IPV6, IPV6_IPSEC_POLICY) == errno.ENOPROTOOPT
    assert _errno_of(v6, out_v6, IP, IP_IPSEC_POLICY) == errno.EOPNOTSUPP
    v6.setsockopt(IPV6, IPV6_IPSEC_POLICY, out_v6)
    assert v6.ipsec_policy("out").to_text() == "out ipsec esp/transport//require"
    assert _split(v6.getsockopt(IPV6, IPV6_IPSEC_POLICY, 256))[1] == out_v6


def test_getsockopt_buflen_too_small(socks: Sockets) -> None:
    s = socks.secure()
    with pytest.raises(OSError) as info:
        s.getsockopt(IP, IP_IPSEC_POLICY, 31)
    assert info.value.errno == errno.EINVAL


def test_null_zero_resets_both_directions(socks: Sockets) -> None:
    s = socks.secure()
    s.set_ipsec_policy("in bypass")
    s.set_ipsec_policy("out bypass")
    s.setsockopt(IP, IP_IPSEC_POLICY, None, 0)
    assert s.ipsec_policy("in").to_text() == "in entrust"
    assert s.ipsec_policy("out").to_text() == "out entrust"
    with pytest.raises(OSError) as info:
        s.setsockopt(IP, IP_IPSEC_POLICY, None, 4)
    assert info.value.errno == errno.EINVAL


def test_entrust_resets_one_direction(socks: Sockets) -> None:
    s = socks.secure()
    s.set_ipsec_policy("out bypass")
    s.set_ipsec_policy("in bypass")
    s.set_ipsec_policy("out entrust")
    assert s.ipsec_policy("out").to_text() == "out entrust"
    assert s.ipsec_policy("in").to_text() == "in bypass"


def test_set_ipsec_policy_takes_text_or_policy(socks: Sockets) -> None:
    s = socks.secure()
    s.set_ipsec_policy(Policy.parse("in ipsec esp/transport//use"))
    assert s.ipsec_policy("in").to_text() == "in ipsec esp/transport//use"
    with pytest.raises(OSError) as info:
        s.set_ipsec_policy("out discard")
    assert info.value.errno == errno.EINVAL
    with pytest.raises(ValueError, match="'in' or 'out'"):
        s.get_ipsec_policy("fwd")  # type: ignore[arg-type]
