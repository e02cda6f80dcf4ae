"""Secure echo over asyncio: a datagram endpoint and a stream server, both under ESP.

    python examples/asyncio_echo.py [--uvloop] [--count N]

It loads one SA per direction between 127.0.0.1 (the client) and 127.0.0.2 (the server) with
``setkey``, then

* starts a secure datagram echo endpoint (``secsock.asyncio.create_datagram_endpoint``) whose
  policy requires ESP both ways, sends it ``--count`` datagrams and a forged one (dropped and
  reported to ``ipsec_dropped``, never echoed);
* starts a secure stream echo server (``secsock.asyncio.start_server``: ESP in RFC 8229 frames
  over TCP) and echoes ``--count`` lines through ``open_connection``.

It prints what came back and the drop counters, and exits 0 when everything matched.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from typing import Any

from secsock._setkey import setkey
from secsock.asyncio import DropInfo, create_datagram_endpoint, open_connection, start_server
from secsock.errors import DropReason
from secsock.sadb import MemoryStore

CLIENT, SERVER = "127.0.0.1", "127.0.0.2"
POLICY = ["in ipsec esp/transport//require", "out ipsec esp/transport//require"]


def load_sas() -> MemoryStore:
    """A private SADB with fresh keys, one SA per direction (never one key both ways)."""
    store = MemoryStore()
    k1, k2 = os.urandom(20).hex(), os.urandom(20).hex()
    setkey(
        f"add {CLIENT} {SERVER} esp 0x5001 -m transport -E aes-gcm-16 0x{k1};\n"
        f"add {SERVER} {CLIENT} esp 0x5002 -m transport -E aes-gcm-16 0x{k2};\n",
        sadb=store,
    )
    return store


class EchoServer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.dropped: list[tuple[DropReason, DropInfo]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    def ipsec_dropped(self, reason: DropReason, info: DropInfo) -> None:
        self.dropped.append((reason, info))
        print(f"server dropped a datagram from {info.addr}: {reason} ({info.detail})")


class Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.replies.put_nowait(data)


async def datagrams(store: MemoryStore, count: int) -> bool:
    server_t, server = await create_datagram_endpoint(
        EchoServer, local_addr=(SERVER, 0), policy=POLICY, sadb=store
    )
    server_addr = server_t.get_extra_info("sockname")
    client_t, client = await create_datagram_endpoint(
        Client, local_addr=(CLIENT, 0), remote_addr=server_addr, policy=POLICY, sadb=store
    )
    ok = True
    for i in range(count):
        message = f"datagram {i}".encode()
        client_t.sendto(message)
        reply = await asyncio.wait_for(client.replies.get(), 5)
        print(f"datagram echo: {reply.decode()}")
        ok &= reply == message
    # A forged ESP packet (right SPI, wrong ICV) from a plain socket: dropped, not echoed.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
        plain.bind((CLIENT, 0))
        plain.sendto((0x5001).to_bytes(4, "big") + (999).to_bytes(4, "big") + bytes(40),
                     server_addr)
    client_t.sendto(b"after the forgery")
    ok &= await asyncio.wait_for(client.replies.get(), 5) == b"after the forgery"
    stats = server_t.get_extra_info("ipsec").statistics()
    drops = {str(r): n for r, n in stats.drops.items() if n}
    print(f"datagram server: {stats.in_success} accepted, drops {drops}")
    ok &= [r for r, _ in server.dropped] == [DropReason.AUTH_FAILED]
    client_t.close()
    server_t.close()
    return ok


async def streams(store: MemoryStore, count: int) -> bool:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
        writer.close()

    server = await start_server(echo, SERVER, 0, policy=POLICY, sadb=store)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await open_connection(SERVER, port, policy=POLICY, sadb=store,
                                           local_addr=(CLIENT, 0))
    ok = True
    for i in range(count):
        writer.write(f"line {i}\n".encode())
        reply = await asyncio.wait_for(reader.readline(), 5)
        print(f"stream echo: {reply.decode().strip()}")
        ok &= reply == f"LINE {i}\n".encode()
    info: Any = writer.get_extra_info("ipsec")
    print(f"stream outbound SA: {info.outbound_sa}")
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return ok


async def run(count: int) -> bool:
    store = load_sas()
    return await datagrams(store, count) and await streams(store, count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args(argv)
    if args.uvloop:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            ok = runner.run(run(args.count))
    else:
        ok = asyncio.run(run(args.count))
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
