"""Secure asyncio datagram endpoints: ``create_datagram_endpoint()`` under IPsec.

The endpoint owns a real UDP socket (the application's port) and reads it with
``loop.add_reader`` (default loop and uvloop alike), exactly as :class:`secsock.socket` does its
receiving: each datagram goes through the endpoint's :class:`~secsock.engine.IPsecEngine`
(SA lookup, replay window, ICV, inbound policy) and only what the policy accepts reaches
``protocol.datagram_received``. Drops are counted (the endpoint's counters and the process-wide
ones) and reported to ``protocol.ipsec_dropped(reason, info)`` when the protocol has it.
Sending runs the engine's outbound decision; a send the policy forbids or that lacks an SA
raises from ``sendto`` with the socket's errors.

ESP-in-UDP on the application's own port, the shared encapsulation ports of ``esp-udp`` SAs,
and raw ESP/AH (``transport="raw"``) are all carried as for a secure socket, through the same
process-wide carriers (:mod:`secsock._transport`), SADB and counters.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import socket as _stdlib_socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Final, Literal, TypeVar

from secsock._socket import SecureSocket
from secsock._transport import (
    NetContext,
    RealSocket,
    enable_pktinfo,
    peer_address,
    pktinfo_destination,
    refuse_v4_mapped,
    set_v6only,
    sockaddr,
)
from secsock.asyncio._info import IPsecInfo
from secsock.asyncio._policy import PolicyArg, socket_policies
from secsock.asyncio._protector import identity_of
from secsock.asyncio._sockview import SocketView
from secsock.engine import (
    Address,
    Carrier,
    Decapsulated,
    Delivered,
    Dropped,
    EngineStore,
    Flow,
    IPsecEngine,
    Outbound,
    Transport,
)
from secsock.errors import DropReason
from secsock.policy.model import Direction, Protocol
from secsock.sadb.model import SAIdentity, SAProtocol
from secsock.sadb.spd import SPD

__all__ = ("DropInfo", "SecureDatagramTransport", "create_datagram_endpoint")

_MAX_DGRAM: Final = 65535
_ANC_SIZE: Final = _stdlib_socket.CMSG_SPACE(32)
_BURST: Final = 64
_HIGH_WATER: Final = 64 * 1024
_LOG_THRESHOLD: Final = 5
_SockAddr = tuple[str, int] | tuple[str, int, int, int]
_IPPROTO_AH: Final = 51
_CARRIER_UDP: Final = int(Carrier.UDP)
_time: Final = time.time  # SA lifetimes are wall-clock (the SADB's ``now``)
_P = TypeVar("_P", bound=asyncio.BaseProtocol)


@dataclass(frozen=True, slots=True, kw_only=True)
class DropInfo:
    """What ``protocol.ipsec_dropped(reason, info)`` learns about one dropped datagram.

    ``addr`` is where the datagram came from on the wire (the outer source address and port),
    ``spi``/``seq`` name the SA and packet when known, ``detail`` says what was wrong. Never
    any key or payload.
    """

    addr: tuple[str, int] | None
    spi: int | None
    seq: int | None
    detail: str


def _bare(addr: Address) -> Address:
    if isinstance(addr, IPv6Address) and addr.scope_id:
        return IPv6Address(str(addr).split("%", 1)[0])
    return addr


class SecureDatagramTransport(asyncio.DatagramTransport):
    """An :class:`asyncio.DatagramTransport` whose datagrams travel under IPsec.

    Built by :func:`create_datagram_endpoint`. ``get_extra_info`` knows ``sockname``,
    ``peername``, ``socket`` (a read-only :class:`~secsock.asyncio._sockview.SocketView`: no
    way to send around IPsec) and ``ipsec`` (an :class:`~secsock.asyncio.IPsecInfo`).
    """

    max_size = _MAX_DGRAM

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: _stdlib_socket.socket,
        engine: IPsecEngine,
        protocol: asyncio.DatagramProtocol,
        *,
        peer: tuple[Address, int, _SockAddr] | None,
    ) -> None:
        extra: dict[str, Any] = {}
        super().__init__(extra)
        self._loop = loop
        self._sock = sock
        self._engine = engine
        self._protocol = protocol
        self._peer = peer
        self._version = 4 if sock.family == _stdlib_socket.AF_INET else 6
        name = sock.getsockname()
        addr, port = peer_address(name)
        self._local: Address | None = None if addr.is_unspecified else _bare(addr)
        self._port = port
        self._pktinfo = False
        if self._local is None:
            enable_pktinfo(sock)
            self._pktinfo = True
        self._rbuf = bytearray(_MAX_DGRAM)
        self._rview = memoryview(self._rbuf)
        self._peers: dict[tuple[Any, ...], tuple[Address, int]] = {}
        self._flows: dict[object, tuple[Flow, _SockAddr]] = {}
        self._buffer: collections.deque[tuple[bytes, _SockAddr]] = collections.deque()
        self._buffer_size = 0
        self._high_water = _HIGH_WATER
        self._low_water = _HIGH_WATER // 4
        self._protocol_paused = False
        self._closing = False
        self._conn_lost = 0
        self._closed = False
        self._drop_hook: Callable[[DropReason, DropInfo], object] | None = getattr(
            protocol, "ipsec_dropped", None
        )
        # the last protected datagram each way (for get_extra_info("ipsec")); kept as the
        # engine returned them, the SA identity is looked up only when asked for
        self._last_out: Outbound | None = None
        self._last_in: Delivered | None = None
        self._net: NetContext | None = NetContext.acquire()
        self._natt_listened: set[tuple[Address, int]] = set()
        try:
            if engine.transport == Transport.RAW:
                self._net.raw_endpoint(sock.family, 50)
                self._net.raw_endpoint(sock.family, 51)
            self._net.register(self, self._version, self._local, port)
            self._listen_natt()
        except BaseException:
            self._release()
            raise
        extra["sockname"] = name
        extra["peername"] = peer[2] if peer is not None else None
        extra["socket"] = SocketView(sock, peername=peer[2] if peer is not None else None)
        extra["ipsec"] = IPsecInfo(
            policies=lambda: (
                engine.get_policy(Direction.INBOUND).to_text(),
                engine.get_policy(Direction.OUTBOUND).to_text(),
            ),
            outbound=self._outbound_identity,
            inbound=self._inbound_identity,
            stats=engine.statistics,
        )

    # --- helpers ------------------------------------------------------------------------------

    @property
    def engine(self) -> IPsecEngine:
        """The endpoint's engine (policies and counters)."""
        return self._engine

    @property
    def _sadb(self) -> EngineStore:
        return self._engine.sadb

    def _identity(self, dst: Address, protocol: int, spi: int) -> SAIdentity | None:
        proto = SAProtocol.AH if protocol == _IPPROTO_AH else SAProtocol.ESP
        entry = self._engine.sadb.lookup_inbound(dst, proto, spi)
        return None if entry is None else identity_of(entry.sa)

    def _outbound_identity(self) -> SAIdentity | None:
        out = self._last_out
        return None if out is None else self._identity(out.dst, out.protocol, out.spi)

    def _inbound_identity(self) -> SAIdentity | None:
        last = self._last_in
        if last is None:
            return None
        outer = last.applied[0]
        protocol = _IPPROTO_AH if outer.proto == Protocol.AH else 50
        return self._identity(last.dst, protocol, outer.spi)

    def _listen_natt(self) -> None:
        """Open the shared encapsulation ports of this host's inbound ``esp-udp`` SAs."""
        net = self._net
        if net is None:
            return
        net.listen_natt(self._engine.sadb, self._version, self._local, self._natt_listened)

    def _resolve(self, address: object) -> tuple[Address, int, _SockAddr]:
        if not isinstance(address, tuple) or len(address) < 2:
            raise TypeError(f"expected an (address, port) tuple, found {address!r}")
        host, port = address[0], address[1]
        if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise ValueError(f"expected a port 0-65535, found {port!r}")
        if not isinstance(host, str):
            raise TypeError(f"expected an IP address string, found {host!r}")
        try:
            ip = ip_address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(
                f"expected a resolved IP address (sendto does not resolve names, as in "
                f"asyncio), found {host!r}"
            ) from None
        if self._version == 4 and not isinstance(ip, IPv4Address):
            raise OSError(errno.EAFNOSUPPORT, f"an AF_INET endpoint cannot reach {ip}")
        if self._version == 6:
            if not isinstance(ip, IPv6Address):
                raise OSError(errno.EAFNOSUPPORT,
                              f"an AF_INET6 endpoint takes IPv6 addresses, found {ip}")
            refuse_v4_mapped(ip)  # IPv4 under ::ffff:0:0/96 would escape the IPv4 policies
            if len(address) >= 4 and address[3]:
                ip = IPv6Address(f"{ip}%{address[3]}")
        return ip, port, sockaddr(ip, port)

    def _flow_to(self, address: object) -> tuple[Flow, _SockAddr] | None:
        """The flow to ``address``; None (reported to error_received) when there is no route."""
        dst, port, sa = self._resolve(address)
        net = self._net
        if net is None:
            raise OSError(errno.EBADF, "the endpoint is closed")
        if self._local is not None:
            src = self._local
        else:
            try:
                src = net.source_for(dst)
            except OSError as exc:  # the network's answer, as sendto() would have given it
                self._protocol.error_received(exc)
                return None
        flow = Flow(_bare(src), _bare(dst), self._port, port)
        if len(self._flows) > 256:
            self._flows.clear()
        self._flows[address] = (flow, sa)
        return flow, sa

    # --- sending ------------------------------------------------------------------------------

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        """Protect and send one datagram (an empty one too: see docs/asyncio.md).

        Raises, having sent nothing, what :meth:`secsock.SecureSocket.sendto` raises for the same
        datagram: NoSAError (no SA under ``require``), PermissionError (``discard``),
        SequenceOverflowError, OSError (EMSGSIZE, EOPNOTSUPP, ...). Errors of the network
        itself go to ``protocol.error_received`` as in asyncio.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        peer = self._peer
        if peer is not None:
            if addr not in (None, peer[2]) and tuple(addr[:2]) != peer[2][:2]:
                raise ValueError(f"Invalid address: must be None or {peer[2]}")
            addr = peer[2]
        elif addr is None:
            raise OSError(errno.EDESTADDRREQ, "Destination address required")
        if self._conn_lost:
            self._conn_lost += 1
            return
        try:
            route = self._flows.get(addr)
        except TypeError:  # unhashable: _flow_to complains
            route = None
        if route is None:
            route = self._flow_to(addr)
            if route is None:
                return
        flow, sa = route
        try:
            out = self._engine.protect_one(flow, data if type(data) is bytes else bytes(data),
                                           now=_time())
        except ValueError as exc:  # e.g. too big for UDP
            raise OSError(errno.EMSGSIZE, str(exc)) from None
        self._emit(out, sa)

    def _emit(self, out: Outbound, sa: _SockAddr) -> None:
        if out[8]:  # spi: a protected datagram
            self._last_out = out
        carrier = out[0]
        if carrier <= _CARRIER_UDP:  # CLEAR or UDP: from the endpoint's own port
            if not self._buffer:
                try:
                    self._sock.sendto(out[1], sa)
                    return
                except (BlockingIOError, InterruptedError):
                    self._loop.add_writer(self._sock.fileno(), self._write_ready)
                except OSError as exc:
                    self._protocol.error_received(exc)
                    return
            self._buffer.append((out.data, sa))
            self._buffer_size += len(out.data)
            self._maybe_pause_protocol()
            return
        net = self._net
        assert net is not None
        try:
            if carrier == Carrier.NATT:
                net.encap_endpoint(out.src, out.sport).sendto(out.data,
                                                              sockaddr(out.dst, out.dport))
            else:
                net.send_raw(out)
        except OSError as exc:
            self._protocol.error_received(exc)

    def _write_ready(self) -> None:
        while self._buffer:
            data, sa = self._buffer.popleft()
            self._buffer_size -= len(data)
            try:
                self._sock.sendto(data, sa)
            except (BlockingIOError, InterruptedError):
                self._buffer.appendleft((data, sa))
                self._buffer_size += len(data)
                break
            except OSError as exc:
                self._protocol.error_received(exc)
        self._maybe_resume_protocol()
        if not self._buffer:
            self._loop.remove_writer(self._sock.fileno())
            if self._closing:
                self._call_connection_lost(None)

    def _maybe_pause_protocol(self) -> None:
        if self._buffer_size > self._high_water and not self._protocol_paused:
            self._protocol_paused = True
            self._protocol.pause_writing()

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and self._buffer_size <= self._low_water:
            self._protocol_paused = False
            self._protocol.resume_writing()

    def get_write_buffer_size(self) -> int:
        return self._buffer_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = _HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water, self._low_water = high, low
        self._maybe_pause_protocol()

    # --- receiving ----------------------------------------------------------------------------

    def _read_ready(self) -> None:
        sock = self._sock
        engine = self._engine
        peers = self._peers
        port = self._port
        pktinfo = self._pktinfo
        v4 = self._version == 4
        for _ in range(_BURST):
            if self._closing:
                return
            try:
                if pktinfo:
                    n, anc, _flags, raw = sock.recvmsg_into([self._rbuf], _ANC_SIZE)
                    packet = bytes(self._rview[:n])
                else:
                    packet, raw = sock.recvfrom(_MAX_DGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            peer = peers.get(raw)
            if peer is None:
                peer = self._learn_peer(raw)
            src, sport = peer
            dst = self._local
            if dst is None:
                dst = pktinfo_destination(anc)
                if dst is None:  # pragma: no cover - the kernel always sends it
                    dst = ip_address("0.0.0.0" if self._version == 4 else "::")
            result = engine.receive_udp(packet, src, dst, sport, port, _time())
            if v4 and type(result) is Delivered and result[1] is src and result[3] == sport:
                # the common case: the kernel's own address tuple is the application's
                if self._peer is not None and not self._from_peer(result):
                    continue  # a connected endpoint hears only its peer
                if result[5]:
                    self._last_in = result
                self._protocol.datagram_received(result[0], raw)
            else:
                self._deliver(result, raw)

    def _learn_peer(self, raw: tuple[Any, ...]) -> tuple[Address, int]:
        """(address, port) of a sender, cached per kernel address tuple: the same objects every
        time (the connected peer's own object for the peer), so identity checks hit."""
        if len(self._peers) > 1024:
            self._peers.clear()
        src, sport = peer_address(raw)
        src = _bare(src)
        peer = self._peer
        if peer is not None and peer[0] == src:
            src = peer[0]
        entry = self._peers[raw] = (src, sport)
        return entry

    def _from_peer(self, result: Delivered) -> bool:
        peer = self._peer
        return peer is None or (
            (result[1] is peer[0] or result[1] == peer[0]) and result[3] == peer[1]
        )

    def _deliver(self, result: Delivered | Dropped, raw: tuple[Any, ...] | None) -> None:
        if isinstance(result, Dropped):
            hook = self._drop_hook
            if hook is not None:
                addr = (str(raw[0]), int(raw[1])) if raw is not None else None
                hook(result.reason, DropInfo(addr=addr, spi=result.spi, seq=result.seq,
                                             detail=result.detail))
            return
        if not self._from_peer(result):
            return  # a connected endpoint hears only its peer
        if result.applied:
            self._last_in = result
        if self._version == 4:
            app: _SockAddr = (str(result.src), result.sport)
        else:
            scope = int(raw[3]) if raw is not None and len(raw) >= 4 else 0
            app = (str(result.src), result.sport, 0, scope)
        self._protocol.datagram_received(result.payload, app)

    def _enqueue(self, datagram: Decapsulated) -> None:
        """Called by a shared-carrier dispatcher thread with a decapsulated datagram."""
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(self._admit, datagram)

    def _admit(self, datagram: Decapsulated) -> None:
        if self._closing:
            return
        self._deliver(self._engine.admit(datagram, now=_time()), None)

    # --- lifetime -----------------------------------------------------------------------------

    def start(self) -> None:
        self._loop.add_reader(self._sock.fileno(), self._read_ready)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._sock.fileno())
        if not self._buffer:
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self) -> None:
        self._force_close(None)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._conn_lost:
            return
        if self._buffer:
            self._buffer.clear()
            self._buffer_size = 0
            self._loop.remove_writer(self._sock.fileno())
        if not self._closing:
            self._closing = True
            self._loop.remove_reader(self._sock.fileno())
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._protocol.connection_lost(exc if isinstance(exc, Exception) else None)
        finally:
            self._release()
            self._sock.close()

    def _release(self) -> None:
        net = self._net
        if net is not None:
            self._net = None
            net.unregister(self)
            net.release()

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        local = self.get_extra_info("sockname")
        return f"<SecureDatagramTransport {state} local={local} transport={self._engine.transport}>"


