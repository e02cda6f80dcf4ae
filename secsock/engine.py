"""The IPsec engine: the KAME policy decision plus the ESP/AH codecs, for one socket. Sans-IO.

An :class:`IPsecEngine` belongs to one secure socket or endpoint (the asyncio and anyio layers
build their own). It holds the socket's inbound and outbound policies (a new engine starts at
``entrust`` in both directions, as a new KAME socket does), the SADB and SPD it consults, its
counters and a random source. It opens no socket and reads no clock: callers pass ``now``
(wall-clock seconds, for SA lifetimes) and the engine's ``rng`` is a constructor parameter.

``protect(flow, payload, now=...)`` is the outbound decision of IPSEC-REFERENCE §4.2 for a
privileged socket (every secsock socket counts as privileged, see docs/decision.md) followed
by the transforms; it returns the datagrams to emit as :class:`Outbound` values, or raises a
local error (``PermissionError`` for ``discard``, :class:`~secsock.errors.NoSAError` for a
missing ``require`` SA, ...) having sent nothing.

``receive(...)`` is §4.5: decapsulate, look up the SA by (dst, protocol, SPI), replay check
before the ICV, verify/decrypt, check the SA's addresses (RFC 4301 §5.2), commit the replay
window, account the lifetime, parse
the inner UDP datagram, then check it against the socket's inbound policy (else the SPD, else
``def_policy``). It returns :class:`Delivered` or :class:`Dropped` and never raises for any
input bytes. The two halves are also available separately (:meth:`IPsecEngine.decapsulate`,
:meth:`IPsecEngine.admit`) for a shared encapsulation port, where the SA work happens once and
the datagram is then handed to the socket its inner UDP header names.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from ipaddress import IPv4Address, IPv6Address
from typing import Final, NamedTuple, TypeAlias, cast
from typing import Protocol as _TypingProtocol

from secsock import sysctl
from secsock._stats import Counters, IPsecStats, process_counters
from secsock.core import ah as _ah
from secsock.core import esp as _esp
from secsock.core.ah import AhContext
from secsock.core.esp import EspContext, PadMode
from secsock.core.ip import parse_ipv4_untrusted
from secsock.core.upper import (
    build_udp,
    build_udp_partial,
    parse_udp_authenticated_untrusted,
    parse_udp_untrusted,
    udp_partial_sum,
)
from secsock.errors import (
    DropReason,
    IntegrityError,
    MalformedPacket,
    NoSAError,
    SequenceOverflowError,
)
from secsock.policy.model import Action, Direction, Level, Mode, Policy, Protocol, Request
from secsock.sadb.events import raised_by_subscriber
from secsock.sadb.model import IPAddress, Padding, SAProtocol, SAState, SecurityAssociation
from secsock.sadb.spd import SPD, default_spd
from secsock.sadb.store import SAEntry, SARecord, default_sadb

__all__ = (
    "Address",
    "Applied",
    "Carrier",
    "Decapsulated",
    "Delivered",
    "Dropped",
    "EngineStore",
    "Flow",
    "IPsecEngine",
    "Outbound",
    "Transport",
)

Address: TypeAlias = IPv4Address | IPv6Address

_LOG: Final = logging.getLogger("secsock")

IPPROTO_UDP: Final = 17
IPPROTO_ESP: Final = 50
IPPROTO_AH: Final = 51
_NH_NONE: Final = 59  # RFC 4303 §2.6 dummy packet
_CACHE_MAX: Final = 4096


class EngineStore(_TypingProtocol):
    """The part of :class:`secsock.sadb.store.EngineStore` the engine and sockets use.

    Every SA state change goes through these calls (the engine never mutates an SA), so any
    store implementing them -- :class:`~secsock.sadb.store.MemoryStore`, a host-wide or a
    networked one -- can sit behind a socket.
    """

    def lookup_inbound(self, dst: IPAddress | str, proto: int | str,
                       spi: int) -> SAEntry | None: ...

    def lookup_outbound(self, src: IPAddress | str, dst: IPAddress | str, proto: int | str,
                        mode: int | str = ..., reqid: int = 0) -> SAEntry | None: ...

    def reserve_seq(self, entry: SAEntry, count: int = 1) -> int: ...

    def replay_check(self, entry: SAEntry, seq_lo: int) -> int | None: ...

    def replay_commit(self, entry: SAEntry, seq: int) -> bool: ...

    def account(self, entry: SAEntry, nbytes: int, now: float) -> SAState: ...

    def reserve_and_account(self, entry: SAEntry, nbytes: int, now: float) -> int: ...

    def commit_and_account(self, entry: SAEntry, seq: int, nbytes: int, now: float) -> bool: ...

    @property
    def generation(self) -> int: ...

    def tick(self, now: float) -> object: ...

    def acquire(self, src: IPAddress | str, dst: IPAddress | str, proto: int | str,
                mode: int | str, reqid: int, *, now: float) -> bool: ...

    def allocate_reqid(self) -> int: ...

    def dump(self, proto: int | str | None = None) -> list[SARecord]: ...


class Transport(StrEnum):
    """How a socket's ``esp`` SAs travel (``esp-udp`` SAs always use their NAT-T ports)."""

    #: ESP-in-UDP (RFC 3948) between the two sockets' own ports; AH is impossible.
    UDP = "udp"
    #: ESP and AH as IP protocols 50 and 51 (raw sockets).
    RAW = "raw"


class Carrier(IntEnum):
    """How one datagram travels on the wire."""

    #: a plain UDP datagram between the application's ports (no IPsec)
    CLEAR = 0
    #: ESP-in-UDP between the application's own ports (``esp`` SA, transport "udp")
    UDP = 1
    #: ESP-in-UDP between the SA's NAT-T ports, through the shared encapsulation port
    NATT = 2
    #: raw IP: ESP (protocol 50) or AH (51)
    IP = 3


@dataclass(frozen=True, slots=True)
class Flow:
    """A UDP datagram's selectors: local ``src`` and ``dst`` addresses and ports (outbound), or
    the remote ``src`` and local ``dst`` (inbound). Both addresses are of one IP version.

    ``key`` (packed addresses and ports) is what decisions are cached under; build a Flow once
    per peer and reuse it (the socket does), the per-packet cost is then a tuple hash.
    """

    src: Address
    dst: Address
    sport: int
    dport: int
    src_p: bytes = field(init=False, repr=False, compare=False)
    dst_p: bytes = field(init=False, repr=False, compare=False)
    key: tuple[bytes, bytes, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.src, IPv4Address | IPv6Address) or not isinstance(
            self.dst, IPv4Address | IPv6Address
        ):
            raise TypeError(
                f"expected ipaddress addresses, found src={self.src!r} dst={self.dst!r}"
            )
        if self.src.version != self.dst.version:
            raise ValueError(f"expected one IP version, found src={self.src} dst={self.dst}")
        if not (0 <= self.sport <= 0xFFFF and 0 <= self.dport <= 0xFFFF):
            raise ValueError(f"expected ports 0..65535, found {self.sport} and {self.dport}")
        src_p, dst_p = self.src.packed, self.dst.packed
        object.__setattr__(self, "src_p", src_p)
        object.__setattr__(self, "dst_p", dst_p)
        object.__setattr__(self, "key", (src_p, dst_p, self.sport, self.dport))

    def __str__(self) -> str:
        if self.src.version == 6:
            return f"[{self.src}]:{self.sport} -> [{self.dst}]:{self.dport}"
        return f"{self.src}:{self.sport} -> {self.dst}:{self.dport}"


