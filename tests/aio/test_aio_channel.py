"""The sans-IO secure-stream channel and its wire format, checked against scapy.

Every frame a secure stream sends must be decryptable by an independent ESP implementation:
scapy's ``SecurityAssociation`` opens each captured frame and finds an inner TCP segment with
the connection's ports, the stream offset as sequence number and exactly the bytes written.
"""

from __future__ import annotations

import asyncio
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP
from scapy.layers.ipsec import SecurityAssociation as ScapySA
from scapy.packet import Raw

from secsock.asyncio import open_connection, start_server
from secsock.asyncio._channel import (
    FLAG_ACK,
    FLAG_FIN,
    FLAG_PSH,
    PREFIX,
    SecureStreamConnection,
    build_segment,
    parse_segment_untrusted,
)
from secsock.asyncio._protector import StreamSecurity, stream_policy
from secsock.errors import DropReason, MalformedPacket
from secsock.policy.model import Policy
from secsock.sadb.store import MemoryStore
from tests.aio.aio_helpers import SUITES, Suite, direct_store, relay_stores
from tests.aio.aio_relay import TcpFrameRelay, scripted

POLICY = "out ipsec esp/transport//require"
A, B, FRONT, BACK = "127.0.0.1", "127.0.0.2", "127.0.0.4", "127.0.0.3"
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


# --- the inner segment ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    payload=st.binary(max_size=3000),
    seq=st.integers(0, 2**40),
    ack=st.integers(0, 2**40),
    v6=st.booleans(),
    ports=st.tuples(st.integers(1, 65535), st.integers(1, 65535)),
)
def test_inner_checksum_matches_scapy(
    payload: bytes, seq: int, ack: int, v6: bool, ports: tuple[int, int]
) -> None:
    src, dst = ("2001:db8::1", "2001:db8::2") if v6 else ("10.1.2.3", "192.0.2.77")
    import ipaddress

    seg = build_segment(
        src=ipaddress.ip_address(src).packed, dst=ipaddress.ip_address(dst).packed,
        sport=ports[0], dport=ports[1], seq=seq, ack=ack, flags=FLAG_ACK | FLAG_PSH,
        payload=payload,
    )
    outer = (IPv6(src=src, dst=dst, nh=6) if v6 else IP(src=src, dst=dst, proto=6)) / TCP(seg)
    ours = outer[TCP].chksum
    del outer[TCP].chksum
    rebuilt = outer.__class__(bytes(outer))
    assert rebuilt[TCP].chksum == ours
    parsed = parse_segment_untrusted(seg)
    assert (parsed.sport, parsed.dport) == ports
    assert parsed.seq == seq % 2**32
    assert parsed.ack == ack % 2**32
    assert bytes(parsed.payload) == payload


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_parse_segment_untrusted_raises_only_malformed(data: bytes) -> None:
    fits = len(data) >= 20 and 20 <= (data[12] >> 4) * 4 <= len(data)
    if fits:
        assert len(parse_segment_untrusted(data).payload) == len(data) - (data[12] >> 4) * 4
    else:
        with pytest.raises(MalformedPacket) as info:
            parse_segment_untrusted(data)
        assert info.value.reason is DropReason.BAD_INNER


# --- the channel, sans-IO -------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=2000), min_size=1, max_size=8),
    cuts=st.lists(st.integers(1, 500), max_size=30),
)
def test_any_split_of_the_wire_gives_the_same_bytes(chunks: list[bytes], cuts: list[int]) -> None:
    client, server = _pair()
    wire = b"".join(f for c in chunks for f in client.send(c, now=NOW))
    wire += client.send_eof(now=NOW)
    assert wire.startswith(PREFIX)
    got = bytearray()
    pos = 0
    for n in [*cuts, len(wire)]:
        payloads, error = server.receive_data(wire[pos : pos + n], now=NOW)
        assert error is None
        for p in payloads:
            got += p
        pos += n
        if pos >= len(wire):
            break
    assert bytes(got) == b"".join(chunks)
    assert server.receive_eof() is None
    assert server.eof_received


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_receive_never_raises_on_garbage(pieces: list[bytes]) -> None:
    _, server = _pair()
    for piece in pieces:
        payloads, error = server.receive_data(piece, now=NOW)
        assert payloads == [] or error is None or all(payloads)
    eof_error = server.receive_eof()
    assert eof_error is not None  # garbage never ends in an authenticated end of stream


