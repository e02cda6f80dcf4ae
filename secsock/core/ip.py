"""IPv4 and IPv6 fixed headers: build, parse, checksum. Sans-IO.

Used by the AH codec (whose ICV covers the IP header) and by the raw-IP transport of the
socket layer (protocols 50/51 on ``SOCK_RAW``).

Addresses are :mod:`ipaddress` objects (:class:`~ipaddress.IPv4Address`,
:class:`~ipaddress.IPv6Address`) in the header dataclasses; the ``build_*`` functions accept an
address object, its text form or its packed bytes.

Receive-side notes for the socket layer (Linux):

* a raw IPv4 socket (``AF_INET, SOCK_RAW, 51``) delivers the whole IP header with the payload:
  feed it to :func:`parse_ipv4_untrusted` (or straight to the AH verifier);
* a raw IPv6 socket delivers only the payload (the AH header onwards); the fixed header must be
  rebuilt from ``recvfrom``'s source and the local destination address.

:func:`parse_ipv6_untrusted` does not walk extension headers: the payload it returns starts at
whatever ``next_header`` names.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TypeAlias

from secsock.errors import MalformedPacket

__all__ = (
    "IPV4_DF",
    "IPV4_HEADER_LEN",
    "IPV4_MF",
    "IPV4_OFFSET_MASK",
    "IPV6_HEADER_LEN",
    "IPv4AddressLike",
    "IPv4Header",
    "IPv6AddressLike",
    "IPv6Header",
    "build_ipv4",
    "build_ipv6",
    "internet_checksum",
    "ipv4_header_checksum",
    "parse_ipv4_untrusted",
    "parse_ipv6_untrusted",
)

IPV4_HEADER_LEN = 20
"""Length of the IPv4 header without options."""
IPV6_HEADER_LEN = 40
"""Length of the fixed IPv6 header."""
IPV4_DF = 0x4000
"""Don't Fragment bit of the IPv4 flags/fragment-offset word."""
IPV4_MF = 0x2000
"""More Fragments bit of the IPv4 flags/fragment-offset word."""
IPV4_OFFSET_MASK = 0x1FFF
"""Fragment offset (in 8-octet units) part of the IPv4 flags/fragment-offset word."""
_IPV4_MAX_OPTIONS = 40

IPv4AddressLike: TypeAlias = IPv4Address | str | bytes
"""An IPv4 address object, its text or its 4 packed bytes."""
IPv6AddressLike: TypeAlias = IPv6Address | str | bytes
"""An IPv6 address object, its text or its 16 packed bytes."""

# version/IHL, TOS, total length, identification, flags/offset, TTL, protocol, checksum, src, dst
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
# version/traffic class/flow label, payload length, next header, hop limit, src, dst
_IPV6 = struct.Struct("!IHBB16s16s")


def internet_checksum(data: bytes | bytearray | memoryview) -> int:
    """The RFC 1071 Internet checksum of ``data``: the ones' complement of its ones' complement sum.

    An odd-length input is padded with one zero octet. A buffer that already contains a correct
    checksum sums to 0.
    """
    if len(data) & 1:
        data = bytes(data) + b"\x00"
    # 2**16 == 1 (mod 0xFFFF), so the big integer is congruent to the sum of its 16-bit words;
    # the ones' complement sum is that residue, except that a nonzero sum is never 0 but 0xFFFF.
    n = int.from_bytes(data, "big")
    total = n % 0xFFFF
    if total == 0 and n != 0:
        total = 0xFFFF
    return ~total & 0xFFFF


def ipv4_header_checksum(header: bytes | bytearray | memoryview) -> int:
    """The checksum an IPv4 header must carry: computed with its checksum field taken as zero."""
    if len(header) < IPV4_HEADER_LEN:
        raise ValueError(f"expected an IPv4 header of at least 20 bytes, found {len(header)}")
    return internet_checksum(bytes(header[:10]) + b"\x00\x00" + bytes(header[12:]))


def _check_range(name: str, value: int, bits: int) -> None:
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{name} must be an unsigned {bits}-bit integer, found {value}")


def _ipv4(addr: IPv4AddressLike) -> IPv4Address:
    return addr if isinstance(addr, IPv4Address) else IPv4Address(addr)


def _ipv6(addr: IPv6AddressLike) -> IPv6Address:
    return addr if isinstance(addr, IPv6Address) else IPv6Address(addr)


