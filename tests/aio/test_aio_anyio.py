"""secsock.anyio on both backends: secure UDP sockets and secure byte streams."""

from __future__ import annotations

import errno
import random
import socket as stdlib_socket

import anyio
import pytest
from anyio.abc import ConnectedUDPSocket, SocketAttribute, UDPSocket

from secsock.anyio import (
    IPsecAttribute,
    IPsecStreamBroken,
    SecureByteStream,
    connect_tcp,
    create_connected_udp_socket,
    create_tcp_listener,
    create_udp_socket,
)
from secsock.errors import DropReason, IPsecStreamError, NoSAError
from secsock.sadb.store import MemoryStore
from tests.aio.aio_helpers import GCM, direct_store

pytestmark = pytest.mark.anyio

POLICY = "out ipsec esp/transport//require"
IN_POLICY = "in ipsec esp/transport//require"
A, B = "127.0.0.1", "127.0.0.2"


# --- UDP ------------------------------------------------------------------------------------


async def test_udp_round_trip_both_directions() -> None:
    store = direct_store(A, B)
    async with (
        await create_udp_socket(local_host=B, policy=[POLICY, IN_POLICY], sadb=store) as b,
        await create_udp_socket(local_host=A, policy=[POLICY, IN_POLICY], sadb=store) as a,
    ):
        assert isinstance(a, UDPSocket)
        b_port = b.extra(SocketAttribute.local_port)
        a_port = a.extra(SocketAttribute.local_port)
        await a.sendto(b"hello", B, b_port)
        data, addr = await b.receive()
        assert (data, addr) == (b"hello", (A, a_port))
        await b.send((b"back", addr))
        assert await a.receive() == (b"back", (B, b_port))
        stats = b.extra(IPsecAttribute.statistics)
        assert stats.in_success == 1
        assert stats.out_success == 1
        assert b.extra(IPsecAttribute.policy) == (IN_POLICY, POLICY)


async def test_connected_udp_only_hears_its_peer() -> None:
    store = direct_store(A, B)
    async with await create_udp_socket(local_host=B, policy=[POLICY, IN_POLICY],
                                       sadb=store) as b:
        b_port = b.extra(SocketAttribute.local_port)
        async with await create_connected_udp_socket(
            B, b_port, local_host=A, policy=[POLICY, IN_POLICY], sadb=store
        ) as a:
            assert isinstance(a, ConnectedUDPSocket)
            assert a.extra(SocketAttribute.remote_address) == (B, b_port)
            await a.send(b"")  # an empty datagram is a datagram
            await a.send(b"one")
            assert [await b.receive() for _ in range(2)] == [
                (b"", (A, a.extra(SocketAttribute.local_port))),
                (b"one", (A, a.extra(SocketAttribute.local_port))),
            ]
            async with await create_udp_socket(local_host=B, policy=POLICY,
                                               sadb=store) as other:
                await other.sendto(b"not the peer", A, a.extra(SocketAttribute.local_port))
                await b.sendto(b"from the peer", A, a.extra(SocketAttribute.local_port))
                assert await a.receive() == b"from the peer"


async def test_udp_never_offers_the_raw_socket() -> None:
    async with await create_udp_socket(local_host=A, policy=POLICY,
                                       sadb=MemoryStore()) as a:
        with pytest.raises(anyio.TypedAttributeLookupError):
            a.extra(SocketAttribute.raw_socket)
        assert a.extra(SocketAttribute.family) == stdlib_socket.AF_INET


async def test_udp_send_without_sa_raises_no_sa() -> None:
    async with await create_udp_socket(local_host=A, policy=POLICY,
                                       sadb=MemoryStore()) as a:
        with pytest.raises(NoSAError) as info:
            await a.sendto(b"x", B, 9)
        assert info.value.errno == errno.ENOENT


async def test_udp_forged_datagram_is_dropped_and_counted() -> None:
    store = direct_store(A, B)
    async with (
        await create_udp_socket(local_host=B, policy=[POLICY, IN_POLICY], sadb=store) as b,
        await create_udp_socket(local_host=A, policy=POLICY, sadb=store) as a,
        await anyio.create_udp_socket(local_host=A) as raw,
    ):
        b_port = b.extra(SocketAttribute.local_port)
        # A forged ESP packet: a known SPI and sequence number, garbage after.
        forged = (0x1001).to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes(40)
        await raw.sendto(forged, B, b_port)
        await a.sendto(b"genuine", B, b_port)
        data, _ = await b.receive()
        assert data == b"genuine"
        stats = b.extra(IPsecAttribute.statistics)
        assert stats.drops[DropReason.AUTH_FAILED] == 1
        assert stats.in_success == 1


async def test_udp_receive_is_cancellable_and_close_wakes_it() -> None:
    async with await create_udp_socket(local_host=A, policy=POLICY,
                                       sadb=MemoryStore()) as a:
        with anyio.move_on_after(0) as scope:
            await a.receive()
        assert scope.cancelled_caught
    with pytest.raises(anyio.ClosedResourceError):
        await a.receive()


# --- streams --------------------------------------------------------------------------------


async def _echo(stream: SecureByteStream) -> None:
    async with stream:
        try:
            while True:
                await stream.send(await stream.receive())
        except anyio.EndOfStream:
            await stream.send_eof()
        except (anyio.BrokenResourceError, IPsecStreamError):
            pass


