"""secsock.asyncio streams: RFC 8229 ESP-in-TCP under asyncio's own StreamReader/Writer."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from secsock import _stats
from secsock.asyncio import IPsecInfo, open_connection, start_server
from secsock.asyncio._sockview import SocketView
from secsock.errors import DropReason, IPsecStreamError, NoSAError, PolicyError
from secsock.sadb.store import MemoryStore
from tests.aio.aio_helpers import GCM, SUITES, Suite, direct_store, relay_stores
from tests.aio.aio_relay import Action, TcpFrameRelay, scripted, weighted

POLICY = "out ipsec esp/transport//require"
A, B = "127.0.0.1", "127.0.0.2"
FRONT, BACK = "127.0.0.4", "127.0.0.3"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    except (IPsecStreamError, ConnectionError):
        pass
    finally:
        writer.close()


class Server:
    """A secure server whose connections' readers/writers the test can reach."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.accepted.put((reader, writer))


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while data := await reader.read(1 << 20):
        out += data
    return bytes(out)


async def _read_until_error(reader: asyncio.StreamReader) -> tuple[bytes, BaseException | None]:
    out = bytearray()
    try:
        while data := await reader.read(1 << 20):
            out += data
    except (IPsecStreamError, ConnectionError) as exc:
        return bytes(out), exc
    return bytes(out), None


@pytest_asyncio.fixture
async def echo_server() -> AsyncIterator[tuple[MemoryStore, int]]:
    store = direct_store(A, B)
    server = await start_server(_echo, B, 0, policy=POLICY, sadb=store)
    try:
        yield store, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
