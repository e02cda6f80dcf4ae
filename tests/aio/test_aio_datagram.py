"""secsock.asyncio.create_datagram_endpoint: secure UDP under asyncio and uvloop."""

from __future__ import annotations

import asyncio
import errno
import random
import socket as stdlib_socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from secsock import _stats
from secsock._setkey import setkey
from secsock._socket import socket as secure_socket
from secsock.asyncio import IPsecInfo, create_datagram_endpoint
from secsock.asyncio._sockview import SocketView
from secsock.asyncio.datagram import DropInfo, SecureDatagramTransport
from secsock.errors import DropReason, NoSAError, PolicyError
from secsock.policy.model import Policy
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore
from tests.aio.aio_helpers import GCM, SUITES, Suite, direct_store, relay_stores
from tests.aio.aio_relay import Action, UdpRelay, weighted

POLICY = "out ipsec esp/transport//require"
IN_POLICY = "in ipsec esp/transport//require"
A, B = "127.0.0.1", "127.0.0.2"

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


class Recorder(asyncio.DatagramProtocol):
    """Collects datagrams, drops and errors; ``wait_for(n)`` waits for n datagrams."""

    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, tuple[Any, ...]]] = []
        self.drops: list[tuple[DropReason, DropInfo]] = []
        self.errors: list[Exception] = []
        self.lost: list[Exception | None] = []
        self._changed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.datagrams.append((data, addr))
        self._changed.set()

    def ipsec_dropped(self, reason: DropReason, info: DropInfo) -> None:
        self.drops.append((reason, info))
        self._changed.set()

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)
        self._changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)
        self._changed.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    async def wait_for(self, n: int) -> None:
        await self.until(lambda: len(self.datagrams) + len(self.drops) >= n)


def run(loop_name: str, coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(asyncio.wait_for(coro(), 30))


async def _pair(
    store: MemoryStore, *, connect: bool, b_policy: object = (POLICY, IN_POLICY),
    a_policy: object = (POLICY, IN_POLICY),
) -> tuple[SecureDatagramTransport, Recorder, SecureDatagramTransport, Recorder]:
    tb, pb = await create_datagram_endpoint(Recorder, local_addr=(B, 0), policy=b_policy,  # type: ignore[arg-type]
                                            sadb=store)
    tb_addr = tb.get_extra_info("sockname")
    ta, pa = await create_datagram_endpoint(
        Recorder, local_addr=(A, 0), remote_addr=tb_addr if connect else None,
        policy=a_policy, sadb=store,  # type: ignore[arg-type]
    )
    return ta, pa, tb, pb


# --- round trips on both event loops --------------------------------------------------------


@pytest.mark.parametrize("loop_name", list(LOOPS))
@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
@pytest.mark.parametrize("connect", [True, False], ids=["connected", "unconnected"])
def test_round_trip_both_directions(loop_name: str, suite: Suite, connect: bool) -> None:
    async def scenario() -> None:
        store = direct_store(A, B, suite=suite)
        ta, pa, tb, pb = await _pair(store, connect=connect)
        b_addr = tb.get_extra_info("sockname")
        a_addr = ta.get_extra_info("sockname")
        for i in range(5):
            if connect:
                ta.sendto(b"ping %d" % i)
            else:
                ta.sendto(b"ping %d" % i, b_addr)
        await pb.wait_for(5)
        assert [d for d, _ in pb.datagrams] == [b"ping %d" % i for i in range(5)]
        assert all(addr == a_addr for _, addr in pb.datagrams)
        tb.sendto(b"pong", pb.datagrams[0][1])
        await pa.wait_for(1)
        assert pa.datagrams == [(b"pong", b_addr)]
        assert pb.drops == []
        assert pa.drops == []
        assert tb.engine.statistics().in_success == 5
        assert ta.engine.statistics().out_success == 5
        ta.close()
        tb.close()
        await pa.until(lambda: bool(pa.lost))
        await pb.until(lambda: bool(pb.lost))
        assert pa.lost == [None]

    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_ipv6_wildcard_bind(loop_name: str) -> None:
    async def scenario() -> None:
        store = direct_store("::1", "::1")
        tb, pb = await create_datagram_endpoint(Recorder, local_addr=("::", 0),
                                                family=stdlib_socket.AF_INET6,
                                                policy=[POLICY, IN_POLICY], sadb=store)
        port = tb.get_extra_info("sockname")[1]
        ta, _pa = await create_datagram_endpoint(Recorder, remote_addr=("::1", port),
                                                policy=POLICY, sadb=store)
        ta.sendto(b"six")
        await pb.wait_for(1)
        assert pb.datagrams[0][0] == b"six"
        assert pb.datagrams[0][1][0] == "::1"
        assert tb.engine.statistics().in_success == 1
        ta.close()
        tb.close()

    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_empty_datagram_is_sent_and_authenticated(loop_name: str) -> None:
    # Decision: sendto(b"") sends a protected empty datagram (as CPython >= 3.13 does for
    # plain UDP, and as secsock.socket does); 3.11's early return is not copied.
    async def scenario() -> None:
        store = direct_store(A, B)
        ta, _pa, tb, pb = await _pair(store, connect=True)
        ta.sendto(b"")
        ta.sendto(bytearray(b"after"))
        await pb.wait_for(2)
        assert [d for d, _ in pb.datagrams] == [b"", b"after"]
        assert tb.engine.statistics().in_success == 2
        ta.close()
        tb.close()

    run(loop_name, scenario)


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_sendto_without_sa_raises_like_the_socket() -> None:
    store = MemoryStore()
    ta, _pa = await create_datagram_endpoint(Recorder, local_addr=(A, 0), policy=POLICY,
                                             sadb=store)
    with pytest.raises(NoSAError) as from_endpoint:
        ta.sendto(b"x", (B, 9))
    sock = secure_socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM, sadb=store)
    sock.bind((A, 0))
    sock.set_ipsec_policy(POLICY)
    with pytest.raises(NoSAError) as from_socket:
        sock.sendto(b"x", (B, 9))
    sock.close()
    assert from_endpoint.value.errno == from_socket.value.errno == errno.ENOENT
    assert ta.engine.statistics().out_nosa == 1
    ta.close()