async def _resolve_addr(
    loop: asyncio.AbstractEventLoop, addr: tuple[str, int] | None, family: int, flags: int = 0
) -> list[tuple[int, Any]]:
    if addr is None:
        return []
    infos = await loop.getaddrinfo(addr[0], addr[1], family=family,
                                   type=_stdlib_socket.SOCK_DGRAM, flags=flags)
    if not infos:
        raise OSError(f"getaddrinfo({addr[0]!r}) returned an empty list")
    return [(fam, sa) for fam, _t, _p, _c, sa in infos
            if fam in (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6)]


def _peer_of(remote: tuple[Any, ...]) -> tuple[Address, int, _SockAddr]:
    ip = ip_address(str(remote[0]).split("%", 1)[0])
    if len(remote) >= 4 and remote[3]:
        ip = IPv6Address(f"{ip}%{remote[3]}")
    return (_bare(ip), int(remote[1]), sockaddr(ip, int(remote[1])))


def _start(
    loop: asyncio.AbstractEventLoop,
    protocol_factory: Callable[[], _P],
    sock: _stdlib_socket.socket,
    engine: IPsecEngine,
    peer: tuple[Address, int, _SockAddr] | None,
) -> tuple[SecureDatagramTransport, _P]:
    """Build the protocol and the transport on the bound real ``sock`` (closed on failure)."""
    try:
        protocol = protocol_factory()
        if not isinstance(protocol, asyncio.DatagramProtocol):
            raise TypeError(
                f"expected the factory to build an asyncio.DatagramProtocol, found "
                f"{type(protocol).__name__}"
            )
        tr = SecureDatagramTransport(loop, sock, engine, protocol, peer=peer)
    except BaseException:
        sock.close()
        raise
    protocol.connection_made(tr)
    tr.start()
    return tr, protocol