@pytest.mark.parametrize("send_prefix", [True, False])
async def test_echo_round_trip(suite: Suite, send_prefix: bool) -> None:
    store = direct_store(A, B, suite=suite)
    server = await start_server(_echo, B, 0, policy=POLICY, sadb=store)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await open_connection(
            B, port, policy=POLICY, sadb=store, local_addr=(A, 0), send_prefix=send_prefix
        )
        rng = random.Random(7)
        chunks = [rng.randbytes(rng.choice([1, 5, 1000, 70000, 140000])) for _ in range(12)]
        for c in chunks:
            writer.write(c)
        await writer.drain()
        writer.write_eof()
        assert await _read_all(reader) == b"".join(chunks)
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_ipv6_round_trip() -> None:
    store = direct_store("::1", "::1")
    server = await start_server(_echo, "::1", 0, policy=POLICY, sadb=store)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await open_connection("::1", port, policy=POLICY, sadb=store)
        writer.write(b"over ipv6")
        writer.write_eof()
        assert await _read_all(reader) == b"over ipv6"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_server_writes_first_and_half_close(echo_server: tuple[MemoryStore, int]) -> None:
    # The server side speaks first here; the client half-closes and still reads.
    store, _ = echo_server
    srv = Server()
    server = await start_server(srv.handler, B, 0, policy=POLICY, sadb=store)
    port = server.sockets[0].getsockname()[1]
    try:
        c_reader, c_writer = await open_connection(B, port, policy=POLICY, sadb=store,
                                                   local_addr=(A, 0))
        s_reader, s_writer = await srv.accepted.get()
        s_writer.write(b"hello client")
        await s_writer.drain()
        assert await c_reader.readexactly(12) == b"hello client"
        c_writer.write(b"bye")
        c_writer.write_eof()
        assert await _read_all(s_reader) == b"bye"  # authenticated end of stream
        s_writer.write(b"after your eof")
        s_writer.close()
        assert await _read_all(c_reader) == b"after your eof"
        c_writer.close()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_hundred_megabytes_arrive_intact() -> None:
    store = direct_store(A, B)
    srv = Server()
    server = await start_server(srv.handler, B, 0, policy=POLICY, sadb=store)
    sport = server.sockets[0].getsockname()[1]
    try:
        _, writer = await open_connection(B, sport, policy=POLICY, sadb=store,
                                          local_addr=(A, 0))
        s_reader, s_writer = await srv.accepted.get()
        block = random.Random(1).randbytes(1 << 20)
        total = 100 << 20
        sent = hashlib.sha256()

        async def send() -> None:
            for i in range(total // len(block)):
                piece = block[i % 7 :] + block[: i % 7]  # every MiB differs
                sent.update(piece)
                writer.write(piece)
                await writer.drain()
            writer.write_eof()

        got = hashlib.sha256()
        n = 0

        async def receive() -> None:
            nonlocal n
            while data := await s_reader.read(1 << 20):
                got.update(data)
                n += len(data)

        await asyncio.gather(send(), receive())
        assert n == total
        assert got.digest() == sent.digest()
        info = writer.get_extra_info("ipsec")
        assert isinstance(info, IPsecInfo)
        # 64 KiB frames: at least 1600 ESP packets went out, all counted.
        assert info.statistics().out_success >= total // 65536
        writer.close()
        s_writer.close()
    finally:
        server.close()
        await server.wait_closed()


# --- what the application sees --------------------------------------------------------------


@pytest.mark.asyncio
async def test_extra_info_restricted_socket_and_ipsec(echo_server: tuple[MemoryStore, int]) -> None:
    store, port = echo_server
    reader, writer = await open_connection(B, port, policy=POLICY, sadb=store,
                                           local_addr=(A, 0))
    sock = writer.get_extra_info("socket")
    assert isinstance(sock, SocketView)
    for name in ("send", "sendall", "sendto", "fileno", "dup", "close", "shutdown", "detach"):
        assert not hasattr(sock, name), name
    assert sock.getpeername() == (B, port)
    assert writer.get_extra_info("peername") == (B, port)
    info = writer.get_extra_info("ipsec")
    assert isinstance(info, IPsecInfo)
    assert info.policies == ("in ipsec esp/transport//require", POLICY)
    spi_before = info.spi
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    out_sa, in_sa = info.outbound_sa, info.inbound_sa
    assert spi_before is None
    assert out_sa is not None
    assert out_sa.spi == 0x1001
    assert in_sa is not None
    assert in_sa.spi == 0x1002
    text = repr(info) + str(out_sa)
    assert GCM.enc_key.hex() not in text
    assert "0x00001001" in text or "spi=4097" in text
    writer.close()


@pytest.mark.asyncio
async def test_empty_write_sends_nothing(echo_server: tuple[MemoryStore, int]) -> None:
    store, port = echo_server
    reader, writer = await open_connection(B, port, policy=POLICY, sadb=store,
                                           local_addr=(A, 0))
    info = writer.get_extra_info("ipsec")
    writer.write(b"")
    writer.writelines([b"", b""])
    writer.write(b"z")
    assert await reader.readexactly(1) == b"z"
    assert info.statistics().out_success == 1
    writer.close()


# --- local errors ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_no_outbound_sa_refuses_connection_and_acquires() -> None:
    store = MemoryStore()  # empty
    server = await start_server(_echo, B, 0, policy=POLICY, sadb=store)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(NoSAError) as info:
            await open_connection(B, port, policy=POLICY, sadb=store, local_addr=(A, 0))
        assert info.value.errno == errno.ENOENT
        assert "127.0.0.1->127.0.0.2" in str(info.value)
        assert any(type(e).__name__ == "Acquire" for e in store.events())
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("policy", "err"),
    [
        ("out bypass", errno.EOPNOTSUPP),
        ("out ipsec ah/transport//require", errno.EPROTONOSUPPORT),
        ("out ipsec esp/tunnel/10.0.0.1-10.0.0.2/require", errno.EOPNOTSUPP),
        ("out ipsec esp/transport//require ah/transport//require", errno.EPROTONOSUPPORT),
    ],
)
async def test_policies_a_stream_cannot_carry(policy: str, err: int) -> None:
    with pytest.raises(OSError) as info:
        await open_connection(B, 9, policy=policy, sadb=MemoryStore())
    assert info.value.errno == err


@pytest.mark.asyncio
async def test_bad_policy_text_is_a_policy_error() -> None:
    with pytest.raises(PolicyError):
        await open_connection(B, 9, policy="out ipsec esp/transprot//require", sadb=MemoryStore())
    with pytest.raises(ValueError, match="one policy per direction"):
        await open_connection(B, 9, policy=[POLICY, POLICY], sadb=MemoryStore())


