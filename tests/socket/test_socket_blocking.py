"""Blocking, non-blocking and timed receive with forged, replayed and garbage packets
interleaved: a dropped packet never becomes an error and never ends a wait early."""

from __future__ import annotations

import errno
import importlib
import select
import socket as stdlib_socket
import threading

import pytest

from secsock._socket import SecureSocket
from secsock.errors import DropReason
from secsock.sadb.store import MemoryStore
from tests.socket.helpers import Sockets, Tap, add_esp, both_policies

LO = "127.0.0.1"
REQ = "esp/transport//require"


@pytest.fixture
def pair(socks: Sockets, store: MemoryStore) -> tuple[SecureSocket, SecureSocket, Tap,
                                                       stdlib_socket.socket]:
    add_esp(store, 0x1000, LO, LO)
    a, b = socks.secure(), socks.secure()
    both_policies(a, REQ)
    both_policies(b, REQ)
    return a, b, Tap(a), socks.plain()


def _bad_packets(a: SecureSocket, b: SecureSocket, tap: Tap,
                 elsewhere: stdlib_socket.socket) -> list[bytes]:
    """A forged packet (one ciphertext bit of a packet b never saw flipped), a replay of one
    b already took, and two datagrams of garbage."""
    a.sendto(b"genuine", b.getsockname())
    assert b.recv(100) == b"genuine"
    replayed = tap.last.data
    a.sendto(b"unseen", elsewhere.getsockname())
    forged = bytearray(tap.last.data)
    forged[-20] ^= 0x01
    return [bytes(forged), replayed, b"\x00\x00\x10\x00garbage", b"x"]


def _inject(p: stdlib_socket.socket, packets: list[bytes], dest: tuple[str, int]) -> None:
    for pkt in packets:
        p.sendto(pkt, dest)


def test_blocking_recv_skips_drops(pair: tuple[SecureSocket, SecureSocket, Tap,
                                               stdlib_socket.socket]) -> None:
    a, b, tap, p = pair
    bad = _bad_packets(a, b, tap, p)
    b.settimeout(None)
    _inject(p, bad, b.getsockname())
    a.sendto(b"after the attack", b.getsockname())
    assert b.recvfrom(100) == (b"after the attack", a.getsockname())
    drops = b.ipsec_stats().drops
    assert drops[DropReason.AUTH_FAILED] == 1
    assert drops[DropReason.REPLAY] == 1
    # garbage starting with the SA's SPI is taken for ESP (and is too short to be any);
    # other garbage is a clear datagram, refused by the require policy
    assert drops[DropReason.MALFORMED] == 1
    assert drops[DropReason.POLICY] == 1


def test_blocking_recv_waits_through_drops_for_a_later_datagram(
    pair: tuple[SecureSocket, SecureSocket, Tap, stdlib_socket.socket],
) -> None:
    a, b, tap, p = pair
    bad = _bad_packets(a, b, tap, p)
    b.settimeout(None)
    got: list[bytes] = []
    errors: list[BaseException] = []

    def receiver() -> None:
        try:
            got.append(b.recv(100))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=receiver)
    t.start()
    _inject(p, bad, b.getsockname())
    a.sendto(b"late", b.getsockname())
    t.join(10)
    assert not t.is_alive()
    assert errors == []
    assert got == [b"late"]


def test_timed_recv_with_only_drops_times_out(
    pair: tuple[SecureSocket, SecureSocket, Tap, stdlib_socket.socket],
) -> None:
    a, b, tap, p = pair
    bad = _bad_packets(a, b, tap, p)
    _inject(p, bad, b.getsockname())
    b.settimeout(0.05)
    with pytest.raises(TimeoutError, match="timed out"):
        b.recvfrom(100)
    assert b.ipsec_stats().dropped == 4  # all were processed before the timeout


def test_timed_recv_returns_the_good_datagram_behind_drops(
    pair: tuple[SecureSocket, SecureSocket, Tap, stdlib_socket.socket],
) -> None:
    a, b, tap, p = pair
    bad = _bad_packets(a, b, tap, p)
    _inject(p, bad, b.getsockname())
    a.sendto(b"good", b.getsockname())
    b.settimeout(2.0)
    assert b.recv(100) == b"good"
    assert b.gettimeout() == 2.0