async def create_datagram_endpoint(
    protocol_factory: Callable[[], _P],
    local_addr: tuple[str, int] | None = None,
    remote_addr: tuple[str, int] | None = None,
    *,
    family: int = 0,
    policy: PolicyArg | None = None,
    sadb: EngineStore | None = None,
    spd: SPD | None = None,
    transport: Transport | Literal["udp", "raw"] = "udp",
    reuse_port: bool | None = None,
    allow_broadcast: bool | None = None,
) -> tuple[SecureDatagramTransport, _P]:
    """A secure datagram endpoint, shaped like :meth:`asyncio.loop.create_datagram_endpoint`.

    ``policy`` is what ``setsockopt(IP_IPSEC_POLICY)`` takes, one per direction: policy text,
    a ``sadb_x_policy`` buffer or a Policy (or a sequence of them); a direction without one
    stays ``entrust`` (the SPD, then the ipsec(4) defaults decide). ``sadb``/``spd`` default to
    the process-wide stores; ``transport`` is "udp" (ESP-in-UDP on the endpoint's port) or
    "raw" (IP protocols 50/51, needs root). With ``remote_addr`` the endpoint is connected:
    ``sendto(data)`` goes there and only its datagrams are delivered.

    The protocol gets ``connection_made`` before this returns, then only authenticated,
    policy-checked datagrams; ``protocol.ipsec_dropped(reason, info)`` (if defined) hears about
    each dropped one.
    """
    return await open_endpoint(
        asyncio.get_running_loop(), protocol_factory, local_addr, remote_addr, family=family,
        policy=policy, sadb=sadb, spd=spd, transport=transport, reuse_port=reuse_port,
        allow_broadcast=allow_broadcast,
    )


