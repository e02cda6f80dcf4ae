"""RFC 3948 ESP-in-UDP classification: keepalive, non-ESP marker (IKE), ESP."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secsock.core.framing.udp_encap import (
    NAT_KEEPALIVE,
    NATT_PORT,
    NON_ESP_MARKER,
    UdpEncapKind,
    add_non_esp_marker,
    build_keepalive,
    classify_untrusted,
    strip_non_esp_marker,
)
from secsock.errors import MalformedPacket

IKE_HEADER = bytes(range(1, 29))  # 28 octets, the size of an IKEv2 header; SPIi is nonzero


def test_constants() -> None:
    assert NON_ESP_MARKER == b"\x00\x00\x00\x00"
    assert NAT_KEEPALIVE == b"\xff"
    assert NATT_PORT == 4500
    assert build_keepalive() == b"\xff"


def test_keepalive() -> None:
    assert classify_untrusted(build_keepalive()) is UdpEncapKind.KEEPALIVE


def test_ike_is_marked_and_stripped() -> None:
    datagram = add_non_esp_marker(IKE_HEADER)
    assert datagram[:4] == b"\0\0\0\0"
    assert classify_untrusted(datagram) is UdpEncapKind.IKE
    assert strip_non_esp_marker(datagram) == IKE_HEADER


def test_esp_is_anything_else_with_spi_and_seq() -> None:
    esp = struct.pack("!II", 0x1000, 1) + b"\xaa" * 40
    assert classify_untrusted(esp) is UdpEncapKind.ESP
    assert classify_untrusted(esp[:8]) is UdpEncapKind.ESP  # SPI + seq is the minimum
    # an ESP packet whose SPI starts with 0xff is not a keepalive: only a lone 0xff is
    assert classify_untrusted(b"\xff" * 8) is UdpEncapKind.ESP


@pytest.mark.parametrize("n", range(8))
def test_short_non_esp_data_is_malformed(n: int) -> None:
    datagram = b"\x01" * n
    with pytest.raises(MalformedPacket, match=f"found {n} octets"):
        classify_untrusted(datagram)


@pytest.mark.parametrize("datagram", [b"", b"\xff\xff", b"\xfe", b"\x00", b"\x00\x00\x00"])
def test_almost_keepalives_and_almost_markers_are_malformed(datagram: bytes) -> None:
    with pytest.raises(MalformedPacket):
        classify_untrusted(datagram)


def test_a_bare_marker_is_ike() -> None:
    # Four zero octets cannot be ESP (SPI 0 is reserved); what follows is IKE's business.
    assert classify_untrusted(b"\0\0\0\0") is UdpEncapKind.IKE
    assert strip_non_esp_marker(b"\0\0\0\0") == b""


def test_buffers_other_than_bytes() -> None:
    datagram = add_non_esp_marker(IKE_HEADER)
    assert classify_untrusted(bytearray(datagram)) is UdpEncapKind.IKE
    assert classify_untrusted(memoryview(datagram)) is UdpEncapKind.IKE
    assert strip_non_esp_marker(memoryview(datagram)) == IKE_HEADER
    assert classify_untrusted(memoryview(b"\xff")) is UdpEncapKind.KEEPALIVE


def test_strip_without_a_marker_is_malformed() -> None:
    with pytest.raises(MalformedPacket, match="non-ESP marker"):
        strip_non_esp_marker(struct.pack("!II", 0x1000, 1))
    with pytest.raises(MalformedPacket):
        strip_non_esp_marker(b"\0\0")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_classify_or_malformed(datagram: bytes) -> None:
    try:
        kind = classify_untrusted(datagram)
    except MalformedPacket:
        assert len(datagram) < 8
        assert datagram != b"\xff"
        assert datagram[:4] != b"\0\0\0\0"
        with pytest.raises(MalformedPacket):
            strip_non_esp_marker(datagram)
        return
    if kind is UdpEncapKind.IKE:
        assert add_non_esp_marker(strip_non_esp_marker(datagram)) == datagram
    elif kind is UdpEncapKind.ESP:
        assert len(datagram) >= 8
        assert datagram[:4] != b"\0\0\0\0"
        with pytest.raises(MalformedPacket):
            strip_non_esp_marker(datagram)
    else:
        assert datagram == b"\xff"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_strip_any_bytes_gives_a_result_or_malformed(datagram: bytes) -> None:
    try:
        message = strip_non_esp_marker(datagram)
    except MalformedPacket:
        assert datagram[:4] != b"\0\0\0\0"
    else:
        assert NON_ESP_MARKER + message == datagram