@pytest.mark.asyncio
async def test_write_after_peer_aborted_raises(echo_server: tuple[MemoryStore, int]) -> None:
    store, _ = echo_server
    srv = Server()
    server = await start_server(srv.handler, B, 0, policy=POLICY, sadb=store)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await open_connection(B, port, policy=POLICY, sadb=store,
                                               local_addr=(A, 0))
        _, s_writer = await srv.accepted.get()
        s_writer.transport.abort()  # no authenticated end of stream
        data, exc = await _read_until_error(reader)
        assert data == b""
        assert isinstance(exc, IPsecStreamError)
        assert exc.reason is DropReason.MALFORMED
        assert "truncated" in str(exc)
        with pytest.raises(ConnectionError):
            writer.write(b"too late")
        with pytest.raises(ConnectionError):
            await writer.drain()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_require_prefix_refuses_a_stream_without_it() -> None:
    store = direct_store(A, B)
    srv = Server()
    server = await start_server(srv.handler, B, 0, policy=POLICY, sadb=store,
                                require_prefix=True)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await open_connection(B, port, policy=POLICY, sadb=store,
                                          local_addr=(A, 0), send_prefix=False)
        writer.write(b"no prefix")
        s_reader, _ = await srv.accepted.get()
        data, exc = await _read_until_error(s_reader)
        assert data == b""
        assert isinstance(exc, IPsecStreamError)
        assert exc.reason is DropReason.MALFORMED
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


# --- flow control and cancellation ----------------------------------------------------------


@pytest.mark.asyncio
async def test_drain_waits_for_the_reader(echo_server: tuple[MemoryStore, int]) -> None:
    store, _ = echo_server
    srv = Server()
    server = await start_server(srv.handler, B, 0, policy=POLICY, sadb=store, limit=1 << 16)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await open_connection(B, port, policy=POLICY, sadb=store,
                                          local_addr=(A, 0))
        s_reader, s_writer = await srv.accepted.get()
        writer.transport.set_write_buffer_limits(high=1 << 16)
        chunk = bytes(1 << 20)
        sent = 0
        # Nobody reads on the server: the kernel buffers fill, then ours.
        while writer.transport.get_write_buffer_size() <= (1 << 16):
            writer.write(chunk)
            sent += len(chunk)
            for _ in range(3):
                await asyncio.sleep(0)
        drain = asyncio.ensure_future(writer.drain())
        for _ in range(50):
            await asyncio.sleep(0)
        assert not drain.done()  # flow control holds the writer back
        got = 0
        while got < sent:
            got += len(await s_reader.read(1 << 20))
        await drain
        assert got == sent
        writer.close()
        s_writer.close()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_cancelled_writer_leaves_whole_frames(echo_server: tuple[MemoryStore, int]) -> None:
    store, _ = echo_server
    srv = Server()
    server = await start_server(srv.handler, B, 0, policy=POLICY, sadb=store)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await open_connection(B, port, policy=POLICY, sadb=store,
                                          local_addr=(A, 0))
        s_reader, s_writer = await srv.accepted.get()
        writer.transport.set_write_buffer_limits(high=1 << 14)
        accepted = bytearray()
        started = asyncio.Event()

        async def writer_task() -> None:
            rng = random.Random(3)
            while True:
                piece = rng.randbytes(200_000)
                writer.write(piece)  # whole frames or nothing
                accepted.extend(piece)
                started.set()
                await writer.drain()

        task = asyncio.ensure_future(writer_task())
        await started.wait()
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        writer.write(b"after the cancel")
        accepted.extend(b"after the cancel")
        writer.write_eof()
        assert await _read_all(s_reader) == bytes(accepted)
        writer.close()
        s_writer.close()
    finally:
        server.close()
        await server.wait_closed()


# --- a hostile relay ------------------------------------------------------------------------


