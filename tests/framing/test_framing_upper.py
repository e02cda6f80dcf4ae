"""The transport-mode inner UDP header: checksums against hand arithmetic and scapy, parsing."""

from __future__ import annotations

import struct
from ipaddress import ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secsock.core.upper import (
    UDP_MAX_PAYLOAD,
    build_udp,
    build_udp_partial,
    parse_udp_authenticated_untrusted,
    parse_udp_untrusted,
    udp_checksum,
    udp_partial_sum,
)
from secsock.errors import DropReason, MalformedPacket

V4_SRC = ip_address("192.0.2.1").packed
V4_DST = ip_address("192.0.2.2").packed
V6_SRC = ip_address("2001:db8::1").packed
V6_DST = ip_address("2001:db8::2").packed
FAMILIES = [pytest.param(V4_SRC, V4_DST, id="ipv4"), pytest.param(V6_SRC, V6_DST, id="ipv6")]


def naive_udp_checksum(src: bytes, dst: bytes, segment: bytes) -> int:
    """RFC 1071 the slow, obvious way: a real pseudo-header, 16-bit words, end-around carry."""
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, 17, len(segment))
    else:
        pseudo = src + dst + struct.pack("!I3xB", len(segment), 17)
    data = pseudo + segment + (b"\0" if len(segment) % 2 else b"")
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    checksum = ~total & 0xFFFF
    return checksum or 0xFFFF


# --- hand-computed vectors -------------------------------------------------------------------


def test_hand_computed_ipv4() -> None:
    # pseudo-header: c000 + 0201 + c000 + 0202 + 0011 (proto) + 000a (length)      = 0x1841e
    # header:        04d2 (1234) + 162e (5678) + 000a (length) + 0000 (checksum)    -> 0x19f28
    # payload "hi":  6869                                                           -> 0x20791
    # fold: 0x0791 + 0x2 = 0x0793; complement: 0xffff - 0x0793 = 0xf86c
    segment = build_udp(V4_SRC, V4_DST, 1234, 5678, b"hi")
    assert segment == bytes.fromhex("04d2 162e 000a f86c 6869")


def test_hand_computed_ipv6() -> None:
    # src 2001:db8::1 -> 2001 + 0db8 + 0001 = 0x2dba; dst 2001:db8::2 -> 0x2dbb
    # pseudo-header length 0000 000a, next header 0011
    # 2dba + 2dbb + 000a + 0011 + 04d2 + 162e + 000a + 6869 = 0xdf03 (no carry)
    # complement: 0xffff - 0xdf03 = 0x20fc
    segment = build_udp(V6_SRC, V6_DST, 1234, 5678, b"hi")
    assert segment == bytes.fromhex("04d2 162e 000a 20fc 6869")


def test_odd_length_payload_is_padded_with_a_zero_octet() -> None:
    # "h" alone: the last word is 6800 (RFC 768 pads with a zero octet; the length stays 9).
    # pseudo c000 + 0201 + c000 + 0202 + 0011 + 0009 = 0x1841d
    # + 04d2 + 162e + 0009 = 0x19f26; + 6800 = 0x20726
    # fold: 0x0726 + 0x2 = 0x0728; complement: 0xffff - 0x0728 = 0xf8d7
    segment = build_udp(V4_SRC, V4_DST, 1234, 5678, b"h")
    assert segment == bytes.fromhex("04d2 162e 0009 f8d7 68")
    assert naive_udp_checksum(V4_SRC, V4_DST, segment[:6] + b"\0\0" + segment[8:]) == 0xF8D7


# --- scapy as the oracle (what the Linux kernel and Wireshark agree on) ----------------------


@pytest.mark.parametrize("length", [0, 1, 2, 3, 31, 1399, 1400, 1472, 8000])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_matches_scapy(length: int, family: str) -> None:
    scapy = pytest.importorskip("scapy.all")
    payload = bytes((i * 7 + length) & 0xFF for i in range(length))
    if family == "ipv4":
        src, dst = "198.51.100.10", "203.0.113.20"
        pkt = scapy.IP(src=src, dst=dst) / scapy.UDP(sport=40000, dport=7001) / payload
        wire = scapy.IP(bytes(pkt))
    else:
        src, dst = "2001:db8:1::10", "2001:db8:2::20"
        pkt = scapy.IPv6(src=src, dst=dst) / scapy.UDP(sport=40000, dport=7001) / payload
        wire = scapy.IPv6(bytes(pkt))
    expected = bytes(wire[scapy.UDP])
    ours = build_udp(ip_address(src).packed, ip_address(dst).packed, 40000, 7001, payload)
    assert ours == expected


