"""IPv4-mapped addresses cannot carry IPv4 traffic around the IPv4 policies (review finding 1).

An AF_INET6 endpoint (asyncio) or "::" socket (anyio) is IPV6_V6ONLY: IPv4 datagrams never
reach it, ``::ffff:0:0/96`` destinations are EAFNOSUPPORT, and the option cannot be cleared.
Otherwise the SPD would be searched with IPv6 selectors (and the inet6 sysctls used) for what
is IPv4 on the wire: a 'require' between two IPv4 hosts would let clear text through both ways.
"""

from __future__ import annotations

import asyncio
import errno
import socket as stdlib_socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import anyio
import pytest
import uvloop

from secsock.anyio import create_udp_socket
from secsock.asyncio import create_datagram_endpoint
from secsock.asyncio.datagram import DropInfo
from secsock.errors import DropReason
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore
from tests.socket.helpers import spdadd

A4, B4 = "127.0.0.1", "127.0.0.2"
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def run(loop_name: str, coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(asyncio.wait_for(coro(), 30))  # a hung test fails instead of hanging


@pytest.fixture
def v4_required() -> tuple[MemoryStore, SPD]:
    """SPD: UDP between 127.0.0.1 and 127.0.0.2 must be ESP, both ways; there is no SA."""
    spd = SPD()
    for src, dst in ((A4, B4), (B4, A4)):
        spdadd(spd, src, dst, "out ipsec esp/transport//require")
        spdadd(spd, src, dst, "in ipsec esp/transport//require")
    return MemoryStore(), spd


@pytest.fixture
def sniffer() -> Iterator[stdlib_socket.socket]:
    s = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    s.bind((B4, 0))
    try:
        yield s
    finally:
        s.close()


def _plain(family: int, addr: str) -> stdlib_socket.socket:
    s = stdlib_socket.socket(family, stdlib_socket.SOCK_DGRAM)
    s.bind((addr, 0))
    return s


class Recorder(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self._changed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.events.append(("data", data))
        self._changed.set()

    def ipsec_dropped(self, reason: DropReason, info: DropInfo) -> None:
        self.events.append(("drop", reason))
        self._changed.set()

    async def until_data(self) -> None:
        while not any(kind == "data" for kind, _ in self.events):
            self._changed.clear()
            await self._changed.wait()


# --- asyncio endpoints ----------------------------------------------------------------------


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_endpoint_v6only_and_ipv4_never_arrives(
    loop_name: str, v4_required: tuple[MemoryStore, SPD]
) -> None:
    """A clear IPv4 datagram from 127.0.0.2 to a "::" endpoint is not delivered: the next
    datagram the protocol sees is the IPv6 one sent after it."""
    store, spd = v4_required

    async def scenario() -> None:
        tr, pr = await create_datagram_endpoint(Recorder, local_addr=("::", 0),
                                                family=stdlib_socket.AF_INET6,
                                                sadb=store, spd=spd)
        view = tr.get_extra_info("socket")
        assert view.getsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY) == 1
        port = tr.get_extra_info("sockname")[1]
        evil = _plain(stdlib_socket.AF_INET, B4)
        six = _plain(stdlib_socket.AF_INET6, "::1")
        try:
            evil.sendto(b"UNAUTHENTICATED over IPv4", (A4, port))
            six.sendto(b"clear over IPv6 (no policy for ::1)", ("::1", port))
            await pr.until_data()
            assert [what for kind, what in pr.events if kind == "data"] == [
                b"clear over IPv6 (no policy for ::1)"
            ]
        finally:
            evil.close()
            six.close()
            tr.close()

    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_endpoint_refuses_mapped_destinations(
    loop_name: str, v4_required: tuple[MemoryStore, SPD], sniffer: stdlib_socket.socket
) -> None:
    store, spd = v4_required
    target = ("::ffff:" + B4, sniffer.getsockname()[1])

    async def scenario() -> None:
        tr, _pr = await create_datagram_endpoint(Recorder, local_addr=("::", 0),
                                                 family=stdlib_socket.AF_INET6,
                                                 sadb=store, spd=spd)
        try:
            with pytest.raises(OSError, match="IPv4-mapped") as info:
                tr.sendto(b"SECRET to a mapped address", target)
            assert info.value.errno == errno.EAFNOSUPPORT
            assert tr.engine.statistics().out_clear == 0
        finally:
            tr.close()
        with pytest.raises(OSError) as connected:
            await create_datagram_endpoint(Recorder, remote_addr=target,
                                           family=stdlib_socket.AF_INET6, sadb=store, spd=spd)
        assert connected.value.errno == errno.EAFNOSUPPORT
        with pytest.raises(OSError) as bound:
            await create_datagram_endpoint(Recorder, local_addr=("::ffff:" + A4, 0),
                                           family=stdlib_socket.AF_INET6, sadb=store, spd=spd)
        assert bound.value.errno == errno.EAFNOSUPPORT

    run(loop_name, scenario)


# --- anyio "::" sockets ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_anyio_wildcard_socket_is_v6only(v4_required: tuple[MemoryStore, SPD],
                                               sniffer: stdlib_socket.socket) -> None:
    store, spd = v4_required
    async with await create_udp_socket(local_host="::", sadb=store, spd=spd) as udp:
        sock = udp.secure_socket
        assert sock.getsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY) == 1
        with pytest.raises(OSError, match="IPV6_V6ONLY"):
            sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 0)
        with pytest.raises(OSError) as info:
            await udp.sendto(b"SECRET to a mapped address", "::ffff:" + B4,
                             sniffer.getsockname()[1])
        assert info.value.errno == errno.EAFNOSUPPORT
        port = sock.getsockname()[1]
        evil = _plain(stdlib_socket.AF_INET, B4)
        six = _plain(stdlib_socket.AF_INET6, "::1")
        try:
            evil.sendto(b"UNAUTHENTICATED over IPv4", (A4, port))
            six.sendto(b"clear over IPv6", ("::1", port))
            with anyio.fail_after(30):  # a safety bound only: the datagram is already queued
                data, _addr = await udp.receive()
        finally:
            evil.close()
            six.close()
        assert data == b"clear over IPv6"