async def open_endpoint(
    loop: asyncio.AbstractEventLoop,
    protocol_factory: Callable[[], _P],
    local_addr: tuple[str, int] | None = None,
    remote_addr: tuple[str, int] | None = None,
    *,
    family: int = 0,
    flags: int = 0,
    policy: PolicyArg | None = None,
    sadb: EngineStore | None = None,
    spd: SPD | None = None,
    transport: Transport | Literal["udp", "raw"] = "udp",
    reuse_port: bool | None = None,
    allow_broadcast: bool | None = None,
) -> tuple[SecureDatagramTransport, _P]:
    """:func:`create_datagram_endpoint` on ``loop`` (``flags`` go to getaddrinfo); what
    ``secsock.install()`` runs for ``uvloop.Loop.create_datagram_endpoint``."""
    locals_ = await _resolve_addr(loop, local_addr, family, flags)
    remotes = await _resolve_addr(loop, remote_addr, family, flags)
    families = [family] if family else [_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6]
    chosen: tuple[int, Any, Any] | None = None
    for fam in families:
        lo = [sa for f, sa in locals_ if f == fam]
        re = [sa for f, sa in remotes if f == fam]
        if (local_addr is not None and not lo) or (remote_addr is not None and not re):
            continue
        chosen = (fam, lo[0] if lo else None, re[0] if re else None)
        break
    if chosen is None:
        raise ValueError("can not get address information: no family fits both addresses")
    fam, local, remote = chosen
    engine = IPsecEngine(transport=transport, sadb=sadb, spd=spd)
    for p in socket_policies(policy, fam):
        engine.set_policy(p)
    # The real class, captured at import: under secsock.patch() socket.socket would hand out a
    # secure socket, which would protect the endpoint's ESP a second time.
    if fam == _stdlib_socket.AF_INET6:
        for where in (local, remote):
            if where is not None:
                refuse_v4_mapped(ip_address(str(where[0]).split("%", 1)[0]))
    sock = RealSocket(fam, _stdlib_socket.SOCK_DGRAM)
    try:
        set_v6only(sock)  # IPv6 only: IPv4 never arrives as ::ffff:a.b.c.d (see _transport)
        sock.setblocking(False)
        if reuse_port:
            sock.setsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_REUSEPORT, 1)
        if allow_broadcast:
            sock.setsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_BROADCAST, 1)
        sock.bind(local if local is not None else
                  (("0.0.0.0", 0) if fam == _stdlib_socket.AF_INET else ("::", 0)))
        peer = _peer_of(remote) if remote is not None else None
    except BaseException:
        sock.close()
        raise
    return _start(loop, protocol_factory, sock, engine, peer)


async def adopt_socket(
    loop: asyncio.AbstractEventLoop,
    protocol_factory: Callable[[], _P],
    secure: SecureSocket,
) -> tuple[SecureDatagramTransport, _P]:
    """An endpoint on ``secure``'s descriptor, with its engine (policies, stores, transport,
    counters) and its connected peer; ``secure`` is detached. What ``secsock.install()`` runs
    for ``uvloop.Loop.create_datagram_endpoint(sock=...)``, whose libuv transport would
    otherwise write to the descriptor around IPsec."""
    try:
        peer_name: tuple[Any, ...] | None = secure.getpeername()
    except OSError:
        peer_name = None
    if secure.getsockname()[1] == 0:
        secure.bind(("0.0.0.0", 0) if secure.family == _stdlib_socket.AF_INET else ("::", 0))
    family = secure.family
    engine = secure.engine
    sock = RealSocket(family, _stdlib_socket.SOCK_DGRAM, 0, secure.detach())
    try:
        set_v6only(sock)
        sock.setblocking(False)
        peer = _peer_of(peer_name) if peer_name is not None else None
    except BaseException:
        sock.close()
        raise
    return _start(loop, protocol_factory, sock, engine, peer)
