"""secsock.patch() and event loops: every datagram endpoint a program opens is governed.

Under ``patch()`` the default asyncio loop builds its endpoints from ``socket.socket`` (so they
are secure sockets); uvloop's endpoints are libuv sockets that never call ``socket.socket``, so
``install()`` routes ``uvloop.Loop.create_datagram_endpoint`` to
``secsock.asyncio.create_datagram_endpoint``; and secsock's own endpoints keep using real
sockets underneath (no double protection).
"""

from __future__ import annotations

import asyncio
import socket as stdlib_socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

from secsock._patch import installed, patch
from secsock._socket import SecureSocket
from secsock.asyncio import create_datagram_endpoint
from secsock.asyncio.datagram import DropInfo, SecureDatagramTransport
from secsock.errors import DropReason, NoSAError
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore
from tests.socket.helpers import add_esp, spdadd

A, B = "127.0.0.1", "127.0.0.2"
SPI_AB, SPI_BA = 0x4101, 0x4102
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def run(loop_name: str, coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(asyncio.wait_for(coro(), 30))  # a hung test fails instead of hanging


class Recorder(asyncio.DatagramProtocol):
    """Datagrams, drops and errors, in order; ``until(n)`` waits for n events of any kind."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self._changed = asyncio.Event()

    def _add(self, kind: str, what: object) -> None:
        self.events.append((kind, what))
        self._changed.set()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._add("data", data)

    def ipsec_dropped(self, reason: DropReason, info: DropInfo) -> None:
        self._add("drop", reason)

    def error_received(self, exc: Exception) -> None:
        self._add("error", exc)

    async def until(self, n: int) -> None:
        while len(self.events) < n:
            self._changed.clear()
            await self._changed.wait()


@pytest.fixture
def sniffer() -> Iterator[stdlib_socket.socket]:
    """A plain UDP socket on B: sees exactly the bytes that leave for it."""
    s = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    s.bind((B, 0))
    s.settimeout(10)  # a safety bound only: every test sends before it reads
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def governed() -> tuple[MemoryStore, SPD]:
    """An SPD that requires ESP between A and B both ways, and the SA pair for it."""
    store, spd = MemoryStore(), SPD()
    add_esp(store, SPI_AB, A, B)
    add_esp(store, SPI_BA, B, A)
    for src, dst in ((A, B), (B, A)):
        spdadd(spd, src, dst, "out ipsec esp/transport//require")
        spdadd(spd, src, dst, "in ipsec esp/transport//require")
    return store, spd


# --- secsock's own endpoint under patch() -------------------------------------------------


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_secsock_endpoints_under_patch_talk(loop_name: str) -> None:
    """Under patch() a secsock.asyncio endpoint must not sit on a secure socket: with socket
    policies only (empty SPD), the inner socket would strip the ESP and the endpoint would
    drop what it then sees as clear."""
    store = MemoryStore()
    add_esp(store, SPI_AB, A, B)
    add_esp(store, SPI_BA, B, A)
    policy = ["in ipsec esp/transport//require", "out ipsec esp/transport//require"]

    async def scenario() -> None:
        tb, pb = await create_datagram_endpoint(Recorder, local_addr=(B, 0), policy=policy,
                                                sadb=store, spd=SPD())
        ta, _pa = await create_datagram_endpoint(Recorder, local_addr=(A, 0), policy=policy,
                                                 sadb=store, spd=SPD())
        ta.sendto(b"hello", tb.get_extra_info("sockname"))
        await pb.until(1)
        assert pb.events == [("data", b"hello")]
        assert tb.engine.statistics().in_success == 1
        ta.close()
        tb.close()

    with patch(sadb=store, spd=SPD()):
        run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_secsock_endpoint_under_patch_protects_once(
    loop_name: str, governed: tuple[MemoryStore, SPD]
) -> None:
    """With an SPD that also governs patched sockets, ESP must not be wrapped in ESP again:
    a secure socket outside the patch receives exactly the payload."""
    store, spd = governed
    receiver = SecureSocket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM, sadb=store,
                            spd=spd)
    receiver.bind((B, 0))
    receiver.settimeout(10)  # a safety bound only: the datagram is sent before the read

    async def scenario() -> None:
        ta, pa = await create_datagram_endpoint(
            Recorder, local_addr=(A, 0), policy="out ipsec esp/transport//require",
            sadb=store, spd=spd)
        ta.sendto(b"hello", receiver.getsockname())
        assert pa.events == []
        ta.close()

    try:
        with patch(sadb=store, spd=spd):
            run(loop_name, scenario)
        assert receiver.recv(100) == b"hello"
        assert receiver.ipsec_stats().in_success == 1
    finally:
        receiver.close()


# --- uvloop under patch() (and the default loop, which must stay governed) ------------------


def _is_esp(data: bytes, spi: int) -> bool:
    return data[:4] == spi.to_bytes(4, "big") and b"SECRET" not in data


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_loop_endpoint_under_patch_sends_esp(
    loop_name: str, governed: tuple[MemoryStore, SPD], sniffer: stdlib_socket.socket
) -> None:
    """loop.create_datagram_endpoint of an unmodified program: what leaves is ESP."""
    store, spd = governed

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        tr, pr = await loop.create_datagram_endpoint(Recorder, local_addr=(A, 0))
        tr.sendto(b"SECRET via the loop", sniffer.getsockname())
        assert pr.events == []
        tr.close()

    with patch(sadb=store, spd=spd):
        run(loop_name, scenario)
    assert _is_esp(sniffer.recv(2000), SPI_AB)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_loop_endpoint_under_patch_without_sa_sends_nothing(
    loop_name: str, sniffer: stdlib_socket.socket
) -> None:
    """SPD 'require' and no SA: the datagram is refused (the default loop reports the error to
    error_received, the secsock endpoint raises it) and nothing leaves: the first datagram the
    sniffer sees is the one sent after the SA was added."""
    store, spd = MemoryStore(), SPD()
    spdadd(spd, A, B, "out ipsec esp/transport//require")

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        tr, pr = await loop.create_datagram_endpoint(Recorder, local_addr=(A, 0))
        try:
            tr.sendto(b"SECRET without an SA", sniffer.getsockname())
        except NoSAError:
            assert pr.events == []
        else:
            assert [kind for kind, _ in pr.events] == ["error"]
            assert isinstance(pr.events[0][1], NoSAError)
        add_esp(store, SPI_AB, A, B)
        tr.sendto(b"SECRET with an SA", sniffer.getsockname())
        tr.close()

    with patch(sadb=store, spd=spd):
        run(loop_name, scenario)
    first = sniffer.recv(2000)
    assert _is_esp(first, SPI_AB)
    assert int.from_bytes(first[4:8], "big") == 1  # the first sequence number: nothing before


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_loop_endpoints_under_patch_talk(
    loop_name: str, governed: tuple[MemoryStore, SPD]
) -> None:
    store, spd = governed

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        tb, pb = await loop.create_datagram_endpoint(Recorder, local_addr=(B, 0))
        ta, pa = await loop.create_datagram_endpoint(
            Recorder, remote_addr=tb.get_extra_info("sockname"), local_addr=(A, 0))
        ta.sendto(b"ping")
        await pb.until(1)
        assert pb.events == [("data", b"ping")]
        tb.sendto(b"pong", ta.get_extra_info("sockname"))
        await pa.until(1)
        assert pa.events == [("data", b"pong")]
        ta.close()
        tb.close()

    with patch(sadb=store, spd=spd):
        run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_loop_endpoint_on_a_patched_socket_sends_esp(
    loop_name: str, governed: tuple[MemoryStore, SPD], sniffer: stdlib_socket.socket
) -> None:
    """create_datagram_endpoint(sock=...) with a socket the program made under the patch: uvloop
    would hand the descriptor to libuv, which writes to it around IPsec."""
    store, spd = governed

    async def scenario() -> None:
        s = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
        assert isinstance(s, SecureSocket)
        s.bind((A, 0))
        loop = asyncio.get_running_loop()
        tr, pr = await loop.create_datagram_endpoint(Recorder, sock=s)
        tr.sendto(b"SECRET via sock=", sniffer.getsockname())
        assert pr.events == []
        tr.close()

    with patch(sadb=store, spd=spd):
        run(loop_name, scenario)
    assert _is_esp(sniffer.recv(2000), SPI_AB)


def test_uvloop_other_families_and_uninstall_are_uvloops_own() -> None:
    """AF_UNIX datagram endpoints are not secsock's; after the patch uvloop is itself again."""

    async def unix_pair() -> bytes:
        loop = asyncio.get_running_loop()
        a, b = stdlib_socket.socketpair(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_DGRAM)
        tr, pr = await loop.create_datagram_endpoint(Recorder, sock=a)
        assert not isinstance(tr, SecureDatagramTransport)
        b.send(b"local")
        await pr.until(1)
        tr.close()
        b.close()
        return pr.events[0][1]  # type: ignore[return-value]

    async def kind() -> type:
        loop = asyncio.get_running_loop()
        tr, _ = await loop.create_datagram_endpoint(Recorder, local_addr=(A, 0))
        tr.close()
        return type(tr)

    with patch():
        assert installed()
        assert uvloop.run(unix_pair()) == b"local"
        assert uvloop.run(kind()) is SecureDatagramTransport
    assert "create_datagram_endpoint" not in uvloop.Loop.__dict__
    assert uvloop.run(kind()) is not SecureDatagramTransport
