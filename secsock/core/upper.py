"""The transport-mode inner UDP header: build and parse with pseudo-header checksums. Sans-IO.

In transport mode the ESP payload is the upper-layer segment itself (next header 17), so its UDP
checksum covers a pseudo-header made of the *outer* IP addresses (RFC 768 for IPv4, RFC 8200
§8.1 for IPv6). :func:`build_udp` produces exactly what the Linux kernel puts inside ESP: the
8-byte header with a correct checksum, followed by the payload.

Receive-side rules (:func:`parse_udp_untrusted`):

* the length field must equal the segment length (ESP delimits the inner packet exactly, so a
  mismatch means a broken peer; Linux would trim trailing bytes, secsock drops);
* over IPv4 a checksum of 0 means "no checksum" (RFC 768) and is accepted;
* over IPv6 a checksum of 0 is invalid (RFC 8200 §8.1) and is always rejected, even with
  ``verify_checksum=False`` (Linux does the same unless a socket opts in);
* a computed checksum of 0 is sent as 0xFFFF (RFC 768), and 0xFFFF verifies as usual.

Every failure raises :class:`~secsock.errors.MalformedPacket` with
``reason=DropReason.BAD_INNER``.

Speed: the ones' complement sum is computed as ``int.from_bytes(buf, "big") % 0xFFFF`` (since
2**16 == 1 mod 0xFFFF, the big integer is congruent to the sum of its 16-bit words). For a
1408-byte payload this takes about 2.5 us on CPython 3.11, against about 12 us for
``sum(memoryview(buf).cast("H"))`` and 11 us for ``sum(array("H", buf))``. The pseudo-header is
added arithmetically, so no pseudo-header buffer is ever built.
"""

from __future__ import annotations

import struct

from secsock.errors import DropReason, MalformedPacket

__all__ = (
    "IPPROTO_UDP",
    "UDP_HEADER_LEN",
    "UDP_MAX_PAYLOAD",
    "build_udp",
    "parse_udp_untrusted",
    "udp_checksum",
)

IPPROTO_UDP = 17
"""The IP protocol / next-header number of UDP."""
UDP_HEADER_LEN = 8
"""Length of the UDP header."""
UDP_MAX_PAYLOAD = 0xFFFF - UDP_HEADER_LEN
"""The largest payload whose length still fits the 16-bit UDP length field."""

_HEADER = struct.Struct("!HHHH")  # source port, destination port, length, checksum
_ADDR_LENGTHS = (4, 16)


def _check_addresses(src: bytes, dst: bytes) -> None:
    if len(src) not in _ADDR_LENGTHS or len(src) != len(dst):
        raise ValueError(
            "expected src and dst as packed addresses of 4 (IPv4) or 16 (IPv6) bytes each, "
            f"found {len(src)} and {len(dst)} bytes"
        )


def _residue(src: bytes, dst: bytes, segment: bytes | bytearray | memoryview) -> int:
    """The sum of the pseudo-header and segment words, modulo 0xFFFF.

    The pseudo-header's words are src, dst, the protocol number and the upper-layer length (for
    IPv6 a 32-bit length, whose two words are also congruent to the length itself), so they are
    added as integers. An odd-length segment is padded with a zero octet (a shift by 8 bits).
    """
    length = len(segment)
    n = int.from_bytes(segment, "big")
    if length & 1:
        n <<= 8
    return (
        int.from_bytes(src, "big") + int.from_bytes(dst, "big") + IPPROTO_UDP + length + n
    ) % 0xFFFF


def udp_checksum(src: bytes, dst: bytes, segment: bytes | bytearray | memoryview) -> int:
    """The UDP checksum to put in ``segment``'s checksum field (which must hold zero).

    ``src`` and ``dst`` are the packed outer addresses (4 bytes each for IPv4, 16 for IPv6); the
    pseudo-header uses ``len(segment)`` as the UDP length. A computed 0 is returned as 0xFFFF
    (RFC 768), so the result is never 0.
    """
    _check_addresses(src, dst)
    # The ones' complement sum is never 0 here (the pseudo-header has the nonzero protocol
    # word), so a residue of 0 stands for a sum of 0xFFFF, whose complement 0 is sent as 0xFFFF.
    r = _residue(src, dst, segment)
    return 0xFFFF - r if r else 0xFFFF


def build_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """The UDP segment (header with correct checksum, then ``payload``) for transport-mode ESP/AH.

    ``src``/``dst`` are the packed outer addresses used for the pseudo-header. Raises
    :class:`ValueError` on a port outside 0..65535, a payload longer than
    :data:`UDP_MAX_PAYLOAD` or malformed addresses (local misuse, never network data).
    """
    _check_addresses(src, dst)
    if not 0 <= sport <= 0xFFFF or not 0 <= dport <= 0xFFFF:
        raise ValueError(f"expected ports in 0..65535, found sport={sport} dport={dport}")
    plen = len(payload)
    if plen > UDP_MAX_PAYLOAD:
        raise ValueError(f"expected a UDP payload of at most {UDP_MAX_PAYLOAD} bytes, found {plen}")
    length = plen + UDP_HEADER_LEN
    n = int.from_bytes(payload, "big")
    if plen & 1:
        n <<= 8
    # header words: sport, dport, length (checksum taken as 0); pseudo-header: src, dst, 17, length
    r = (
        int.from_bytes(src, "big")
        + int.from_bytes(dst, "big")
        + IPPROTO_UDP
        + 2 * length
        + sport
        + dport
        + n
    ) % 0xFFFF
    checksum = 0xFFFF - r if r else 0xFFFF
    return _HEADER.pack(sport, dport, length, checksum) + payload


def parse_udp_untrusted(
    segment: bytes | bytearray | memoryview,
    src: bytes,
    dst: bytes,
    *,
    verify_checksum: bool = True,
) -> tuple[int, int, bytes]:
    """Parse a decapsulated inner UDP segment: ``(sport, dport, payload)``.

    ``src``/``dst`` are the packed outer addresses (trusted; wrong lengths raise
    :class:`ValueError`, a caller bug). Anything wrong with ``segment`` raises
    :class:`~secsock.errors.MalformedPacket` with ``reason=DropReason.BAD_INNER``: shorter than
    8 bytes, a length field that differs from the segment length, a wrong checksum (when
    ``verify_checksum``), or a zero checksum over IPv6. A zero checksum over IPv4 means the sender
    sent none and is accepted.
    """
    _check_addresses(src, dst)
    seglen = len(segment)
    if seglen < UDP_HEADER_LEN:
        raise MalformedPacket(
            f"inner UDP: expected at least {UDP_HEADER_LEN} bytes, found {seglen}",
            DropReason.BAD_INNER,
        )
    sport, dport, length, checksum = _HEADER.unpack_from(segment)
    if length != seglen:
        raise MalformedPacket(
            f"inner UDP: length field says {length} bytes, the segment has {seglen}",
            DropReason.BAD_INNER,
        )
    if checksum == 0:
        if len(src) == 16:
            raise MalformedPacket(
                "inner UDP over IPv6: a zero checksum is invalid (RFC 8200 8.1)",
                DropReason.BAD_INNER,
            )
    elif verify_checksum and _residue(src, dst, segment) != 0:
        raise MalformedPacket(
            f"inner UDP: checksum 0x{checksum:04x} does not verify "
            f"(ports {sport} -> {dport}, {seglen} bytes)",
            DropReason.BAD_INNER,
        )
    return sport, dport, bytes(segment[UDP_HEADER_LEN:])