async def test_stream_echo_both_ways() -> None:
    store = direct_store(A, B)
    listener = await create_tcp_listener(local_host=B, policy=POLICY, sadb=store)
    port = listener.extra(SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, _echo)
        stream = await connect_tcp(B, port, policy=POLICY, sadb=store, local_host=A)
        async with stream:
            assert stream.extra(SocketAttribute.remote_address) == (B, port)
            rng = random.Random(5)
            chunks = [rng.randbytes(rng.choice([1, 700, 70000])) for _ in range(8)]
            received = bytearray()

            async def reader() -> None:
                try:
                    while True:
                        received.extend(await stream.receive())
                except anyio.EndOfStream:
                    pass

            async with anyio.create_task_group() as inner:
                inner.start_soon(reader)
                for c in chunks:
                    await stream.send(c)
                await stream.send_eof()
            assert bytes(received) == b"".join(chunks)
            assert stream.extra(IPsecAttribute.spi) == 0x1001
            sa = stream.extra(IPsecAttribute.sa)
            assert sa is not None
            assert str(sa.dst) == B
            in_sa = stream.extra(IPsecAttribute.inbound_sa)
            assert in_sa is not None
            assert in_sa.spi == 0x1002
            assert stream.extra(IPsecAttribute.policy) == (IN_POLICY, POLICY)
            with pytest.raises(anyio.TypedAttributeLookupError):
                stream.extra(SocketAttribute.raw_socket)
            assert GCM.enc_key.hex() not in repr(sa)
        tg.cancel_scope.cancel()


async def test_stream_connect_without_sa_raises() -> None:
    store = MemoryStore()
    listener = await create_tcp_listener(local_host=B, policy=POLICY, sadb=store)
    async with listener:
        with pytest.raises(NoSAError):
            await connect_tcp(B, listener.extra(SocketAttribute.local_port), policy=POLICY,
                              sadb=store, local_host=A)


async def test_stream_forged_frame_breaks_with_reason() -> None:
    store = direct_store(A, B)
    listener = await create_tcp_listener(local_host=B, policy=POLICY, sadb=store)
    port = listener.extra(SocketAttribute.local_port)
    async with listener:
        client = await connect_tcp(B, port, policy=POLICY, sadb=store, local_host=A)
        server = await listener.accept()
        await client.send(b"first")
        assert await server.receive() == b"first"
        # Forge a frame on the TCP stream underneath: a valid length, a known SPI, garbage.
        forged = (0x1001).to_bytes(4, "big") + (99).to_bytes(4, "big") + bytes(60)
        await client.transport_stream.send((len(forged) + 2).to_bytes(2, "big") + forged)
        with pytest.raises(IPsecStreamBroken) as info:
            await server.receive()
        assert isinstance(info.value, anyio.BrokenResourceError)
        assert isinstance(info.value, ConnectionError)
        assert info.value.reason is DropReason.AUTH_FAILED
        with pytest.raises(IPsecStreamBroken):
            await server.receive()
        assert server.extra(IPsecAttribute.statistics).drops[DropReason.AUTH_FAILED] == 1
        await client.aclose()
        await server.aclose()


async def test_stream_truncated_by_peer_is_an_error_not_eof() -> None:
    store = direct_store(A, B)
    listener = await create_tcp_listener(local_host=B, policy=POLICY, sadb=store)
    async with listener:
        client = await connect_tcp(B, listener.extra(SocketAttribute.local_port), policy=POLICY,
                                   sadb=store, local_host=A)
        server = await listener.accept()
        await client.send(b"data")
        await client.transport_stream.aclose()  # TCP closes, no authenticated end of stream
        assert await server.receive() == b"data"
        with pytest.raises(IPsecStreamBroken) as info:
            await server.receive()
        assert info.value.reason is DropReason.MALFORMED
        await server.aclose()


async def test_cancelled_sender_never_leaves_half_a_frame() -> None:
    store = direct_store(A, B)
    listener = await create_tcp_listener(local_host=B, policy=POLICY, sadb=store)
    async with listener:
        client = await connect_tcp(B, listener.extra(SocketAttribute.local_port), policy=POLICY,
                                   sadb=store, local_host=A)
        server = await listener.accept()
        rng = random.Random(9)
        sent = bytearray()
        async with anyio.create_task_group() as tg:

            async def sender() -> None:
                while True:
                    piece = rng.randbytes(300_000)
                    await client.send(piece)
                    sent.extend(piece)

            tg.start_soon(sender)
            # The server reads a little, so the sender is busy inside send(), then cancel it.
            got = bytearray(await server.receive(1000))
            tg.cancel_scope.cancel()
        await client.send(b"the end")
        sent.extend(b"the end")
        await client.send_eof()
        try:
            while True:
                got.extend(await server.receive())
        except anyio.EndOfStream:
            pass
        # Whatever send() was doing when cancelled completed whole (or never began): every
        # frame on the wire is whole, so the stream still authenticates to the last byte.
        assert bytes(got) == bytes(sent)
        await client.aclose()
        await server.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_anyio_stream_talks_to_an_asyncio_server() -> None:
    import asyncio

    from secsock.asyncio import start_server

    store = direct_store(A, B)

    async def upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write((await reader.read()).upper())
        writer.close()

    server = await start_server(upper, B, 0, policy=POLICY, sadb=store)
    port = server.sockets[0].getsockname()[1]
    try:
        async with await connect_tcp(B, port, policy=POLICY, sadb=store, local_host=A) as s:
            await s.send(b"same wire format")
            await s.send_eof()
            got = b""
            try:
                while True:
                    got += await s.receive()
            except anyio.EndOfStream:
                pass
            assert got == b"SAME WIRE FORMAT"
    finally:
        server.close()
        await server.wait_closed()