class Outbound(NamedTuple):
    """One datagram to put on the wire (what :meth:`IPsecEngine.protect` returns).

    ``data`` is the UDP payload for the CLEAR, UDP and NATT carriers (sent from ``sport`` to
    ``dst``:``dport``); for the IP carrier it is the IP payload of ``protocol`` 50 or 51, or the
    whole IPv4 packet when ``header_included`` (AH over IPv4, whose ICV covers the header: send
    it with IP_HDRINCL). ``spi``/``seq`` name the outermost SA applied (0 when clear).
    """

    carrier: Carrier
    data: bytes
    src: Address
    dst: Address
    sport: int
    dport: int
    protocol: int
    header_included: bool = False
    spi: int = 0
    seq: int = 0


class Applied(NamedTuple):
    """One IPsec header a received datagram came through, outermost first.

    ``integrity`` is False for an ESP SA with confidentiality only (a cipher without AEAD and
    without ``-A``): its data and sequence number are not authenticated.
    """

    proto: Protocol
    spi: int
    seq: int
    reqid: int = 0
    natt: bool = False
    integrity: bool = True


class Decapsulated(NamedTuple):
    """A datagram after the SA work (:meth:`IPsecEngine.decapsulate`), before the policy check.

    ``src``/``sport`` are the remote end, ``dst``/``dport`` the local one (the inner UDP ports);
    ``applied`` is empty for a clear datagram.
    """

    payload: bytes
    src: Address
    dst: Address
    sport: int
    dport: int
    applied: tuple[Applied, ...]


class Delivered(NamedTuple):
    """A datagram the socket's policy accepted: hand ``payload`` to the application."""

    payload: bytes
    src: Address
    dst: Address
    sport: int
    dport: int
    applied: tuple[Applied, ...]

    @property
    def protected(self) -> bool:
        return bool(self.applied)


@dataclass(frozen=True, slots=True)
class Dropped:
    """A datagram that was discarded, and why (also counted; never raised)."""

    reason: DropReason
    spi: int | None = None
    seq: int | None = None
    detail: str = ""

    def __str__(self) -> str:
        spi = "-" if self.spi is None else f"0x{self.spi:08x}"
        seq = "-" if self.seq is None else str(self.seq)
        return f"dropped ({self.reason}) spi={spi} seq={seq}: {self.detail}"


# --- the decision ---------------------------------------------------------------------------


class _Verdict(IntEnum):
    DISCARD = 0
    CLEAR = 1
    PROTECT = 2


@dataclass(frozen=True, slots=True)
class _Req:
    """A request with its level resolved (§4.1) to USE or REQUIRE."""

    proto: Protocol
    mode: Mode
    require: bool
    reqid: int
    src: Address | None
    dst: Address | None
    text: str


@dataclass(frozen=True, slots=True)
class _Decision:
    verdict: _Verdict
    requests: tuple[_Req, ...]
    policy: Policy
    source: str  # "socket policy", "SPD entry 3", "net.inet.ipsec.def_policy"
    #: the one request of the common case (a single ESP transport request): the fast path
    single_esp: _Req | None = None


_DEFLEV_LEAF: Final = {
    (Protocol.ESP, Mode.TRANSPORT): "esp_trans_deflev",
    (Protocol.ESP, Mode.TUNNEL): "esp_net_deflev",
    (Protocol.AH, Mode.TRANSPORT): "ah_trans_deflev",
    (Protocol.AH, Mode.TUNNEL): "ah_net_deflev",
}


def _tree(version: int) -> str:
    return "net.inet.ipsec." if version == 4 else "net.inet6.ipsec6."


def _resolve_level(req: Request, version: int) -> bool:
    """True when the request's level resolves to REQUIRE (§4.1; NetBSD/FreeBSD rule for AH)."""
    level = req.level
    if level in (Level.REQUIRE, Level.UNIQUE):
        return True
    if level == Level.USE:
        return False
    leaf = _DEFLEV_LEAF.get((req.proto, req.mode))
    if leaf is None:  # IPComp, or mode any: "use"
        return False
    return sysctl.get(_tree(version) + leaf) == int(Level.REQUIRE)


def _entrust(direction: Direction) -> Policy:
    return Policy(direction=direction, action=Action.ENTRUST)


def _hexspi(spi: int | None) -> str:
    return "-" if spi is None else f"0x{spi:08x}"


class _Route:
    """The outbound fast path of one flow (one ESP transport SA, AEAD-style sealing): what
    :meth:`IPsecEngine.protect_one` needs per packet, computed once. Valid while the four
    generations it was computed under are current; ``entry`` None means "take the general
    path" (cached too, so that a flow the fast path cannot serve costs one check)."""

    __slots__ = (
        "align", "carrier", "ctx", "entry", "esn", "fixed", "odport", "osport", "partial",
        "policy_gen", "protocol", "sadb_gen", "spd_gen", "spi", "sysctl_gen",
    )

    def __init__(self, gens: tuple[int, int, int, int]) -> None:
        self.sadb_gen, self.sysctl_gen, self.spd_gen, self.policy_gen = gens
        self.entry: SAEntry | None = None
        self.ctx: EspContext = cast(EspContext, None)  # read only once ``entry`` is set
        self.spi = 0
        self.esn = False
        self.partial = 0  # the inner UDP checksum's pseudo-header and ports
        self.fixed = 0  # ESP header + IV + pad length + next header + ICV
        self.align = 4
        self.carrier = _CLEAR
        self.osport = 0
        self.odport = 0
        self.protocol = IPPROTO_UDP


class _Rx:
    """The inbound fast path of one SPI on a socket's own port (:meth:`IPsecEngine.receive_udp`):
    the SA's entry and what the packet checks need, valid while the store's generation is
    ``gen`` and the datagram's destination is ``dst``. ``src_ok`` is the last source address
    object that passed the RFC 4301 §5.2 check; ``admit`` memoises the last accepted
    (source, ports, generations) for the inbound policy check."""

    __slots__ = (
        "admit", "check_padding", "ctx", "dst", "entry", "esn", "gen", "integrity", "reqid",
        "sa_src", "src_ok", "v6",
    )

    def __init__(self, gen: int, dst: Address, entry: SAEntry, ctx: EspContext) -> None:
        sa = entry.sa
        self.gen = gen
        self.dst = dst
        self.entry = entry
        self.ctx = ctx
        self.esn = sa.esn
        self.check_padding = sa.padding == _PAD_SEQ
        self.reqid = sa.reqid
        self.integrity = ctx.icv_len > 0
        self.sa_src: Address = sa.src
        self.src_ok: Address | None = None
        self.v6 = dst.version == 6
        self.admit: tuple[object, ...] | None = None


# --- the engine -----------------------------------------------------------------------------


# Enum members as module globals: an attribute lookup on an Enum class costs more than the
# comparison itself on the per-packet path.
_CLEAR: Final = Carrier.CLEAR
_UDP: Final = Carrier.UDP
_NATT: Final = Carrier.NATT
_IP: Final = Carrier.IP
_V_CLEAR: Final = _Verdict.CLEAR
_V_DISCARD: Final = _Verdict.DISCARD
_V_PROTECT: Final = _Verdict.PROTECT
_OUT: Final = Direction.OUTBOUND
_IN: Final = Direction.INBOUND
_PAD_SEQ: Final = Padding.SEQ
_T_UDP: Final = Transport.UDP
_T_RAW: Final = Transport.RAW
_P_ESP: Final = Protocol.ESP
_P_AH: Final = Protocol.AH
_P_IPCOMP: Final = Protocol.IPCOMP
_M_TRANSPORT: Final = Mode.TRANSPORT
_R_REPLAY: Final = DropReason.REPLAY
_R_AUTH: Final = DropReason.AUTH_FAILED
_R_POLICY: Final = DropReason.POLICY
_R_BAD_INNER: Final = DropReason.BAD_INNER
_R_DUMMY: Final = DropReason.DUMMY
_sysctl_generation: Final = sysctl.generation
_tnew: Final = tuple.__new__
_esp_seal: Final = _esp.seal
_esp_open: Final = _esp.open_untrusted
_spi_seq: Final = struct.Struct("!II").unpack_from
_V4_MAPPED: Final = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96, as a packed address's prefix


