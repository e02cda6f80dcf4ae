"""How secure streams cut writes into RFC 8229 frames and hand them to TCP.

The throughput work (docs/asyncio.md, "Performance") changed how frames are built; these tests
pin down what must not change with it: every frame fits its 16-bit length whatever padding the
SA and the esp_randpad sysctl ask for, a write becomes the fewest frames of equal size, and a
write reaches the TCP transport as whole frames in one call.
"""

from __future__ import annotations

import asyncio
import random
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secsock import sysctl
from secsock.asyncio import open_connection, start_server
from secsock.asyncio._channel import PREFIX, SecureStreamConnection
from secsock.asyncio._protector import StreamSecurity, stream_policy
from secsock.errors import DropReason
from secsock.policy.model import Policy
from secsock.sadb.store import MemoryStore
from tests.aio.aio_helpers import SUITES, Suite, direct_store

POLICY = "out ipsec esp/transport//require"
A, B = "127.0.0.1", "127.0.0.2"
NOW = 1_700_000_000.0


def _pair(
    suite: Suite = SUITES[0], store: MemoryStore | None = None
) -> tuple[SecureStreamConnection, SecureStreamConnection]:
    if store is None:
        store = direct_store(A, B, suite=suite)
    policy = stream_policy((Policy.parse(POLICY),), store)
    ca = StreamSecurity(sadb=store, policy=policy, local=(A, 40000), peer=(B, 4500))
    cb = StreamSecurity(sadb=store, policy=policy, local=(B, 4500), peer=(A, 40000))
    client = SecureStreamConnection(ca, local=(A, 40000), peer=(B, 4500), initiator=True)
    server = SecureStreamConnection(cb, local=(B, 4500), peer=(A, 40000), initiator=False)
    return client, server


def _frames(wire: bytes) -> list[int]:
    """The frame lengths of ``wire`` (prefix stripped), which must end on a frame boundary."""
    wire = wire.removeprefix(PREFIX)
    lengths: list[int] = []
    pos = 0
    while pos < len(wire):
        (length,) = struct.unpack_from("!H", wire, pos)
        assert length >= 2
        lengths.append(length)
        pos += length
    assert pos == len(wire), "the wire must end on a frame boundary"
    return lengths


def test_a_64_kib_write_is_two_frames_of_equal_size() -> None:
    client, server = _pair()
    data = random.Random(5).randbytes(65536)
    pieces = client.send_pieces(data, now=NOW)
    wire = b"".join(pieces)
    assert wire.startswith(PREFIX)
    lengths = _frames(wire)
    assert len(lengths) == 2
    assert lengths[0] == lengths[1]
    payloads, error = server.receive_data(wire, now=NOW)
    assert error is None
    assert [len(p) for p in payloads] == [32768, 32768]
    assert b"".join(payloads) == data


@pytest.mark.parametrize("n", [1, 1000, 65535, 65536, 130_401, 200_000, 1 << 20])
def test_a_write_is_the_fewest_frames_of_nearly_equal_size(n: int) -> None:
    client, server = _pair()
    data = random.Random(n).randbytes(n)
    wire = b"".join(client.send_pieces(data, now=NOW))
    lengths = _frames(wire)
    assert len(lengths) == -(-n // client.max_chunk)
    assert max(lengths) - min(lengths) <= 1
    payloads, error = server.receive_data(wire, now=NOW)
    assert error is None
    assert b"".join(payloads) == data
    assert max(len(p) for p in payloads) <= client.max_chunk


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_frames_fit_with_the_most_padding_esp_randpad_asks_for(suite: Suite) -> None:
    # esp_randpad pads every ESP packet shorter than its value with up to 255 bytes; a frame
    # of max_chunk bytes must still fit the 16-bit length.
    client, server = _pair(suite)
    data = random.Random(9).randbytes(3 * client.max_chunk)
    with sysctl.override({"net.inet.ipsec.esp_randpad": 65535}):
        pieces = client.send_pieces(data, now=NOW)
    wire = b"".join(pieces)
    lengths = _frames(wire)
    assert len(lengths) == 3
    assert all(length <= 65535 for length in lengths)
    payloads, error = server.receive_data(wire, now=NOW)
    assert error is None
    assert b"".join(payloads) == data


def test_send_is_the_frames_of_send_pieces() -> None:
    client, _ = _pair()
    twin, _ = _pair()
    data = random.Random(3).randbytes(150_000)
    frames = client.send(data, now=NOW)
    assert frames[0].startswith(PREFIX)
    assert [len(f) for f in frames[1:]] == _frames(b"".join(frames[1:]))
    assert len(frames) == 3
    # The same stream state gives the same bytes (the AEAD IV is the sequence number).
    assert b"".join(frames) == b"".join(twin.send_pieces(data, now=NOW))


class _Recorder:
    """Wraps a TCP transport and records every write-side call."""

    def __init__(self, tcp: Any) -> None:
        self.tcp = tcp
        self.calls: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.calls.append(bytes(data))
        self.tcp.write(data)

    def writelines(self, pieces: list[bytes]) -> None:
        self.calls.append(b"".join(pieces))
        self.tcp.writelines(pieces)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tcp, name)