async def _relayed(
    decide: Callable[[str, int, bytes], Action], client_sends: bool, *, seed: int = 0,
    n_chunks: int = 40,
) -> tuple[bytes, bytes, BaseException | None, TcpFrameRelay]:
    """Send ``n_chunks`` through a relay; returns (sent, received, receiver's error, relay)."""
    sa, sb = relay_stores(A, B, FRONT, BACK)
    srv = Server()
    server = await start_server(srv.handler, B, 0, policy=POLICY, sadb=sb)
    port = server.sockets[0].getsockname()[1]
    relay = TcpFrameRelay((B, port), decide, rng=random.Random(seed), host=FRONT,
                          back_host=BACK)
    rhost, rport = await relay.start()
    try:
        c_reader, c_writer = await open_connection(rhost, rport, policy=POLICY, sadb=sa,
                                                   local_addr=(A, 0))
        s_reader, s_writer = await srv.accepted.get()
        sender, receiver = (c_writer, s_reader) if client_sends else (s_writer, c_reader)
        rng = random.Random(seed)
        chunks = [rng.randbytes(rng.randrange(1, 3000)) for _ in range(n_chunks)]

        async def send() -> None:
            try:
                for c in chunks:
                    sender.write(c)
                    await sender.drain()
                sender.write_eof()
            except ConnectionError:
                pass

        sending = asyncio.ensure_future(send())
        received, error = await _read_until_error(receiver)
        await sending
        c_writer.close()
        s_writer.close()
        return b"".join(chunks), received, error, relay
    finally:
        await relay.close()
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
@pytest.mark.parametrize("client_sends", [True, False], ids=["client-sends", "server-sends"])
@pytest.mark.parametrize(
    ("action", "reason"),
    [
        (Action.MODIFY, DropReason.AUTH_FAILED),
        (Action.DUPLICATE, DropReason.REPLAY),
        (Action.REORDER, DropReason.REPLAY),
        (Action.DROP, DropReason.REPLAY),
        (Action.TRUNCATE, DropReason.MALFORMED),
    ],
)
async def test_tampered_frame_aborts_with_reason(
    action: Action, reason: DropReason, client_sends: bool
) -> None:
    direction = "a2b" if client_sends else "b2a"
    before = _stats.stats()
    sent, received, error, relay = await _relayed(
        scripted({(direction, 5): action}), client_sends
    )
    assert isinstance(error, IPsecStreamError)
    assert error.reason is reason
    assert isinstance(error, ConnectionError)
    # Only authentic bytes, in order, and nothing from the tampered frame onwards.
    assert sent.startswith(received)
    frames = relay.frames[direction]
    assert len(received) < len(sent)
    assert relay.log.first_tampering(direction) == (5, action)
    assert len(frames) >= 6
    assert (_stats.stats() - before).drops[reason] >= 1


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", range(6))
async def test_random_relay_never_delivers_bad_bytes(seed: int) -> None:
    rng = random.Random(seed)
    decide = weighted(
        rng,
        {Action.DELIVER: 0.9, Action.DROP: 0.02, Action.DUPLICATE: 0.02,
         Action.REORDER: 0.02, Action.MODIFY: 0.04},
    )
    sent, received, error, relay = await _relayed(decide, client_sends=seed % 2 == 0,
                                                  seed=seed, n_chunks=60)
    direction = "a2b" if seed % 2 == 0 else "b2a"
    first = relay.log.first_tampering(direction)
    assert sent.startswith(received)
    if first is None:
        assert error is None
        assert received == sent
    else:
        expected = {
            Action.DROP: DropReason.REPLAY,
            Action.DUPLICATE: DropReason.REPLAY,
            Action.REORDER: DropReason.REPLAY,
            Action.MODIFY: DropReason.AUTH_FAILED,
        }[first[1]]
        assert isinstance(error, IPsecStreamError)
        assert error.reason is expected


# --- uvloop ---------------------------------------------------------------------------------


def test_streams_on_uvloop() -> None:
    import uvloop

    async def scenario() -> None:
        store = direct_store(A, B)
        server = await start_server(_echo, B, 0, policy=POLICY, sadb=store)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await open_connection(B, port, policy=POLICY, sadb=store,
                                               local_addr=(A, 0))
        assert isinstance(writer.get_extra_info("socket"), SocketView)
        data = random.Random(11).randbytes(300_000)
        writer.write(data)
        writer.write_eof()
        assert await _read_all(reader) == data
        writer.close()
        server.close()
        await server.wait_closed()
        sent, received, error, _ = await _relayed(scripted({("a2b", 3): Action.MODIFY}), True)
        assert isinstance(error, IPsecStreamError)
        assert error.reason is DropReason.AUTH_FAILED
        assert sent.startswith(received)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(scenario(), 30))