@pytest.mark.parametrize(("src", "dst"), FAMILIES)
def test_a_computed_zero_is_sent_as_ffff_and_scapy_agrees(src: bytes, dst: bytes) -> None:
    # Choose the 2-byte payload word that makes the ones' complement sum 0xffff.
    header_and_zero = build_udp(src, dst, 1000, 2000, b"\0\0")
    (ck,) = struct.unpack_from("!H", header_and_zero, 6)
    # ck is ~sum (sum = 0xffff - ck): adding ck as a data word makes the sum 0xffff, whose
    # complement 0 must go out as 0xffff. (ck == 0xffff means the sum is already 0xffff.)
    word = ck if ck != 0xFFFF else 0
    payload = struct.pack("!H", word)
    segment = build_udp(src, dst, 1000, 2000, payload)
    assert segment[6:8] == b"\xff\xff"
    assert udp_checksum(src, dst, segment[:6] + b"\0\0" + segment[8:]) == 0xFFFF
    assert parse_udp_untrusted(segment, src, dst) == (1000, 2000, payload)
    scapy = pytest.importorskip("scapy.all")
    ip = scapy.IP if len(src) == 4 else scapy.IPv6
    pkt = ip(src=str(ip_address(src)), dst=str(ip_address(dst))) / scapy.UDP(sport=1000, dport=2000)
    wire = ip(bytes(pkt / payload))
    assert bytes(wire[scapy.UDP]) == segment


# --- properties ------------------------------------------------------------------------------

addresses = st.one_of(
    st.tuples(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4)),
    st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16)),
)
ports = st.integers(min_value=0, max_value=0xFFFF)


@settings(max_examples=300, deadline=None)
@given(addrs=addresses, sport=ports, dport=ports, payload=st.binary(max_size=1500))
def test_build_matches_the_naive_checksum_and_parses_back(
    addrs: tuple[bytes, bytes], sport: int, dport: int, payload: bytes
) -> None:
    src, dst = addrs
    segment = build_udp(src, dst, sport, dport, payload)
    assert len(segment) == 8 + len(payload)
    zeroed = segment[:6] + b"\0\0" + segment[8:]
    (checksum,) = struct.unpack_from("!H", segment, 6)
    assert checksum == naive_udp_checksum(src, dst, zeroed)
    assert udp_checksum(src, dst, zeroed) == checksum
    assert parse_udp_untrusted(segment, src, dst) == (sport, dport, payload)
    assert parse_udp_untrusted(bytearray(segment), src, dst) == (sport, dport, payload)
    assert parse_udp_untrusted(memoryview(segment), src, dst) == (sport, dport, payload)


@settings(max_examples=300, deadline=None)
@given(
    addrs=addresses,
    segment=st.one_of(
        st.binary(max_size=200),
        # a length field that matches, so the checksum paths (0, wrong, right) are reached
        st.builds(
            lambda sp, dp, ck, payload: (
                struct.pack("!HHHH", sp, dp, 8 + len(payload), ck) + payload
            ),
            ports,
            ports,
            st.sampled_from([0, 0xFFFF, 1, 0x1234]),
            st.binary(max_size=3),
        ),
    ),
    verify=st.booleans(),
)
def test_parse_any_bytes_gives_a_result_or_malformed(
    addrs: tuple[bytes, bytes], segment: bytes, verify: bool
) -> None:
    src, dst = addrs
    reason: DropReason | None = None
    try:
        sport, dport, payload = parse_udp_untrusted(segment, src, dst, verify_checksum=verify)
    except MalformedPacket as exc:
        reason = exc.reason
    else:
        assert struct.unpack_from("!HH", segment) == (sport, dport)
        assert payload == segment[8:]
        assert len(segment) >= 8
    assert reason in (None, DropReason.BAD_INNER)


