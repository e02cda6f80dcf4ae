"""The typed model of an IPsec security policy: what ipsec_set_policy(3) text and a
``sadb_x_policy`` buffer both describe.

Values are frozen and validated on construction (an invalid ``Policy`` or ``Request`` cannot
exist); construction errors are :class:`~secsock.errors.PolicyError` with the matching EIPSEC_*
code (``TypeError`` for values of the wrong type). Text and buffers live in
:mod:`secsock.policy.grammar` and :mod:`secsock.policy.wire`; the methods here delegate to them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal, Self, TypeAlias, TypeVar

from secsock import constants as c
from secsock.policy._errors import policy_error

__all__ = (
    "Action",
    "Address",
    "Direction",
    "Layout",
    "Level",
    "Mode",
    "Policy",
    "Protocol",
    "Request",
    "parse_policy",
)

#: The two binary layouts: "bsd" (KAME/FreeBSD/macOS structs, sa_len in sockaddrs) and "linux".
Layout: TypeAlias = Literal["bsd", "linux"]
#: A request endpoint: an IPv4 or IPv6 address (ports and scope ids are separate fields).
Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

_U32_MAX = 0xFFFFFFFF


class Direction(IntEnum):
    """``sadb_x_policy_dir`` (IPSEC_DIR_*). FWD is the ipsec-tools/Linux value, for the SPD."""

    ANY = c.IPSEC_DIR_ANY
    INBOUND = c.IPSEC_DIR_INBOUND
    OUTBOUND = c.IPSEC_DIR_OUTBOUND
    FWD = c.IPSEC_DIR_FWD

    @property
    def keyword(self) -> str:
        """The word ipsec_dump_policy(3) prints: ``any``, ``in``, ``out`` or ``fwd``."""
        return ("any", "in", "out", "fwd")[self.value]


class Action(IntEnum):
    """``sadb_x_policy_type`` (IPSEC_POLICY_*)."""

    DISCARD = c.IPSEC_POLICY_DISCARD
    NONE = c.IPSEC_POLICY_NONE
    IPSEC = c.IPSEC_POLICY_IPSEC
    ENTRUST = c.IPSEC_POLICY_ENTRUST
    BYPASS = c.IPSEC_POLICY_BYPASS

    @property
    def keyword(self) -> str:
        """``discard``, ``none``, ``ipsec``, ``entrust`` or ``bypass``."""
        return self.name.lower()


class Protocol(IntEnum):
    """``sadb_x_ipsecrequest_proto``: the IPsec protocol a request asks for."""

    ESP = c.IPPROTO_ESP
    AH = c.IPPROTO_AH
    IPCOMP = c.IPPROTO_IPCOMP

    @property
    def keyword(self) -> str:
        """``esp``, ``ah`` or ``ipcomp``."""
        return self.name.lower()


class Mode(IntEnum):
    """``sadb_x_ipsecrequest_mode`` (IPSEC_MODE_*). ANY only appears in buffers, never in text."""

    ANY = c.IPSEC_MODE_ANY
    TRANSPORT = c.IPSEC_MODE_TRANSPORT
    TUNNEL = c.IPSEC_MODE_TUNNEL

    @property
    def keyword(self) -> str:
        """``any``, ``transport`` or ``tunnel``."""
        return self.name.lower()


class Level(IntEnum):
    """``sadb_x_ipsecrequest_level`` (IPSEC_LEVEL_*)."""

    DEFAULT = c.IPSEC_LEVEL_DEFAULT
    USE = c.IPSEC_LEVEL_USE
    REQUIRE = c.IPSEC_LEVEL_REQUIRE
    UNIQUE = c.IPSEC_LEVEL_UNIQUE

    @property
    def keyword(self) -> str:
        """``default``, ``use``, ``require`` or ``unique``."""
        return self.name.lower()


_E = TypeVar("_E", bound=IntEnum)


def _coerce_enum(kind: type[_E], value: object, code: int, what: str) -> _E:
    if isinstance(value, kind):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be a {kind.__name__} or an int, found {value!r}")
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(f"{m.name} ({m.value})" for m in kind)
        raise policy_error(code, note=f"{what} must be one of {allowed}; found {value}") from None


def _check_uint(value: object, limit: int, what: str, code: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, found {value!r}")
    if not 0 <= value <= limit:
        raise policy_error(code, note=f"{what} must be in [0, {limit}], found {value}")
    return value


def _coerce_address(value: object, what: str) -> tuple[Address | None, int | None]:
    """(address without scope, scope id carried by the value or None)."""
    if value is None:
        return None, None
    if isinstance(value, str):
        try:
            value = ipaddress.ip_address(value)
        except ValueError:
            raise policy_error(
                c.EIPSEC_INVAL_ADDRESS,
                note=f"{what} must be a numeric IPv4 or IPv6 address, found {value!r}",
            ) from None
    if isinstance(value, ipaddress.IPv4Address):
        return value, None
    if isinstance(value, ipaddress.IPv6Address):
        if value.scope_id is None:
            return value, None
        if not value.scope_id.isdigit():
            raise policy_error(
                c.EIPSEC_INVAL_ADDRESS,
                note=f"{what} scope must be numeric (an interface index), "
                f"found {value.scope_id!r}",
            )
        return ipaddress.IPv6Address(int(value)), int(value.scope_id)
    raise TypeError(f"{what} must be an IPv4Address, an IPv6Address, a str or None, found {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One ``sadb_x_ipsecrequest``: ``proto/mode/src-dst/level`` in policy text.

    ``src``/``dst`` are both present or both absent (the ``me-any``/``any-me`` forms give no
    addresses). Ports and IPv6 scope ids travel in the sockaddrs; the scope id may also be given
    inside an ``IPv6Address`` (``"fe80::1%2"``) and is then moved to ``*_scope_id``.
    """

    proto: Protocol
    mode: Mode
    level: Level = Level.DEFAULT
    #: 0 = none; 1..0x3fff manual (``unique:N``); above that kernel-assigned (dumped ``#N``).
    reqid: int = 0
    src: Address | None = None
    dst: Address | None = None
    src_port: int = 0
    dst_port: int = 0
    src_scope_id: int = 0
    dst_scope_id: int = 0

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "proto", _coerce_enum(Protocol, self.proto, c.EIPSEC_INVAL_PROTO, "proto"))
        setattr_(self, "mode", _coerce_enum(Mode, self.mode, c.EIPSEC_INVAL_MODE, "mode"))
        setattr_(self, "level", _coerce_enum(Level, self.level, c.EIPSEC_INVAL_LEVEL, "level"))
        _check_uint(self.reqid, _U32_MAX, "reqid", c.EIPSEC_INVAL_LEVEL)
        for end in ("src", "dst"):
            addr, scope = _coerce_address(getattr(self, end), end)
            setattr_(self, end, addr)
            port = _check_uint(getattr(self, f"{end}_port"), 0xFFFF, f"{end}_port",
                               c.EIPSEC_INVAL_ADDRESS)
            sid = _check_uint(getattr(self, f"{end}_scope_id"), _U32_MAX, f"{end}_scope_id",
                              c.EIPSEC_INVAL_ADDRESS)
            if scope is not None:
                if sid not in (0, scope):
                    raise policy_error(
                        c.EIPSEC_INVAL_ADDRESS,
                        note=f"{end} carries scope {scope} but {end}_scope_id is {sid}",
                    )
                sid = scope
                setattr_(self, f"{end}_scope_id", sid)
            if addr is None and (port or sid):
                raise policy_error(
                    c.EIPSEC_INVAL_ADDRESS,
                    note=f"{end}_port/{end}_scope_id need an address; {end} is None",
                )
            if sid and not isinstance(addr, ipaddress.IPv6Address):
                raise policy_error(
                    c.EIPSEC_INVAL_ADDRESS,
                    note=f"a scope id needs an IPv6 address; {end} is {addr}",
                )
        if (self.src is None) != (self.dst is None):
            raise policy_error(
                c.EIPSEC_INVAL_ADDRESS,
                note=f"src and dst must both be given or both be None; "
                f"found src={self.src}, dst={self.dst}",
            )

    @property
    def has_addresses(self) -> bool:
        """True when the request names its endpoints (``src-dst``)."""
        return self.src is not None

    def to_text(self) -> str:
        """The request as ipsec_dump_policy(3) prints it, e.g. ``esp/transport//require``."""
        from secsock.policy.grammar import format_request

        return format_request(self)

    def __str__(self) -> str:
        return self.to_text()


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A security policy: direction, action, requests (used when the action is IPSEC) and the
    ipsec-tools priority (0 = none given, as FreeBSD has no priority in its grammar)."""

    direction: Direction
    action: Action
    requests: tuple[Request, ...] = ()
    priority: int = 0

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "direction",
                 _coerce_enum(Direction, self.direction, c.EIPSEC_INVAL_DIR, "direction"))
        setattr_(self, "action",
                 _coerce_enum(Action, self.action, c.EIPSEC_INVAL_POLICY, "action"))
        requests: object = self.requests
        if not isinstance(requests, tuple):
            if isinstance(requests, (str, bytes)) or not isinstance(requests, Iterable):
                raise TypeError(f"requests must be a sequence of Request, found {requests!r}")
            requests = tuple(requests)
            setattr_(self, "requests", requests)
        for r in self.requests:
            if not isinstance(r, Request):
                raise TypeError(f"requests must hold Request objects, found {r!r}")
        _check_uint(self.priority, _U32_MAX, "priority", c.EIPSEC_INVAL_ARGUMENT)

    # --- text -------------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str, *, ifindex: Callable[[str], int] | None = None) -> Policy:
        """Parse ipsec_set_policy(3) text; see :func:`secsock.policy.grammar.parse_policy`."""
        from secsock.policy.grammar import parse_policy as _parse

        return _parse(text, ifindex=ifindex)

    def to_text(self, delimiter: str = " ") -> str:
        """The canonical text: exactly what ipsec_dump_policy(3) prints for this policy."""
        from secsock.policy.grammar import format_policy

        return format_policy(self, delimiter)

    def __str__(self) -> str:
        return self.to_text()

    # --- buffers ----------------------------------------------------------------------------
    def encode(self, layout: Layout = "bsd") -> bytes:
        """The ``sadb_x_policy`` buffer ipsec_set_policy(3) returns for this policy."""
        from secsock.policy.wire import encode_policy

        return encode_policy(self, layout)

    @classmethod
    def decode(cls, buf: bytes, layout: Layout = "bsd") -> Self:
        """Read a ``sadb_x_policy`` buffer with ipsec_dump_policy(3)'s checks; raises only
        PolicyError. Requests of non-IPSEC policies are ignored, as the kernel and the dump do."""
        from secsock.policy.wire import decode_policy

        policy = decode_policy(buf, layout)
        if isinstance(policy, cls):
            return policy
        return cls(direction=policy.direction, action=policy.action,
                   requests=policy.requests, priority=policy.priority)

    def with_requests(self, requests: Iterable[Request]) -> Policy:
        """A copy with other requests."""
        return Policy(direction=self.direction, action=self.action,
                      requests=tuple(requests), priority=self.priority)


def parse_policy(text: str, *, ifindex: Callable[[str], int] | None = None) -> Policy:
    """Parse ipsec_set_policy(3) text into a :class:`Policy` (raises PolicyError).

    ``ifindex`` resolves an interface name in ``fe80::1%name`` to its index (pass
    ``socket.if_nametoindex``); without it only numeric scopes (``%2``) are accepted.
    """
    from secsock.policy.grammar import parse_policy as _parse

    return _parse(text, ifindex=ifindex)
