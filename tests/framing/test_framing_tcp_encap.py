"""RFC 8229 ESP-in-TCP: frame(), the IKETCP prefix and the incremental FrameDecoder."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secsock.core.framing import tcp_encap
from secsock.core.framing.tcp_encap import (
    MAX_PAYLOAD,
    PREFIX,
    Frame,
    FrameDecoder,
    FrameKind,
    build_prefix,
    frame,
    frame_ike,
)
from secsock.errors import MalformedPacket

Event = tuple[FrameKind, bytes] | str | tuple[str, int]


def esp(spi: int, seq: int, body: bytes = b"\xee" * 24) -> bytes:
    return struct.pack("!II", spi, seq) + body


def trace(chunks: list[bytes], *, expect_prefix: bool, require_prefix: bool = False) -> list[Event]:
    """Everything a decoder reports for a stream delivered as ``chunks``, then closed."""
    dec = FrameDecoder(expect_prefix=expect_prefix, require_prefix=require_prefix)
    events: list[Event] = []

    def drain() -> None:
        while not dec.failed:
            try:
                f = dec.next_frame()
            except MalformedPacket:
                events.append("fatal" if dec.failed else "dropped")
                continue
            if f is None:
                return
            events.append((f.kind, f.data))

    for chunk in chunks:
        dec.feed(chunk)
        drain()
    try:
        dec.eof()
    except MalformedPacket:
        events.append("truncated")
    drain()
    events.append(("keepalives", dec.keepalives))
    return events


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out


# --- frame() ---------------------------------------------------------------------------------


def test_the_length_counts_itself() -> None:
    packet = esp(0x100, 1)
    framed = frame(packet)
    assert framed[:2] == struct.pack("!H", len(packet) + 2)
    assert framed[2:] == packet


def test_frame_ike_adds_the_marker() -> None:
    assert frame_ike(b"IKE-MESSAGE") == struct.pack("!H", 17) + b"\0\0\0\0IKE-MESSAGE"


def test_frame_size_limits() -> None:
    biggest = esp(0x100, 1, bytes(MAX_PAYLOAD - 8))
    assert MAX_PAYLOAD == 65533
    assert frame(biggest)[:2] == b"\xff\xff"
    with pytest.raises(ValueError, match="at most 65533"):
        frame(biggest + b"\0")


@pytest.mark.parametrize(
    "packet",
    [b"", b"\xff", b"\x01\x02\x03\x04", b"\0\0\0\0", b"\x01\x02\x03\x04\x05", esp(1, 1, b"")[:7]],
)
def test_frame_refuses_what_a_receiver_would_drop(packet: bytes) -> None:
    with pytest.raises(ValueError, match="ESP-in-TCP"):
        frame(packet)


def test_prefix() -> None:
    assert PREFIX == b"IKETCP" == bytes.fromhex("49 4b 45 54 43 50")
    assert build_prefix() == PREFIX


# --- decoding --------------------------------------------------------------------------------


def test_decodes_esp_and_ike_frames() -> None:
    dec = FrameDecoder(expect_prefix=False)
    dec.feed(frame(esp(0x1234, 7)) + frame_ike(b"hello ike"))
    first = dec.next_frame()
    assert first == Frame(kind=FrameKind.ESP, data=esp(0x1234, 7))
    second = dec.next_frame()
    assert second == Frame(kind=FrameKind.IKE, data=b"hello ike")
    assert dec.next_frame() is None
    assert dec.buffered == 0
    assert "hello" not in repr(second)  # frames never show their bytes
    assert repr(second) == "Frame(kind=IKE, 9 octets)"


def test_frame_validates_itself() -> None:
    with pytest.raises(ValueError, match="nonzero SPI"):
        Frame(kind=FrameKind.ESP, data=b"\0\0\0\0\0\0\0\1")
    with pytest.raises(ValueError, match="8 octets"):
        Frame(kind=FrameKind.ESP, data=b"\1\2\3")
    with pytest.raises(TypeError, match="FrameKind"):
        Frame(kind="esp", data=esp(1, 1))  # type: ignore[arg-type]


def test_responder_consumes_the_prefix() -> None:
    dec = FrameDecoder(expect_prefix=True)
    dec.feed(build_prefix() + frame_ike(b"init"))
    assert dec.next_frame() == Frame(kind=FrameKind.IKE, data=b"init")
    assert dec.prefix_seen


def test_responder_accepts_a_stream_without_prefix() -> None:
    dec = FrameDecoder(expect_prefix=True)
    dec.feed(frame(esp(0x200, 1)))
    assert dec.next_frame() == Frame(kind=FrameKind.ESP, data=esp(0x200, 1))
    assert not dec.prefix_seen


def test_the_prefix_is_only_recognised_at_the_start() -> None:
    dec = FrameDecoder(expect_prefix=True)
    dec.feed(frame(esp(0x200, 1)) + PREFIX)
    assert dec.next_frame() is not None
    # the second "IKETCP" is just the start of a frame of Length 0x494b
    assert dec.next_frame() is None
    with pytest.raises(MalformedPacket, match="inside a frame"):
        dec.eof()


def test_require_prefix_rejects_a_stream_without_it() -> None:
    dec = FrameDecoder(expect_prefix=True, require_prefix=True)
    dec.feed(frame(esp(0x200, 1)))
    with pytest.raises(MalformedPacket, match="IKETCP"):
        dec.next_frame()
    assert dec.failed
    strict = FrameDecoder(expect_prefix=True, require_prefix=True)
    strict.feed(PREFIX + frame(esp(0x200, 1)))
    assert strict.next_frame() is not None
    with pytest.raises(ValueError, match="expect_prefix"):
        FrameDecoder(expect_prefix=False, require_prefix=True)


def test_initiator_side_does_not_look_for_a_prefix() -> None:
    dec = FrameDecoder(expect_prefix=False)
    dec.feed(PREFIX + b"\0" * (0x494B - 6))
    f = dec.next_frame()
    assert f is not None
    assert f.kind is FrameKind.ESP
    assert f.data[:4] == b"ETCP"
    assert not dec.prefix_seen


def test_a_partial_prefix_waits_then_completes() -> None:
    dec = FrameDecoder(expect_prefix=True)
    for octet in PREFIX:
        dec.feed(bytes([octet]))
        assert dec.next_frame() is None
    assert dec.prefix_seen
    dec.feed(frame_ike(b"x"))
    assert dec.next_frame() == Frame(kind=FrameKind.IKE, data=b"x")


@pytest.mark.parametrize("length", [0, 1])
def test_a_length_below_two_breaks_the_stream(length: int) -> None:
    dec = FrameDecoder(expect_prefix=False)
    dec.feed(frame(esp(1, 1)) + struct.pack("!H", length) + frame(esp(2, 2)))
    assert dec.next_frame() is not None
    with pytest.raises(MalformedPacket, match="less than 2"):
        dec.next_frame()
    assert dec.failed
    dec.feed(frame(esp(3, 3)))  # ignored: the stream cannot be resynchronised
    with pytest.raises(MalformedPacket, match="less than 2"):
        dec.next_frame()
    dec.eof()  # the failure was already reported


@pytest.mark.parametrize(
    "body",
    [b"", b"\x01", b"\x00", b"\x01\x02\x03\x04", b"\0\0\0\0", b"\1\2\3\4\5", b"\1\2\3\4\5\6\7"],
)
def test_short_frames_are_dropped_and_the_stream_continues(body: bytes) -> None:
    dec = FrameDecoder(expect_prefix=False)
    dec.feed(struct.pack("!H", len(body) + 2) + body + frame(esp(9, 9)))
    with pytest.raises(MalformedPacket, match="dropped a frame"):
        dec.next_frame()
    assert not dec.failed
    assert dec.next_frame() == Frame(kind=FrameKind.ESP, data=esp(9, 9))


def test_keepalive_frames_are_skipped_and_counted() -> None:
    dec = FrameDecoder(expect_prefix=False)
    keepalive = struct.pack("!H", 3) + b"\xff"
    dec.feed(keepalive + keepalive + frame_ike(b"ike"))
    assert dec.next_frame() == Frame(kind=FrameKind.IKE, data=b"ike")
    assert dec.keepalives == 2


def test_eof_with_a_partial_frame_is_truncation() -> None:
    dec = FrameDecoder(expect_prefix=False)
    whole = frame(esp(5, 5))
    dec.feed(whole + whole[:-1])
    assert dec.next_frame() is not None
    assert dec.next_frame() is None
    with pytest.raises(MalformedPacket, match=r"inside a frame \(33 octets pending\)"):
        dec.eof()
    assert dec.failed


def test_eof_with_one_length_octet_is_truncation() -> None:
    dec = FrameDecoder(expect_prefix=False)
    dec.feed(b"\x00")
    with pytest.raises(MalformedPacket, match="inside a frame"):
        dec.eof()


def test_eof_inside_the_prefix_is_truncation() -> None:
    dec = FrameDecoder(expect_prefix=True)
    dec.feed(b"IKE")
    assert dec.next_frame() is None
    with pytest.raises(MalformedPacket, match="prefix"):
        dec.eof()


def test_eof_keeps_complete_frames_available() -> None:
    dec = FrameDecoder(expect_prefix=True)
    dec.feed(PREFIX + frame(esp(1, 1)) + frame(esp(2, 2)))
    dec.eof()  # nothing partial: fine even before draining
    assert dec.next_frame() == Frame(kind=FrameKind.ESP, data=esp(1, 1))
    assert dec.next_frame() == Frame(kind=FrameKind.ESP, data=esp(2, 2))
    assert dec.next_frame() is None
    with pytest.raises(RuntimeError, match="after eof"):
        dec.feed(b"more")


def test_clean_eof_on_an_empty_stream() -> None:
    for expect in (True, False):
        dec = FrameDecoder(expect_prefix=expect)
        dec.eof()
        assert dec.next_frame() is None


# --- splitting the stream anywhere gives the same result -------------------------------------

frames_st = st.lists(
    st.one_of(
        st.tuples(
            st.just(FrameKind.ESP),
            st.builds(
                lambda spi, rest: struct.pack("!I", spi) + rest,
                st.integers(min_value=1, max_value=2**32 - 1),
                st.binary(min_size=4, max_size=80),
            ),
        ),
        st.tuples(st.just(FrameKind.IKE), st.binary(min_size=1, max_size=80)),
    ),
    max_size=8,
)


def _encode(frames: list[tuple[FrameKind, bytes]], prefix: bool) -> bytes:
    parts = [PREFIX] if prefix else []
    for kind, data in frames:
        parts.append(frame(data) if kind is FrameKind.ESP else frame_ike(data))
    return b"".join(parts)


@settings(max_examples=300, deadline=None)
@given(
    frames=frames_st,
    prefix=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_valid_streams_decode_identically_however_split(
    frames: list[tuple[FrameKind, bytes]], prefix: bool, cuts: list[int]
) -> None:
    stream = _encode(frames, prefix)
    expected: list[Event] = [*frames, ("keepalives", 0)]
    assert trace([stream], expect_prefix=True) == expected
    assert trace(split(stream, cuts), expect_prefix=True) == expected
    if not prefix:
        assert trace(split(stream, cuts), expect_prefix=False) == expected


def test_every_single_split_point_and_byte_by_byte() -> None:
    keepalive = struct.pack("!H", 3) + b"\xff"
    short = struct.pack("!H", 5) + b"\1\2\3"
    stream = (
        PREFIX
        + frame_ike(b"IKE_SA_INIT" * 3)
        + keepalive
        + frame(esp(0xABCD, 1, bytes(range(200))))
        + short
        + frame(esp(0xABCD, 2))
        + frame(esp(0xABCD, 3))[:10]  # truncated at the end
    )
    for expect in (True, False):
        whole = trace([stream], expect_prefix=expect)
        assert "truncated" in whole
        for i in range(len(stream) + 1):
            assert trace([stream[:i], stream[i:]], expect_prefix=expect) == whole, i
        assert trace([bytes([b]) for b in stream], expect_prefix=expect) == whole
    responder = trace([stream], expect_prefix=True)
    assert responder == [
        (FrameKind.IKE, b"IKE_SA_INIT" * 3),
        (FrameKind.ESP, esp(0xABCD, 1, bytes(range(200)))),
        "dropped",
        (FrameKind.ESP, esp(0xABCD, 2)),
        "truncated",
        ("keepalives", 1),
    ]


@settings(max_examples=300, deadline=None)
@given(
    stream=st.one_of(
        st.binary(max_size=300),
        st.builds(lambda tail: PREFIX + tail, st.binary(max_size=300)),
        # mostly well-formed streams with small lengths, so frames and errors both occur
        st.lists(
            st.builds(
                lambda n, body: struct.pack("!H", n) + body,
                st.integers(min_value=0, max_value=24),
                st.binary(max_size=24),
            ),
            max_size=10,
        ).map(b"".join),
    ),
    expect_prefix=st.booleans(),
    require_prefix=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=10),
)
def test_any_bytes_only_malformed_and_split_independent(
    stream: bytes, expect_prefix: bool, require_prefix: bool, cuts: list[int]
) -> None:
    require = require_prefix and expect_prefix
    # trace() lets only MalformedPacket through; anything else fails the test
    whole = trace([stream], expect_prefix=expect_prefix, require_prefix=require)
    assert trace(split(stream, cuts), expect_prefix=expect_prefix, require_prefix=require) == whole


# --- large streams ---------------------------------------------------------------------------


def test_a_long_stream_in_small_chunks_keeps_the_buffer_bounded() -> None:
    count, chunk = 3000, 4096
    packets = [esp(0x1000, seq, bytes([seq & 0xFF]) * 1400) for seq in range(1, count + 1)]
    stream = PREFIX + b"".join(frame(p) for p in packets)
    dec = FrameDecoder(expect_prefix=True)
    got: list[bytes] = []
    biggest = 0
    for i in range(0, len(stream), chunk):
        dec.feed(stream[i : i + chunk])
        biggest = max(biggest, len(dec._buf))
        while (f := dec.next_frame()) is not None:
            got.append(f.data)
    dec.eof()
    assert got == packets
    # consumed octets are dropped as the stream goes: the buffer never holds the whole stream
    assert biggest <= 2 * tcp_encap._COMPACT_AT + chunk
    assert len(stream) > 10 * biggest