@settings(max_examples=200, deadline=None)
@given(
    addrs=addresses,
    payload=st.binary(min_size=1, max_size=300),
    data=st.data(),
)
def test_any_single_bit_flip_is_caught(
    addrs: tuple[bytes, bytes], payload: bytes, data: st.DataObject
) -> None:
    src, dst = addrs
    segment = bytearray(build_udp(src, dst, 5000, 6000, payload))
    bit = data.draw(st.integers(min_value=0, max_value=len(segment) * 8 - 1))
    segment[bit // 8] ^= 1 << (bit % 8)
    if segment[6:8] == b"\0\0" and len(src) == 4:
        return  # flipping the checksum to 0 over IPv4 means "no checksum": legitimately accepted
    with pytest.raises(MalformedPacket) as info:
        parse_udp_untrusted(bytes(segment), src, dst)
    assert info.value.reason is DropReason.BAD_INNER


# --- parse rejections ------------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), FAMILIES)
def test_parse_rejects_short_segments(src: bytes, dst: bytes) -> None:
    for n in range(8):
        with pytest.raises(MalformedPacket, match="at least 8") as info:
            parse_udp_untrusted(b"\x01" * n, src, dst)
        assert info.value.reason is DropReason.BAD_INNER


@pytest.mark.parametrize(("src", "dst"), FAMILIES)
def test_parse_rejects_a_length_field_that_disagrees(src: bytes, dst: bytes) -> None:
    good = build_udp(src, dst, 1, 2, b"payload")
    for length in (len(good) - 1, len(good) + 1, 0, 7, 0xFFFF):
        bad = good[:4] + struct.pack("!H", length) + good[6:]
        with pytest.raises(MalformedPacket, match="length field") as info:
            parse_udp_untrusted(bad, src, dst)
        assert info.value.reason is DropReason.BAD_INNER
    with pytest.raises(MalformedPacket, match="length field"):
        parse_udp_untrusted(good + b"\0", src, dst)  # trailing octet


@pytest.mark.parametrize(("src", "dst"), FAMILIES)
def test_parse_rejects_a_wrong_checksum_unless_told_not_to_verify(src: bytes, dst: bytes) -> None:
    good = build_udp(src, dst, 1, 2, b"payload")
    bad = good[:-1] + bytes([good[-1] ^ 0x01])
    with pytest.raises(MalformedPacket, match="checksum") as info:
        parse_udp_untrusted(bad, src, dst)
    assert info.value.reason is DropReason.BAD_INNER
    assert parse_udp_untrusted(bad, src, dst, verify_checksum=False) == (1, 2, b"payloae")
    # the pseudo-header counts: the same segment under other addresses does not verify
    other_dst = dst[:-1] + bytes([dst[-1] ^ 0x80])
    with pytest.raises(MalformedPacket, match="checksum"):
        parse_udp_untrusted(good, src, other_dst)


def test_zero_checksum_means_none_over_ipv4() -> None:
    segment = struct.pack("!HHHH", 53, 5353, 11, 0) + b"abc"
    assert parse_udp_untrusted(segment, V4_SRC, V4_DST) == (53, 5353, b"abc")


@pytest.mark.parametrize("verify", [True, False])
def test_zero_checksum_is_invalid_over_ipv6(verify: bool) -> None:
    segment = struct.pack("!HHHH", 53, 5353, 11, 0) + b"abc"
    with pytest.raises(MalformedPacket, match="IPv6") as info:
        parse_udp_untrusted(segment, V6_SRC, V6_DST, verify_checksum=verify)
    assert info.value.reason is DropReason.BAD_INNER


# --- local misuse ----------------------------------------------------------------------------


def test_build_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="ports"):
        build_udp(V4_SRC, V4_DST, -1, 1, b"")
    with pytest.raises(ValueError, match="ports"):
        build_udp(V4_SRC, V4_DST, 1, 0x10000, b"")
    with pytest.raises(ValueError, match="at most 65527"):
        build_udp(V4_SRC, V4_DST, 1, 2, bytes(UDP_MAX_PAYLOAD + 1))
    assert len(build_udp(V4_SRC, V4_DST, 1, 2, bytes(UDP_MAX_PAYLOAD))) == 0xFFFF