@pytest.mark.asyncio
async def test_spd_discard_raises_permission_error() -> None:
    store, spd = MemoryStore(), SPD()
    setkey(f"spdadd {A} {B} udp -P out discard;", sadb=store, spd=spd)
    ta, _pa = await create_datagram_endpoint(Recorder, local_addr=(A, 0), sadb=store, spd=spd)
    with pytest.raises(PermissionError) as info:
        ta.sendto(b"x", (B, 9))
    assert info.value.errno == errno.EACCES
    ta.close()


@pytest.mark.asyncio
async def test_policy_arguments_are_checked_like_setsockopt() -> None:
    with pytest.raises(PolicyError):
        await create_datagram_endpoint(Recorder, local_addr=(A, 0), policy="out ipsec esp")
    with pytest.raises(OSError) as info:  # a socket policy cannot be discard (KAME: EINVAL)
        await create_datagram_endpoint(Recorder, local_addr=(A, 0), policy="out discard")
    assert info.value.errno == errno.EINVAL
    with pytest.raises(ValueError, match="one policy per direction"):
        await create_datagram_endpoint(Recorder, local_addr=(A, 0), policy=[POLICY, POLICY])


@pytest.mark.asyncio
async def test_local_send_errors_reach_error_received() -> None:
    # A clear datagram to the broadcast address without SO_BROADCAST: the kernel says EACCES,
    # which asyncio reports through error_received, not by raising.
    ta, pa = await create_datagram_endpoint(Recorder, local_addr=("0.0.0.0", 0),
                                            policy="out bypass")
    ta.sendto(b"x", ("255.255.255.255", 9))
    await pa.until(lambda: bool(pa.errors))
    assert isinstance(pa.errors[0], PermissionError)
    ta.close()


@pytest.mark.asyncio
async def test_clear_datagram_to_a_require_endpoint_is_dropped_and_reported() -> None:
    store = direct_store(A, B)
    tb, pb = await create_datagram_endpoint(Recorder, local_addr=(B, 0), policy=IN_POLICY,
                                            sadb=store)
    loop = asyncio.get_running_loop()
    plain, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(A, 0))
    plain.sendto(b"in the clear", tb.get_extra_info("sockname"))
    await pb.wait_for(1)
    assert pb.datagrams == []
    reason, info = pb.drops[0]
    assert reason is DropReason.POLICY
    assert info.addr == plain.get_extra_info("sockname")
    assert info.spi is None
    assert tb.engine.statistics().drops[DropReason.POLICY] == 1
    plain.close()
    tb.close()


# --- what the application sees --------------------------------------------------------------


