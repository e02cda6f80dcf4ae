"""transport="raw": ESP and AH as IP protocols 50/51, alone and bundled, IPv4 and IPv6, inside a
private network namespace (root only), checked against scapy's IPsec implementation."""

from __future__ import annotations

import os
import select
import shutil
import socket as stdlib_socket
import struct
import subprocess
import sys
from collections.abc import Iterator

import pytest

from secsock._socket import SecureSocket
from secsock.errors import DropReason
from secsock.sadb.store import MemoryStore
from tests.socket.helpers import (
    GCM_KEY,
    SHA256_KEY,
    Sockets,
    Tap,
    add_ah,
    add_esp,
    both_policies,
)
from tests.socket.netns import netns, netns_unavailable

_REASON = netns_unavailable()
ESP_REQ = "esp/transport//require"
AH_REQ = "ah/transport//require"
BUNDLE = f"{ESP_REQ} {AH_REQ}"


@pytest.fixture(autouse=True)
def _in_netns() -> Iterator[str]:
    if _REASON is not None:
        pytest.skip(_REASON)
    with netns() as name:
        yield name


@pytest.fixture(params=["127.0.0.1", "::1"], ids=["ipv4", "ipv6"])
def addr(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _sniffer(addr: str, proto: int) -> stdlib_socket.socket:
    family = stdlib_socket.AF_INET6 if ":" in addr else stdlib_socket.AF_INET
    s = stdlib_socket.socket(family, stdlib_socket.SOCK_RAW, proto)
    s.settimeout(5)
    return s


def _ipv6_packet(payload: bytes, nh: int) -> bytes:
    """The IPv6 header the kernel put in front of a raw IPv6 socket's payload on ::1."""
    lo6 = stdlib_socket.inet_pton(stdlib_socket.AF_INET6, "::1")
    return struct.pack("!IHBB", 6 << 28, len(payload), nh, 64) + lo6 + lo6 + payload


def _scapy_open(addr: str, wire: bytes, proto: int, sa_kind: str) -> bytes:
    """Verify/decrypt a captured packet with scapy; return the UDP payload it finds."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.ipsec import AH, ESP, SecurityAssociation

    pkt = IPv6(_ipv6_packet(wire, proto)) if ":" in addr else IP(wire)
    if sa_kind == "esp":
        sa = SecurityAssociation(  # type: ignore[no-untyped-call]
            ESP, spi=0x1000, crypt_algo="AES-GCM", crypt_key=GCM_KEY)
    else:
        sa = SecurityAssociation(  # type: ignore[no-untyped-call]
            AH, spi=0x2000, auth_algo="SHA2-256-128", auth_key=SHA256_KEY)
    plain = sa.decrypt(pkt)  # type: ignore[no-untyped-call]  # raises IPSecIntegrityError unless the ICV verifies
    if plain.haslayer(UDP):
        return bytes(plain[UDP].payload)
    return bytes(plain.payload)[8:]  # scapy left the UDP segment undissected


def _setup(socks: Sockets, store: MemoryStore, addr: str, policy: str,
           *, ah_align: int | None = None) -> tuple[SecureSocket, SecureSocket]:
    add_esp(store, 0x1000, addr, addr, key=GCM_KEY)
    add_ah(store, 0x2000, addr, addr, ah_align=ah_align)
    a = socks.secure(addr, transport="raw")
    b = socks.secure(addr, transport="raw")
    both_policies(a, policy)
    both_policies(b, policy)
    return a, b


def test_raw_esp_exchange_and_scapy_interop(socks: Sockets, store: MemoryStore,
                                            addr: str) -> None:
    a, b = _setup(socks, store, addr, ESP_REQ)
    sniff = _sniffer(addr, 50)
    a.sendto(b"over raw ESP", b.getsockname())
    assert b.recvfrom(100) == (b"over raw ESP", a.getsockname())
    wire = sniff.recv(4096)
    payload = wire[20:] if ":" not in addr else wire
    assert payload[:4] == (0x1000).to_bytes(4, "big")
    assert _scapy_open(addr, wire, 50, "esp") == b"over raw ESP"
    b.sendto(b"and back", a.getsockname())
    assert a.recv(100) == b"and back"


def test_raw_ah_exchange_and_scapy_interop(socks: Sockets, store: MemoryStore,
                                           addr: str) -> None:
    a, b = _setup(socks, store, addr, AH_REQ)
    sniff = _sniffer(addr, 51)
    tap = Tap(a)
    a.sendto(b"under AH", b.getsockname())
    assert b.recv(100) == b"under AH"
    assert tap.last.header_included == (":" not in addr)  # IPv4 AH goes out with IP_HDRINCL
    wire = sniff.recv(4096)
    assert b"under AH" in wire  # AH does not encrypt
    assert _scapy_open(addr, wire, 51, "ah") == b"under AH"


def test_ipv4_ah_with_linux_alignment(socks: Sockets, store: MemoryStore) -> None:
    a, b = _setup(socks, store, "127.0.0.1", AH_REQ, ah_align=8)
    sniff = _sniffer("127.0.0.1", 51)
    a.sendto(b"align8", b.getsockname())
    assert b.recv(100) == b"align8"
    wire = sniff.recv(4096)
    assert wire[21] == 6  # payload length: 32-byte AH with hmac-sha2-256 (Linux's default)


def test_bundle_esp_inside_ah(socks: Sockets, store: MemoryStore, addr: str) -> None:
    a, b = _setup(socks, store, addr, BUNDLE)
    sniff = _sniffer(addr, 51)
    a.sendto(b"bundled", b.getsockname())
    assert b.recv(100) == b"bundled"
    wire = sniff.recv(4096)
    ah = wire[20:] if ":" not in addr else wire
    assert ah[0] == 50  # AH's next header is ESP: IP | AH | ESP | UDP
    assert b"bundled" not in wire
    stats = b.ipsec_stats()
    assert stats.in_success == 1


def _refused(b: SecureSocket) -> None:
    """b's descriptor turns readable (the dispatcher queued a datagram), but the policy
    check in b's recv drops it, so a non-blocking recv finds nothing."""
    assert select.select([b], [], [], 5)[0] == [b]
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(100)
    b.settimeout(5)


def test_wrong_protocol_is_a_policy_drop(socks: Sockets, store: MemoryStore,
                                         addr: str) -> None:
    a, b = _setup(socks, store, addr, AH_REQ)
    b.set_ipsec_policy(f"in ipsec {ESP_REQ}")  # b wants ESP, a sends AH
    a.sendto(b"AH only", b.getsockname())
    _refused(b)
    assert b.ipsec_stats().drops[DropReason.POLICY] == 1
    a.set_ipsec_policy(f"out ipsec {ESP_REQ}")
    a.sendto(b"ESP", b.getsockname())
    assert b.recv(100) == b"ESP"


def test_bundle_required_but_esp_alone_is_refused(socks: Sockets, store: MemoryStore,
                                                  addr: str) -> None:
    a, b = _setup(socks, store, addr, ESP_REQ)
    b.set_ipsec_policy(f"in ipsec {BUNDLE}")
    a.sendto(b"esp only", b.getsockname())
    _refused(b)
    assert b.ipsec_stats().drops[DropReason.POLICY] == 1
    a.set_ipsec_policy(f"out ipsec {BUNDLE}")
    a.sendto(b"both", b.getsockname())
    assert b.recv(100) == b"both"


def test_raw_replay_and_forgery_are_dropped(socks: Sockets, store: MemoryStore,
                                            addr: str) -> None:
    from secsock._stats import stats as process_stats
    from secsock.engine import Flow, IPsecEngine
    from secsock.policy.model import parse_policy
    from tests.socket.helpers import ip

    a, b = _setup(socks, store, addr, AH_REQ)
    tap = Tap(a)
    a.sendto(b"first", b.getsockname())
    assert b.recv(100) == b"first"
    replayed = tap.last
    # a packet b has never seen (next sequence number), with one payload bit flipped
    forger = IPsecEngine(transport="raw", sadb=store)
    forger.set_policy(parse_policy(f"out ipsec {AH_REQ}"))
    flow = Flow(ip(addr), ip(addr), a.getsockname()[1], b.getsockname()[1])
    unseen = forger.protect(flow, b"forged", now=0.0)[0]
    forged = bytearray(unseen.data)
    forged[-1] ^= 0x01
    family = stdlib_socket.AF_INET6 if ":" in addr else stdlib_socket.AF_INET
    proto = stdlib_socket.IPPROTO_RAW if replayed.header_included else 51
    before = process_stats()
    with stdlib_socket.socket(family, stdlib_socket.SOCK_RAW, proto) as inj:
        inj.sendto(replayed.data, (addr, 0))
        inj.sendto(bytes(forged), (addr, 0))
    a.sendto(b"second", b.getsockname())  # same raw socket at b's end: processed after
    assert b.recv(100) == b"second"
    delta = process_stats() - before
    assert delta.drops[DropReason.REPLAY] == 1
    assert delta.drops[DropReason.AUTH_FAILED] == 1
    # b's own counters do not see drops that happen before a datagram names a socket
    assert b.ipsec_stats().dropped == 0


def test_esp_in_udp_with_a_zero_outer_checksum(socks: Sockets, store: MemoryStore) -> None:
    """The kernel sends ESP-in-UDP over IPv4 with checksum 0 (RFC 3948 §2.1); accept it."""
    from secsock.engine import Flow, IPsecEngine
    from secsock.policy.model import parse_policy
    from tests.socket.helpers import ip

    add_esp(store, 0x1000, "127.0.0.1", "127.0.0.1")
    b = socks.secure()
    both_policies(b, ESP_REQ)
    sport, dport = 40000, b.getsockname()[1]
    sender = IPsecEngine(sadb=store)
    sender.set_policy(parse_policy(f"out ipsec {ESP_REQ}"))
    out = sender.protect(Flow(ip("127.0.0.1"), ip("127.0.0.1"), sport, dport),
                         b"zero checksum", now=0.0)[0]
    udp = struct.pack("!HHHH", sport, dport, 8 + len(out.data), 0) + out.data
    with stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_RAW,
                              stdlib_socket.IPPROTO_UDP) as raw:
        raw.sendto(udp, ("127.0.0.1", 0))  # the kernel adds the IP header, keeps our UDP one
    assert b.recvfrom(100) == (b"zero checksum", ("127.0.0.1", sport))
    assert b.ipsec_stats().in_success == 1


def test_raw_transport_without_privilege_says_why(tmp_path: object) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    code = (
        "from secsock._socket import SecureSocket\n"
        "try:\n"
        "    SecureSocket(transport='raw')\n"
        "except PermissionError as exc:\n"
        "    print('PermissionError:', exc)\n"
    )
    out = subprocess.run(
        ["setpriv", "--bounding-set=-net_raw", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert out.returncode == 0, out.stderr
    assert "PermissionError:" in out.stdout
    assert "CAP_NET_RAW" in out.stdout
    assert "transport='udp'" in out.stdout