@pytest.mark.asyncio
async def test_each_write_reaches_tcp_as_whole_frames_in_one_call() -> None:
    store = direct_store(A, B)
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accepted.put((r, w))

    server = await start_server(handler, B, 0, policy=POLICY, sadb=store)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await open_connection(B, port, policy=POLICY, sadb=store, local_addr=(A, 0))
        s_reader, s_writer = await accepted.get()
        transport: Any = writer.transport
        recorder = _Recorder(transport._tcp)
        transport._tcp = recorder
        rng = random.Random(8)
        chunks = [rng.randbytes(n) for n in (70_000, 1, 65536, 300_000)]
        for c in chunks:
            writer.write(c)
        writer.write_eof()
        assert len(recorder.calls) == len(chunks) + 1  # one call per write, one for the FIN
        assert recorder.calls[0].startswith(PREFIX)
        for call, chunk in zip(recorder.calls, chunks, strict=False):
            assert len(_frames(call)) == -(-len(chunk) // transport._conn.max_chunk)
        got = bytearray()
        while data := await s_reader.read(1 << 20):
            got += data
        assert bytes(got) == b"".join(chunks)
        writer.close()
        s_writer.close()
    finally:
        server.close()
        await server.wait_closed()


# --- the receive side: frames opened from views of what arrived ------------------------------

KEEPALIVE = b"\x00\x03\xff"


def _wire(client: SecureStreamConnection, chunks: list[bytes], *, keepalives: bool) -> bytes:
    """The client's wire for ``chunks`` and its end of stream, keepalives between the frames."""
    out = bytearray()
    for c in chunks:
        frames = client.send(c, now=NOW)
        for f in frames:
            if keepalives and not out:
                out += f.removeprefix(PREFIX)
                out[:0] = PREFIX + KEEPALIVE if f.startswith(PREFIX) else KEEPALIVE
            else:
                out += f
            if keepalives:
                out += KEEPALIVE
    out += client.send_eof(now=NOW)
    return bytes(out)


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(
        st.one_of(st.integers(1, 100), st.integers(30_000, 140_000)), min_size=1, max_size=4
    ),
    cuts=st.lists(st.one_of(st.integers(1, 8), st.integers(1000, 70_000)), max_size=12),
    keepalives=st.booleans(),
    send_prefix=st.booleans(),
)
def test_large_frames_split_anywhere_give_the_same_bytes(
    sizes: list[int], cuts: list[int], keepalives: bool, send_prefix: bool
) -> None:
    store = direct_store(A, B)
    policy = stream_policy((Policy.parse(POLICY),), store)
    ca = StreamSecurity(sadb=store, policy=policy, local=(A, 40000), peer=(B, 4500))
    cb = StreamSecurity(sadb=store, policy=policy, local=(B, 4500), peer=(A, 40000))
    client = SecureStreamConnection(ca, local=(A, 40000), peer=(B, 4500), initiator=True,
                                    send_prefix=send_prefix)
    server = SecureStreamConnection(cb, local=(B, 4500), peer=(A, 40000), initiator=False)
    rng = random.Random(len(sizes) * 7 + sum(sizes))
    chunks = [rng.randbytes(n) for n in sizes]
    wire = _wire(client, chunks, keepalives=keepalives)
    got = bytearray()
    pos = 0
    for n in [*cuts, len(wire)]:
        piece = bytearray(wire[pos : pos + n])
        payloads, error = server.receive_data(piece, now=NOW)
        piece[:] = bytes(len(piece))  # the caller reuses its buffer: views must not change
        assert error is None
        for p in payloads:
            got += p
        pos += n
        if pos >= len(wire):
            break
    assert bytes(got) == b"".join(chunks)
    assert server.receive_eof() is None
    assert server.prefix_seen is send_prefix


