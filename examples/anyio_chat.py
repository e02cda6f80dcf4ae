"""A tiny chat over secure anyio byte streams (ESP in RFC 8229 frames), on asyncio or trio.

    python examples/anyio_chat.py [--backend asyncio|trio]

The server (127.0.0.2) relays every line a client sends to all the other clients. Two scripted
clients (both on 127.0.0.1, so both connections share one SA per direction) join, say hello
and leave; the transcript is printed, and each client's IPsec typed attributes (outbound SPI,
inbound SA) are shown. Exits 0 when every client
heard exactly the other one's lines.
"""

from __future__ import annotations

import argparse
import os
import sys

import anyio
from anyio.abc import SocketAttribute

from secsock._setkey import setkey
from secsock.anyio import IPsecAttribute, SecureByteStream, connect_tcp, create_tcp_listener
from secsock.sadb import MemoryStore

CLIENT, SERVER = "127.0.0.1", "127.0.0.2"
POLICY = "out ipsec esp/transport//require"  # "in" mirrors it


def load_sas() -> MemoryStore:
    store = MemoryStore()
    k1, k2 = os.urandom(36).hex(), os.urandom(36).hex()
    setkey(
        f"add {CLIENT} {SERVER} esp 0x6001 -m transport -E chacha20-poly1305 0x{k1};\n"
        f"add {SERVER} {CLIENT} esp 0x6002 -m transport -E chacha20-poly1305 0x{k2};\n",
        sadb=store,
    )
    return store


class ChatServer:
    def __init__(self, expected: int) -> None:
        self.clients: set[SecureByteStream] = set()
        self.expected = expected
        self.all_joined = anyio.Event()

    async def handle(self, stream: SecureByteStream) -> None:
        self.clients.add(stream)
        if len(self.clients) == self.expected:
            self.all_joined.set()
        buffer = b""
        try:
            while True:
                try:
                    buffer += await stream.receive()
                except anyio.EndOfStream:
                    break
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    for other in list(self.clients - {stream}):
                        await other.send(line + b"\n")
        finally:
            self.clients.discard(stream)
            await stream.aclose()


async def client(name: str, port: int, store: MemoryStore, lines: list[str],
                 everyone_joined: anyio.Event, expect: int) -> list[str]:
    stream = await connect_tcp(SERVER, port, policy=POLICY, sadb=store, local_host=CLIENT)
    heard: list[str] = []
    async with stream:
        await everyone_joined.wait()
        for line in lines:
            await stream.send(f"{name}: {line}\n".encode())
        buffer = b""
        while len(heard) < expect:
            buffer += await stream.receive()
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                heard.append(raw.decode())
        print(f"{name} used outbound SPI 0x{stream.extra(IPsecAttribute.spi):08x}, "
              f"inbound SA {stream.extra(IPsecAttribute.inbound_sa)}")
    return heard


async def run() -> bool:
    store = load_sas()
    scripts = {"alice": ["hello", "how are you?"], "bob": ["hi alice", "fine, thanks"]}
    server = ChatServer(len(scripts))
    listener = await create_tcp_listener(local_host=SERVER, policy=POLICY, sadb=store)
    port = listener.extra(SocketAttribute.local_port)
    heard: dict[str, list[str]] = {}

    async def run_client(name: str) -> None:
        others = sum(len(v) for k, v in scripts.items() if k != name)
        heard[name] = await client(name, port, store, scripts[name], server.all_joined, others)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        async with anyio.create_task_group() as clients:
            for name in scripts:
                clients.start_soon(run_client, name)
        tg.cancel_scope.cancel()
    ok = True
    for name, lines in heard.items():
        for line in lines:
            print(f"{name} heard  {line}")
        expected = sorted(f"{o}: {t}" for o, ts in scripts.items() if o != name for t in ts)
        ok &= sorted(lines) == expected
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)
    ok = anyio.run(run, backend=args.backend)
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