@pytest.mark.asyncio
async def test_extra_info() -> None:
    store = direct_store(A, B)
    ta, _pa, tb, pb = await _pair(store, connect=True)
    sock = ta.get_extra_info("socket")
    assert isinstance(sock, SocketView)
    for name in ("send", "sendto", "sendmsg", "fileno", "dup", "close", "detach", "shutdown"):
        assert not hasattr(sock, name), name
    assert sock.getpeername() == tb.get_extra_info("sockname")
    assert ta.get_extra_info("peername") == tb.get_extra_info("sockname")
    assert ta.get_extra_info("sockname") == sock.getsockname()
    info = ta.get_extra_info("ipsec")
    assert isinstance(info, IPsecInfo)
    assert info.policies == (IN_POLICY, POLICY)
    ta.sendto(b"x")
    await pb.wait_for(1)
    out_sa = info.outbound_sa
    assert out_sa is not None
    assert (out_sa.spi, str(out_sa.src), str(out_sa.dst)) == (0x1001, A, B)
    b_in = tb.get_extra_info("ipsec").inbound_sa
    assert b_in is not None
    assert b_in.spi == 0x1001
    assert GCM.enc_key.hex() not in repr(info) + repr(out_sa)
    ta.close()
    tb.close()


@pytest.mark.asyncio
async def test_ipsec_info_policies_are_live() -> None:
    """get_extra_info("ipsec").policies shows the policies in force now, not at creation."""
    tr, _pr = await create_datagram_endpoint(Recorder, local_addr=(A, 0), policy=POLICY,
                                             sadb=direct_store(A, B))
    info = tr.get_extra_info("ipsec")
    assert info.policies == ("in entrust", POLICY)
    tr.engine.set_policy(Policy.parse(IN_POLICY))
    assert info.policies == (IN_POLICY, POLICY)
    assert repr(info).startswith(f"IPsecInfo(policies={(IN_POLICY, POLICY)!r}")
    tr.close()


@pytest.mark.asyncio
async def test_sendto_argument_checks() -> None:
    store = direct_store(A, B)
    ta, _pa, tb, _pb = await _pair(store, connect=True)
    with pytest.raises(ValueError, match="Invalid address"):
        ta.sendto(b"x", (B, 1))
    with pytest.raises(TypeError):
        ta.sendto("text", None)  # type: ignore[arg-type]
    tu, _pu = await create_datagram_endpoint(Recorder, local_addr=(A, 0), sadb=store)
    with pytest.raises(OSError) as info:
        tu.sendto(b"x")
    assert info.value.errno == errno.EDESTADDRREQ
    with pytest.raises(ValueError, match="resolved IP address"):
        tu.sendto(b"x", ("localhost", 9))
    for t in (ta, tb, tu):
        t.close()


# --- sharing with secsock.socket ------------------------------------------------------------


@pytest.mark.asyncio
async def test_talks_with_a_secure_socket_sharing_store_and_counters() -> None:
    store = direct_store(A, B)
    before = _stats.stats()
    tb, pb = await create_datagram_endpoint(Recorder, local_addr=(B, 0),
                                            policy=[POLICY, IN_POLICY], sadb=store)
    sock = secure_socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM, sadb=store)
    sock.bind((A, 0))
    sock.set_ipsec_policy(POLICY)
    sock.set_ipsec_policy(IN_POLICY)
    sock.setblocking(False)
    sock.sendto(b"from the socket", tb.get_extra_info("sockname"))
    await pb.wait_for(1)
    assert pb.datagrams == [(b"from the socket", sock.getsockname())]
    tb.sendto(b"from asyncio", sock.getsockname())
    loop = asyncio.get_running_loop()
    data, addr = await loop.sock_recvfrom(sock, 100)
    assert (data, addr) == (b"from asyncio", tb.get_extra_info("sockname"))
    delta = _stats.stats() - before
    assert delta.in_success >= 2
    assert delta.out_success >= 2
    sock.close()
    tb.close()


@pytest.mark.asyncio
async def test_esp_udp_sa_goes_through_the_shared_encapsulation_port() -> None:
    # esp-udp SAs travel between NAT-T ports (the shared encapsulation endpoints), which the
    # asyncio endpoint shares with secsock.socket.
    store = MemoryStore()
    probe = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    probe.bind((A, 0))
    pa_natt = probe.getsockname()[1]
    probe.close()
    probe = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    probe.bind((B, 0))
    pb_natt = probe.getsockname()[1]
    probe.close()
    key = "0x" + GCM.enc_key.hex()
    setkey(
        f"add {A}[{pa_natt}] {B}[{pb_natt}] esp-udp 0x2001 -m transport -E aes-gcm-16 {key};\n"
        f"add {B}[{pb_natt}] {A}[{pa_natt}] esp-udp 0x2002 -m transport -E aes-gcm-16 {key};\n",
        sadb=store,
    )
    tb, pb = await create_datagram_endpoint(Recorder, local_addr=(B, 0),
                                            policy=[POLICY, IN_POLICY], sadb=store)
    sock = secure_socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM, sadb=store)
    sock.bind((A, 0))
    sock.set_ipsec_policy(POLICY)
    sock.sendto(b"natt", tb.get_extra_info("sockname"))
    await pb.wait_for(1)
    assert pb.datagrams == [(b"natt", sock.getsockname())]
    applied_spi = tb.get_extra_info("ipsec").inbound_sa
    assert applied_spi is not None
    assert applied_spi.spi == 0x2001
    sock.close()
    tb.close()