def test_payload_views_survive_later_data() -> None:
    client, server = _pair()
    first = random.Random(1).randbytes(40_000)
    second = random.Random(2).randbytes(40_000)
    wire1 = b"".join(client.send_pieces(first, now=NOW))
    wire2 = b"".join(client.send_pieces(second, now=NOW))
    # The first frame arrives in two pieces (it goes through the pending buffer), the second
    # in one piece together with the end of the first.
    held, error = server.receive_data(wire1[:1000], now=NOW)
    assert (held, error) == ([], None)
    held, error = server.receive_data(wire1[1000:] + wire2[:10], now=NOW)
    assert error is None
    later, error = server.receive_data(wire2[10:], now=NOW)
    assert error is None
    assert b"".join(held) == first
    assert b"".join(later) == second
    assert all(memoryview(p).readonly for p in held + later)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (PREFIX[:3], "inside the 'IKETCP' prefix"),
        (PREFIX + b"\x00", "inside a frame"),
        (b"\x00\x40\x00\x00\x10\x01", "inside a frame"),
        (PREFIX, "without an authenticated end-of-stream"),
        (b"", "without an authenticated end-of-stream"),
    ],
)
def test_truncated_streams_are_malformed(wire: bytes, message: str) -> None:
    _, server = _pair()
    assert server.receive_data(wire, now=NOW) == ([], None)
    error = server.receive_eof()
    assert error is not None
    assert error.reason is DropReason.MALFORMED
    assert "truncated" in str(error)
    assert message in str(error)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"\x00\x01", "frame length 1 is less than 2"),
        (PREFIX + b"\x00\x00", "frame length 0 is less than 2"),
        (b"\x00\x06\x00\x00\x00\x00", "too short"),
        (b"\x00\x0a\x00\x00\x00\x00IKE!", "IKE message"),
        (KEEPALIVE + b"\x00\x08\x00\x00\x10\x01\x00\x00", "at least 8 octets"),
    ],
)
def test_frames_that_are_not_esp_break_the_stream(wire: bytes, message: str) -> None:
    for split in range(len(wire) + 1):
        _, server = _pair()
        error = server.receive_data(wire[:split], now=NOW)[1]
        if error is None:
            error = server.receive_data(wire[split:], now=NOW)[1]
        assert error is not None, split
        assert error.reason is DropReason.MALFORMED
        assert message in str(error)
        assert server.receive_data(b"more", now=NOW) == ([], error)


def test_required_prefix_is_checked_on_the_first_octets() -> None:
    store = direct_store(A, B)
    policy = stream_policy((Policy.parse(POLICY),), store)
    cb = StreamSecurity(sadb=store, policy=policy, local=(B, 4500), peer=(A, 40000))
    server = SecureStreamConnection(cb, local=(B, 4500), peer=(A, 40000), initiator=False,
                                    require_prefix=True)
    assert server.receive_data(b"IKE", now=NOW) == ([], None)
    payloads, error = server.receive_data(b"XCP", now=NOW)
    assert payloads == []
    assert error is not None
    assert error.reason is DropReason.MALFORMED
    assert "'IKETCP' stream prefix" in str(error)


# --- inner segments other than the usual 20-octet header -------------------------------------


def _frame_of(client: SecureStreamConnection, segment: bytes, *, next_header: int = 6) -> bytes:
    """``segment`` sealed on the client's SA (next header as given) and framed."""
    from secsock.core import esp

    store = client._protector._sadb  # type: ignore[attr-defined]
    entry = store.lookup_outbound(A, B, "esp", "transport")
    packet = esp.seal(entry.crypto, spi=entry.sa.spi, seq=store.reserve_seq(entry),
                      payload=segment, next_header=next_header)
    return struct.pack("!H", len(packet) + 2) + packet


def _tcp(seq: int, *, offset_byte: int, options: bytes = b"", flags: int = 0x18) -> bytes:
    return struct.pack("!HHIIBBHHH", 40000, 4500, seq, 0, offset_byte, flags, 65535, 0, 0) + options


@pytest.mark.parametrize(
    ("offset_byte", "options"),
    [(0x60, b"\x01\x01\x01\x01"), (0x51, b""), (0xF0, bytes(40))],
    ids=["nop-options", "ns-bit", "longest-header"],
)
def test_segments_with_options_or_flag_bits_deliver_their_payload(
    offset_byte: int, options: bytes
) -> None:
    client, server = _pair()
    first = b"".join(client.send_pieces(b"usual", now=NOW))
    odd = _frame_of(client, _tcp(5, offset_byte=offset_byte, options=options) + b" odd")
    after = b"".join(client.send_pieces(b"x" * 5, now=NOW))  # the client's offset is 5 too
    payloads, error = server.receive_data(first + odd, now=NOW)
    assert error is None
    assert b"".join(payloads) == b"usual odd"
    # The client did not count the hand-made segment, so its next frame is a replay of offset 5.
    payloads, error = server.receive_data(after, now=NOW)
    assert error is not None
    assert error.reason is DropReason.REPLAY


@pytest.mark.parametrize(
    ("segment", "next_header", "message"),
    [
        (b"short", 6, "at least 20 bytes"),
        (_tcp(0, offset_byte=0x40), 6, "data offset"),
        (_tcp(0, offset_byte=0x60), 6, "data offset"),  # says 24 octets, has 20
        (_tcp(0, offset_byte=0x50) + b"udp?", 17, "expected next header 6"),
    ],
)
def test_malformed_inner_segments_are_bad_inner(
    segment: bytes, next_header: int, message: str
) -> None:
    client, server = _pair()
    wire = PREFIX + _frame_of(client, segment, next_header=next_header)
    payloads, error = server.receive_data(wire, now=NOW)
    assert payloads == []
    assert error is not None
    assert error.reason is DropReason.BAD_INNER
    assert message in str(error)