def test_large_write_is_split_into_frames_that_fit() -> None:
    client, server = _pair()
    data = random.Random(2).randbytes(200_000)
    frames = client.send(data, now=NOW)
    assert len(frames) == -(-len(data) // client.max_chunk) == 4
    for f in frames:
        body = f.removeprefix(PREFIX)
        (length,) = struct.unpack_from("!H", body)
        assert length == len(body) <= 65535
    payloads, error = server.receive_data(b"".join(frames), now=NOW)
    assert error is None
    assert b"".join(payloads) == data


def test_send_after_eof_and_empty_send() -> None:
    client, _ = _pair()
    assert client.send(b"", now=NOW) == []
    client.send_eof(now=NOW)
    assert client.send_eof(now=NOW) == b""
    with pytest.raises(BrokenPipeError):
        client.send(b"x", now=NOW)


def test_frame_after_end_of_stream_breaks_it() -> None:
    store = direct_store(A, B)
    client, server = _pair(store=store)
    other, _ = _pair(store=store)  # another connection on the same SAs
    wire = b"".join(client.send(b"a", now=NOW)) + client.send_eof(now=NOW)
    assert server.receive_data(wire, now=NOW) == ([b"a"], None)
    late = b"".join(other.send(b"late", now=NOW))[len(PREFIX) :]
    payloads, error = server.receive_data(late, now=NOW)
    assert payloads == []
    assert error is not None
    assert error.reason is DropReason.MALFORMED
    assert "after the end of the stream" in str(error)
    assert server.receive_data(b"", now=NOW) == ([], error)  # broken for good


def test_authentic_bytes_before_a_bad_frame_are_returned_with_the_error() -> None:
    client, server = _pair()
    good = b"".join(client.send(b"good", now=NOW))
    bad = bytearray(b"".join(client.send(b"bad!", now=NOW)))
    bad[-1] ^= 1  # the ICV's last byte
    payloads, error = server.receive_data(good + bytes(bad), now=NOW)
    assert payloads == [b"good"]
    assert error is not None
    assert error.reason is DropReason.AUTH_FAILED


# --- interop: scapy decrypts what a real stream put on the wire ------------------------------


def _scapy_open(suite: Suite, spi: int, src: str, dst: str, esp: bytes) -> IP:
    sa = ScapySA(ESP, **suite.scapy_kwargs(spi))  # type: ignore[no-untyped-call]
    pkt = sa.decrypt(IP(bytes(IP(src=src, dst=dst, proto=50) / Raw(esp))))  # type: ignore[no-untyped-call]
    assert isinstance(pkt, IP)
    return pkt


@pytest.mark.asyncio
@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
@pytest.mark.parametrize("inner_checksum", [False, True])
async def test_scapy_decrypts_every_frame(suite: Suite, inner_checksum: bool) -> None:
    sa, sb = relay_stores(A, B, FRONT, BACK, suite=suite)
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accepted.put((r, w))

    server = await start_server(handler, B, 0, policy=POLICY, sadb=sb,
                                inner_checksum=inner_checksum)
    port = server.sockets[0].getsockname()[1]
    relay = TcpFrameRelay((B, port), scripted({}), rng=random.Random(0), host=FRONT,
                          back_host=BACK)
    rhost, rport = await relay.start()
    try:
        reader, writer = await open_connection(rhost, rport, policy=POLICY, sadb=sa,
                                               local_addr=(A, 0), inner_checksum=inner_checksum)
        s_reader, s_writer = await accepted.get()
        chunks = [b"first chunk", random.Random(4).randbytes(70_000), b"", b"last"]
        for c in chunks:
            writer.write(c)
        writer.write_eof()
        got = bytearray()
        while data := await s_reader.read(1 << 20):
            got += data
        assert bytes(got) == b"".join(chunks)
        s_writer.write(b"reply")
        s_writer.close()
        assert await reader.read() == b"reply"
        c_port = writer.get_extra_info("sockname")[1]
        b_peer = s_writer.get_extra_info("peername")
        writer.close()
        # Client -> server frames, as the client sealed them (addresses A -> FRONT).
        stream = bytearray()
        frames = relay.frames["a2b"]
        assert len(frames) == 5  # "first chunk", 70000 bytes in two frames, "last", FIN
        for i, frame in enumerate(frames):
            pkt = _scapy_open(suite, 0x1001, A, FRONT, frame[2:])
            tcp = pkt[TCP]
            assert (tcp.sport, tcp.dport) == (c_port, rport)
            assert tcp.seq == len(stream)
            payload = bytes(tcp.payload)
            if i == len(frames) - 1:
                assert tcp.flags == FLAG_ACK | FLAG_FIN
                assert payload == b""
            else:
                assert tcp.flags == FLAG_ACK | FLAG_PSH
            stream += payload
            if inner_checksum:
                ours = tcp.chksum
                redo = IP(src=A, dst=FRONT, proto=6) / TCP(bytes(tcp))
                del redo[TCP].chksum
                assert IP(bytes(redo))[TCP].chksum == ours
            else:
                assert tcp.chksum == 0
        assert bytes(stream) == b"".join(chunks)
        # Server -> client, as the server sealed them (addresses B -> BACK).
        back = [_scapy_open(suite, 0x1002, B, BACK, f[2:])[TCP] for f in relay.frames["b2a"]]
        assert b"".join(bytes(t.payload) for t in back) == b"reply"
        assert (back[0].sport, back[0].dport) == (port, b_peer[1])
    finally:
        await relay.close()
        server.close()
        await server.wait_closed()