# --- a hostile relay ------------------------------------------------------------------------


@pytest.mark.parametrize("loop_name", list(LOOPS))
@pytest.mark.parametrize("seed", [1, 2])
def test_relay_only_authentic_unreplayed_datagrams_arrive(loop_name: str, seed: int) -> None:
    async def scenario() -> None:
        front, back = "127.0.0.4", "127.0.0.3"
        sa, sb = relay_stores(A, B, front, back)
        tb, pb = await create_datagram_endpoint(Recorder, local_addr=(B, 0),
                                                policy=[POLICY, IN_POLICY], sadb=sb)
        ta, pa = await create_datagram_endpoint(Recorder, local_addr=(A, 0),
                                                policy=[POLICY, IN_POLICY], sadb=sa)
        a_addr = ta.get_extra_info("sockname")
        b_addr = tb.get_extra_info("sockname")
        rng = random.Random(seed)
        decide = weighted(rng, {Action.DELIVER: 0.6, Action.DROP: 0.1, Action.DUPLICATE: 0.1,
                                Action.REORDER: 0.1, Action.MODIFY: 0.1})
        relay = UdpRelay(a_addr, b_addr, decide, rng=random.Random(seed))
        await relay.start()
        n = 150
        sent = [b"datagram %d" % i for i in range(n)]
        for i, payload in enumerate(sent):
            ta.sendto(payload, relay.front)
            await relay.wait_processed("a2b", i + 1)
        relay.flush()
        log = relay.log
        modified = log.count("a2b", Action.MODIFY)
        duplicated = log.count("a2b", Action.DUPLICATE)
        dropped = log.count("a2b", Action.DROP)
        expected = n - dropped - modified
        await pb.until(lambda: len(pb.datagrams) >= expected
                       and len(pb.drops) >= modified + duplicated)
        got = [d for d, _ in pb.datagrams]
        assert len(got) == len(set(got)) == expected  # each authentic datagram once
        assert set(got) <= set(sent)
        reasons = [r for r, _ in pb.drops]
        assert reasons.count(DropReason.AUTH_FAILED) == modified
        assert reasons.count(DropReason.REPLAY) == duplicated
        assert len(reasons) == modified + duplicated
        stats = tb.engine.statistics()
        assert stats.drops[DropReason.AUTH_FAILED] == modified
        assert stats.drops[DropReason.REPLAY] == duplicated
        assert stats.in_success == expected
        assert all(addr == relay.back for _, addr in pb.datagrams)
        assert all(info.addr == relay.back for _, info in pb.drops)
        # The way back, through the same relay.
        tb.sendto(b"reply", relay.back)
        await relay.wait_processed("b2a", 1)
        relay.flush()
        if log.entries[-1][2] in (Action.DELIVER, Action.DUPLICATE, Action.REORDER):
            await pa.wait_for(1)
            assert pa.datagrams[0] == (b"reply", relay.front)
        relay.close()
        ta.close()
        tb.close()

    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_connected_endpoint_hears_only_its_peer_and_reports_the_last_sas(loop_name: str) -> None:
    async def scenario() -> None:
        store = direct_store(A, B)
        ta, pa, tb, _pb = await _pair(store, connect=True)
        info = ta.get_extra_info("ipsec")
        assert info.inbound_sa is None  # nothing received or sent yet
        assert info.outbound_sa is None
        # another endpoint on the peer's address (same SA, other port): authentic, but not
        # the connected peer, so neither delivered nor reported as a drop
        tc, _pc = await create_datagram_endpoint(Recorder, local_addr=(B, 0),
                                                 policy=[POLICY, IN_POLICY], sadb=store)
        a_addr = ta.get_extra_info("sockname")
        tc.sendto(b"not the peer", a_addr)
        tb.sendto(b"the peer", a_addr)
        await pa.wait_for(1)
        assert pa.datagrams == [(b"the peer", tb.get_extra_info("sockname"))]
        assert pa.drops == []
        in_sa = ta.get_extra_info("ipsec").inbound_sa  # looked up now, from the last datagram
        assert in_sa is not None
        assert (in_sa.spi, str(in_sa.src), str(in_sa.dst)) == (0x1002, B, A)
        assert ta.engine.statistics().in_success == 2  # both authenticated by the engine
        for t in (ta, tb, tc):
            t.close()

    run(loop_name, scenario)
