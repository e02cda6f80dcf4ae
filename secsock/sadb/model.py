"""Security associations: the frozen configuration of one SA, its identity and its states. Pure.

A :class:`SecurityAssociation` is what ``setkey add`` describes: SPI, protocol, addresses,
mode, reqid, algorithms with their keys, replay window, ESN, padding, NAT-T ports, lifetimes.
It is validated on construction (key lengths through the algorithm registry) so an invalid SA
cannot exist, and its keys never appear in ``repr``/``str`` or in any exception text.

The mutable side of an SA (state, counters, sequence numbers, replay window, crypto context)
lives in the store (:mod:`secsock.sadb.store`), never here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final, TypeVar, cast

from secsock.core._shown import shown
from secsock.core.algorithms import (
    AuthAlgorithm,
    AuthKind,
    EncryptionAlgorithm,
    auth_algorithm,
    check_combination,
    check_key,
    encryption_algorithm,
)
from secsock.errors import AlgorithmError
from secsock.sadb.lifetime import Lifetime

__all__ = (
    "DEFAULT_REPLAY",
    "MAX_REPLAY",
    "SADB_X_SAFLAGS_ESN",
    "IPAddress",
    "LarvalSA",
    "Padding",
    "SAIdentity",
    "SAMode",
    "SAProtocol",
    "SAState",
    "SecurityAssociation",
    "as_address",
    "as_ipproto",
    "as_mode",
)

IPAddress = IPv4Address | IPv6Address

#: setkey ``-r`` default when absent: 8 bytes of bitmap = a 64-packet window (KAME: 0 = off).
DEFAULT_REPLAY: Final = 8
#: Largest ``-r`` accepted: 512 bytes = 4096 packets (Linux's XFRMA_REPLAY_ESN_MAX).
MAX_REPLAY: Final = 512
#: FreeBSD's ``sadb_sa_flags`` bit for ESN, shown in ``setkey -D`` as ``flags=0x00000400``.
SADB_X_SAFLAGS_ESN: Final = 0x400

_U32: Final = (1 << 32) - 1
_U64: Final = (1 << 64) - 1


class SAProtocol(IntEnum):
    """The IPsec protocol of an SA, numbered as in the IP header (what inbound lookup sees).

    ESP-in-UDP (setkey ``esp-udp``) is ESP with NAT-T ports on the SA, as in PF_KEY.
    """

    ESP = 50
    AH = 51

    @property
    def satype(self) -> int:
        """The PF_KEY ``SADB_SATYPE_*`` number (AH 2, ESP 3)."""
        return 3 if self is SAProtocol.ESP else 2

    @property
    def setkey_name(self) -> str:
        return "esp" if self is SAProtocol.ESP else "ah"


class SAMode(IntEnum):
    """``sadb_x_sa2_mode`` (IPSEC_MODE_*). ANY: the SA serves requests of any mode."""

    ANY = 0
    TRANSPORT = 1
    TUNNEL = 2


class SAState(IntEnum):
    """``SADB_SASTATE_*``: larval (from getspi, no keys yet), mature, dying (soft limit), dead."""

    LARVAL = 0
    MATURE = 1
    DYING = 2
    DEAD = 3


class Padding(IntEnum):
    """ESP padding content (KAME ``sadb_sa_flags``): 1,2,3,... (RFC 4303), zeros, or random."""

    SEQ = 0x0000  # setkey -f seq-pad (default)
    RANDOM = 0x0100  # setkey -f random-pad
    ZERO = 0x0200  # setkey -f zero-pad


_PROTO_BY_NAME: Final[dict[str, int]] = {
    "esp": 50,
    "esp-udp": 50,
    "ah": 51,
    "ipsec-esp": 50,
    "ipsec-ah": 51,
}
_MODE_BY_NAME: Final[dict[str, int]] = {"any": 0, "transport": 1, "tunnel": 2}


def as_ipproto(proto: int | str) -> int:
    """Normalise a protocol given as an IP protocol number (50/51), an enum or a name.

    Accepts :class:`SAProtocol`, plain ints, and string enums or strings such as ``"esp"`` and
    ``"ah"`` (the policy language's keywords), so callers from any layer can pass what they hold.
    """
    if isinstance(proto, int):
        if proto in (50, 51):
            return int(proto)
        raise ValueError(f"expected IPsec protocol 50 (esp) or 51 (ah), found {shown(proto)}")
    name = proto.lower() if isinstance(proto, str) else None
    if name not in _PROTO_BY_NAME:
        raise ValueError(f"expected protocol esp or ah, found {shown(proto)}")
    return _PROTO_BY_NAME[name]


def as_mode(mode: int | str) -> int:
    """Normalise a mode given as IPSEC_MODE_* number, enum or keyword to its number."""
    if isinstance(mode, int):
        if 0 <= mode <= 2:
            return int(mode)
        raise ValueError(
            f"expected mode 0 (any), 1 (transport) or 2 (tunnel), found {shown(mode)}"
        )
    name = mode.lower() if isinstance(mode, str) else None
    if name not in _MODE_BY_NAME:
        raise ValueError(f"expected mode any, transport or tunnel, found {shown(mode)}")
    return _MODE_BY_NAME[name]


def as_address(addr: IPAddress | str) -> IPAddress:
    """An ipaddress object for ``addr`` (strings are parsed; no DNS)."""
    if isinstance(addr, IPv4Address | IPv6Address):
        return addr
    try:
        return ip_address(addr)
    except ValueError:
        raise ValueError(f"expected a numeric IPv4 or IPv6 address, found {shown(addr)}") from None


def _check_spi(spi: object) -> int:
    if type(spi) is not int or not 256 <= spi <= _U32:
        raise ValueError(
            f"SPI must be an integer in 256..0xffffffff (0..255 are reserved), found {shown(spi)}"
        )
    return spi


def _check_u32(name: str, value: object) -> int:
    if type(value) is not int or not 0 <= value <= _U32:
        raise ValueError(f"{name} must be an integer in 0..0xffffffff, found {shown(value)}")
    return value


_E = TypeVar("_E", bound=IntEnum)


def _enum(kind: type[_E], name: str, value: object) -> _E:
    try:
        return kind(cast(int, value))
    except ValueError:
        allowed = ", ".join(f"{m.name} ({m.value})" for m in kind)
        raise ValueError(
            f"invalid SA field: {name} must be one of {allowed}, found {shown(value)}"
        ) from None


def _check_addresses(src: object, dst: object) -> None:
    for name, value in (("src", src), ("dst", dst)):
        if not isinstance(value, IPv4Address | IPv6Address):
            raise TypeError(
                f"{name} must be an IPv4Address or IPv6Address, found {type(value).__name__}"
            )
    assert isinstance(src, IPv4Address | IPv6Address)
    assert isinstance(dst, IPv4Address | IPv6Address)
    if src.version != dst.version:
        raise ValueError(
            f"src and dst must be of one address family, found IPv{src.version} {src} and "
            f"IPv{dst.version} {dst}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SAIdentity:
    """Who an SA is, without any key: what events and dumps name."""

    proto: SAProtocol
    spi: int
    src: IPAddress
    dst: IPAddress
    mode: SAMode = SAMode.ANY
    reqid: int = 0

    def __str__(self) -> str:
        return (
            f"{self.proto.setkey_name} spi={self.spi}(0x{self.spi:08x}) {self.src}->{self.dst}"
            f" mode={self.mode.name.lower()} reqid={self.reqid}"
        )


class _Named:
    """What LarvalSA and SecurityAssociation derive alike from spi, proto, addresses, mode and
    reqid (declared by each dataclass)."""

    __slots__ = ()
    spi: int
    proto: SAProtocol
    src: IPAddress
    dst: IPAddress
    mode: SAMode
    reqid: int

    @property
    def key(self) -> tuple[IPAddress, int, int]:
        """The SADB key (dst, protocol, SPI): unique in a store (RFC 4301 §4.1 triple)."""
        return (self.dst, int(self.proto), self.spi)

    @property
    def identity(self) -> SAIdentity:
        """The SA's identity, without any key: what events and errors name."""
        return SAIdentity(
            proto=self.proto, spi=self.spi, src=self.src, dst=self.dst, mode=self.mode,
            reqid=self.reqid,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LarvalSA(_Named):
    """An SA reserved by getspi: SPI, addresses, mode and reqid, no algorithms or keys yet.

    It holds the SPI (so no one else can take it) until ``update`` makes it mature, or until
    the store's larval lifetime passes.
    """

    spi: int
    proto: SAProtocol
    src: IPAddress
    dst: IPAddress
    mode: SAMode = SAMode.ANY
    reqid: int = 0

    def __post_init__(self) -> None:
        _check_spi(self.spi)
        object.__setattr__(self, "proto", _enum(SAProtocol, "proto", self.proto))
        object.__setattr__(self, "mode", _enum(SAMode, "mode", self.mode))
        _check_u32("reqid", self.reqid)
        _check_addresses(self.src, self.dst)


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityAssociation(_Named):
    """The configuration of one SA (what ``setkey add`` says). Frozen and validated.

    * ``enc``/``enc_key``: ESP encryption algorithm (setkey ``-E`` name; stored canonical, so
      ``rijndael-cbc`` becomes ``aes-cbc``) and its key incl. any salt. ESP requires ``enc``.
    * ``auth``/``auth_key``: integrity algorithm (``-A``); required for AH, optional for ESP.
    * ``replay``: setkey ``-r``, in *bytes* of bitmap as on BSD: window = 8 x replay packets;
      0 disables the replay check. Default 8 (64 packets) -- KAME's default is 0 (off).
    * ``esn``: 64-bit extended sequence numbers (setkey ``-f esn``); needs ``replay`` > 0.
    * ``padding``: ESP padding content flag (``-f seq-pad|zero-pad|random-pad``).
    * ``ah_align``: AH ICV alignment for IPv4 (``-f align4``/``align8``); None = RFC 4302's 4.
      IPv6 is always 8.
    * ``natt_sport``/``natt_dport``: set (both) for ESP-in-UDP (setkey ``esp-udp``).
    * ``soft``/``hard``: lifetimes (``-ls``/``-bs``, ``-lh``/``-bh``).
    * ``seq_start``: the last sequence number already used (setkey extension ``-S``): the next
      packet sent carries ``seq_start + 1`` and the receiver's window top is ``seq_start``.
    """

    spi: int
    proto: SAProtocol
    src: IPAddress
    dst: IPAddress
    mode: SAMode = SAMode.ANY
    reqid: int = 0
    enc: str | None = None
    enc_key: bytes = field(default=b"", repr=False)
    auth: str | None = None
    auth_key: bytes = field(default=b"", repr=False)
    replay: int = DEFAULT_REPLAY
    esn: bool = False
    padding: Padding = Padding.SEQ
    ah_align: int | None = None
    natt_sport: int | None = None
    natt_dport: int | None = None
    soft: Lifetime = field(default_factory=Lifetime)
    hard: Lifetime = field(default_factory=Lifetime)
    seq_start: int = 0

    def __post_init__(self) -> None:
        _check_spi(self.spi)
        proto = _enum(SAProtocol, "proto", self.proto)
        mode = _enum(SAMode, "mode", self.mode)
        padding = _enum(Padding, "padding", self.padding)
        object.__setattr__(self, "proto", proto)
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "padding", padding)
        _check_addresses(self.src, self.dst)
        _check_u32("reqid", self.reqid)
        for name in ("enc_key", "auth_key"):
            value = getattr(self, name)
            if not isinstance(value, bytes | bytearray | memoryview):
                raise TypeError(f"{name} must be bytes, found {type(value).__name__}")
            object.__setattr__(self, name, bytes(value))
        if type(self.replay) is not int or not 0 <= self.replay <= MAX_REPLAY:
            raise ValueError(
                f"replay must be 0..{MAX_REPLAY} bytes of window (8 packets per byte; 0 = off), "
                f"found {shown(self.replay)}"
            )
        if type(self.esn) is not bool:
            raise ValueError(f"esn must be True or False, found {shown(self.esn)}")
        if self.esn and self.replay == 0:
            raise ValueError("ESN needs a replay window (replay > 0), as on Linux; found replay 0")
        seq_max = _U64 if self.esn else _U32
        if type(self.seq_start) is not int or not 0 <= self.seq_start <= seq_max:
            bits = 64 if self.esn else 32
            raise ValueError(
                f"seq_start must be an integer in 0..2^{bits}-1, found {shown(self.seq_start)}"
            )
        if not isinstance(self.soft, Lifetime) or not isinstance(self.hard, Lifetime):
            raise TypeError("soft and hard must be Lifetime values")
        self._check_natt()
        if proto is SAProtocol.ESP:
            self._check_esp()
        else:
            self._check_ah()

    def _check_natt(self) -> None:
        ports = (self.natt_sport, self.natt_dport)
        if ports == (None, None):
            return
        if None in ports:
            raise ValueError("ESP-in-UDP needs both NAT-T ports, found only one")
        for p in ports:
            if type(p) is not int or not 1 <= p <= 0xFFFF:
                raise ValueError(f"NAT-T ports must be integers in 1..65535, found {shown(p)}")
        if self.proto is not SAProtocol.ESP:
            raise ValueError("NAT-T ports are for ESP SAs only (esp-udp), found them on AH")

    def _check_esp(self) -> None:
        if self.enc is None:
            raise AlgorithmError(
                "an ESP SA needs an encryption algorithm (-E; use -E null with -A for "
                "integrity only)"
            )
        enc = encryption_algorithm(self.enc)
        check_key(enc, self.enc_key)
        auth: AuthAlgorithm | None = None
        if self.auth is not None:
            auth = auth_algorithm(self.auth)
            check_key(auth, self.auth_key)
        elif self.auth_key:
            raise AlgorithmError("an authentication key was given without an algorithm")
        check_combination(enc, auth)
        object.__setattr__(self, "enc", enc.name)
        if auth is not None:
            object.__setattr__(self, "auth", auth.name)
        if self.ah_align is not None:
            raise ValueError("AH alignment (-f align4/align8) applies to AH SAs only, found ESP")

    def _check_ah(self) -> None:
        if self.enc is not None or self.enc_key:
            raise AlgorithmError("an AH SA takes no encryption algorithm (-E); use -A only")
        if self.auth is None:
            raise AlgorithmError("an AH SA needs an authentication algorithm (-A)")
        auth = auth_algorithm(self.auth)
        if auth.kind is AuthKind.NULL:
            raise AlgorithmError("AH needs an integrity algorithm with an ICV, found null")
        check_key(auth, self.auth_key)
        object.__setattr__(self, "auth", auth.name)
        if self.ah_align not in (None, 4, 8):
            raise ValueError(f"AH alignment must be None, 4 or 8, found {shown(self.ah_align)}")
        if self.ah_align == 4 and self.dst.version == 6:
            raise ValueError("IPv6 AH is always 64-bit aligned (RFC 4302); found align4")
        if self.padding is not Padding.SEQ:
            raise ValueError("padding flags (-f zero-pad/random-pad) apply to ESP SAs only")

    # --- derived values ---------------------------------------------------------------------

    @property
    def natt(self) -> bool:
        """True for ESP-in-UDP (RFC 3948) SAs."""
        return self.natt_sport is not None

    @property
    def satype_name(self) -> str:
        """``esp``, ``esp-udp`` or ``ah``, as setkey spells the protocol."""
        if self.natt:
            return "esp-udp"
        return self.proto.setkey_name

    @property
    def replay_window(self) -> int:
        """The anti-replay window in packets (8 x ``replay``; 0 = no replay check)."""
        return self.replay * 8

    @property
    def seq_max(self) -> int:
        """The last sequence number this SA may send: 2^32-1, or 2^64-1 with ESN."""
        return _U64 if self.esn else _U32

    @property
    def flags(self) -> int:
        """``sadb_sa_flags`` as FreeBSD shows them: padding bits, plus 0x400 for ESN."""
        return int(self.padding) | (SADB_X_SAFLAGS_ESN if self.esn else 0)

    @property
    def enc_algorithm(self) -> EncryptionAlgorithm | None:
        return None if self.enc is None else encryption_algorithm(self.enc)

    @property
    def auth_algorithm(self) -> AuthAlgorithm | None:
        return None if self.auth is None else auth_algorithm(self.auth)

    def __str__(self) -> str:
        enc = f" E={self.enc}" if self.enc is not None else ""
        auth = f" A={self.auth}" if self.auth is not None else ""
        natt = f" natt={self.natt_sport}/{self.natt_dport}" if self.natt else ""
        return (
            f"{self.satype_name} spi={self.spi}(0x{self.spi:08x}) {self.src}->{self.dst} "
            f"mode={self.mode.name.lower()} reqid={self.reqid}{enc}{auth}{natt}"
        )