@pytest.mark.parametrize(
    ("src", "dst"), [(V4_SRC, V6_DST), (V4_SRC[:3], V4_DST[:3]), (b"", b""), (V6_SRC, V4_DST)]
)
def test_mismatched_addresses_are_a_caller_bug(src: bytes, dst: bytes) -> None:
    with pytest.raises(ValueError, match="4 \\(IPv4\\) or 16 \\(IPv6\\)"):
        build_udp(src, dst, 1, 2, b"x")
    with pytest.raises(ValueError, match="packed addresses"):
        udp_checksum(src, dst, b"\0" * 8)
    with pytest.raises(ValueError, match="packed addresses"):
        parse_udp_untrusted(b"\0" * 8, src, dst)


# --- the per-flow partial sum and the ICV-covered parse ----------------------------------------


@settings(max_examples=300, deadline=None)
@given(addrs=addresses, sport=ports, dport=ports,
       payload=st.one_of(st.binary(max_size=100), st.binary(min_size=760, max_size=3000)))
def test_build_udp_partial_is_build_udp(
    addrs: tuple[bytes, bytes], sport: int, dport: int, payload: bytes
) -> None:
    # the long payloads take the four-slice sum (768 octets and more), odd lengths included
    src, dst = addrs
    partial = udp_partial_sum(src, dst, sport, dport)
    segment = build_udp_partial(partial, sport, dport, payload)
    assert segment == build_udp(src, dst, sport, dport, payload)
    zeroed = segment[:6] + b"\0\0" + segment[8:]
    assert struct.unpack_from("!H", segment, 6)[0] == naive_udp_checksum(src, dst, zeroed)


@pytest.mark.parametrize("length", [766, 767, 768, 769, 1400, 1409, 65527])
@pytest.mark.parametrize(("src", "dst"), FAMILIES)
def test_checksum_around_the_slice_threshold(src: bytes, dst: bytes, length: int) -> None:
    payload = bytes((i * 31 + 7) & 0xFF for i in range(length))
    segment = build_udp(src, dst, 1, 2, payload)
    zeroed = segment[:6] + b"\0\0" + segment[8:]
    assert struct.unpack_from("!H", segment, 6)[0] == naive_udp_checksum(src, dst, zeroed)
    assert udp_checksum(src, dst, zeroed) == naive_udp_checksum(src, dst, zeroed)


def test_partial_sum_and_partial_build_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"ports in 0\.\.65535"):
        udp_partial_sum(V4_SRC, V4_DST, 65536, 1)
    with pytest.raises(ValueError, match=r"ports in 0\.\.65535"):
        udp_partial_sum(V4_SRC, V4_DST, 1, -1)
    with pytest.raises(ValueError, match="packed addresses"):
        udp_partial_sum(V4_SRC, V6_DST, 1, 2)
    partial = udp_partial_sum(V4_SRC, V4_DST, 1, 2)
    assert len(build_udp_partial(partial, 1, 2, bytes(UDP_MAX_PAYLOAD))) == 0xFFFF
    with pytest.raises(ValueError, match="at most 65527"):
        build_udp_partial(partial, 1, 2, bytes(UDP_MAX_PAYLOAD + 1))


@settings(max_examples=300, deadline=None)
@given(
    addrs=addresses,
    segment=st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda sp, dp, ck, payload: (
                struct.pack("!HHHH", sp, dp, 8 + len(payload), ck) + payload
            ),
            ports,
            ports,
            st.sampled_from([0, 0xFFFF, 1, 0x1234]),
            st.binary(max_size=3),
        ),
    ),
)
def test_authenticated_parse_is_the_unverified_parse(
    addrs: tuple[bytes, bytes], segment: bytes
) -> None:
    src, dst = addrs
    try:
        want: object = parse_udp_untrusted(segment, src, dst, verify_checksum=False)
    except MalformedPacket as exc:
        want = (exc.reason, str(exc))
    try:
        got: object = parse_udp_authenticated_untrusted(segment, len(src) == 16)
    except MalformedPacket as exc:
        got = (exc.reason, str(exc))
    assert got == want
    if isinstance(got, tuple) and isinstance(got[0], DropReason):
        assert got[0] is DropReason.BAD_INNER