@dataclass(frozen=True, slots=True, kw_only=True)
class IPv4Header:
    """An IPv4 header as it is on the wire (RFC 791), options included.

    ``frag_off`` is the whole 16-bit flags + fragment-offset word (``ip_off``); see the ``df``,
    ``mf`` and ``fragment_offset`` properties. ``checksum`` is the value carried, not
    necessarily a correct one (see :meth:`to_bytes` and :func:`build_ipv4`).
    """

    tos: int = 0
    total_length: int
    identification: int = 0
    frag_off: int = IPV4_DF
    ttl: int = 64
    protocol: int
    checksum: int = 0
    src: IPv4Address
    dst: IPv4Address
    options: bytes = b""

    def __post_init__(self) -> None:
        _check_range("tos", self.tos, 8)
        _check_range("total_length", self.total_length, 16)
        _check_range("identification", self.identification, 16)
        _check_range("frag_off", self.frag_off, 16)
        _check_range("ttl", self.ttl, 8)
        _check_range("protocol", self.protocol, 8)
        _check_range("checksum", self.checksum, 16)
        if not isinstance(self.src, IPv4Address) or not isinstance(self.dst, IPv4Address):
            raise TypeError(
                "src and dst must be ipaddress.IPv4Address, found "
                f"{type(self.src).__name__} and {type(self.dst).__name__}"
            )
        if len(self.options) % 4 or len(self.options) > _IPV4_MAX_OPTIONS:
            raise ValueError(
                "options must be a multiple of 4 bytes and at most 40 bytes, "
                f"found {len(self.options)}"
            )
        if self.total_length < self.header_length:
            raise ValueError(
                f"total_length must be at least the header length {self.header_length}, "
                f"found {self.total_length}"
            )

    @property
    def ihl(self) -> int:
        """Header length in 32-bit words."""
        return 5 + len(self.options) // 4

    @property
    def header_length(self) -> int:
        """Header length in bytes."""
        return IPV4_HEADER_LEN + len(self.options)

    @property
    def payload_length(self) -> int:
        """``total_length`` minus the header."""
        return self.total_length - self.header_length

    @property
    def df(self) -> bool:
        """The Don't Fragment flag."""
        return bool(self.frag_off & IPV4_DF)

    @property
    def mf(self) -> bool:
        """The More Fragments flag."""
        return bool(self.frag_off & IPV4_MF)

    @property
    def fragment_offset(self) -> int:
        """The fragment offset in 8-octet units."""
        return self.frag_off & IPV4_OFFSET_MASK

    @property
    def is_fragment(self) -> bool:
        """True when MF is set or the offset is nonzero (a fragment, not a whole datagram)."""
        return bool(self.frag_off & (IPV4_MF | IPV4_OFFSET_MASK))

    def to_bytes(self, *, fix_checksum: bool = False) -> bytes:
        """The header bytes; with ``fix_checksum`` the checksum field is recomputed."""
        raw = _pack_ipv4(
            tos=self.tos,
            total_length=self.total_length,
            identification=self.identification,
            frag_off=self.frag_off,
            ttl=self.ttl,
            protocol=self.protocol,
            checksum=self.checksum,
            src=self.src.packed,
            dst=self.dst.packed,
            options=self.options,
        )
        if not fix_checksum:
            return raw
        return raw[:10] + ipv4_header_checksum(raw).to_bytes(2, "big") + raw[12:]


@dataclass(frozen=True, slots=True, kw_only=True)
class IPv6Header:
    """The fixed IPv6 header (RFC 8200 §3). Extension headers are not modelled."""

    traffic_class: int = 0
    flow_label: int = 0
    payload_length: int
    next_header: int
    hop_limit: int = 64
    src: IPv6Address
    dst: IPv6Address

    def __post_init__(self) -> None:
        _check_range("traffic_class", self.traffic_class, 8)
        _check_range("flow_label", self.flow_label, 20)
        _check_range("payload_length", self.payload_length, 16)
        _check_range("next_header", self.next_header, 8)
        _check_range("hop_limit", self.hop_limit, 8)
        if not isinstance(self.src, IPv6Address) or not isinstance(self.dst, IPv6Address):
            raise TypeError(
                "src and dst must be ipaddress.IPv6Address, found "
                f"{type(self.src).__name__} and {type(self.dst).__name__}"
            )

    def to_bytes(self) -> bytes:
        """The 40 header bytes."""
        return _IPV6.pack(
            (6 << 28) | (self.traffic_class << 20) | self.flow_label,
            self.payload_length,
            self.next_header,
            self.hop_limit,
            self.src.packed,
            self.dst.packed,
        )


def _pack_ipv4(
    *,
    tos: int,
    total_length: int,
    identification: int,
    frag_off: int,
    ttl: int,
    protocol: int,
    checksum: int,
    src: bytes,
    dst: bytes,
    options: bytes,
) -> bytes:
    ihl = 5 + len(options) // 4
    return (
        _IPV4.pack(
            0x40 | ihl, tos, total_length, identification, frag_off, ttl, protocol, checksum,
            src, dst,
        )
        + options
    )


