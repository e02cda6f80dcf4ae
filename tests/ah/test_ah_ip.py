"""secsock.core.ip: header build/parse round trips, checksums against scapy, malformed input."""

from __future__ import annotations

import contextlib
import struct
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6

from secsock.core.ip import (
    IPV4_DF,
    IPV4_MF,
    IPv4Header,
    IPv6Header,
    build_ipv4,
    build_ipv6,
    internet_checksum,
    ipv4_header_checksum,
    parse_ipv4_untrusted,
    parse_ipv6_untrusted,
)
from secsock.errors import MalformedPacket

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
v4 = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
v6 = st.builds(IPv6Address, st.integers(0, 2**128 - 1))
options4 = st.integers(0, 10).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n))


def _naive_checksum(data: bytes) -> int:
    """RFC 1071 by the book: 16-bit words, end-around carry, complement."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_ah_ip_internet_checksum_matches_the_word_by_word_algorithm(data: bytes) -> None:
    assert internet_checksum(data) == _naive_checksum(data)


def test_ah_ip_internet_checksum_edge_values() -> None:
    assert internet_checksum(b"") == 0xFFFF
    assert internet_checksum(b"\x00\x00") == 0xFFFF
    assert internet_checksum(b"\xff\xff") == 0x0000
    # RFC 1071 §3 example: 0001 f203 f4f5 f6f7 sums to ddf2, checksum 220d.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


@settings(max_examples=300)
@given(
    src=v4, dst=v4, protocol=u8, payload_len=st.integers(0, 1000), ttl=u8, tos=u8,
    identification=u16, df=st.booleans(), options=options4,
)
def test_ah_ip_build_ipv4_matches_scapy_and_parses_back(
    src: IPv4Address, dst: IPv4Address, protocol: int, payload_len: int, ttl: int, tos: int,
    identification: int, df: bool, options: bytes,
) -> None:
    header = build_ipv4(
        src=src, dst=dst, protocol=protocol, payload_len=payload_len, ttl=ttl, tos=tos,
        identification=identification, df=df, options=options,
    )
    payload = bytes(range(256)) * 4
    packet = header + payload[:payload_len]
    # scapy recomputes the checksum from the other fields: it must agree with ours. Only the
    # header goes through scapy: with a payload, a bound upper layer (IGMP for protocol 2 once
    # scapy.all is imported) may add IP options of its own when the packet is rebuilt.
    ref = IP(header)
    del ref.chksum
    assert bytes(IP(bytes(ref)))[: len(header)] == header
    assert internet_checksum(header) == 0
    assert ipv4_header_checksum(header) == struct.unpack_from("!H", header, 10)[0]

    parsed, body = parse_ipv4_untrusted(packet + b"trailer")
    assert body == payload[:payload_len]
    assert parsed.src == src
    assert parsed.dst == dst
    assert (parsed.protocol, parsed.ttl, parsed.tos) == (protocol, ttl, tos)
    assert parsed.identification == identification
    assert parsed.df is df
    assert not parsed.mf
    assert parsed.fragment_offset == 0
    assert parsed.options == options
    assert parsed.total_length == len(packet)
    assert parsed.to_bytes() == header
    assert parsed.to_bytes(fix_checksum=True) == header


def test_ah_ip_build_ipv4_accepts_text_and_packed_addresses() -> None:
    a = build_ipv4(src="192.0.2.1", dst=b"\xc0\x00\x02\x02", protocol=17, payload_len=8)
    b = build_ipv4(
        src=IPv4Address("192.0.2.1"), dst=IPv4Address("192.0.2.2"), protocol=17, payload_len=8
    )
    assert a == b
    scapy_header = bytes(
        IP(src="192.0.2.1", dst="192.0.2.2", proto=17, id=0, flags="DF", len=28)
    )
    assert a == scapy_header


@settings(max_examples=200)
@given(
    src=v6, dst=v6, next_header=u8, payload_len=st.integers(0, 300), hop_limit=u8,
    traffic_class=u8, flow_label=st.integers(0, 0xFFFFF),
)
def test_ah_ip_build_ipv6_matches_scapy_and_parses_back(
    src: IPv6Address, dst: IPv6Address, next_header: int, payload_len: int, hop_limit: int,
    traffic_class: int, flow_label: int,
) -> None:
    header = build_ipv6(
        src=src, dst=dst, next_header=next_header, payload_len=payload_len, hop_limit=hop_limit,
        traffic_class=traffic_class, flow_label=flow_label,
    )
    ref = IPv6(
        src=str(src), dst=str(dst), nh=next_header, plen=payload_len, hlim=hop_limit,
        tc=traffic_class, fl=flow_label,
    )
    assert header == bytes(ref)
    packet = header + bytes(payload_len) + b"xx"
    parsed, body = parse_ipv6_untrusted(packet)
    assert body == bytes(payload_len)
    assert parsed == IPv6Header(
        traffic_class=traffic_class, flow_label=flow_label, payload_length=payload_len,
        next_header=next_header, hop_limit=hop_limit, src=src, dst=dst,
    )
    assert parsed.to_bytes() == header


def _good_ipv4() -> bytes:
    return build_ipv4(src="10.0.0.1", dst="10.0.0.2", protocol=17, payload_len=4) + b"data"


def _with_checksum(packet: bytearray) -> bytes:
    hlen = (packet[0] & 0x0F) * 4
    packet[10:12] = b"\x00\x00"
    packet[10:12] = internet_checksum(bytes(packet[:hlen])).to_bytes(2, "big")
    return bytes(packet)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p[:19], "at least 20 bytes"),
        (lambda p: _with_checksum(bytearray(b"\x65" + p[1:])), "version 4"),
        (lambda p: _with_checksum(bytearray(b"\x44" + p[1:])), "IHL of at least 5"),
        (lambda p: _with_checksum(bytearray(b"\x4f" + p[1:])), "shorter than the header"),
        (lambda p: _with_checksum(bytearray(p[:2] + b"\x00\x13" + p[4:])), "shorter than"),
        (lambda p: _with_checksum(bytearray(p[:2] + b"\x00\x19" + p[4:])), "exceeds"),
        (lambda p: p[:-1], "exceeds"),
        (lambda p: p[:8] + bytes([p[8] ^ 1]) + p[9:], "checksum"),
    ],
)
def test_ah_ip_parse_ipv4_rejects(mutate: object, message: str) -> None:
    packet = mutate(_good_ipv4())  # type: ignore[operator]
    with pytest.raises(MalformedPacket, match=message):
        parse_ipv4_untrusted(packet)


def test_ah_ip_parse_ipv4_checksum_check_can_be_skipped() -> None:
    packet = bytearray(_good_ipv4())
    packet[8] ^= 1  # TTL changed, checksum now wrong
    with pytest.raises(MalformedPacket):
        parse_ipv4_untrusted(packet)
    header, payload = parse_ipv4_untrusted(packet, verify_checksum=False)
    assert header.ttl == 64 ^ 1
    assert payload == b"data"


def test_ah_ip_parse_ipv4_fragment_fields() -> None:
    packet = bytearray(_good_ipv4())
    packet[6:8] = (IPV4_MF | 3).to_bytes(2, "big")
    header, _ = parse_ipv4_untrusted(_with_checksum(packet))
    assert header.mf
    assert not header.df
    assert header.fragment_offset == 3
    assert header.is_fragment
    assert header.frag_off & IPV4_DF == 0


def test_ah_ip_parse_ipv6_rejects() -> None:
    good = build_ipv6(src="::1", dst="::2", next_header=17, payload_len=4) + b"data"
    assert parse_ipv6_untrusted(good)[1] == b"data"
    with pytest.raises(MalformedPacket, match="40 bytes"):
        parse_ipv6_untrusted(good[:39])
    with pytest.raises(MalformedPacket, match="version 6"):
        parse_ipv6_untrusted(b"\x40" + good[1:])
    with pytest.raises(MalformedPacket, match="exceeds"):
        parse_ipv6_untrusted(good[:-1])


def test_ah_ip_header_validation() -> None:
    a, b = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
    IPv4Header(total_length=20, protocol=6, src=a, dst=b)
    with pytest.raises(ValueError, match="ttl"):
        IPv4Header(total_length=20, protocol=6, src=a, dst=b, ttl=256)
    with pytest.raises(ValueError, match="options"):
        IPv4Header(total_length=40, protocol=6, src=a, dst=b, options=b"\x01\x01\x01")
    with pytest.raises(ValueError, match="options"):
        IPv4Header(total_length=80, protocol=6, src=a, dst=b, options=bytes(44))
    with pytest.raises(ValueError, match="header length 24"):
        IPv4Header(total_length=20, protocol=6, src=a, dst=b, options=bytes(4))
    with pytest.raises(TypeError, match="IPv4Address"):
        IPv4Header(total_length=20, protocol=6, src="10.0.0.1", dst=b)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="total_length"):
        build_ipv4(src=a, dst=b, protocol=6, payload_len=65516)
    with pytest.raises(ValueError, match="flow_label"):
        build_ipv6(src="::1", dst="::2", next_header=6, payload_len=0, flow_label=1 << 20)
    with pytest.raises(ValueError, match="payload_length"):
        build_ipv6(src="::1", dst="::2", next_header=6, payload_len=65536)


@settings(max_examples=400)
@given(st.binary(max_size=120), st.booleans())
def test_ah_ip_parsers_raise_only_malformed(data: bytes, verify: bool) -> None:
    for parse in (
        lambda d: parse_ipv4_untrusted(d, verify_checksum=verify),
        parse_ipv6_untrusted,
    ):
        with contextlib.suppress(MalformedPacket):
            parse(data)


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=80), st.integers(0, 15))
def test_ah_ip_parse_ipv4_of_headerlike_bytes_raises_only_malformed(tail: bytes, ihl: int) -> None:
    # Make the first nibble right so the fuzzing reaches the length and checksum checks.
    data = bytes([0x40 | ihl]) + tail
    try:
        header, payload = parse_ipv4_untrusted(data, verify_checksum=False)
    except MalformedPacket:
        return
    assert header.header_length + len(payload) == header.total_length <= len(data)