class IPsecEngine:
    """Policies, SADB/SPD, codecs and counters for one secure socket or endpoint.

    ``transport`` says how ``esp`` SAs travel (see :class:`Transport`). ``sadb``/``spd``
    default to the process-wide stores. ``rng(n)`` returns ``n`` random bytes (CBC IVs,
    random padding, IPv4 identification numbers). Thread-safe: the decision caches are
    replaced atomically and all SA state lives in the store.
    """

    def __init__(
        self,
        *,
        transport: Transport | str = _T_UDP,
        sadb: EngineStore | None = None,
        spd: SPD | None = None,
        rng: Callable[[int], bytes] = os.urandom,
        counters: Counters | None = None,
    ) -> None:
        try:
            self._transport = Transport(transport)
        except ValueError:
            raise ValueError(
                f"expected transport 'udp' or 'raw', found {transport!r}"
            ) from None
        self._sadb: EngineStore = sadb if sadb is not None else default_sadb()
        self._spd: SPD = spd if spd is not None else default_spd()
        self._rng = rng
        self._counters = counters if counters is not None else Counters(process_counters())
        self._lock = threading.Lock()
        self._in_policy = _entrust(_IN)
        self._out_policy = _entrust(_OUT)
        self._policy_version = 0
        self._out_cache: dict[object, tuple[tuple[int, int, int], _Decision]] = {}
        self._in_cache: dict[object, tuple[tuple[int, int, int], _Decision]] = {}
        self._packed: dict[int, tuple[Address, bytes]] = {}
        self._ip_id = int.from_bytes(rng(2), "big")
        c = Counters.index
        self._c_out_success = c("out_success")
        self._c_out_clear = c("out_clear")
        self._c_out_polvio = c("out_polvio")
        self._c_out_nosa = c("out_nosa")
        self._c_out_inval = c("out_inval")
        self._c_out_seqoverflow = c("out_seqoverflow")
        self._c_in_success = c("in_success")
        self._c_in_clear = c("in_clear")
        # the per-packet increments: this engine's counter and the process-wide one
        self._n_out_success = self._counters.chain(self._c_out_success)
        self._n_in_success = self._counters.chain(self._c_in_success)
        self._routes: dict[object, _Route] = {}
        self._rx: dict[int, _Rx] = {}
        self._no_integrity_warned: set[int] = set()

    # --- configuration ----------------------------------------------------------------------
    @property
    def transport(self) -> Transport:
        return self._transport

    @property
    def sadb(self) -> EngineStore:
        return self._sadb

    @property
    def spd(self) -> SPD:
        return self._spd

    @property
    def counters(self) -> Counters:
        return self._counters

    @property
    def policy_version(self) -> int:
        """Changes whenever a policy is set (for callers that cache decisions)."""
        return self._policy_version

    def get_policy(self, direction: Direction) -> Policy:
        """The socket policy for ``direction`` (INBOUND or OUTBOUND)."""
        if direction == _IN:
            return self._in_policy
        if direction == _OUT:
            return self._out_policy
        raise ValueError(f"expected _IN or _OUT, found {direction!r}")

    def set_policy(self, policy: Policy) -> Policy:
        """Install ``policy`` as the socket policy for its direction and return what was stored.

        The caller has validated it as the kernel would (``check_socket_policy``): direction in
        or out, action ipsec, entrust or bypass. ``unique`` requests without a reqid get one
        from the SADB (``allocate_reqid``, KAME's key_newreqid), as key_msg2sp does.
        """
        if policy.direction not in (_IN, _OUT):
            raise ValueError(f"a socket policy is 'in' or 'out', found {policy.direction.keyword}")
        if policy.action not in (Action.IPSEC, Action.ENTRUST, Action.BYPASS):
            raise ValueError(
                f"a socket policy is ipsec, entrust or bypass, found {policy.action.keyword}"
            )
        if any(r.level == Level.UNIQUE and r.reqid == 0 for r in policy.requests):
            requests = tuple(
                Request(
                    proto=r.proto, mode=r.mode, level=r.level,
                    reqid=self._sadb.allocate_reqid(),
                    src=r.src, dst=r.dst, src_port=r.src_port, dst_port=r.dst_port,
                    src_scope_id=r.src_scope_id, dst_scope_id=r.dst_scope_id,
                )
                if r.level == Level.UNIQUE and r.reqid == 0
                else r
                for r in policy.requests
            )
            policy = policy.with_requests(requests)
        with self._lock:
            if policy.direction == _IN:
                self._in_policy = policy
                self._in_cache = {}
            else:
                self._out_policy = policy
                self._out_cache = {}
            self._policy_version += 1
        return policy

    def reset_policies(self) -> None:
        """Both directions back to ``entrust`` (Linux's ``setsockopt(..., NULL, 0)``)."""
        self.set_policy(_entrust(_IN))
        self.set_policy(_entrust(_OUT))

    def statistics(self) -> IPsecStats:
        """A frozen snapshot of this engine's counters."""
        return self._counters.snapshot()

    # --- the decision (§4.2, KAME privileged socket) -----------------------------------------
    def _decide(self, direction: Direction, flow: Flow) -> _Decision:
        gen = (sysctl.generation(), self._spd.generation, self._policy_version)
        cache = self._out_cache if direction == _OUT else self._in_cache
        key = flow.key
        hit = cache.get(key)
        if hit is not None and hit[0] == gen:
            return hit[1]
        decision = self._compute_decision(direction, flow)
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[key] = (gen, decision)
        return decision

    def _decide_in(self, src: Address, dst: Address, src_p: bytes, dst_p: bytes, sport: int,
                   dport: int) -> _Decision:
        """:meth:`_decide` for INBOUND without building a Flow on a cache hit."""
        gen = (sysctl.generation(), self._spd.generation, self._policy_version)
        hit = self._in_cache.get((src_p, dst_p, sport, dport))
        if hit is not None and hit[0] == gen:
            return hit[1]
        return self._decide(_IN, Flow(src, dst, sport, dport))

    def _packed_of(self, addr: Address) -> bytes:
        """``addr.packed``, cached by object identity (the socket reuses its address objects)."""
        hit = self._packed.get(id(addr))
        if hit is not None and hit[0] is addr:
            return hit[1]
        packed = addr.packed
        if len(self._packed) >= _CACHE_MAX:
            self._packed.clear()
        self._packed[id(addr)] = (addr, packed)
        return packed

    def _compute_decision(self, direction: Direction, flow: Flow) -> _Decision:
        if flow.src_p[:12] == _V4_MAPPED or flow.dst_p[:12] == _V4_MAPPED:
            # IPv4 under IPv4-mapped IPv6 addresses would be judged by IPv6 selectors and the
            # inet6 sysctls, escaping the IPv4 policies: refused both ways (docs/socket.md).
            return _Decision(_V_DISCARD, (), Policy(direction=direction, action=Action.DISCARD),
                             "IPv4-mapped address (IPv4 must use an AF_INET socket)")
        sp = self._out_policy if direction == _OUT else self._in_policy
        source = "socket policy"
        if sp.action == Action.ENTRUST:
            # The packet's own selectors: outbound src is local, inbound src is the peer.
            entry = self._spd.lookup(
                direction, flow.src, flow.dst, IPPROTO_UDP, flow.sport, flow.dport
            )
            if entry is not None:
                sp = entry.policy
                source = f"SPD entry {entry.spid}"
            else:
                name = _tree(flow.src.version) + "def_policy"
                action = Action.DISCARD if sysctl.get(name) == 0 else Action.NONE
                sp = Policy(direction=direction, action=action)
                source = name
        if sp.action in (Action.NONE, Action.BYPASS):
            return _Decision(_V_CLEAR, (), sp, source)
        if sp.action == Action.IPSEC:
            version = flow.src.version
            reqs = tuple(
                _Req(
                    proto=r.proto,
                    mode=r.mode,
                    require=_resolve_level(r, version),
                    reqid=r.reqid if r.level == Level.UNIQUE else 0,
                    src=r.src,
                    dst=r.dst,
                    text=r.to_text(),
                )
                for r in sp.requests
            )
            single = (
                reqs[0]
                if len(reqs) == 1 and reqs[0].proto == _P_ESP
                and reqs[0].mode == _M_TRANSPORT and reqs[0].src is None
                else None
            )
            return _Decision(_V_PROTECT, reqs, sp, source, single)
        # DISCARD (or an entrust that reached here, which cannot happen for the SPD)
        return _Decision(_V_DISCARD, (), sp, source)

    # --- outbound -----------------------------------------------------------------------------
    def protect(self, flow: Flow, payload: bytes, *, now: float) -> list[Outbound]:
        """Apply the outbound policy to one UDP datagram from ``flow.src``:``flow.sport``.

        Returns what to send (one datagram). Raises, having sent nothing:
        ``PermissionError`` (EACCES) under ``discard``; :class:`NoSAError` (ENOENT) when a
        ``require``/``unique`` SA is missing (an Acquire event is raised through the SADB,
        rate-limited); :class:`SequenceOverflowError` when the SA is exhausted; ``OSError``
        (EPROTONOSUPPORT/EOPNOTSUPP/EINVAL) for what this socket cannot do (AH over the udp
        transport, tunnel mode, IPComp).
        """
        return [self.protect_one(flow, payload, now=now)]

    def protect_one(self, flow: Flow, payload: bytes, *, now: float) -> Outbound:
        """:meth:`protect` for callers that send one datagram (the sockets): no list."""
        sadb = self._sadb
        try:
            sadb.tick(now)
        except Exception as exc:  # only a subscriber's: logged, not the caller's
            if not self._subscriber_error(exc):
                raise
        route = self._routes.get(flow.key)
        if (
            route is None
            or route.sadb_gen != sadb.generation
            or route.sysctl_gen != _sysctl_generation()
            or route.spd_gen != self._spd.generation
            or route.policy_gen != self._policy_version
        ):
            route = self._route(flow)
        entry = route.entry
        if entry is None:
            return self._protect_general(flow, payload, now)
        # The fast path: one ESP transport SA, sealed with a sequence-derived IV and the
        # default padding. The segment first (an oversized payload raises ValueError before a
        # sequence number is spent), then the sequence number and the lifetime charge in one
        # store call, then ESP.
        seg = build_udp_partial(route.partial, flow.sport, flow.dport, payload)
        n = len(seg)
        try:
            seq = sadb.reserve_and_account(entry, route.fixed + n + (-(n + 2) % route.align),
                                           now)
        except SequenceOverflowError:
            self._counters.add(self._c_out_seqoverflow)
            raise
        except NoSAError:  # the SA died since the route was computed
            self._counters.add(self._c_out_nosa)
            raise
        except Exception as exc:  # see _reserve_again
            if not self._subscriber_error(exc):
                raise
            seq = self._reserve_again(entry)
        spi = route.spi
        data = _esp_seal(route.ctx, spi=spi, seq=seq, payload=seg, next_header=IPPROTO_UDP,
                         esn=route.esn)
        for counter in self._n_out_success:
            next(counter)
        out: Outbound = _tnew(Outbound, (route.carrier, data, flow.src, flow.dst, route.osport,
                                         route.odport, route.protocol, False, spi, seq))
        return out

    def _route(self, flow: Flow) -> _Route:
        """Compute (and cache) the outbound fast path of ``flow``, or a route that says "take
        the general path". The generations are read before anything is looked up."""
        sadb = self._sadb
        route = _Route((sadb.generation, _sysctl_generation(), self._spd.generation,
                        self._policy_version))
        if len(self._routes) >= _CACHE_MAX:
            self._routes.clear()
        self._routes[flow.key] = route
        req = self._decide(_OUT, flow).single_esp
        if req is None:
            return route
        entry = sadb.lookup_outbound(flow.src, flow.dst, IPPROTO_ESP, _M_TRANSPORT, req.reqid)
        if entry is None:
            return route
        sa, ctx = entry.sa, entry.crypto
        if (
            not isinstance(ctx, EspContext)
            or ctx.needs_random_iv
            or sa.padding != _PAD_SEQ
            or sysctl.get(_tree(flow.src.version) + "esp_randpad") > 0
        ):
            return route
        if sa.natt:
            route.carrier, route.osport, route.odport = _NATT, sa.natt_sport or 0, sa.natt_dport or 0
        elif self._transport is _T_UDP:
            route.carrier, route.osport, route.odport = _UDP, flow.sport, flow.dport
        else:
            route.carrier, route.protocol = _IP, IPPROTO_ESP
        route.ctx = ctx
        route.spi = sa.spi
        route.esn = sa.esn
        route.partial = udp_partial_sum(flow.src_p, flow.dst_p, flow.sport, flow.dport)
        route.fixed = 8 + ctx.iv_len + 2 + ctx.icv_len
        route.align = ctx.align
        route.entry = entry
        return route

    def _protect_general(self, flow: Flow, payload: bytes, now: float) -> Outbound:
        """Every case the route cannot serve: clear, discard, missing SAs, bundles, AH, CBC,
        random padding, TFC padding."""
        sadb = self._sadb
        decision = self._decide(_OUT, flow)
        req = decision.single_esp
        if req is not None:
            # One ESP transport request with an SA that needs what the route cannot give.
            entry = sadb.lookup_outbound(flow.src, flow.dst, IPPROTO_ESP, _M_TRANSPORT,
                                         req.reqid)
            if entry is not None:
                sa = entry.sa
                segment = build_udp(flow.src_p, flow.dst_p, flow.sport, flow.dport, payload)
                seq = self._reserve(entry)
                data = self._seal_esp(entry, sa, seq, segment, IPPROTO_UDP, flow.src.version)
                self._account(entry, len(data), now)
                self._counters.add(self._c_out_success)
                if sa.natt:
                    return Outbound(_NATT, data, flow.src, flow.dst,
                                    sa.natt_sport or 0, sa.natt_dport or 0, IPPROTO_UDP,
                                    False, sa.spi, seq)
                if self._transport is _T_UDP:
                    return Outbound(_UDP, data, flow.src, flow.dst, flow.sport,
                                    flow.dport, IPPROTO_UDP, False, sa.spi, seq)
                return Outbound(_IP, data, flow.src, flow.dst, 0, 0, IPPROTO_ESP,
                                False, sa.spi, seq)
        verdict = decision.verdict
        if verdict == _V_CLEAR:
            self._counters.add(self._c_out_clear)
            return Outbound(_CLEAR, payload, flow.src, flow.dst, flow.sport, flow.dport,
                            IPPROTO_UDP)
        if verdict == _V_DISCARD:
            self._counters.add(self._c_out_polvio)
            raise PermissionError(
                errno.EACCES,
                f"datagram {flow} refused by policy '{decision.policy.to_text()}' "
                f"({decision.source}); nothing was sent",
            )
        return self._protect_ipsec(decision, flow, payload, now)

    def _out_error(self, slot: int, exc: OSError) -> OSError:
        self._counters.add(slot)
        return exc

    def _protect_ipsec(
        self, decision: _Decision, flow: Flow, payload: bytes, now: float
    ) -> Outbound:
        sadb = self._sadb
        if not decision.requests:
            self._counters.add(self._c_out_nosa)
            raise NoSAError(
                f"policy '{decision.policy.to_text()}' ({decision.source}) has no requests, so "
                f"no SA can protect {flow}; nothing was sent"
            )
        # 1. Resolve every SA first, so an error sends nothing and burns no sequence number.
        chosen: list[tuple[_Req, SAEntry]] = []
        for req in decision.requests:
            if req.mode != _M_TRANSPORT:
                raise self._out_error(self._c_out_inval, OSError(
                    errno.EOPNOTSUPP,
                    f"request '{req.text}' asks for {req.mode.keyword} mode; secsock sockets "
                    f"do transport mode only; nothing was sent",
                ))
            if req.proto == _P_IPCOMP:
                if req.require:
                    raise self._out_error(self._c_out_inval, OSError(
                        errno.EPROTONOSUPPORT,
                        f"request '{req.text}' requires IPComp, which secsock does not "
                        f"implement; nothing was sent",
                    ))
                continue
            src = req.src if req.src is not None else flow.src
            dst = req.dst if req.dst is not None else flow.dst
            entry = sadb.lookup_outbound(src, dst, req.proto, req.mode, req.reqid)
            if entry is None:
                try:
                    sadb.acquire(src, dst, req.proto, req.mode, req.reqid, now=now)
                except Exception as exc:  # only a subscriber's: logged
                    if not self._subscriber_error(exc):
                        raise
                if not req.require:
                    continue  # level use: skip this request (KAME), maybe send in the clear
                reqid = f" reqid {req.reqid}" if req.reqid else ""
                self._counters.add(self._c_out_nosa)
                raise NoSAError(
                    f"no SA for {req.proto.keyword}/{req.mode.keyword} {src}->{dst}{reqid} "
                    f"(request '{req.text}' of policy '{decision.policy.to_text()}', "
                    f"{decision.source}); an ACQUIRE was raised; nothing was sent"
                )
            chosen.append((req, entry))
        if not chosen:
            self._counters.add(self._c_out_clear)
            return Outbound(_CLEAR, payload, flow.src, flow.dst, flow.sport, flow.dport,
                            IPPROTO_UDP)
        for i, (req, entry) in enumerate(chosen):
            if req.proto == _P_AH:
                if self._transport == _T_UDP:
                    raise self._out_error(self._c_out_inval, OSError(
                        errno.EPROTONOSUPPORT,
                        f"request '{req.text}': AH cannot travel over the udp transport "
                        f"(RFC 3948 encapsulates only ESP, and AH's ICV covers the IP header); "
                        f"use ESP with integrity (e.g. esp/transport//require with aes-gcm-16) "
                        f"or transport='raw'; nothing was sent",
                    ))
                if i != len(chosen) - 1:
                    raise self._out_error(self._c_out_inval, OSError(
                        errno.EOPNOTSUPP,
                        f"request '{req.text}': AH must be the last (outermost) request of "
                        f"the policy, e.g. 'esp/transport//require ah/transport//require'; "
                        f"nothing was sent",
                    ))
            elif _is_natt(entry.sa) and i != len(chosen) - 1:
                raise self._out_error(self._c_out_inval, OSError(
                    errno.EOPNOTSUPP,
                    f"SA 0x{entry.sa.spi:08x} is esp-udp (NAT-T) and must be the outermost "
                    f"transform; nothing was sent",
                ))
        # 2. Apply the transforms, innermost first.
        data = build_udp(flow.src_p, flow.dst_p, flow.sport, flow.dport, payload)
        nh = IPPROTO_UDP
        carrier = _IP
        osport = odport = 0
        protocol = IPPROTO_ESP
        header_included = False
        spi = seq = 0
        version = flow.src.version
        for req, entry in chosen:
            sa = entry.sa
            spi = sa.spi
            seq = self._reserve(entry)  # NoSAError if the SA died between selection and use
            if req.proto == _P_ESP:
                data = self._seal_esp(entry, sa, seq, data, nh, version)
                nh = IPPROTO_ESP
                if _is_natt(sa):
                    carrier = _NATT
                    osport, odport = sa.natt_sport or 0, sa.natt_dport or 0
                elif self._transport == _T_UDP:
                    carrier = _UDP
                    osport, odport = flow.sport, flow.dport
                protocol = IPPROTO_ESP if carrier == _IP else IPPROTO_UDP
            else:
                data, header_included = self._seal_ah(entry, sa, seq, data, nh, flow)
                nh = IPPROTO_AH
                carrier = _IP
                protocol = IPPROTO_AH
            self._account(entry, len(data), now)
        self._counters.add(self._c_out_success)
        return Outbound(carrier, data, flow.src, flow.dst, osport, odport, protocol,
                        header_included, spi, seq)

    # --- SADB event subscribers on the data path ----------------------------------------------
    # A store publishes SADB events (SoftExpire, HardExpire, Acquire) to its subscribers inside
    # the data-path calls; a subscriber's exception is re-raised there, after the store's work
    # is done (secsock.sadb.events). A key manager's bug must not reach the application through
    # recv() or sendto(), nor lose the datagram: it is logged and the datagram goes on. Errors
    # of the store itself still propagate.

    def _subscriber_error(self, exc: Exception) -> bool:
        """Log ``exc`` if an SADB event subscriber raised it (True); False: re-raise it."""
        if not raised_by_subscriber(exc):
            return False
        _LOG.error("an SADB event subscriber raised %s; logged and ignored on the data path",
                   type(exc).__name__, exc_info=exc)
        return True

    def _reserve(self, entry: SAEntry) -> int:
        """``reserve_seq(entry)`` with the outbound counters and subscriber errors handled."""
        try:
            return self._sadb.reserve_seq(entry)
        except SequenceOverflowError:
            self._counters.add(self._c_out_seqoverflow)
            raise
        except NoSAError:
            self._counters.add(self._c_out_nosa)
            raise
        except Exception as exc:  # see _reserve_again
            if not self._subscriber_error(exc):
                raise
            return self._reserve_again(entry)

    def _reserve_again(self, entry: SAEntry) -> int:
        """A reservation completed but a subscriber's exception took its sequence number with
        it: reserve another (a gap is harmless to the receiver). If that reservation was the
        SA's last (its hard limit or the counter's end; the SA is gone) this is NoSAError."""
        try:
            return self._sadb.reserve_seq(entry)
        except SequenceOverflowError:
            self._counters.add(self._c_out_seqoverflow)
            raise
        except NoSAError:
            self._counters.add(self._c_out_nosa)
            raise
        except Exception as exc:  # the overflow's HardExpire, say
            if not self._subscriber_error(exc):
                raise
        self._counters.add(self._c_out_nosa)
        raise NoSAError(f"SA 0x{entry.sa.spi:08x} is no longer usable; nothing was sent")

    def _account(self, entry: SAEntry, nbytes: int, now: float) -> None:
        try:
            self._sadb.account(entry, nbytes, now)
        except Exception as exc:  # only a subscriber's: logged
            if not self._subscriber_error(exc):
                raise

    def _commit(self, entry: SAEntry, seq: int, nbytes: int, now: float) -> bool:
        try:
            return self._sadb.commit_and_account(entry, seq, nbytes, now)
        except Exception as exc:  # a subscriber's: the commit happened
            if not self._subscriber_error(exc):
                raise
            return True

    def _seal_esp(
        self, entry: SAEntry, sa: SecurityAssociation, seq: int, data: bytes, nh: int,
        version: int,
    ) -> bytes:
        ctx = entry.crypto
        if not isinstance(ctx, EspContext):
            raise TypeError(f"ESP SA 0x{sa.spi:08x} has no ESP context")  # a store bug
        iv = self._rng(ctx.iv_len) if ctx.needs_random_iv else None
        padding = _PADMODE[sa.padding]
        random_pad = self._rng(255) if padding is PadMode.RANDOM else None
        randpad = sysctl.get(_tree(version) + "esp_randpad")
        return _esp.seal(
            ctx, spi=sa.spi, seq=seq, payload=data, next_header=nh, esn=sa.esn, iv=iv,
            padding=padding, random_pad=random_pad, pad_to=max(0, randpad),
        )

    def _seal_ah(
        self, entry: SAEntry, sa: SecurityAssociation, seq: int, data: bytes, nh: int,
        flow: Flow,
    ) -> tuple[bytes, bool]:
        ctx = entry.crypto
        if not isinstance(ctx, AhContext):
            raise TypeError(f"AH SA 0x{sa.spi:08x} has no AH context")  # a store bug
        if isinstance(flow.src, IPv4Address) and isinstance(flow.dst, IPv4Address):
            with self._lock:
                self._ip_id = (self._ip_id + 1) & 0xFFFF or 1
                ident = self._ip_id
            packet = _ah.seal_ipv4(
                ctx, spi=sa.spi, seq=seq, esn=sa.esn, src=flow.src, dst=flow.dst,
                next_header=nh, payload=data, identification=ident,
                cleartos=sysctl.get("net.inet.ipsec.ah_cleartos") != 0,
                offsetmask=sysctl.get("net.inet.ipsec.ah_offsetmask"),
            )
            return packet, True
        assert isinstance(flow.src, IPv6Address)
        assert isinstance(flow.dst, IPv6Address)
        # The kernel builds the IPv6 header of a raw IPv6 socket; every field the ICV covers
        # (payload length, next header 51, addresses) is known, the rest is zeroed anyway.
        packet = _ah.seal_ipv6(
            ctx, spi=sa.spi, seq=seq, esn=sa.esn, src=flow.src, dst=flow.dst,
            next_header=nh, payload=data,
        )
        return packet[40:], False

    # --- inbound ------------------------------------------------------------------------------
    def receive(
        self,
        packet: bytes,
        *,
        carrier: Carrier,
        src: Address,
        dst: Address,
        sport: int = 0,
        dport: int = 0,
        protocol: int = IPPROTO_UDP,
        header_included: bool = False,
        now: float,
    ) -> Delivered | Dropped:
        """Process one received datagram; never raises for any ``packet`` bytes.

        ``carrier`` says how it arrived: CLEAR (a plain UDP payload), UDP (the payload of a
        datagram on the socket's own port: ESP when its first word is the SPI of an inbound
        SA for ``dst``, else clear), NATT (from the encapsulation port, already classified as
        ESP), IP (``protocol`` 50 or 51; ``header_included`` when ``packet`` starts with the
        IPv4 header, as raw IPv4 sockets deliver it). ``src``/``sport`` are the remote end,
        ``dst``/``dport`` the local one, as seen on the outer packet.
        """
        if carrier is _UDP:
            return self.receive_udp(packet, src, dst, sport, dport, now)
        result = self.decapsulate(
            packet, carrier=carrier, src=src, dst=dst, sport=sport, dport=dport,
            protocol=protocol, header_included=header_included, now=now,
        )
        if isinstance(result, Dropped):
            return result
        return self.admit(result, now=now)

    def receive_udp(
        self, packet: bytes, src: Address, dst: Address, sport: int, dport: int, now: float
    ) -> Delivered | Dropped:
        """``receive(packet, carrier=Carrier.UDP, ...)`` with positional arguments: a datagram
        that arrived on the socket's own port (the per-packet call of the sockets).

        ESP for an inbound SA of ``dst`` takes a fast path with exactly the general path's
        steps and drops: the SA from a per-SPI cache checked against the store's generation,
        the replay check before the ICV, the SA's addresses after it, then
        ``commit_and_account``, the inner UDP header, the inbound policy (memoised per SPI for the last accepted
        source and ports, checked against the generations of the sysctls, the SPD and the
        socket policies). Anything else is a clear datagram for :meth:`admit`.
        """
        if type(packet) is not bytes:
            packet = bytes(packet)
        sadb = self._sadb
        try:
            sadb.tick(now)
        except Exception as exc:  # only a subscriber's: logged, not the caller's
            if not self._subscriber_error(exc):
                raise
        try:
            spi, seq_lo = _spi_seq(packet)
        except struct.error:  # shorter than SPI and sequence number: not ESP
            return self.admit(Decapsulated(packet, src, dst, sport, dport, ()), now=now)
        rx = self._rx.get(spi)
        if rx is None or rx.gen != sadb.generation or (rx.dst is not dst and rx.dst != dst):
            rx = self._rx_for(spi, dst) if spi >= 256 else None
            if rx is None:  # not ESP for us: a clear datagram on the socket's port
                return self.admit(Decapsulated(packet, src, dst, sport, dport, ()), now=now)
        entry = rx.entry
        seq = sadb.replay_check(entry, seq_lo)
        if seq is None:
            return self._drop(_R_REPLAY, spi, seq_lo, "replayed or outside the window")
        try:
            if rx.esn:
                opened = _esp_open(rx.ctx, packet, seq_hi=seq >> 32, esn=True,
                                   check_padding=rx.check_padding)
            else:
                opened = _esp_open(rx.ctx, packet, check_padding=rx.check_padding)
        except IntegrityError as exc:
            return self._drop(_R_AUTH, spi, seq, str(exc))
        except MalformedPacket as exc:
            return self._drop(exc.reason, spi, seq, str(exc))
        # RFC 4301 §5.2 before the window moves: a copy of a genuine packet sent from another
        # source is dropped without suppressing the genuine one. dst matched in the lookup.
        if src is not rx.src_ok:
            if rx.sa_src != src:
                return self._drop(_R_POLICY, spi, seq,
                                  f"SA {rx.sa_src}->{rx.dst} does not match datagram "
                                  f"{src}->{dst}")
            rx.src_ok = src
        try:
            committed = sadb.commit_and_account(entry, seq, len(packet), now)
        except Exception as exc:  # a subscriber's: the commit happened
            if not self._subscriber_error(exc):
                raise
            committed = True
        if not committed:
            return self._drop(_R_REPLAY, spi, seq, "replayed (lost a race)")
        nh, inner, _pad = opened
        if nh != IPPROTO_UDP:
            if nh == _NH_NONE:
                return self._drop(_R_DUMMY, spi, seq, "next header 59 (dummy)")
            return self._drop(_R_BAD_INNER, spi, seq,
                              f"inner next header {nh}, a UDP socket takes 17")
        n = len(inner)
        if n >= 8:  # TFC padding after the UDP datagram (RFC 4303 §2.7): trim to its length
            ulen = inner[4] << 8 | inner[5]
            if 8 <= ulen < n:
                inner = inner[:ulen]
        try:
            # No checksum arithmetic: ESP's ICV authenticated every octet of the segment (and
            # NAT may have changed the addresses, RFC 3948 §3.1.2), as Linux does for ESP-in-UDP.
            isport, idport, payload = parse_udp_authenticated_untrusted(inner, rx.v6)
        except MalformedPacket as exc:
            return self._drop(exc.reason, spi, seq, str(exc))
        if idport != dport:
            return self._drop(_R_BAD_INNER, spi, seq,
                              f"inner UDP port {idport} is not this socket's port {dport}")
        applied = (_tnew(Applied, (_P_ESP, spi, seq, rx.reqid, False, rx.integrity)),)
        memo = (src, isport, idport, _sysctl_generation(), self._spd.generation,
                self._policy_version)
        if memo != rx.admit:  # not the last accepted source, ports and generations
            result = self.admit(Decapsulated(payload, src, dst, isport, idport, applied),
                                now=now)
            if type(result) is Delivered:
                rx.admit = memo
            return result
        for counter in self._n_in_success:
            next(counter)
        delivered: Delivered = _tnew(Delivered, (payload, src, dst, isport, idport, applied))
        return delivered

    def _rx_for(self, spi: int, dst: Address) -> _Rx | None:
        """The inbound fast-path record of (dst, ESP, spi), cached; None when there is no SA
        (the generation is read before the lookup)."""
        gen = self._sadb.generation
        entry = self._sadb.lookup_inbound(dst, SAProtocol.ESP, spi)
        if entry is None:
            return None
        ctx = entry.crypto
        if not isinstance(ctx, EspContext):  # pragma: no cover - a store bug
            return None
        rx = _Rx(gen, dst, entry, ctx)
        if len(self._rx) >= _CACHE_MAX:
            self._rx.clear()
        self._rx[spi] = rx
        return rx

    def _warn_no_integrity(self, spi: int) -> None:
        """Once per SA and engine: say why a confidentiality-only SA's datagrams vanish."""
        warned = self._no_integrity_warned
        if spi in warned:
            return
        if len(warned) >= _CACHE_MAX:
            warned.clear()
        warned.add(spi)
        _LOG.warning("ESP SA 0x%08x has no integrity (no AEAD, no -A): its datagrams are "
                     "dropped under require/unique inbound policies (in_polvio); add -A or use "
                     "an AEAD such as aes-gcm-16", spi)

    def drop(
        self, reason: DropReason, spi: int | None = None, seq: int | None = None,
        detail: str = "",
    ) -> Dropped:
        """Count (and, with the debug sysctl on, log) a drop decided outside the engine, e.g.
        by a shared carrier that found no socket entitled to a decapsulated datagram."""
        return self._drop(reason, spi, seq, detail)

    def _drop(
        self, reason: DropReason, spi: int | None = None, seq: int | None = None,
        detail: str = "",
    ) -> Dropped:
        self._counters.drop(reason)
        if sysctl.debug_enabled():
            _LOG.debug("drop reason=%s spi=%s seq=%s %s", reason, _hexspi(spi),
                       "-" if seq is None else seq, detail)
        return Dropped(reason, spi, seq, detail)

    def decapsulate(
        self,
        packet: bytes,
        *,
        carrier: Carrier,
        src: Address,
        dst: Address,
        sport: int = 0,
        dport: int = 0,
        protocol: int = IPPROTO_UDP,
        header_included: bool = False,
        now: float,
    ) -> Decapsulated | Dropped:
        """The SA half of :meth:`receive`: everything except the socket's policy check."""
        try:
            return self._decapsulate(packet, carrier, src, dst, sport, dport, protocol,
                                     header_included, now)
        except _DropSignal as sig:
            return self._drop(sig.reason, sig.spi, sig.seq, sig.detail)
        except (MalformedPacket, IntegrityError, ValueError) as exc:  # pragma: no cover
            # A codec that let something through: still a drop, never an exception.
            reason = exc.reason if isinstance(exc, MalformedPacket) else DropReason.MALFORMED
            return self._drop(reason, detail=f"unexpected: {exc}")

    def _decapsulate(
        self, packet: bytes, carrier: Carrier, src: Address, dst: Address, sport: int,
        dport: int, protocol: int, header_included: bool, now: float,
    ) -> Decapsulated:
        if type(packet) is not bytes:
            packet = bytes(packet)
        try:
            self._sadb.tick(now)
        except Exception as exc:  # only a subscriber's: logged, not the caller's
            if not self._subscriber_error(exc):
                raise
        if carrier == _CLEAR:
            return Decapsulated(packet, src, dst, sport, dport, ())
        applied: list[Applied] = []
        if carrier == _UDP:
            entry = None
            if len(packet) >= 8:
                spi = int.from_bytes(packet[:4], "big")
                if spi >= 256:
                    entry = self._sadb.lookup_inbound(dst, SAProtocol.ESP, spi)
            if entry is None:  # not ESP for us: a clear datagram on the socket's port
                return Decapsulated(packet, src, dst, sport, dport, ())
            inner, nh = self._open_esp(packet, entry, src, dst, applied, now, natt=False)
        elif carrier == _NATT:
            inner, nh = self._open_esp(packet, None, src, dst, applied, now, natt=True)
        elif carrier == _IP:
            if header_included:
                try:
                    header, packet = parse_ipv4_untrusted(packet)
                except MalformedPacket as exc:
                    raise _DropSignal(DropReason.MALFORMED, detail=str(exc)) from None
                protocol = header.protocol
                src, dst = header.src, header.dst
                if header.is_fragment:
                    raise _DropSignal(DropReason.MALFORMED, detail="IPv4 fragment")
                ip_header = header
            else:
                ip_header = None
            if protocol == IPPROTO_AH:
                inner, nh = self._open_ah(packet, ip_header, src, dst, applied, now)
                if nh == IPPROTO_ESP:
                    inner, nh = self._open_esp(inner, None, src, dst, applied, now, natt=False)
            elif protocol == IPPROTO_ESP:
                inner, nh = self._open_esp(packet, None, src, dst, applied, now, natt=False)
            else:
                raise _DropSignal(DropReason.MALFORMED,
                                  detail=f"IP protocol {protocol} is neither ESP nor AH")
        else:  # pragma: no cover - enum exhausted
            raise _DropSignal(DropReason.MALFORMED, detail=f"unknown carrier {carrier!r}")
        outer = applied[0]
        if nh == _NH_NONE:
            raise _DropSignal(DropReason.DUMMY, outer.spi, outer.seq, "next header 59 (dummy)")
        if nh != IPPROTO_UDP:
            raise _DropSignal(DropReason.BAD_INNER, outer.spi, outer.seq,
                              f"inner next header {nh}, a UDP socket takes 17")
        n = len(inner)
        if n >= 8:  # TFC padding after the UDP datagram (RFC 4303 §2.7): trim to its length
            ulen = inner[4] << 8 | inner[5]
            if 8 <= ulen < n:
                inner = inner[:ulen]
        try:
            isport, idport, payload = parse_udp_untrusted(
                inner, self._packed_of(src), self._packed_of(dst),
                # As Linux: checked on raw ESP/AH, not under ESP-in-UDP (NAT may have changed
                # the addresses, RFC 3948 §3.1.2); ESP's ICV covers the segment anyway.
                verify_checksum=carrier == _IP,
            )
        except MalformedPacket as exc:
            raise _DropSignal(exc.reason, outer.spi, outer.seq, str(exc)) from None
        if carrier == _UDP and idport != dport:
            raise _DropSignal(DropReason.BAD_INNER, outer.spi, outer.seq,
                              f"inner UDP port {idport} is not this socket's port {dport}")
        return Decapsulated(payload, src, dst, isport, idport, tuple(applied))

    def _lookup(self, dst: Address, proto: SAProtocol, spi: int, seq: int) -> SAEntry:
        entry = self._sadb.lookup_inbound(dst, proto, spi)
        if entry is None:
            raise _DropSignal(DropReason.NO_SA, spi, seq, f"no {proto} SA for {dst}")
        return entry

    def _check_sa_addresses(self, sa: SecurityAssociation, src: Address, dst: Address,
                            seq: int) -> None:
        # RFC 4301 §5.2: the datagram's addresses must match the SA's selectors.
        if sa.src != src or sa.dst != dst:
            raise _DropSignal(
                DropReason.POLICY, sa.spi, seq,
                f"SA {sa.src}->{sa.dst} does not match datagram {src}->{dst}",
            )

    def _open_esp(
        self, packet: bytes, entry: SAEntry | None, src: Address, dst: Address,
        applied: list[Applied], now: float, *, natt: bool,
    ) -> tuple[bytes, int]:
        try:
            spi, seq_lo = _esp.peek_untrusted(packet)
        except MalformedPacket as exc:
            raise _DropSignal(DropReason.MALFORMED, detail=str(exc)) from None
        sadb = self._sadb
        if entry is None:
            entry = self._lookup(dst, SAProtocol.ESP, spi, seq_lo)
        sa = entry.sa
        ctx = entry.crypto
        if not isinstance(ctx, EspContext):
            raise _DropSignal(DropReason.NO_SA, spi, seq_lo, "SA has no ESP context")
        seq = sadb.replay_check(entry, seq_lo)
        if seq is None:
            raise _DropSignal(DropReason.REPLAY, spi, seq_lo, "replayed or outside the window")
        try:
            opened = _esp.open_untrusted(ctx, packet, seq_hi=seq >> 32, esn=sa.esn,
                                         check_padding=sa.padding == _PAD_SEQ)
        except IntegrityError as exc:
            raise _DropSignal(DropReason.AUTH_FAILED, spi, seq, str(exc)) from None
        except MalformedPacket as exc:
            raise _DropSignal(exc.reason, spi, seq, str(exc)) from None
        self._check_sa_addresses(sa, src, dst, seq)  # before the window moves
        if not self._commit(entry, seq, len(packet), now):
            raise _DropSignal(DropReason.REPLAY, spi, seq, "replayed (lost a race)")
        applied.append(Applied(_P_ESP, spi, seq, sa.reqid, natt, ctx.icv_len > 0))
        return opened.payload, opened.next_header

    def _open_ah(
        self, packet: bytes, ip_header: object, src: Address, dst: Address,
        applied: list[Applied], now: float,
    ) -> tuple[bytes, int]:
        try:
            peek = _ah.peek_untrusted(packet)
        except MalformedPacket as exc:
            raise _DropSignal(DropReason.MALFORMED, detail=str(exc)) from None
        spi, seq_lo = peek.spi, peek.seq_lo
        sadb = self._sadb
        entry = self._lookup(dst, SAProtocol.AH, spi, seq_lo)
        sa = entry.sa
        ctx = entry.crypto
        if not isinstance(ctx, AhContext):
            raise _DropSignal(DropReason.NO_SA, spi, seq_lo, "SA has no AH context")
        seq = sadb.replay_check(entry, seq_lo)
        if seq is None:
            raise _DropSignal(DropReason.REPLAY, spi, seq_lo, "replayed or outside the window")
        try:
            if isinstance(src, IPv4Address) and isinstance(dst, IPv4Address):
                from secsock.core.ip import IPv4Header

                if not isinstance(ip_header, IPv4Header):
                    raise MalformedPacket("AH over IPv4 needs the IPv4 header")
                result = _ah.verify_ipv4_untrusted(
                    ctx, packet, header=ip_header, seq_hi=seq >> 32, esn=sa.esn,
                    cleartos=sysctl.get("net.inet.ipsec.ah_cleartos") != 0,
                    offsetmask=sysctl.get("net.inet.ipsec.ah_offsetmask"),
                )
            else:
                assert isinstance(src, IPv6Address)
                assert isinstance(dst, IPv6Address)
                from secsock.core.ip import IPv6Header

                header6 = IPv6Header(payload_length=len(packet), next_header=IPPROTO_AH,
                                     src=src, dst=dst)
                result = _ah.verify_ipv6_untrusted(ctx, packet, header=header6,
                                                   seq_hi=seq >> 32, esn=sa.esn)
        except IntegrityError as exc:
            raise _DropSignal(DropReason.AUTH_FAILED, spi, seq, str(exc)) from None
        except MalformedPacket as exc:
            raise _DropSignal(exc.reason, spi, seq, str(exc)) from None
        self._check_sa_addresses(sa, src, dst, seq)  # before the window moves
        if not self._commit(entry, seq, len(packet), now):
            raise _DropSignal(DropReason.REPLAY, spi, seq, "replayed (lost a race)")
        applied.append(Applied(_P_AH, spi, seq, sa.reqid, False))
        return result.payload, result.next_header

    def admit(self, datagram: Decapsulated, *, now: float) -> Delivered | Dropped:
        """The policy half of :meth:`receive` (§4.5 step 6, KAME ipsec_in_reject)."""
        del now  # policies have no lifetimes here; kept for symmetry with receive()
        src, dst = datagram.src, datagram.dst
        decision = self._decide_in(src, dst, self._packed_of(src), self._packed_of(dst),
                                   datagram.sport, datagram.dport)
        applied = datagram.applied
        outer = applied[0] if applied else None
        spi = outer.spi if outer is not None else None
        seq = outer.seq if outer is not None else None
        if decision.verdict == _V_DISCARD:
            flow = Flow(src, dst, datagram.sport, datagram.dport)
            return self._drop(
                DropReason.POLICY, spi, seq,
                f"{flow} refused by '{decision.policy.to_text()}' ({decision.source})",
            )
        if decision.verdict == _V_PROTECT:
            required = False
            for req in decision.requests:
                if not req.require or req.proto == _P_IPCOMP:
                    continue  # use is never enforced inbound; IPComp never checked (KAME)
                required = True
                want = req.proto
                for a in applied:
                    if a.proto == want:
                        break
                else:
                    got = "clear" if not applied else "+".join(
                        a.proto.keyword for a in applied)
                    flow = Flow(src, dst, datagram.sport, datagram.dport)
                    return self._drop(
                        DropReason.POLICY, spi, seq,
                        f"{flow} arrived {got} but '{req.text}' requires "
                        f"{req.proto.keyword} ({decision.source})",
                    )
            if required:
                # Deviation from KAME: under require/unique, unauthenticated data never reaches
                # the application. ESP with confidentiality only must be covered by AH.
                for a in applied:
                    if not a.integrity and not any(x.proto == _P_AH for x in applied):
                        self._warn_no_integrity(a.spi)
                        flow = Flow(src, dst, datagram.sport, datagram.dport)
                        return self._drop(
                            DropReason.POLICY, spi, seq,
                            f"{flow} arrived under ESP SA 0x{a.spi:08x} without integrity "
                            f"(no AEAD, no -A) and no AH; '{decision.policy.to_text()}' "
                            f"({decision.source}) requires authenticated data",
                        )
        self._counters.add(self._c_in_success if applied else self._c_in_clear)
        return Delivered(datagram.payload, datagram.src, datagram.dst, datagram.sport,
                         datagram.dport, applied)


class _DropSignal(Exception):
    """Internal: unwinds the receive path to one drop point."""

    def __init__(
        self, reason: DropReason, spi: int | None = None, seq: int | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.spi = spi
        self.seq = seq
        self.detail = detail


def _is_natt(sa: SecurityAssociation) -> bool:
    return sa.natt


_PADMODE: Final = {
    _PAD_SEQ: PadMode.SEQ,
    Padding.RANDOM: PadMode.RANDOM,
    Padding.ZERO: PadMode.ZERO,
}
