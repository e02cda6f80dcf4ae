"""A hostile relay for the asyncio/anyio tests: a small UDP and TCP proxy on loopback.

The relay sits between two secure peers and, driven by a seeded :class:`random.Random` (or by an
explicit script), delivers, drops, duplicates, reorders and modifies what passes through it:
whole datagrams on the UDP side, whole RFC 8229 frames on the TCP side. Every decision is logged
so a test can compute exactly what the receiver must see and which drops it must count.

Modification flips one bit at or after offset 8 of the ESP packet (after SPI and sequence
number), so a modified packet is authentic-looking up to the ICV check and must be dropped as
``auth-failed``, never delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import cast

__all__ = ("Action", "Decision", "TcpFrameRelay", "UdpRelay", "scripted", "weighted")

_LEN = struct.Struct("!H")
PREFIX = b"IKETCP"


class Action(StrEnum):
    DELIVER = "deliver"
    DROP = "drop"
    DUPLICATE = "duplicate"
    REORDER = "reorder"  # hold this one, deliver it right after the next one
    MODIFY = "modify"
    TRUNCATE = "truncate"  # TCP only: send part of the frame, then close


#: direction "a2b" is client -> server (or initiator -> responder), "b2a" the way back.
Decision = Callable[[str, int, bytes], Action]


def weighted(rng: random.Random, weights: dict[Action, float]) -> Decision:
    """A decision function drawing an action per packet from ``weights`` with ``rng``."""
    actions = list(weights)
    w = [weights[a] for a in actions]

    def decide(direction: str, index: int, packet: bytes) -> Action:
        return rng.choices(actions, weights=w)[0]

    return decide


def scripted(script: dict[tuple[str, int], Action]) -> Decision:
    """A decision function: ``script[(direction, index)]``, else deliver."""

    def decide(direction: str, index: int, packet: bytes) -> Action:
        return script.get((direction, index), Action.DELIVER)

    return decide


def modify(packet: bytes, rng: random.Random, *, start: int = 8) -> bytes:
    """Flip one random bit at or after ``start`` (the ESP header's SPI and sequence are kept)."""
    if len(packet) <= start:
        raise ValueError(f"expected a packet longer than {start} bytes, found {len(packet)}")
    pos = rng.randrange(start, len(packet))
    out = bytearray(packet)
    out[pos] ^= 1 << rng.randrange(8)
    return bytes(out)


@dataclass
class RelayLog:
    """What the relay did, per direction and action."""

    entries: list[tuple[str, int, Action]] = field(default_factory=list)

    def count(self, direction: str, action: Action) -> int:
        return sum(1 for d, _, a in self.entries if d == direction and a is action)

    def first_tampering(self, direction: str) -> tuple[int, Action] | None:
        for d, i, a in self.entries:
            if d == direction and a is not Action.DELIVER:
                return i, a
        return None


# --------------------------------------------------------------------------------------------
# UDP


class _UdpSide(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._on = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython 3.11's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._on(data, addr)


def _word_sum(host: str) -> int:
    packed = ipaddress.ip_address(host).packed
    return sum(int.from_bytes(packed[i : i + 2], "big") for i in range(0, len(packed), 2))


class UdpRelay:
    """A checksum-neutral UDP NAT between endpoint A and endpoint B, on loopback.

    A transport-mode ESP datagram carries an inner UDP header whose destination port and
    pseudo-header checksum were computed by the sender, so a relay that is to be invisible to
    the inner layer must keep the ports and the ones' complement sum of the addresses:

    * A (``a``) sends to the relay's *front* socket ``(front_host, b_port)``;
    * the relay forwards from its *back* socket ``(back_host, a_port)`` to B (``b``);
    * B's replies to the back socket go out of the front socket to A.

    With ``a_host + front_host == back_host + b_host`` (as 16-bit word sums) every inner
    checksum stays valid, exactly like an RFC 6296 checksum-neutral translator. Each side then
    needs SAs for the addresses *it* sees (A: a_host<->front_host, B: back_host<->b_host).
    """

    def __init__(
        self,
        a: tuple[str, int],
        b: tuple[str, int],
        decide: Decision,
        *,
        rng: random.Random,
        front_host: str = "127.0.0.4",
        back_host: str = "127.0.0.3",
    ) -> None:
        if _word_sum(a[0]) + _word_sum(front_host) != _word_sum(back_host) + _word_sum(b[0]):
            raise ValueError(
                f"expected a checksum-neutral mapping, found {a[0]} + {front_host} != "
                f"{back_host} + {b[0]}"
            )
        self.a = a
        self.b = b
        self.front = (front_host, b[1])
        self.back = (back_host, a[1])
        self._decide = decide
        self._rng = rng
        self.log = RelayLog()
        self._front: _UdpSide | None = None
        self._back: _UdpSide | None = None
        self._held: dict[str, bytes | None] = {"a2b": None, "b2a": None}
        self._index: dict[str, int] = {"a2b": 0, "b2a": 0}
        self._cond = asyncio.Condition()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        _, self._front = await loop.create_datagram_endpoint(
            lambda: _UdpSide(self._from_a), local_addr=self.front
        )
        _, self._back = await loop.create_datagram_endpoint(
            lambda: _UdpSide(self._from_b), local_addr=self.back
        )

    def close(self) -> None:
        for side in (self._front, self._back):
            if side is not None and side.transport is not None:
                side.transport.close()

    def _out(self, direction: str) -> tuple[asyncio.DatagramTransport, tuple[str, int]]:
        side = self._back if direction == "a2b" else self._front
        assert side is not None
        assert side.transport is not None
        return side.transport, (self.b if direction == "a2b" else self.a)

    def processed(self, direction: str) -> int:
        return self._index[direction]

    async def wait_processed(self, direction: str, n: int) -> None:
        """Wait until ``n`` datagrams went through in ``direction``."""
        async with self._cond:
            await self._cond.wait_for(lambda: self._index[direction] >= n)

    def _from_a(self, data: bytes, addr: tuple[str, int]) -> None:
        if tuple(addr[:2]) == self.a:
            self._relay("a2b", data)

    def _from_b(self, data: bytes, addr: tuple[str, int]) -> None:
        if tuple(addr[:2]) == self.b:
            self._relay("b2a", data)

    def _relay(self, direction: str, data: bytes) -> None:
        out, dest = self._out(direction)
        index = self._index[direction]
        action = self._decide(direction, index, data)
        if action is Action.TRUNCATE:
            action = Action.DROP
        if action is Action.MODIFY and len(data) <= 8:
            action = Action.DELIVER
        self.log.entries.append((direction, index, action))
        held = self._held[direction]
        self._held[direction] = None
        if action is Action.DELIVER:
            out.sendto(data, dest)
        elif action is Action.DUPLICATE:
            out.sendto(data, dest)
            out.sendto(data, dest)
        elif action is Action.MODIFY:
            out.sendto(modify(data, self._rng), dest)
        elif action is Action.REORDER:
            self._held[direction] = data
        if held is not None:
            out.sendto(held, dest)
        self._index[direction] = index + 1
        asyncio.get_running_loop().create_task(self._notify())

    def flush(self) -> None:
        """Deliver anything still held back for reordering."""
        for direction, held in self._held.items():
            if held is not None:
                self._held[direction] = None
                out, dest = self._out(direction)
                out.sendto(held, dest)

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()


# --------------------------------------------------------------------------------------------
# TCP


class TcpFrameRelay:
    """A TCP proxy that parses RFC 8229 frames and tampers with whole frames.

    It listens on ``host`` and connects to ``target`` from ``back_host``, so each side sees
    other addresses (use :func:`tests.aio.aio_helpers.relay_stores`). An optional "IKETCP" stream prefix at the start of the a→b direction is passed through
    untouched. Frames are parsed with an independent, minimal decoder (2-octet big-endian
    length that counts itself).
    """

    def __init__(
        self,
        target: tuple[str, int],
        decide: Decision,
        *,
        rng: random.Random,
        host: str = "127.0.0.4",
        back_host: str = "127.0.0.3",
    ) -> None:
        self.target = target
        self.host = host
        self.back_host = back_host
        self._decide = decide
        self._rng = rng
        self.log = RelayLog()
        self.frames: dict[str, list[bytes]] = {"a2b": [], "b2a": []}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.address: tuple[str, int] = ("", 0)

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.address = self._server.sockets[0].getsockname()[:2]
        return self.address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in self._writers:
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await t
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter) -> None:
        b_reader, b_writer = await asyncio.open_connection(
            *self.target, local_addr=(self.back_host, 0)
        )
        self._writers += [a_writer, b_writer]
        for direction, r, w in (("a2b", a_reader, b_writer), ("b2a", b_reader, a_writer)):
            task = asyncio.get_running_loop().create_task(self._pump(direction, r, w))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, direction: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            if direction == "a2b":
                head = await reader.readexactly(len(PREFIX))
                if head == PREFIX:
                    writer.write(head)
                    buf = b""
                else:
                    buf = head
            else:
                buf = b""
            index = 0
            held: bytes | None = None
            while True:
                while len(buf) < 2:
                    more = await reader.read(65536)
                    if not more:
                        raise EOFError
                    buf += more
                (length,) = _LEN.unpack_from(buf)
                while len(buf) < length:
                    more = await reader.read(65536)
                    if not more:
                        raise EOFError
                    buf += more
                frame, buf = buf[:length], buf[length:]
                self.frames[direction].append(frame)
                action = self._decide(direction, index, frame)
                self.log.entries.append((direction, index, action))
                index += 1
                if action is Action.DELIVER:
                    writer.write(frame)
                elif action is Action.DUPLICATE:
                    writer.write(frame + frame)
                elif action is Action.MODIFY:
                    writer.write(frame[:2] + modify(frame[2:], self._rng))
                elif action is Action.REORDER:
                    if held is None:
                        held = frame
                        continue
                    writer.write(frame)
                elif action is Action.TRUNCATE:
                    cut = self._rng.randrange(1, length)
                    writer.write(frame[:cut])
                    await writer.drain()
                    writer.write_eof()
                    return
                if held is not None:
                    writer.write(held)
                    held = None
                await writer.drain()
        except (EOFError, asyncio.IncompleteReadError):
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
        except OSError:
            writer.transport.abort()
