"""The SADB side of a secure stream: which SA seals a frame, and opening received frames.

:class:`StreamSecurity` implements :class:`~secsock.asyncio._channel.StreamProtector` on top of
an :class:`~secsock.sadb.store.EngineStore`, with the same rules as a secure datagram socket:

* outbound, the SA is looked up by the TCP connection's addresses (or the request's explicit
  ``src-dst``), protocol ESP, mode transport, and the request's reqid (``unique:N``); a
  missing SA raises an ACQUIRE through the SADB and :class:`~secsock.errors.NoSAError`
  (ENOENT); an exhausted one :class:`~secsock.errors.SequenceOverflowError`;
* inbound, the SA is found by (local address, ESP, SPI); the replay window is checked before
  the ICV and committed after it; the SA's addresses must be the connection's (RFC 4301 §5.2);
* every frame is counted in the stream's counters and the process-wide ones
  (:func:`secsock.stats`), drops by reason.

A stream carries nothing but ESP, so its policy must be ``ipsec`` with one ``esp/transport``
request per direction; the level only matters for ``unique`` (the reqid): there is no clear
fallback for ``use``.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final

from secsock import sysctl
from secsock._stats import Counters, IPsecStats, process_counters
from secsock.asyncio._channel import Opened
from secsock.core import esp as _esp
from secsock.core.esp import EspContext, PadMode
from secsock.engine import EngineStore
from secsock.errors import (
    DropReason,
    IntegrityError,
    MalformedPacket,
    NoSAError,
    SecsockError,
    SequenceOverflowError,
)
from secsock.policy.model import Action, Direction, Level, Mode, Policy, Protocol, Request
from secsock.sadb.events import raised_by_subscriber
from secsock.sadb.model import Padding, SAIdentity, SAProtocol, SecurityAssociation
from secsock.sadb.store import SAEntry

__all__ = ("ESP_OVERHEAD_MAX", "StreamPolicy", "StreamSecurity", "identity_of", "stream_policy")

#: The most ESP adds to a payload with any registered algorithm: SPI+seq 8, IV 16 (CBC),
#: padding 255 (the Pad Length field's limit, reached with the esp_randpad sysctl; 15 without
#: it), pad length and next header 2, ICV 32 (HMAC-SHA-512).
ESP_OVERHEAD_MAX: Final = 8 + 16 + 255 + 2 + 32
_MAX_SEGMENT: Final = 0xFFFF - 2 - ESP_OVERHEAD_MAX
_TRANSPORT: Final = int(Mode.TRANSPORT)
_ESP: Final = int(SAProtocol.ESP)
_NH_TCP: Final = 6
_NH_NONE: Final = 59
_SPI_SEQ: Final = struct.Struct("!II")
_new_tuple: Final = tuple.__new__
_LOG: Final = logging.getLogger("secsock")


def _subscriber_error(exc: Exception) -> bool:
    """Log ``exc`` if an SADB event subscriber raised it (the store's work is done) and return
    True; False means a real error to re-raise. A key manager's bug must not break a stream
    (the engine treats datagrams the same way; secsock.sadb.events)."""
    if not raised_by_subscriber(exc):
        return False
    _LOG.error("an SADB event subscriber raised %s; logged and ignored on the stream path",
               type(exc).__name__, exc_info=exc)
    return True


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """What a stream's policies ask for: the ESP request each direction uses, as installed."""

    outbound: Policy
    inbound: Policy
    out_request: Request
    in_request: Request

    @property
    def texts(self) -> tuple[str, str]:
        """The (inbound, outbound) policies as ipsec_dump_policy(3) prints them."""
        return (self.inbound.to_text(), self.outbound.to_text())


def _esp_request(policy: Policy) -> Request:
    if policy.action != Action.IPSEC:
        raise OSError(
            errno.EOPNOTSUPP,
            f"a secure stream carries only ESP, so its policy must be 'ipsec' with an "
            f"esp/transport request; found '{policy.to_text()}'",
        )
    esp: list[Request] = []
    for r in policy.requests:
        if r.proto == Protocol.ESP:
            esp.append(r)
        elif r.proto == Protocol.AH:
            raise OSError(
                errno.EPROTONOSUPPORT,
                f"request '{r.to_text()}': AH cannot travel in RFC 8229 frames (they carry "
                f"ESP only); use ESP with integrity, e.g. esp/transport//require",
            )
        elif r.level in (Level.REQUIRE, Level.UNIQUE):
            raise OSError(
                errno.EPROTONOSUPPORT,
                f"request '{r.to_text()}' requires IPComp, which secsock does not implement",
            )
    if len(esp) != 1:
        raise OSError(
            errno.EOPNOTSUPP,
            f"a secure stream needs exactly one esp request per direction, found {len(esp)} "
            f"in '{policy.to_text()}'",
        )
    req = esp[0]
    if req.mode != Mode.TRANSPORT:
        raise OSError(
            errno.EOPNOTSUPP,
            f"request '{req.to_text()}' asks for {req.mode.keyword} mode; secure streams do "
            f"transport mode only",
        )
    return req


def _mirror(policy: Policy, direction: Direction) -> Policy:
    reqs = tuple(
        Request(
            proto=r.proto, mode=r.mode, level=r.level, reqid=r.reqid,
            src=r.dst, dst=r.src, src_port=r.dst_port, dst_port=r.src_port,
            src_scope_id=r.dst_scope_id, dst_scope_id=r.src_scope_id,
        )
        for r in policy.requests
    )
    return Policy(direction=direction, action=policy.action, requests=reqs,
                  priority=policy.priority)


def stream_policy(policies: tuple[Policy, ...], sadb: EngineStore) -> StreamPolicy:
    """Check a stream's socket policies; a missing direction mirrors the given one.

    ``unique`` requests without a number get a reqid from the SADB (KAME's key_newreqid).
    Raises OSError (EOPNOTSUPP, EPROTONOSUPPORT) for what a stream cannot carry and
    ValueError when no policy is given.
    """
    by_dir = {p.direction: p for p in policies}
    out = by_dir.get(Direction.OUTBOUND)
    inn = by_dir.get(Direction.INBOUND)
    if out is None and inn is None:
        raise ValueError(
            "a secure stream needs a policy, e.g. policy='out ipsec esp/transport//require'"
        )
    if out is None:
        assert inn is not None
        out = _mirror(inn, Direction.OUTBOUND)
    if inn is None:
        inn = _mirror(out, Direction.INBOUND)
    fixed: list[Policy] = []
    for p in (out, inn):
        req = _esp_request(p)
        if req.level == Level.UNIQUE and req.reqid == 0:
            req = Request(
                proto=req.proto, mode=req.mode, level=req.level, reqid=sadb.allocate_reqid(),
                src=req.src, dst=req.dst, src_port=req.src_port, dst_port=req.dst_port,
                src_scope_id=req.src_scope_id, dst_scope_id=req.dst_scope_id,
            )
            p = p.with_requests(req if r.proto == Protocol.ESP else r for r in p.requests)
        fixed.append(p)
    out, inn = fixed
    return StreamPolicy(out, inn, _esp_request(out), _esp_request(inn))


def identity_of(sa: SecurityAssociation) -> SAIdentity:
    """The key-free identity of ``sa``."""
    return SAIdentity(proto=sa.proto, spi=sa.spi, src=sa.src, dst=sa.dst, mode=sa.mode,
                      reqid=sa.reqid)


def _addr(host: str) -> IPv4Address | IPv6Address:
    return ip_address(host.split("%", 1)[0])


@dataclass(slots=True, kw_only=True)
class _OutRoute:
    """The outbound SA of a stream and what sealing needs, valid while the SADB's
    generation is ``gen``."""

    gen: int
    entry: SAEntry
    ctx: EspContext
    spi: int
    esn: bool
    padding: PadMode
    random_pad: bool
    iv_len: int  # bytes of random IV to draw per packet (CBC), else 0
    fixed: int  # header, IV, trailer and ICV: the sealed length is fixed + n + padding
    align: int
    plain: bool  # seal's defaults do: no random IV, RFC 4303 padding


@dataclass(slots=True, kw_only=True)
class _InRoute:
    """The inbound SA of the last SPI seen, valid while the SADB's generation is ``gen``."""

    gen: int
    spi: int
    entry: SAEntry
    sa: SecurityAssociation
    ctx: EspContext
    esn: bool
    check_padding: bool
    plain: bool  # open_untrusted's defaults do: no ESN, RFC 4303 padding


class StreamSecurity:
    """The :class:`~secsock.asyncio._channel.StreamProtector` of one TCP connection.

    ``local``/``peer`` are the connection's addresses as this end sees them; ``rng`` supplies
    CBC IVs and random padding.
    """

    def __init__(
        self,
        *,
        sadb: EngineStore,
        policy: StreamPolicy,
        local: tuple[str, int],
        peer: tuple[str, int],
        rng: Callable[[int], bytes] = os.urandom,
        counters: Counters | None = None,
    ) -> None:
        self._sadb = sadb
        self.policy = policy
        self._local = _addr(local[0])
        self._peer = _addr(peer[0])
        out = policy.out_request
        self._out_src = out.src if out.src is not None else self._local
        self._out_dst = out.dst if out.dst is not None else self._peer
        self._out_reqid = out.reqid if out.level == Level.UNIQUE else 0
        self._rng = rng
        self.counters = counters if counters is not None else Counters(process_counters())
        c = Counters.index
        self._c_out_success = c("out_success")
        self._c_out_nosa = c("out_nosa")
        self._c_out_inval = c("out_inval")
        self._c_out_seqoverflow = c("out_seqoverflow")
        self._c_in_success = c("in_success")
        tree = "net.inet.ipsec." if self._local.version == 4 else "net.inet6.ipsec6."
        self._randpad = tree + "esp_randpad"
        self._out_success = self.counters.chain(self._c_out_success)
        self._in_success = self.counters.chain(self._c_in_success)
        self._route: _OutRoute | None = None
        self._in: _InRoute | None = None
        self.last_out: SAIdentity | None = None
        self.last_in: SAIdentity | None = None
        self._last_out_sa: SecurityAssociation | None = None
        self._last_in_sa: SecurityAssociation | None = None

    @property
    def max_payload(self) -> int:
        return _MAX_SEGMENT

    def statistics(self) -> IPsecStats:
        """This stream's counters."""
        return self.counters.snapshot()

    # -- outbound ----------------------------------------------------------------------------

    def select(self, *, now: float) -> SAEntry:
        """The outbound SA now; raises NoSAError (after an ACQUIRE) when there is none."""
        entry = self._sadb.lookup_outbound(
            self._out_src, self._out_dst, _ESP, _TRANSPORT, self._out_reqid
        )
        if entry is None:
            self._sadb.acquire(self._out_src, self._out_dst, _ESP, _TRANSPORT, self._out_reqid,
                               now=now)
            self.counters.add(self._c_out_nosa)
            reqid = f" reqid {self._out_reqid}" if self._out_reqid else ""
            raise NoSAError(
                f"no SA for esp/transport {self._out_src}->{self._out_dst}{reqid} (request "
                f"'{self.policy.out_request.to_text()}' of policy "
                f"'{self.policy.outbound.to_text()}'); an ACQUIRE was raised; nothing was sent"
            )
        return entry

    def _out_route(self, now: float) -> _OutRoute:
        """Select the outbound SA now and keep what sealing needs, under the SADB generation
        read *before* the lookup (so an unchanged generation later means the same answer)."""
        gen = self._sadb.generation
        entry = self.select(now=now)
        sa = entry.sa
        ctx = entry.crypto
        if not isinstance(ctx, EspContext):  # pragma: no cover - the store gave an AH entry
            raise TypeError(f"SA 0x{sa.spi:08x} has no ESP context")
        if sa is not self._last_out_sa:
            self._last_out_sa = sa
            self.last_out = identity_of(sa)
        padding = PadMode(int(sa.padding))
        route = _OutRoute(
            gen=gen,
            entry=entry,
            ctx=ctx,
            spi=sa.spi,
            esn=sa.esn,
            padding=padding,
            random_pad=sa.padding is Padding.RANDOM,
            iv_len=ctx.iv_len if ctx.needs_random_iv else 0,
            fixed=8 + ctx.iv_len + 2 + ctx.icv_len,
            align=ctx.align,
            plain=padding is PadMode.SEQ and not ctx.needs_random_iv,
        )
        self._route = route
        return route

    def _reserve(self, route: _OutRoute, nbytes: int, now: float) -> tuple[_OutRoute, int]:
        """The sequence number of the next packet (``nbytes`` charged to the SA)."""
        try:
            return route, self._sadb.reserve_and_account(route.entry, nbytes, now)
        except SequenceOverflowError:
            self.counters.add(self._c_out_seqoverflow)
            raise
        except SecsockError:
            return self._reselect(nbytes, now)
        except Exception as exc:  # a subscriber's: the number it reserved is lost, take another
            if not _subscriber_error(exc):
                raise
            return self._reselect(nbytes, now)

    def _reselect(self, nbytes: int, now: float, tries: int = 3) -> tuple[_OutRoute, int]:
        """The SA of the route died (a hard lifetime, perhaps reached by this stream's previous
        packet, or a delete), or a subscriber's exception took the reserved number: select what
        the SADB offers now (NoSAError if nothing)."""
        route = self._out_route(now)
        try:
            return route, self._sadb.reserve_and_account(route.entry, nbytes, now)
        except SequenceOverflowError:
            self.counters.add(self._c_out_seqoverflow)
            raise
        except Exception as exc:
            if tries > 0 and not isinstance(exc, SecsockError) and _subscriber_error(exc):
                return self._reselect(nbytes, now, tries - 1)
            if not isinstance(exc, SecsockError):
                raise
            # the SA died between selection and use
            self.counters.add(self._c_out_inval)
            raise OSError(
                errno.EINVAL, f"SA 0x{route.spi:08x} cannot be used: {exc}; nothing was sent"
            ) from None

    def seal(self, segments: Sequence[bytes], *, now: float) -> list[bytes]:
        """One ESP packet (next header 6) per segment, in order, on consecutive sequence
        numbers; raises local errors (NoSAError, ...) with nothing to send.

        The SA selection is kept while the SADB's generation says its answer still holds; each
        packet then costs one SADB call (``reserve_and_account``).
        """
        route = self._route
        if route is None or route.gen != self._sadb.generation:
            route = self._out_route(now)
        pad_to = sysctl.get(self._randpad)
        seal = _esp.seal
        reserve = self._sadb.reserve_and_account
        packets: list[bytes] = []
        if pad_to <= 0 and route.plain:
            # The usual case: sequence-number IV, RFC 4303 padding, no TFC padding; the
            # defaulted options are left out of the call.
            for segment in segments:
                n = len(segment)
                nbytes = route.fixed + n + (-(n + 2) % route.align)
                try:
                    seq = reserve(route.entry, nbytes, now)
                except SequenceOverflowError:
                    self.counters.add(self._c_out_seqoverflow)
                    raise
                except SecsockError:
                    route, seq = self._reselect(nbytes, now)
                except Exception as exc:  # a subscriber's (the number it reserved is lost)
                    if not _subscriber_error(exc):
                        raise
                    route, seq = self._reselect(nbytes, now)
                packets.append(
                    seal(route.ctx, spi=route.spi, seq=seq, payload=segment,
                         next_header=_NH_TCP, esn=route.esn)
                )
        else:
            pad_to = max(pad_to, 0)
            rng = self._rng
            for segment in segments:
                n = len(segment)
                if pad_to:
                    nbytes = route.ctx.sealed_length(n, pad_to)
                else:
                    nbytes = route.fixed + n + (-(n + 2) % route.align)
                route, seq = self._reserve(route, nbytes, now)
                packets.append(
                    seal(
                        route.ctx,
                        spi=route.spi,
                        seq=seq,
                        payload=segment,
                        next_header=_NH_TCP,
                        esn=route.esn,
                        iv=rng(route.iv_len) if route.iv_len else None,
                        padding=route.padding,
                        random_pad=rng(255) if route.random_pad else None,
                        pad_to=pad_to,
                    )
                )
        for counter in self._out_success:
            for _ in segments:
                next(counter)
        return packets

    # -- inbound -----------------------------------------------------------------------------

    def dropped(
        self, reason: DropReason, detail: str = "", *, spi: int | None = None,
        seq: int | None = None,
    ) -> None:
        """Count a drop decided above the ESP layer (the stream's own checks)."""
        self._drop(reason, detail, spi, seq)

    def _drop(
        self, reason: DropReason, message: str, spi: int | None = None, seq: int | None = None
    ) -> tuple[DropReason, str]:
        """Count a drop and, with the ipsec(4) debug sysctl on, log one DEBUG line as the
        engine does (reason, SPI, sequence number, what was wrong; never keys or payload)."""
        self.counters.drop(reason)
        if sysctl.debug_enabled():
            _LOG.debug("drop reason=%s spi=%s seq=%s stream %s->%s: %s", reason,
                       "-" if spi is None else f"0x{spi:08x}", "-" if seq is None else seq,
                       self._peer, self._local, message)
        return reason, message

    def _in_route(self, spi: int, seq_lo: int) -> _InRoute | tuple[DropReason, str]:
        gen = self._sadb.generation
        entry = self._sadb.lookup_inbound(self._local, _ESP, spi) if spi >= 256 else None
        if entry is None:
            return self._drop(DropReason.NO_SA,
                              f"no esp SA for {self._local} with spi 0x{spi:08x} (seq {seq_lo})",
                              spi, seq_lo)
        sa = entry.sa
        ctx = entry.crypto
        if not isinstance(ctx, EspContext):  # pragma: no cover - lookup by ESP gave AH
            return self._drop(DropReason.NO_SA, f"SA 0x{spi:08x} has no ESP context", spi,
                              seq_lo)
        check_padding = sa.padding is Padding.SEQ
        route = _InRoute(gen=gen, spi=spi, entry=entry, sa=sa, ctx=ctx, esn=sa.esn,
                         check_padding=check_padding, plain=check_padding and not sa.esn)
        self._in = route
        return route

    def open(
        self, packet: bytes | bytearray | memoryview, *, now: float
    ) -> Opened | tuple[DropReason, str]:
        if len(packet) < 8:
            return self._drop(DropReason.MALFORMED,
                              f"ESP packet needs at least 8 bytes (SPI, sequence number), "
                              f"got {len(packet)}")
        spi, seq_lo = _SPI_SEQ.unpack_from(packet)
        sadb = self._sadb
        route = self._in
        if route is None or route.spi != spi or route.gen != sadb.generation:
            found = self._in_route(spi, seq_lo)
            if type(found) is not _InRoute:
                return found  # type: ignore[return-value]
            route = found
        entry = route.entry
        seq = sadb.replay_check(entry, seq_lo)
        if seq is None:
            return self._drop(DropReason.REPLAY,
                              f"replayed or outside the window (spi 0x{spi:08x} seq {seq_lo})",
                              spi, seq_lo)
        try:
            if route.plain:  # no ESN, RFC 4303 padding: open_untrusted's defaults
                opened = _esp.open_untrusted(route.ctx, packet)
            else:
                opened = _esp.open_untrusted(route.ctx, packet, seq_hi=seq >> 32,
                                             esn=route.esn, check_padding=route.check_padding)
        except IntegrityError as exc:
            return self._drop(DropReason.AUTH_FAILED, str(exc), spi, seq)
        except MalformedPacket as exc:
            return self._drop(exc.reason, f"{exc} (spi 0x{spi:08x} seq {seq})", spi, seq)
        try:
            committed = sadb.commit_and_account(entry, seq, len(packet), now)
        except Exception as exc:  # a subscriber's: events are published only after a commit
            if not _subscriber_error(exc):
                raise
            committed = True
        if not committed:
            return self._drop(DropReason.REPLAY, f"replayed (spi 0x{spi:08x} seq {seq})", spi,
                              seq)
        sa = route.sa
        if sa is not self._last_in_sa:  # RFC 4301 §5.2, checked once per SA
            if sa.src != self._peer or sa.dst != self._local:
                return self._drop(
                    DropReason.POLICY,
                    f"SA {sa.src}->{sa.dst} (spi 0x{spi:08x}) does not match the connection "
                    f"{self._peer}->{self._local}",
                    spi, seq,
                )
            self._last_in_sa = sa
            self.last_in = identity_of(sa)
        next_header, payload, _pad = opened
        if next_header == _NH_NONE:
            return self._drop(DropReason.DUMMY, f"dummy packet (spi 0x{spi:08x} seq {seq})",
                              spi, seq)
        for counter in self._in_success:
            next(counter)
        return _new_tuple(Opened, (payload, next_header, spi, seq))
