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

Speed: the ones' complement sum of the payload is read with ``int.from_bytes(buf, "little")``
and reduced ``% 0xFFFF`` (since 2**16 == 1 mod 0xFFFF, the big integer is congruent to the sum
of its 16-bit words). Read little-endian, every word is byte-swapped, so the residue is the
byte-swapped sum (RFC 1071 §2(B), byte order independence) and one swap of the 16-bit residue
fixes it; an odd trailing octet then lands in the low byte of its word with weight 1, which is
exactly RFC 768's zero pad, so odd lengths need no shift. Long payloads are read in four
slices whose sum has a quarter of the digits: CPython's ``%`` by a one-digit divisor costs a
hardware division per 30-bit digit, more than the conversion itself. The pseudo-header is
added as integers (:func:`udp_partial_sum` precomputes it and the ports once per flow), so no
pseudo-header buffer is ever built. docs/framing.md has the measurements.
"""

from __future__ import annotations

import struct

from secsock.errors import DropReason, MalformedPacket

__all__ = (
    "IPPROTO_UDP",
    "UDP_HEADER_LEN",
    "UDP_MAX_PAYLOAD",
    "build_udp",
    "build_udp_partial",
    "parse_udp_authenticated_untrusted",
    "parse_udp_untrusted",
    "udp_checksum",
    "udp_partial_sum",
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


_from_bytes = int.from_bytes
_pack_header = _HEADER.pack
_SPLIT_AT = 768  # from this length on, four slices beat one conversion and a long division


def _payload_sum(data: bytes | bytearray | memoryview) -> int:
    """The ones' complement sum of ``data``'s 16-bit words (zero-padded), modulo 0xFFFF."""
    n = len(data)
    if n < _SPLIT_AT:
        r = _from_bytes(data, "little") % 0xFFFF
    else:
        q = (n >> 3) << 1  # an even slice length keeps every word whole
        r = (
            _from_bytes(data[:q], "little")
            + _from_bytes(data[q : 2 * q], "little")
            + _from_bytes(data[2 * q : 3 * q], "little")
            + _from_bytes(data[3 * q :], "little")
        ) % 0xFFFF
    return (r & 0xFF) << 8 | r >> 8  # little-endian words: swap the residue back


def _residue(src: bytes, dst: bytes, segment: bytes | bytearray | memoryview) -> int:
    """The sum of the pseudo-header and segment words, modulo 0xFFFF.

    The pseudo-header's words are src, dst, the protocol number and the upper-layer length (for
    IPv6 a 32-bit length, whose two words are also congruent to the length itself), so they are
    added as integers.
    """
    return (
        _from_bytes(src, "big") + _from_bytes(dst, "big") + IPPROTO_UDP + len(segment)
        + _payload_sum(segment)
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


def udp_partial_sum(src: bytes, dst: bytes, sport: int, dport: int) -> int:
    """The checksum words that do not depend on the payload, for :func:`build_udp_partial`.

    The pseudo-header's addresses and protocol plus the header's two ports, reduced modulo
    0xFFFF. A sender computes it once per flow. Raises :class:`ValueError` on malformed
    addresses or ports outside 0..65535.
    """
    _check_addresses(src, dst)
    if not 0 <= sport <= 0xFFFF or not 0 <= dport <= 0xFFFF:
        raise ValueError(f"expected ports in 0..65535, found sport={sport} dport={dport}")
    return (_from_bytes(src, "big") + _from_bytes(dst, "big") + IPPROTO_UDP + sport + dport) % 0xFFFF


def build_udp_partial(partial: int, sport: int, dport: int, payload: bytes) -> bytes:
    """:func:`build_udp` with the flow's :func:`udp_partial_sum` precomputed (the per-packet path).

    ``partial`` must be ``udp_partial_sum(src, dst, sport, dport)`` for these ports; ``payload``
    is bytes. A payload longer than :data:`UDP_MAX_PAYLOAD` raises :class:`ValueError`.
    """
    length = len(payload) + UDP_HEADER_LEN
    if length > 0xFFFF:
        raise ValueError(
            f"expected a UDP payload of at most {UDP_MAX_PAYLOAD} bytes, found {length - 8}"
        )
    # the length appears twice: in the pseudo-header and in the header
    r = (partial + 2 * length + _payload_sum(payload)) % 0xFFFF
    return _pack_header(sport, dport, length, 0xFFFF - r if r else 0xFFFF) + payload


def build_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """The UDP segment (header with correct checksum, then ``payload``) for transport-mode ESP/AH.

    ``src``/``dst`` are the packed outer addresses used for the pseudo-header. Raises
    :class:`ValueError` on a port outside 0..65535, a payload longer than
    :data:`UDP_MAX_PAYLOAD` or malformed addresses (local misuse, never network data).
    """
    return build_udp_partial(udp_partial_sum(src, dst, sport, dport), sport, dport, payload)


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


def parse_udp_authenticated_untrusted(
    segment: bytes, ipv6: bool
) -> tuple[int, int, bytes]:
    """:func:`parse_udp_untrusted` with ``verify_checksum=False``, for a segment an ICV covered.

    The per-packet path of ESP-in-UDP: ESP's ICV already authenticated every octet of
    ``segment`` (so the checksum, which guards against corruption, can add nothing), and NAT
    may have changed the outer addresses. The length rule and the IPv6 zero-checksum rule
    still apply and raise :class:`~secsock.errors.MalformedPacket` (``BAD_INNER``); there are
    no addresses to pass.
    """
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
    if ipv6 and not checksum:
        raise MalformedPacket(
            "inner UDP over IPv6: a zero checksum is invalid (RFC 8200 8.1)",
            DropReason.BAD_INNER,
        )
    return sport, dport, segment[UDP_HEADER_LEN:]
