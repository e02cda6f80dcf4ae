"""RFC 4302 Authentication Header in transport mode: seal and verify. Sans-IO.

Layout (``Payload Len`` = AH length in 32-bit words minus 2)::

    0  Next Header (8) | Payload Len (8) | RESERVED (16, sent as 0)
    4  SPI (32)
    8  Sequence Number, low 32 bits (32)
    12 ICV (variable) + padding to the SA's alignment

The ICV covers the IP header with its mutable fields zeroed, the AH header with the ICV field
zeroed (the padding as sent), the payload, and -- with ESN -- the high 32 bits of the sequence
number appended (never sent). Mutable IPv4 fields: TTL and checksum always; TOS when
``cleartos`` (sysctl ``net.inet.ipsec.ah_cleartos``, default 1); flags + fragment offset are
masked with ``offsetmask`` (``net.inet.ipsec.ah_offsetmask``, default 0); options other than
KAME's immutable list are zeroed whole. IPv6: traffic class, flow label and hop limit.

Alignment is per SA: IPv4 AH is padded to a multiple of 4 bytes (RFC 4302) or 8 (Linux's
default; ``align=8``); IPv6 always to 8. The receiver accepts either IPv4 alignment.

AES-GMAC (RFC 4543 §4): the ICV field is an 8-byte IV followed by the 16-byte tag; the IV is the
64-bit sequence number, the nonce ``salt || IV``, and the GMAC AAD the whole ICV input above with
IV and tag zeroed.

The engine passes sysctl values in; this module never reads them. docs/ah.md has the details.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import Final, NamedTuple, Protocol

from secsock.core._shown import shown
from secsock.core.algorithms import (
    AuthAlgorithm,
    AuthKind,
    Gmac,
    Integrity,
    check_key,
    new_gmac,
    new_integrity,
)
from secsock.core.ip import (
    IPv4AddressLike,
    IPv4Header,
    IPv6AddressLike,
    IPv6Header,
    build_ipv4,
    build_ipv6,
    parse_ipv4_untrusted,
    parse_ipv6_untrusted,
)
from secsock.errors import AlgorithmError, IntegrityError, MalformedPacket

__all__ = (
    "AH_HEADER_LEN",
    "IMMUTABLE_IPV4_OPTIONS",
    "IPPROTO_AH",
    "AhContext",
    "AhPeek",
    "AhResult",
    "peek_untrusted",
    "seal_ipv4",
    "seal_ipv6",
    "verify_ipv4_untrusted",
    "verify_ipv6_untrusted",
    "verify_untrusted",
)

IPPROTO_AH: Final = 51
"""IP protocol number of AH."""
AH_HEADER_LEN: Final = 12
"""Next header, payload length, reserved, SPI and sequence number: the AH bytes before the ICV."""
IMMUTABLE_IPV4_OPTIONS: Final = frozenset({0x00, 0x01, 0x82, 0x85, 0x86, 0x94, 0x95})
"""IPv4 option types included in the ICV as sent (KAME's list, RFC 4302 Appendix A.1):
EOL, NOP, Security, Extended Security, Commercial Security, Router Alert, Sender-Directed
Multi-Destination Delivery. Every other option is zeroed whole."""

_AH = struct.Struct("!BBHII")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_SEQ_HI = struct.Struct("!I")
_IV = struct.Struct("!Q")
_LSRR: Final = 0x83
_SSRR: Final = 0x89
_MAX_SEQ_32: Final = 0xFFFFFFFF
_MAX_SEQ_64: Final = 0xFFFFFFFFFFFFFFFF


def _roundup(n: int, align: int) -> int:
    return (n + align - 1) // align * align


# --- integrity transforms behind one small interface ------------------------------------------


class _Mac(Protocol):
    """What AH needs of an integrity transform: the ICV field's length, sign and check."""

    field_len: int

    def sign(self, iv: bytes, parts: tuple[bytes, ...]) -> bytes: ...

    def check(self, icv_field: bytes, parts: tuple[bytes, ...]) -> bool: ...


class _IntegrityMac:
    """A plain integrity transform (HMAC, AES-XCBC-MAC): the ICV field is the truncated MAC."""

    __slots__ = ("_integrity", "field_len")

    def __init__(self, integrity: Integrity) -> None:
        self._integrity = integrity
        self.field_len = integrity.icv_len

    def sign(self, iv: bytes, parts: tuple[bytes, ...]) -> bytes:
        return self._integrity.compute(*parts)

    def check(self, icv_field: bytes, parts: tuple[bytes, ...]) -> bool:
        return self._integrity.verify(icv_field, *parts)


class _GmacMac:
    """RFC 4543 AES-GMAC for AH: the ICV field is IV (8) || tag (16), nonce = salt || IV."""

    __slots__ = ("_gmac", "field_len")

    def __init__(self, gmac: Gmac) -> None:
        self._gmac = gmac
        self.field_len = gmac.iv_len + gmac.icv_len

    def sign(self, iv: bytes, parts: tuple[bytes, ...]) -> bytes:
        return iv + self._gmac.tag(iv, *parts)

    def check(self, icv_field: bytes, parts: tuple[bytes, ...]) -> bool:
        iv_len = self._gmac.iv_len
        return self._gmac.verify(icv_field[iv_len:], icv_field[:iv_len], *parts)


def _new_mac(auth: AuthAlgorithm, key: bytes) -> _Mac:
    if auth.kind is AuthKind.NULL:
        raise AlgorithmError(
            f"AH needs an integrity algorithm with an ICV (RFC 8221: NONE is MUST NOT), "
            f"got {auth.name}"
        )
    if auth.kind is AuthKind.GMAC:
        check_key(auth, key)
        return _GmacMac(new_gmac(key))
    return _IntegrityMac(new_integrity(auth, key))


# --- the per-SA context -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AhContext:
    """What AH needs of one SA: the prepared integrity transform and the alignment.

    Build it with :meth:`create`. ``align`` is the IPv4 alignment of the AH header (4 or 8;
    None means RFC 4302's 4). IPv6 always uses 8. ``icv_len`` is the ICV field's length
    without padding (for AES-GMAC, IV plus tag). The key is not kept in the repr.
    """

    auth: AuthAlgorithm
    align: int | None
    icv_len: int
    ah_len_ipv4: int
    ah_len_ipv6: int
    _mac: _Mac = field(repr=False, compare=False)
    _accept_ipv4: frozenset[int] = field(repr=False, compare=False)

    @classmethod
    def create(
        cls, *, auth: AuthAlgorithm, auth_key: bytes, align: int | None = None
    ) -> AhContext:
        """Prepare the integrity transform for ``auth`` keyed with ``auth_key``.

        Raises AlgorithmError for a wrong key length or an algorithm without an ICV (``null``),
        ValueError for an ``align`` other than None, 4 or 8.
        """
        if align not in (None, 4, 8):
            raise ValueError(f"AH alignment must be None, 4 or 8, found {shown(align)}")
        mac = _new_mac(auth, bytes(auth_key))
        icv = mac.field_len
        ah_len_ipv4 = _roundup(AH_HEADER_LEN + icv, align or 4)
        return cls(
            auth=auth,
            align=align,
            icv_len=icv,
            ah_len_ipv4=ah_len_ipv4,
            ah_len_ipv6=_roundup(AH_HEADER_LEN + icv, 8),
            _mac=mac,
            _accept_ipv4=frozenset(
                {_roundup(AH_HEADER_LEN + icv, 4), _roundup(AH_HEADER_LEN + icv, 8)}
            ),
        )


class AhPeek(NamedTuple):
    """The AH fields the engine needs before the ICV check: SA lookup and replay window."""

    spi: int
    seq_lo: int
    next_header: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AhResult:
    """A verified AH packet: the payload (after AH) and where it came from.

    ``ip_header`` is the IP header as received (protocol / next header still 51); the upper
    layer's protocol number is ``next_header``.
    """

    spi: int
    seq_lo: int
    next_header: int
    payload: bytes = field(repr=False)
    ip_header: IPv4Header | IPv6Header


# --- mutable-field zeroing ----------------------------------------------------------------------


def _mask_ipv4_options(options: bytes, *, outbound: bool) -> tuple[bytes, bytes | None]:
    """Zero the mutable options; return them and, outbound, a source route's final destination.

    Raises MalformedPacket on an option whose length is missing, below 2 or past the end.
    """
    if not options:
        return options, None
    out = bytearray(options)
    final_dst: bytes | None = None
    i, n = 0, len(out)
    while i < n:
        kind = out[i]
        if kind == 0x00:  # End of Option List: the rest is padding, kept as sent
            break
        if kind == 0x01:  # No Operation
            i += 1
            continue
        if i + 1 >= n:
            raise MalformedPacket(f"IPv4 option 0x{kind:02x} at offset {i} has no length byte")
        length = out[i + 1]
        if length < 2 or i + length > n:
            raise MalformedPacket(
                f"IPv4 option 0x{kind:02x} at offset {i} declares length {length}, "
                f"expected 2..{n - i}"
            )
        if kind not in IMMUTABLE_IPV4_OPTIONS:
            if outbound and kind in (_LSRR, _SSRR) and length >= 7:
                # The receiver sees the route's last hop as destination (RFC 4302 §3.3.3.1.1.1).
                final_dst = bytes(out[i + length - 4 : i + length])
            out[i : i + length] = bytes(length)
        i += length
    return bytes(out), final_dst


def _zeroed_ipv4(
    *,
    ihl: int,
    tos: int,
    total_length: int,
    identification: int,
    frag_off: int,
    protocol: int,
    src: bytes,
    dst: bytes,
    options: bytes,
    cleartos: bool,
    offsetmask: int,
    outbound: bool,
) -> bytes:
    masked, final_dst = _mask_ipv4_options(options, outbound=outbound)
    return (
        _IPV4.pack(
            0x40 | ihl,
            0 if cleartos else tos,
            total_length,
            identification,
            frag_off & offsetmask,
            0,  # TTL
            protocol,
            0,  # checksum
            src,
            final_dst if final_dst is not None else dst,
        )
        + masked
    )


def _zeroed_ipv6(*, payload_length: int, src: bytes, dst: bytes) -> bytes:
    # Traffic class, flow label and hop limit zeroed; AH follows the fixed header directly.
    return _IPV6.pack(6 << 28, payload_length, IPPROTO_AH, 0, src, dst)


# --- seal -------------------------------------------------------------------------------------


def _check_seal_args(spi: int, seq: int, esn: bool, next_header: int) -> None:
    if not 0 < spi <= _MAX_SEQ_32:
        raise ValueError(f"spi must be in 1..0xffffffff, found {spi}")
    limit = _MAX_SEQ_64 if esn else _MAX_SEQ_32
    if not 0 <= seq <= limit:
        raise ValueError(f"seq must be in 0..{limit:#x} (esn={esn}), found {seq}")
    if not 0 <= next_header <= 0xFF:
        raise ValueError(f"next_header must be in 0..255, found {next_header}")


def _ah_and_icv_input(
    ctx: AhContext,
    *,
    ah_len: int,
    zeroed_ip: bytes,
    spi: int,
    seq: int,
    esn: bool,
    next_header: int,
    payload: bytes,
) -> bytes:
    """Compute the ICV and return the finished AH header (ICV and zero padding included)."""
    fixed = _AH.pack(next_header, ah_len // 4 - 2, 0, spi, seq & _MAX_SEQ_32)
    zero_field = bytes(ah_len - AH_HEADER_LEN)
    parts: tuple[bytes, ...] = (zeroed_ip, fixed, zero_field, payload)
    if esn:
        parts += (_SEQ_HI.pack(seq >> 32),)
    icv = ctx._mac.sign(_IV.pack(seq), parts)
    return fixed + icv + zero_field[ctx.icv_len :]


def seal_ipv4(
    ctx: AhContext,
    *,
    spi: int,
    seq: int,
    esn: bool = False,
    src: IPv4AddressLike,
    dst: IPv4AddressLike,
    next_header: int,
    payload: bytes,
    ttl: int = 64,
    tos: int = 0,
    identification: int = 0,
    df: bool = True,
    options: bytes = b"",
    cleartos: bool = True,
    offsetmask: int = 0,
) -> bytes:
    """The complete IPv4 packet: header (protocol 51), AH and ``payload``.

    ``seq`` is the full sequence number: below 2**32, or below 2**64 with ``esn`` (its high 32
    bits then enter the ICV and, for AES-GMAC, the IV). ``options`` are the IPv4 options, padded
    to a multiple of 4 bytes. ``cleartos``/``offsetmask`` are the ``ah_cleartos`` and
    ``ah_offsetmask`` sysctls. Raises ValueError on out-of-range arguments, malformed options
    or a packet above 65535 bytes.
    """
    _check_seal_args(spi, seq, esn, next_header)
    ah_len = ctx.ah_len_ipv4
    header = build_ipv4(
        src=src,
        dst=dst,
        protocol=IPPROTO_AH,
        payload_len=ah_len + len(payload),
        ttl=ttl,
        tos=tos,
        identification=identification,
        df=df,
        options=options,
    )
    try:
        zeroed = _zeroed_ipv4(
            ihl=header[0] & 0x0F,
            tos=tos,
            total_length=len(header) + ah_len + len(payload),
            identification=identification,
            frag_off=header[6] << 8 | header[7],
            protocol=IPPROTO_AH,
            src=header[12:16],
            dst=header[16:20],
            options=options,
            cleartos=cleartos,
            offsetmask=offsetmask,
            outbound=True,
        )
    except MalformedPacket as exc:
        raise ValueError(f"cannot seal with these IPv4 options: {exc}") from None
    ah = _ah_and_icv_input(
        ctx, ah_len=ah_len, zeroed_ip=zeroed, spi=spi, seq=seq, esn=esn,
        next_header=next_header, payload=payload,
    )
    return header + ah + payload


def seal_ipv6(
    ctx: AhContext,
    *,
    spi: int,
    seq: int,
    esn: bool = False,
    src: IPv6AddressLike,
    dst: IPv6AddressLike,
    next_header: int,
    payload: bytes,
    hop_limit: int = 64,
    traffic_class: int = 0,
    flow_label: int = 0,
) -> bytes:
    """The complete IPv6 packet: fixed header (next header 51), AH and ``payload``.

    AH directly follows the fixed header (no extension headers). ``seq`` as in
    :func:`seal_ipv4`. The AH header is padded to a multiple of 8 bytes. Raises ValueError on
    out-of-range arguments or a payload above 65535 bytes.
    """
    _check_seal_args(spi, seq, esn, next_header)
    ah_len = ctx.ah_len_ipv6
    header = build_ipv6(
        src=src,
        dst=dst,
        next_header=IPPROTO_AH,
        payload_len=ah_len + len(payload),
        hop_limit=hop_limit,
        traffic_class=traffic_class,
        flow_label=flow_label,
    )
    zeroed = _zeroed_ipv6(payload_length=ah_len + len(payload), src=header[8:24], dst=header[24:40])
    ah = _ah_and_icv_input(
        ctx, ah_len=ah_len, zeroed_ip=zeroed, spi=spi, seq=seq, esn=esn,
        next_header=next_header, payload=payload,
    )
    return header + ah + payload


# --- receive ----------------------------------------------------------------------------------


def _check_seq_hi(seq_hi: int) -> None:
    # The engine's own value, not network bytes: a bad one is a bug and must not become a drop.
    if not 0 <= seq_hi <= _MAX_SEQ_32:
        raise ValueError(f"seq_hi must be a 32-bit value, found {seq_hi}")


def peek_untrusted(ah_bytes: bytes | bytearray | memoryview) -> AhPeek:
    """SPI, low sequence number and next header of the AH header at the start of ``ah_bytes``.

    Checks only that the declared AH length fits the buffer (and covers the fixed 12 bytes);
    the ICV length is checked by the verifier, which knows the SA. Raises only MalformedPacket.
    """
    n = len(ah_bytes)
    if n < AH_HEADER_LEN:
        raise MalformedPacket(f"expected an AH header of at least 12 bytes, found {n}")
    next_header, plen, _reserved, spi, seq_lo = _AH.unpack_from(ah_bytes)
    ah_len = (plen + 2) * 4
    if ah_len < AH_HEADER_LEN:
        raise MalformedPacket(f"AH payload length {plen} declares {ah_len} bytes, below 12")
    if ah_len > n:
        raise MalformedPacket(f"AH payload length {plen} declares {ah_len} bytes, only {n} left")
    return AhPeek(spi=spi, seq_lo=seq_lo, next_header=next_header)


def _verify_ah(
    ctx: AhContext,
    rest: bytes,
    *,
    header: IPv4Header | IPv6Header,
    zeroed_ip: bytes,
    accepted: frozenset[int],
    seq_hi: int,
    esn: bool,
) -> AhResult:
    """Check AH's length and ICV over ``zeroed_ip || rest``; the verified packet."""
    peek = peek_untrusted(rest)
    ah_len = (rest[1] + 2) * 4
    if ah_len not in accepted:
        expected = " or ".join(str(x) for x in sorted(accepted))
        raise MalformedPacket(
            f"AH of SPI 0x{peek.spi:08x} is {ah_len} bytes long, expected {expected} "
            f"for {ctx.auth.name}"
        )
    icv_end = AH_HEADER_LEN + ctx.icv_len
    parts: tuple[bytes, ...] = (
        zeroed_ip,
        rest[:AH_HEADER_LEN],
        bytes(ctx.icv_len),
        rest[icv_end:],  # padding as sent, then the payload
    )
    if esn:
        parts += (_SEQ_HI.pack(seq_hi),)
    if not ctx._mac.check(rest[AH_HEADER_LEN:icv_end], parts):
        raise IntegrityError(f"AH ICV mismatch for SPI 0x{peek.spi:08x} seq {peek.seq_lo}")
    return AhResult(
        spi=peek.spi,
        seq_lo=peek.seq_lo,
        next_header=peek.next_header,
        payload=rest[ah_len:],
        ip_header=header,
    )


def verify_ipv4_untrusted(
    ctx: AhContext,
    data: bytes | bytearray | memoryview,
    *,
    header: IPv4Header | None = None,
    seq_hi: int = 0,
    esn: bool = False,
    cleartos: bool = True,
    offsetmask: int = 0,
    verify_checksum: bool = True,
) -> AhResult:
    """Verify an IPv4 AH packet.

    Without ``header``, ``data`` is the whole packet (as a Linux raw IPv4 socket delivers it);
    the IP header is parsed, its checksum checked unless ``verify_checksum`` is false. With
    ``header`` (e.g. from :func:`~secsock.core.ip.parse_ipv4_untrusted`), ``data`` is what
    follows it, starting at AH; the header's total length and protocol are then taken from
    ``len(data)`` and 51. ``seq_hi`` (with ``esn``) is the inferred high half of the sequence
    number. ``cleartos``/``offsetmask`` as for :func:`seal_ipv4`. Raises only MalformedPacket
    (not AH, a fragment, a bad length, bad options) or IntegrityError (ICV mismatch) for what
    is in the packet; ValueError for a ``seq_hi`` outside 32 bits (a caller bug).
    """
    _check_seq_hi(seq_hi)
    if header is None:
        header, rest = parse_ipv4_untrusted(data, verify_checksum=verify_checksum)
        if header.protocol != IPPROTO_AH:
            raise MalformedPacket(f"expected IP protocol 51 (AH), found {header.protocol}")
    else:
        rest = bytes(data)
        total = header.header_length + len(rest)
        if total > 0xFFFF:
            raise MalformedPacket(f"IPv4 packet of {total} bytes exceeds 65535")
        if header.total_length != total or header.protocol != IPPROTO_AH:
            header = replace(header, total_length=total, protocol=IPPROTO_AH)
    if header.is_fragment:
        raise MalformedPacket("AH over an IPv4 fragment (RFC 4302 §3.4.1: reassemble first)")
    zeroed = _zeroed_ipv4(
        ihl=header.ihl,
        tos=header.tos,
        total_length=header.total_length,
        identification=header.identification,
        frag_off=header.frag_off,
        protocol=IPPROTO_AH,
        src=header.src.packed,
        dst=header.dst.packed,
        options=header.options,
        cleartos=cleartos,
        offsetmask=offsetmask,
        outbound=False,
    )
    return _verify_ah(
        ctx, rest, header=header, zeroed_ip=zeroed, accepted=ctx._accept_ipv4, seq_hi=seq_hi,
        esn=esn,
    )


def verify_ipv6_untrusted(
    ctx: AhContext,
    data: bytes | bytearray | memoryview,
    *,
    header: IPv6Header | None = None,
    seq_hi: int = 0,
    esn: bool = False,
) -> AhResult:
    """Verify an IPv6 AH packet whose AH directly follows the fixed header.

    Without ``header``, ``data`` is the whole packet. With ``header`` -- what a Linux raw IPv6
    socket gives: only the payload, with the addresses from ``recvfrom`` and the local
    address -- ``data`` starts at AH and the header's payload length and next header are
    taken from ``len(data)`` and 51 (traffic class, flow label and hop limit are not covered
    by the ICV, so any value will do). Raises only MalformedPacket or IntegrityError.
    """
    _check_seq_hi(seq_hi)
    if header is None:
        header, rest = parse_ipv6_untrusted(data)
        if header.next_header != IPPROTO_AH:
            raise MalformedPacket(
                f"expected next header 51 (AH) after the IPv6 header, found "
                f"{header.next_header} (extension headers before AH are not supported)"
            )
    else:
        rest = bytes(data)
        if len(rest) > 0xFFFF:
            raise MalformedPacket(f"IPv6 payload of {len(rest)} bytes exceeds 65535")
        if header.payload_length != len(rest) or header.next_header != IPPROTO_AH:
            header = replace(header, payload_length=len(rest), next_header=IPPROTO_AH)
    zeroed = _zeroed_ipv6(
        payload_length=header.payload_length, src=header.src.packed, dst=header.dst.packed
    )
    return _verify_ah(
        ctx, rest, header=header, zeroed_ip=zeroed, accepted=frozenset({ctx.ah_len_ipv6}),
        seq_hi=seq_hi, esn=esn,
    )


def verify_untrusted(
    ctx: AhContext,
    packet: bytes | bytearray | memoryview,
    *,
    seq_hi: int = 0,
    esn: bool = False,
    cleartos: bool = True,
    offsetmask: int = 0,
) -> AhResult:
    """Verify a whole IPv4 or IPv6 AH packet, chosen by its version nibble.

    ``cleartos``/``offsetmask`` apply to IPv4 only. Raises only MalformedPacket or
    IntegrityError.
    """
    if not packet:
        raise MalformedPacket("expected an IP packet, found 0 bytes")
    version = packet[0] >> 4
    if version == 4:
        return verify_ipv4_untrusted(
            ctx, packet, seq_hi=seq_hi, esn=esn, cleartos=cleartos, offsetmask=offsetmask
        )
    if version == 6:
        return verify_ipv6_untrusted(ctx, packet, seq_hi=seq_hi, esn=esn)
    raise MalformedPacket(f"expected IP version 4 or 6, found {version}")

