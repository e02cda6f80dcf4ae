"""A flood of droppable datagrams neither stalls a receive nor starves other tasks (finding 6).

Each test queues FLOOD clear datagrams (dropped under an inbound 'require') and then one genuine
ESP datagram in the receiver's kernel buffer before it starts reading. A ticker task records the
receiver's drop counter every time it gets to run. Bounded work per wakeup means the ticker runs
while the flood is being dropped (it sees a count strictly between 0 and FLOOD), and a cancel
scope cancelled by the ticker ends the receive before the flood is through. Nothing depends on
timing: the whole flood is queued before the first read.
"""

from __future__ import annotations

import asyncio
import socket as stdlib_socket
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import uvloop

from secsock._socket import SecureSocket
from secsock.anyio import IPsecAttribute, SecureUDPSocket, create_udp_socket
from secsock.asyncio import create_datagram_endpoint
from secsock.asyncio.datagram import DropInfo
from secsock.errors import DropReason
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore
from tests.aio.aio_helpers import direct_store

A, B = "127.0.0.1", "127.0.0.2"
IN_POLICY = "in ipsec esp/transport//require"
OUT_POLICY = "out ipsec esp/transport//require"
FLOOD = 200
GENUINE = b"the genuine datagram after the flood"
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def _flood(store: MemoryStore, port: int, fd_for_buffer: stdlib_socket.socket) -> None:
    """Queue FLOOD clear datagrams, then one ESP datagram, for B:port (all on loopback, so they
    are in the receiver's buffer when this returns)."""
    fd_for_buffer.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4 << 20)
    plain = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    sender = SecureSocket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM, sadb=store,
                          spd=SPD())
    try:
        plain.bind((A, 0))
        for i in range(FLOOD):
            plain.sendto(b"clear %d" % i, (B, port))
        sender.bind((A, 0))
        sender.set_ipsec_policy(OUT_POLICY)
        sender.sendto(GENUINE, (B, port))
    finally:
        plain.close()
        sender.close()


# --- anyio ----------------------------------------------------------------------------------


async def _anyio_receiver(store: MemoryStore) -> SecureUDPSocket:
    udp = await create_udp_socket(local_host=B, policy=IN_POLICY, sadb=store, spd=SPD())
    _flood(store, udp.secure_socket.getsockname()[1], udp.secure_socket)
    return udp


def _drops(udp: SecureUDPSocket) -> int:
    return udp.extra(IPsecAttribute.statistics).in_polvio


@pytest.mark.anyio
async def test_anyio_receive_lets_other_tasks_run_during_a_flood() -> None:
    store = direct_store(A, B)
    seen: list[int] = []
    async with await _anyio_receiver(store) as udp:
        async with anyio.create_task_group() as tg:

            async def ticker() -> None:
                while True:
                    seen.append(_drops(udp))
                    await anyio.lowlevel.checkpoint()

            tg.start_soon(ticker)
            with anyio.fail_after(60):  # a safety bound only
                data, _addr = await udp.receive()
            tg.cancel_scope.cancel()
        assert data == GENUINE
        assert _drops(udp) == FLOOD
    assert any(0 < n < FLOOD for n in seen), seen[:5]


@pytest.mark.anyio
async def test_anyio_receive_honours_its_cancel_scope_during_a_flood() -> None:
    store = direct_store(A, B)
    async with await _anyio_receiver(store) as udp:
        got: list[object] = []
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as scope:

                async def canceller() -> None:
                    while _drops(udp) == 0:
                        await anyio.lowlevel.checkpoint()
                    scope.cancel()

                tg.start_soon(canceller)
                got.append(await udp.receive())
        assert scope.cancelled_caught, got
        assert 0 < _drops(udp) < FLOOD
        # the socket is still usable: the rest of the flood is dropped, the genuine one comes
        with anyio.fail_after(60):  # a safety bound only
            data, _addr = await udp.receive()
        assert data == GENUINE
        assert _drops(udp) == FLOOD


# --- asyncio datagram endpoints -------------------------------------------------------------


class Recorder(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.drops = 0
        self.got = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.data.append(data)
        if not self.got.done():
            self.got.set_result(None)

    def ipsec_dropped(self, reason: DropReason, info: DropInfo) -> None:
        assert reason is DropReason.POLICY
        self.drops += 1


def run(loop_name: str, coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(asyncio.wait_for(coro(), 60))  # a hung test fails instead of hanging


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_endpoint_lets_other_tasks_run_during_a_flood(loop_name: str) -> None:
    store = direct_store(A, B)
    seen: list[int] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        # a paused reader while the flood is queued: the endpoint starts reading with all of it
        # in the buffer
        tr, pr = await create_datagram_endpoint(Recorder, local_addr=(B, 0), policy=IN_POLICY,
                                                sadb=store, spd=SPD())
        sock = tr._sock
        loop.remove_reader(sock.fileno())
        _flood(store, tr.get_extra_info("sockname")[1], sock)

        async def ticker() -> None:
            while True:
                seen.append(pr.drops)
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        tr.start()
        await pr.got
        task.cancel()
        assert pr.data == [GENUINE]
        assert pr.drops == FLOOD == tr.engine.statistics().in_polvio
        tr.close()

    run(loop_name, scenario)
    assert any(0 < n < FLOOD for n in seen), seen[:5]
