"""ESP-in-UDP (RFC 3948 §2.2–2.3): what a datagram on the NAT-T port carries. Sans-IO.

A datagram received on the encapsulation port is one of:

=============  ==========================================  ======================================
kind           first octets                                handling
=============  ==========================================  ======================================
KEEPALIVE      exactly one octet, 0xFF                     ignore (RFC 3948 §2.3)
IKE            four zero octets (the non-ESP marker)       strip the marker, hand to IKE
ESP            anything else: a nonzero SPI, then seq      ESP, sent as is (no marker)
=============  ==========================================  ======================================

An ESP datagram must hold at least the SPI and the sequence number (8 octets); anything shorter
that is neither a keepalive nor marked IKE is malformed. (Linux sends datagrams of 8 octets or
fewer up to the IKE socket instead of to ESP; both end up dropped by an ESP-only receiver.)

The outer UDP checksum is the socket layer's business: the Linux kernel sends ESP-in-UDP over IPv4
with a UDP checksum of 0 (RFC 3948 §2.1 says SHOULD), and a receiver must accept it.
"""

from __future__ import annotations

from enum import Enum

from secsock.errors import MalformedPacket

__all__ = (
    "ESP_MIN_HEADER",
    "NATT_PORT",
    "NAT_KEEPALIVE",
    "NON_ESP_MARKER",
    "UdpEncapKind",
    "add_non_esp_marker",
    "build_keepalive",
    "classify_untrusted",
    "strip_non_esp_marker",
)

NON_ESP_MARKER = b"\0\0\0\0"
"""The four zero octets that precede an IKE message on the NAT-T port (RFC 3948 §2.2)."""
NAT_KEEPALIVE = b"\xff"
"""The one-octet NAT-keepalive payload (RFC 3948 §2.3)."""
NATT_PORT = 4500
"""The UDP port IKE moves to after NAT detection, and ESP-in-UDP with it (RFC 3948 §2.1)."""
ESP_MIN_HEADER = 8
"""SPI (4 octets) and sequence number (4 octets): the least an ESP packet can be."""


class UdpEncapKind(Enum):
    """What a datagram on the ESP-in-UDP port carries."""

    ESP = "esp"
    IKE = "ike"
    KEEPALIVE = "keepalive"


def classify_untrusted(datagram: bytes | bytearray | memoryview) -> UdpEncapKind:
    """Classify a UDP payload received on the encapsulation port (RFC 3948 §2.2–2.3).

    Raises :class:`~secsock.errors.MalformedPacket` for a datagram that is not a keepalive, not
    marked IKE and too short to be ESP (fewer than 8 octets), including the empty datagram.
    """
    n = len(datagram)
    if n == 1 and datagram[0] == 0xFF:
        return UdpEncapKind.KEEPALIVE
    if n >= 4 and datagram[:4] == NON_ESP_MARKER:
        return UdpEncapKind.IKE
    if n < ESP_MIN_HEADER:
        raise MalformedPacket(
            f"ESP-in-UDP: expected a keepalive (0xff), a non-ESP marker or an ESP header of at "
            f"least {ESP_MIN_HEADER} octets, found {n} octets"
        )
    return UdpEncapKind.ESP


def strip_non_esp_marker(datagram: bytes | bytearray | memoryview) -> bytes:
    """The IKE message after the non-ESP marker.

    Raises :class:`~secsock.errors.MalformedPacket` if ``datagram`` does not start with the
    marker (it was not classified IKE).
    """
    if len(datagram) < 4 or datagram[:4] != NON_ESP_MARKER:
        raise MalformedPacket("ESP-in-UDP: expected the four-zero-octet non-ESP marker, not found")
    return bytes(datagram[4:])


def add_non_esp_marker(ike_message: bytes) -> bytes:
    """The datagram that carries ``ike_message`` on the encapsulation port (marker + message)."""
    return NON_ESP_MARKER + ike_message


def build_keepalive() -> bytes:
    """A NAT-keepalive datagram payload: the single octet 0xFF."""
    return NAT_KEEPALIVE