def test_timed_recv_loops_with_the_remaining_deadline(
    pair: tuple[SecureSocket, SecureSocket, Tap, stdlib_socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each wait after a drop gets what is left of the timeout, not a fresh one."""
    # importlib, not "import secsock._socket as m": secsock re-exports the class as .socket
    secmod = importlib.import_module("secsock._socket")

    a, b, tap, p = pair
    bad = _bad_packets(a, b, tap, p)
    clock = [1000.0]
    waits: list[int] = []

    class FakePoll:
        def register(self, fd: int, event: int) -> None:
            pass

        def poll(self, ms: int) -> list[tuple[int, int]]:
            waits.append(ms)
            clock[0] += 1.5  # each wait "takes" 1.5 s and then a bad packet arrives
            if len(waits) <= len(bad):
                p.sendto(bad[len(waits) - 1], b.getsockname())
                return [(b.fileno(), select.POLLIN)]
            return []

    monkeypatch.setattr(secmod, "_monotonic", lambda: clock[0])
    monkeypatch.setattr(secmod, "_poll", FakePoll)
    b.settimeout(5.0)
    with pytest.raises(TimeoutError):
        b.recv(100)
    # 5 s budget: waits of 5000, 3500, 2000, 500 ms, then the deadline has passed
    assert waits == [5000, 3500, 2000, 500]


def test_nonblocking_recv_after_drops_raises_blockingioerror(
    pair: tuple[SecureSocket, SecureSocket, Tap, stdlib_socket.socket],
) -> None:
    a, b, tap, p = pair
    bad = _bad_packets(a, b, tap, p)
    _inject(p, bad, b.getsockname())
    b.setblocking(False)
    assert b.gettimeout() == 0.0
    assert not b.getblocking()
    with pytest.raises(BlockingIOError) as info:
        b.recv(100)
    assert info.value.errno == errno.EAGAIN
    a.sendto(b"now", b.getsockname())
    r, _, _ = select.select([b], [], [], 5)
    assert r == [b]
    assert b.recv(100) == b"now"


def test_msg_dontwait_on_a_blocking_socket(socks: Sockets) -> None:
    b = socks.secure()
    b.settimeout(None)
    with pytest.raises(BlockingIOError):
        b.recv(10, stdlib_socket.MSG_DONTWAIT)


def test_select_sees_the_real_descriptor(socks: Sockets) -> None:
    b = socks.secure()
    p = socks.plain()
    assert select.select([b], [], [], 0)[0] == []
    p.sendto(b"hi", b.getsockname())
    assert select.select([b.fileno()], [], [], 5)[0] == [b.fileno()]
    assert b.recv(10) == b"hi"


def test_timeout_settings_mirror_socket_socket(socks: Sockets) -> None:
    b = socks.secure(bind=False)
    b.settimeout(None)
    assert (b.gettimeout(), b.getblocking(), b.timeout) == (None, True, None)
    b.setblocking(False)
    assert (b.gettimeout(), b.getblocking()) == (0.0, False)
    b.settimeout(1.5)
    assert (b.gettimeout(), b.getblocking()) == (1.5, True)
    with pytest.raises(ValueError, match="out of range"):
        b.settimeout(-1)


def test_default_timeout_is_inherited(monkeypatch: pytest.MonkeyPatch, socks: Sockets) -> None:
    old = stdlib_socket.getdefaulttimeout()
    stdlib_socket.setdefaulttimeout(3.0)
    try:
        s = SecureSocket(sadb=socks.store, spd=socks.spd)
    finally:
        stdlib_socket.setdefaulttimeout(old)
    try:
        assert s.gettimeout() == 3.0
    finally:
        s.close()


def test_recv_variants_and_truncation(socks: Sockets) -> None:
    b = socks.secure()
    p = socks.plain()
    dest = b.getsockname()
    for _ in range(6):
        p.sendto(b"0123456789", dest)
    assert b.recv(4) == b"0123"
    data, addr = b.recvfrom(100)
    assert (data, addr) == (b"0123456789", p.getsockname())
    buf = bytearray(6)
    assert b.recv_into(buf) == 6
    assert buf == b"012345"
    assert b.recvfrom_into(buf, 3) == (3, p.getsockname())
    data, anc, flags, addr = b.recvmsg(5)
    assert (data, anc, addr) == (b"01234", [], p.getsockname())
    assert flags & stdlib_socket.MSG_TRUNC
    one, two = bytearray(4), bytearray(10)
    n, anc, flags, addr = b.recvmsg_into([one, two])
    assert (n, bytes(one), bytes(two[:6]), flags) == (10, b"0123", b"456789", 0)


def test_msg_peek_keeps_the_datagram(socks: Sockets) -> None:
    b = socks.secure()
    p = socks.plain()
    p.sendto(b"peek", b.getsockname())
    assert b.recv(10, stdlib_socket.MSG_PEEK) == b"peek"
    assert b.recv(10, stdlib_socket.MSG_PEEK) == b"peek"
    assert b.recv(10) == b"peek"
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(10)


def test_connect_send_recv_and_peer_filter(socks: Sockets) -> None:
    a, b = socks.secure(), socks.secure()
    other = socks.plain()
    with pytest.raises(OSError) as info:
        a.getpeername()
    assert info.value.errno == errno.ENOTCONN
    with pytest.raises(OSError) as info:
        a.send(b"x")
    assert info.value.errno == errno.EDESTADDRREQ
    a.connect(b.getsockname())
    assert a.getpeername() == b.getsockname()
    with pytest.raises(OSError) as info:
        a.sendto(b"x", b.getsockname())
    assert info.value.errno == errno.EISCONN
    b.connect(a.getsockname())
    other.sendto(b"not from the peer", b.getsockname())
    assert a.send(b"from the peer") == len(b"from the peer")
    assert b.recv(100) == b"from the peer"
    a.sendall(b"again")
    assert b.recv(100) == b"again"
    assert a.connect_ex(("no-such-host.invalid", 1)) != 0


def test_sendmsg(socks: Sockets) -> None:
    a, b = socks.secure(), socks.secure()
    assert a.sendmsg([b"ab", memoryview(b"cd")], [], 0, b.getsockname()) == 4
    assert b.recv(10) == b"abcd"
    with pytest.raises(OSError) as info:
        a.sendmsg([b"x"], [(0, 1, b"\0")], 0, b.getsockname())
    assert info.value.errno == errno.EINVAL


def test_ordinary_socket_options_pass_through(socks: Sockets) -> None:
    b = socks.secure()
    b.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 65536)
    assert b.getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF) >= 65536
    assert len(b.getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4)) == 4


def test_context_manager_and_close(store: MemoryStore, socks: Sockets) -> None:
    with SecureSocket(sadb=store, spd=socks.spd) as s:
        s.bind((LO, 0))
        fd = s.fileno()
        assert fd >= 0
        assert "transport=udp" in repr(s)
    assert s.fileno() == -1
    with pytest.raises(OSError):
        s.recv(1)


def test_sendto_resolves_hostnames(socks: Sockets) -> None:
    a = socks.secure()
    p = socks.plain()
    a.sendto(b"by name", ("localhost", p.getsockname()[1]))
    assert p.recv(100) == b"by name"


def test_only_udp_inet_sockets(socks: Sockets) -> None:
    with pytest.raises(ValueError, match="SOCK_DGRAM"):
        SecureSocket(stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM)
    with pytest.raises(ValueError, match="AF_INET"):
        SecureSocket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_DGRAM)
    with pytest.raises(ValueError, match="transport"):
        SecureSocket(transport="tcp")  # type: ignore[arg-type]


def test_wraps_an_existing_descriptor(socks: Sockets) -> None:
    plain = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    plain.bind((LO, 0))
    name = plain.getsockname()
    s = SecureSocket(fileno=plain.detach(), sadb=socks.store, spd=socks.spd)
    try:
        assert s.getsockname() == name
        p = socks.plain()
        p.sendto(b"to the wrapped one", name)
        s.settimeout(5)
        assert s.recv(100) == b"to the wrapped one"
        d = s.dup()
        try:
            assert d.getsockname() == name
            assert d.ipsec_policy("in").to_text() == "in entrust"
        finally:
            d.close()
    finally:
        s.close()


def test_concurrent_senders_never_reuse_a_sequence_number(
    pair: tuple[SecureSocket, SecureSocket, Tap, stdlib_socket.socket],
) -> None:
    a, b, tap, _p = pair
    b.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 1 << 20)

    def send(n: int) -> None:
        for i in range(n):
            a.sendto(i.to_bytes(4, "big"), b.getsockname())

    threads = [threading.Thread(target=send, args=(100,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = [o.seq for o in tap.sent]
    assert sorted(seqs) == list(range(1, 401))
    # All 400 are queued (loopback delivers during sendto). Threads may send a number after
    # one reserved later; one that falls 64 behind the window's top is refused as too old,
    # exactly as a kernel would refuse it -- but none is lost without being counted.
    b.setblocking(False)
    got = 0
    while True:
        try:
            b.recv(10)
        except BlockingIOError:
            break
        got += 1
    stats = b.ipsec_stats()
    assert got == stats.in_success
    assert stats.in_success + stats.in_replay == 400
    assert stats.in_success >= 64