def build_ipv4(
    *,
    src: IPv4AddressLike,
    dst: IPv4AddressLike,
    protocol: int,
    payload_len: int,
    ttl: int = 64,
    tos: int = 0,
    identification: int = 0,
    df: bool = True,
    options: bytes = b"",
) -> bytes:
    """An IPv4 header for ``payload_len`` bytes of ``protocol``, with a correct checksum.

    ``options`` must already be padded to a multiple of 4 bytes (at most 40).
    Raises ValueError on out-of-range fields (total length above 65535 included).
    """
    header = IPv4Header(
        tos=tos,
        total_length=IPV4_HEADER_LEN + len(options) + payload_len,
        identification=identification,
        frag_off=IPV4_DF if df else 0,
        ttl=ttl,
        protocol=protocol,
        src=_ipv4(src),
        dst=_ipv4(dst),
        options=options,
    )
    return header.to_bytes(fix_checksum=True)


def build_ipv6(
    *,
    src: IPv6AddressLike,
    dst: IPv6AddressLike,
    next_header: int,
    payload_len: int,
    hop_limit: int = 64,
    traffic_class: int = 0,
    flow_label: int = 0,
) -> bytes:
    """The 40-byte fixed IPv6 header for ``payload_len`` bytes after it.

    Raises ValueError on out-of-range fields (jumbograms are not supported).
    """
    return IPv6Header(
        traffic_class=traffic_class,
        flow_label=flow_label,
        payload_length=payload_len,
        next_header=next_header,
        hop_limit=hop_limit,
        src=_ipv6(src),
        dst=_ipv6(dst),
    ).to_bytes()


def parse_ipv4_untrusted(
    packet: bytes | bytearray | memoryview, *, verify_checksum: bool = True
) -> tuple[IPv4Header, bytes]:
    """Split an IPv4 packet into its header and payload.

    Checks the version, IHL, total length against the buffer and (unless ``verify_checksum``
    is false) the header checksum. Bytes beyond the total length (link-layer padding) are
    dropped, as the kernel trims them. Options are returned raw, not validated.
    Raises only MalformedPacket.
    """
    n = len(packet)
    if n < IPV4_HEADER_LEN:
        raise MalformedPacket(f"expected an IPv4 header of at least 20 bytes, found {n}")
    vihl, tos, total, ident, frag_off, ttl, proto, csum, src, dst = _IPV4.unpack_from(packet)
    if vihl >> 4 != 4:
        raise MalformedPacket(f"expected IP version 4, found {vihl >> 4}")
    hlen = (vihl & 0x0F) * 4
    if hlen < IPV4_HEADER_LEN:
        raise MalformedPacket(f"expected an IHL of at least 5, found {hlen // 4}")
    if hlen > total:
        raise MalformedPacket(f"total length {total} is shorter than the header length {hlen}")
    if total > n:
        raise MalformedPacket(f"total length {total} exceeds the {n} bytes received")
    if verify_checksum and internet_checksum(packet[:hlen]) != 0:
        raise MalformedPacket("IPv4 header checksum does not verify")
    header = IPv4Header(
        tos=tos,
        total_length=total,
        identification=ident,
        frag_off=frag_off,
        ttl=ttl,
        protocol=proto,
        checksum=csum,
        src=IPv4Address(src),
        dst=IPv4Address(dst),
        options=bytes(packet[IPV4_HEADER_LEN:hlen]),
    )
    return header, bytes(packet[hlen:total])


def parse_ipv6_untrusted(packet: bytes | bytearray | memoryview) -> tuple[IPv6Header, bytes]:
    """Split an IPv6 packet into its fixed header and the rest (extension headers not walked).

    Checks the version and the payload length against the buffer; bytes beyond the payload
    length are dropped. A payload length of 0 is taken literally (jumbograms are not
    supported). Raises only MalformedPacket.
    """
    n = len(packet)
    if n < IPV6_HEADER_LEN:
        raise MalformedPacket(f"expected an IPv6 header of 40 bytes, found {n}")
    vtcfl, plen, nh, hlim, src, dst = _IPV6.unpack_from(packet)
    if vtcfl >> 28 != 6:
        raise MalformedPacket(f"expected IP version 6, found {vtcfl >> 28}")
    if IPV6_HEADER_LEN + plen > n:
        raise MalformedPacket(
            f"payload length {plen} exceeds the {n - IPV6_HEADER_LEN} bytes after the header"
        )
    header = IPv6Header(
        traffic_class=(vtcfl >> 20) & 0xFF,
        flow_label=vtcfl & 0xFFFFF,
        payload_length=plen,
        next_header=nh,
        hop_limit=hlim,
        src=IPv6Address(src),
        dst=IPv6Address(dst),
    )
    return header, bytes(packet[IPV6_HEADER_LEN : IPV6_HEADER_LEN + plen])
