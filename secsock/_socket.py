"""``secsock.socket``: a drop-in ``socket.socket`` for UDP whose datagrams travel under IPsec.

    s = secsock.socket(AF_INET, SOCK_DGRAM)
    s.setsockopt(IPPROTO_IP, IP_IPSEC_POLICY, ipsec_set_policy("out ipsec esp/transport//require"))
    s.sendto(b"hello", ("127.0.0.1", 7001))

The object *is* a ``socket.socket`` (a subclass) whose file descriptor is a real UDP socket
bound to the application's port, so ``fileno()``, ``select``/``poll``/selectors and asyncio
work on it. What differs is inside: every datagram sent goes through the socket's
:class:`~secsock.engine.IPsecEngine` (policy decision, ESP/AH), every datagram received is
decapsulated and checked against the inbound policy before the application sees it; dropped
datagrams are counted and never surface as errors. Blocking, non-blocking and timeout
behaviour is socket.socket's. docs/socket.md documents the whole API and every difference.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import select
import socket as _stdlib_socket
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Final, Literal, overload

from typing_extensions import Buffer

from secsock import _transport
from secsock._stats import IPsecStats
from secsock._stats import counter_value as _counter_value
from secsock._transport import (
    NetContext,
    enable_pktinfo,
    get_ike_handler,
    peer_address,
    pktinfo_destination,
    set_ike_handler,
    sockaddr,
)
from secsock.constants import IP_IPSEC_POLICY, IPV6_IPSEC_POLICY
from secsock.engine import (
    Address,
    Carrier,
    Decapsulated,
    Delivered,
    EngineStore,
    Flow,
    IPsecEngine,
    Outbound,
    Transport,
)
from secsock.policy.libipsec import check_socket_policy
from secsock.policy.model import Direction, Layout, Policy
from secsock.sadb.spd import SPD

__all__ = (
    "POLICY_LAYOUT",
    "SecureSocket",
    "get_ike_handler",
    "set_ike_handler",
    "socket",
)

AF_INET: Final = _stdlib_socket.AF_INET
AF_INET6: Final = _stdlib_socket.AF_INET6
SOCK_DGRAM: Final = _stdlib_socket.SOCK_DGRAM
IPPROTO_IP: Final = _stdlib_socket.IPPROTO_IP
IPPROTO_IPV6: Final = _stdlib_socket.IPPROTO_IPV6
IPPROTO_UDP: Final = _stdlib_socket.IPPROTO_UDP
MSG_PEEK: Final = int(_stdlib_socket.MSG_PEEK)
MSG_DONTWAIT: Final = int(getattr(_stdlib_socket, "MSG_DONTWAIT", 0x40))
MSG_OOB: Final = int(_stdlib_socket.MSG_OOB)
#: The send flags handed on to the kernel: those that mean the same for the datagram that
#: leaves (ESP or clear). MSG_DONTWAIT is the socket's own business (it never blocks in the
#: kernel); everything else is not passed on -- MSG_MORE, say, would cork one ESP packet onto
#: the next (one UDP datagram holding two, both lost) while both sends reported success.
_KERNEL_SEND_FLAGS: Final = (
    int(getattr(_stdlib_socket, "MSG_DONTROUTE", 0x4))
    | int(getattr(_stdlib_socket, "MSG_CONFIRM", 0x800))
    | int(getattr(_stdlib_socket, "MSG_NOSIGNAL", 0x4000))
)
MSG_TRUNC: Final = int(getattr(_stdlib_socket, "MSG_TRUNC", 0x20))
_TYPE_FLAGS: Final = int(getattr(_stdlib_socket, "SOCK_NONBLOCK", 0)) | int(
    getattr(_stdlib_socket, "SOCK_CLOEXEC", 0)
)
_MAX_DGRAM: Final = 65535
#: A non-blocking receive gives up (EAGAIN) after this many datagrams that yield nothing for
#: the application, even if more are queued: a flood of droppable datagrams cannot block it.
_DROP_BURST: Final = 64
#: Datagrams decapsulated by a shared carrier that may wait for the application, per socket.
INBOX_MAX: Final = 1024
_ANC_SIZE: Final = _stdlib_socket.CMSG_SPACE(32)

# Indirections the tests replace to drive the timeout logic with a fake clock.
_monotonic = time.monotonic
_time: Final = time.time  # SA lifetimes are wall-clock (the SADB's ``now``)
_CARRIER_UDP: Final = int(Carrier.UDP)
_poll = select.poll
_LOG: Final = logging.getLogger("secsock")

#: The sadb_x_policy layout setsockopt/getsockopt use (the default of ``ipsec_set_policy``).
POLICY_LAYOUT: Final[Layout] = "bsd"

WireTap = Callable[[Outbound], None]
_SockAddr = tuple[str, int] | tuple[str, int, int, int]


def _dir(direction: str) -> Direction:
    if direction == "in":
        return Direction.INBOUND
    if direction == "out":
        return Direction.OUTBOUND
    raise ValueError(f"expected direction 'in' or 'out', found {direction!r}")


class SecureSocket(_stdlib_socket.socket):
    """A UDP socket (AF_INET or AF_INET6) whose traffic is governed by IPsec policy.

    ``transport`` is "udp" (ESP-in-UDP, RFC 3948; the default, no privilege needed) or "raw"
    (ESP/AH as IP protocols 50/51; root or CAP_NET_RAW). ``sadb``/``spd`` default to the
    process-wide stores that ``secsock.setkey()`` fills.
    """

    def __init__(
        self,
        family: int = AF_INET,
        type: int = SOCK_DGRAM,
        proto: int = 0,
        fileno: int | None = None,
        *,
        transport: Transport | Literal["udp", "raw"] = "udp",
        sadb: EngineStore | None = None,
        spd: SPD | None = None,
    ) -> None:
        if fileno is None:
            if family not in (AF_INET, AF_INET6):
                raise ValueError(
                    f"secsock.socket supports AF_INET and AF_INET6, got family {family}"
                )
            if type & ~_TYPE_FLAGS != SOCK_DGRAM:
                raise ValueError(
                    f"secsock.socket supports SOCK_DGRAM (UDP) only, got type {type}; "
                    f"TCP is carried by secsock.asyncio streams (RFC 8229)"
                )
            if proto not in (0, IPPROTO_UDP):
                raise ValueError(f"secsock.socket supports proto 0 or IPPROTO_UDP, got {proto}")
        # The engine first: a bad transport raises before a descriptor is opened.
        engine = IPsecEngine(transport=transport, sadb=sadb, spd=spd)
        if fileno is None:
            super().__init__(family, type, proto)
        else:  # what the descriptor is, not what the caller says (socket.socket trusts it)
            super().__init__(-1, -1, -1, fileno)
        if self.family not in (AF_INET, AF_INET6) or self.type != SOCK_DGRAM:
            fam, typ = self.family, self.type
            super().detach()
            raise ValueError(
                f"secsock.socket wraps UDP sockets only, descriptor {fileno} is "
                f"family {fam} type {typ}"
            )
        if fileno is not None:
            try:
                kernel_peer = _c_getpeername(self)
            except OSError:
                pass  # not connected: as it should be
            else:
                super().detach()  # the descriptor stays the caller's
                raise ValueError(
                    f"descriptor {fileno} is a UDP socket connected (by the kernel) to "
                    f"{kernel_peer}; secsock.socket cannot wrap it: the kernel would filter the "
                    f"wakeups of the shared carriers (NAT-T, raw) and send() would target its "
                    f"peer. Wrap the descriptor before connect() and call connect() on the "
                    f"secure socket"
                )
        try:  # IPv6-only: IPv4 under mapped addresses would escape the IPv4 policies
            _transport.set_v6only(self)
        except OSError:
            super().detach()  # the descriptor stays the caller's
            raise
        self._engine = engine
        self._timeout: float | None = super().gettimeout()
        super().setblocking(False)
        self._net: NetContext | None = NetContext.acquire()
        # A socket dropped without close() still gives its reference back (at collection).
        self._finalizer = weakref.finalize(self, NetContext.release, self._net)
        self._inbox: deque[Decapsulated] = deque()
        self._inbox_overflows = itertools.count()  # lock-free: several dispatchers may add
        self._peeked: Delivered | None = None
        self._peer: tuple[Address, int, _SockAddr] | None = None
        self._local: Address | None = None  # bound address, None for the wildcard
        self._wake_local: Address | None = None  # the same with its IPv6 scope, if any
        self._port = 0
        self._pktinfo = False
        self._flows: dict[object, tuple[Flow, _SockAddr]] = {}
        self._peers: dict[tuple[Any, ...], tuple[Address, int]] = {}
        self._wake_port = -1
        self._wire_tap: WireTap | None = None
        self._natt_listened: set[tuple[Address, int]] = set()
        self._natt_seen = -1  # SADB size at the last scan for esp-udp SAs
        if engine.transport == Transport.RAW:
            try:
                fam = self.family
                self._net.raw_endpoint(fam, _transport.IPPROTO_ESP)
                self._net.raw_endpoint(fam, _transport.IPPROTO_AH)
            except BaseException:
                self.close()
                raise
        if fileno is not None and self._bound_port() != 0:
            self._after_bind()

    # --- helpers ------------------------------------------------------------------------------
    @property
    def _sadb(self) -> EngineStore:
        return self._engine.sadb

    @property
    def engine(self) -> IPsecEngine:
        """The socket's :class:`~secsock.engine.IPsecEngine` (policies, counters)."""
        return self._engine

    @property
    def transport(self) -> Transport:
        return self._engine.transport

    def _bound_port(self) -> int:
        try:
            return int(super().getsockname()[1])
        except OSError:
            return 0

    def _after_bind(self) -> None:
        name = super().getsockname()
        addr, port = peer_address(name)
        # the engine compares bare addresses; wakeups need the scope of a link-local one
        self._local = None if addr.is_unspecified else _bare(addr)
        self._wake_local = None if addr.is_unspecified else addr
        self._port = port
        self._flows.clear()
        net = self._net
        if net is None:
            return
        if self._local is None and not self._pktinfo:
            enable_pktinfo(self)
            self._pktinfo = True
        self._wake_port = net.wake_port(self.family)
        net.register(self, addr.version, self._local, port)
        self._listen_natt()

    def _ensure_bound(self) -> None:
        if self._port == 0:
            if self._bound_port() == 0:
                super().bind(("0.0.0.0", 0) if self.family == AF_INET else ("::", 0))
            self._after_bind()

    def _maybe_listen_natt(self) -> None:
        """Rescan the SADB for esp-udp SAs when it changed size (cheap; before waiting)."""
        try:
            size = len(self._engine.sadb)  # type: ignore[arg-type]
        except TypeError:  # a store without __len__: rescan only at bind
            return
        if size != self._natt_seen:
            self._listen_natt()

    def _listen_natt(self) -> None:
        """Open the shared encapsulation ports of this host's inbound ``esp-udp`` SAs."""
        net = self._net
        if net is None or self._port == 0:
            return
        try:
            self._natt_seen = len(self._engine.sadb)  # type: ignore[arg-type]
        except TypeError:
            self._natt_seen = -1
        version = 4 if self.family == AF_INET else 6
        net.listen_natt(self._engine.sadb, version, self._local, self._natt_listened)

    def _resolve(self, address: object) -> tuple[Address, int, _SockAddr]:
        if not isinstance(address, tuple) or len(address) < 2:
            raise TypeError(f"expected an (address, port) tuple, found {address!r}")
        host, port = address[0], address[1]
        if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise OverflowError(f"port must be 0-65535, got {port!r}")
        if not isinstance(host, str):
            raise TypeError(f"expected a host string, found {host!r}")
        try:
            ip = ip_address(host)
        except ValueError:
            if host == "":
                host = "0.0.0.0" if self.family == AF_INET else "::"
            elif host == "<broadcast>":
                host = "255.255.255.255"
            else:
                infos = _stdlib_socket.getaddrinfo(host, port, self.family, SOCK_DGRAM)
                host = str(infos[0][4][0])
            ip = ip_address(host)
        if self.family == AF_INET and not isinstance(ip, IPv4Address):
            raise OSError(errno.EAFNOSUPPORT, f"an AF_INET socket cannot reach {ip}")
        if self.family == AF_INET6:
            if not isinstance(ip, IPv6Address):
                raise OSError(errno.EAFNOSUPPORT,
                              f"an AF_INET6 socket takes IPv6 addresses, got {ip}")
            _transport.refuse_v4_mapped(ip)
            if len(address) >= 4 and address[3] and not ip.scope_id:
                ip = IPv6Address(f"{ip}%{address[3]}")
        return ip, port, sockaddr(ip, port)

    def _flow_to(self, address: object) -> tuple[Flow, _SockAddr]:
        try:
            hit = self._flows.get(address)
        except TypeError:
            hit = None
        if hit is not None:
            return hit
        self._ensure_bound()
        self._maybe_listen_natt()
        dst, port, sa = self._resolve(address)
        net = self._net
        if net is None:
            raise OSError(errno.EBADF, "Bad file descriptor")
        src = self._local if self._local is not None else net.source_for(dst)
        flow = Flow(_bare(src), _bare(dst), self._port, port)
        if len(self._flows) > 256:
            self._flows.clear()
        self._flows[address] = (flow, sa)
        return flow, sa

    def _deadline(self, flags: int) -> tuple[bool, float | None]:
        timeout = self._timeout
        nonblocking = timeout == 0.0 or bool(flags & MSG_DONTWAIT)
        deadline = None if timeout is None or nonblocking else _monotonic() + timeout
        return nonblocking, deadline

    def _wait(self, event: int, nonblocking: bool, deadline: float | None) -> None:
        """Wait until the descriptor is ready for ``event``, as a socket with a timeout does."""
        if nonblocking:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        poller = _poll()
        poller.register(self.fileno(), event)
        while True:
            if deadline is None:
                ms = -1
            else:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    raise TimeoutError("timed out")
                ms = max(1, int(remaining * 1000 + 0.999))
            if poller.poll(ms):
                return

    # --- binding, connecting, names -----------------------------------------------------------
    def bind(self, address: Any, /) -> None:
        super().bind(address)
        self._after_bind()

    def connect(self, address: Any, /) -> None:
        """Set the default destination and accept datagrams only from it.

        Emulated in user space (the kernel socket stays unconnected, so the shared
        dispatchers can wake it): ``getpeername`` works, ``send``/``recv`` behave as on a
        connected UDP socket; ICMP errors (ECONNREFUSED) are not reported.
        """
        self._ensure_bound()
        dst, port, sa = self._resolve(address)
        self._peer = (_bare(dst), port, sa)

    def connect_ex(self, address: Any, /) -> int:
        try:
            self.connect(address)
        except OSError as exc:
            return exc.errno or errno.EINVAL
        return 0

    def getpeername(self) -> Any:
        if self._peer is None:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return self._peer[2]

    # --- timeouts -----------------------------------------------------------------------------
    def settimeout(self, value: float | None, /) -> None:
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool, /) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    @property
    def timeout(self) -> float | None:
        return self._timeout

    # --- sending ------------------------------------------------------------------------------
    def send(self, data: Buffer, flags: int = 0, /) -> int:
        if self._peer is None:
            raise OSError(errno.EDESTADDRREQ, "Destination address required")
        return self._send(data, flags, self._peer[2])

    def sendall(self, data: Buffer, flags: int = 0, /) -> None:
        self.send(data, flags)

    @overload
    def sendto(self, data: Buffer, address: Any, /) -> int: ...
    @overload
    def sendto(self, data: Buffer, flags: int, address: Any, /) -> int: ...
    def sendto(self, data: Buffer, flags_or_address: Any, address: Any = None, /) -> int:
        if address is None:
            flags, address = 0, flags_or_address
        else:
            flags = int(flags_or_address)
        if self._peer is not None:
            raise OSError(errno.EISCONN, "Transport endpoint is already connected")
        return self._send(data, flags, address)

    def sendmsg(
        self,
        buffers: Iterable[Buffer],
        ancdata: Iterable[tuple[int, int, Buffer]] = (),
        flags: int = 0,
        address: Any = None,
        /,
    ) -> int:
        """Send the concatenated ``buffers`` as one datagram.

        Ancillary data cannot be honoured for protected datagrams (it would describe the
        outer packet); it is refused with EINVAL unless empty.
        """
        if list(ancdata):
            raise OSError(errno.EINVAL, "secsock sockets do not send ancillary data")
        data = b"".join(bytes(memoryview(b)) for b in buffers)
        if address is None:
            return self.send(data, flags)
        if self._peer is not None:
            raise OSError(errno.EISCONN, "Transport endpoint is already connected")
        return self._send(data, flags, address)

    def _send(self, data: Buffer, flags: int, address: object) -> int:
        if flags and flags & MSG_OOB:  # before anything is sealed: no sequence number spent
            raise OSError(errno.EOPNOTSUPP, "MSG_OOB is not supported on datagram sockets")
        payload = data if type(data) is bytes else bytes(data)
        try:
            hit = self._flows.get(address)  # emptied by close(), so a closed socket misses
        except TypeError:  # an unhashable address: let _flow_to complain
            hit = None
        if hit is None:
            if self._net is None:
                raise OSError(errno.EBADF, "Bad file descriptor")
            hit = self._flow_to(address)
        flow, sa = hit
        try:
            out = self._engine.protect_one(flow, payload, now=_time())
        except ValueError as exc:  # a datagram too big for UDP, say
            raise OSError(errno.EMSGSIZE, str(exc)) from None
        tap = self._wire_tap
        if tap is not None:
            tap(out)
        if out[0] <= _CARRIER_UDP:  # CLEAR or UDP: from this socket's own port
            try:
                if flags & _KERNEL_SEND_FLAGS:
                    _c_sendto(self, out[1], flags & _KERNEL_SEND_FLAGS, sa)
                else:
                    _c_sendto(self, out[1], sa)
            except (BlockingIOError, InterruptedError):
                self._emit_blocking(out[1], flags, sa)
        else:
            self._emit(out)
        return len(payload)

    def sendmsg_afalg(self, *args: Any, **kwargs: Any) -> int:
        """Refused: AF_ALG messages are for kernel crypto sockets; on a UDP descriptor the
        inherited method would send the data around IPsec."""
        raise OSError(errno.EOPNOTSUPP, "sendmsg_afalg is not supported on secure sockets")

    def _emit_blocking(self, data: bytes, flags: int, sa: _SockAddr) -> None:
        """The send buffer was full: wait for room as a blocking/timed socket does."""
        nonblocking, deadline = self._deadline(flags)
        while True:
            self._wait(select.POLLOUT, nonblocking, deadline)
            try:
                _c_sendto(self, data, flags & _KERNEL_SEND_FLAGS, sa)
                return
            except (BlockingIOError, InterruptedError):
                continue

    def _emit(self, out: Outbound) -> None:
        carrier = out.carrier
        net = self._net
        assert net is not None
        if carrier == Carrier.NATT:
            ep = net.encap_endpoint(out.src, out.sport)
            ep.sendto(out.data, sockaddr(out.dst, out.dport))
        else:
            net.send_raw(out)

    # --- receiving ----------------------------------------------------------------------------
    def _enqueue(self, datagram: Decapsulated) -> None:
        """Called by a dispatcher thread: queue ``datagram`` and wake the descriptor.

        The queue holds at most INBOX_MAX datagrams; beyond that they are dropped, as a full
        receive buffer drops them, and counted (:attr:`inbox_overflows`)."""
        inbox = self._inbox
        if len(inbox) >= INBOX_MAX:
            if _counter_value(self._inbox_overflows) == 0:
                _LOG.warning("secure socket on port %d: %d datagrams from shared carriers wait "
                             "unread; dropping more until the application reads",
                             self._port, INBOX_MAX)
            next(self._inbox_overflows)
            return
        inbox.append(datagram)
        net = self._net
        if net is not None:
            net.wake(self.family, self._wake_local, self._port)

    @property
    def inbox_overflows(self) -> int:
        """Datagrams from shared carriers (encapsulation port, raw sockets) dropped because
        INBOX_MAX of them already waited unread (the kernel counts a full receive buffer's
        drops outside ipsecstat too; see docs/transports.md)."""
        return _counter_value(self._inbox_overflows)

    def _receive(
        self, flags: int
    ) -> tuple[Delivered, _SockAddr, list[tuple[int, int, bytes]]]:
        """The next datagram the policy accepts, honouring blocking mode and the timeout."""
        peeked = self._peeked
        if peeked is not None:
            if not flags & MSG_PEEK:
                self._peeked = None
            return peeked, self._app_address(peeked, None), []
        if self._net is None:
            raise OSError(errno.EBADF, "Bad file descriptor")
        started = False  # the mode and deadline, read at the first drop or wait
        nonblocking = False
        deadline: float | None = None
        drops = 0
        engine = self._engine
        inbox = self._inbox
        pktinfo = self._pktinfo
        peers = self._peers
        while True:
            if inbox:
                try:
                    item = inbox.popleft()
                except IndexError:  # another thread took it
                    continue
                result = engine.admit(item, now=_time())
                if isinstance(result, Delivered) and self._from_peer(result):
                    return self._peek_keep(result, flags), self._app_address(result, None), []
            else:
                try:
                    # Each call gets its own bytes from the kernel: no buffer shared by threads.
                    if pktinfo:
                        packet, anc, _mflags, raw = _c_recvmsg(self, _MAX_DGRAM, _ANC_SIZE)
                    else:
                        packet, raw = _c_recvfrom(self, _MAX_DGRAM)
                        anc = []
                except (BlockingIOError, InterruptedError):
                    if inbox:
                        continue
                    if not started:
                        started = True
                        nonblocking, deadline = self._deadline(flags)
                    self._maybe_listen_natt()
                    self._wait(select.POLLIN, nonblocking, deadline)
                    continue
                if packet or raw[1] != self._wake_port:  # else a dispatcher's wakeup
                    peer = peers.get(raw)
                    if peer is None:
                        peer = self._learn_peer(raw)
                    src, sport = peer
                    dst = self._local
                    if dst is None:
                        dst = pktinfo_destination(anc)
                        if dst is None:  # pragma: no cover - the kernel always sends it
                            dst = _stdlib_unspecified(4 if self.family == AF_INET else 6)
                    result = engine.receive_udp(packet, src, dst, sport, self._port, _time())
                    if type(result) is Delivered and (
                        self._peer is None or self._from_peer(result)
                    ):
                        if result[3] == sport and result[1] is src and not flags & MSG_PEEK:
                            return result, raw, anc  # the kernel's own address tuple
                        return (self._peek_keep(result, flags), self._app_address(result, raw),
                                anc)
            # Nothing for the application (a drop, another peer's datagram, a wakeup): a flood
            # of these must not hold the call beyond its deadline, nor block a non-blocking one.
            drops += 1
            if not started:
                started = True
                nonblocking, deadline = self._deadline(flags)
            if nonblocking:
                if drops >= _DROP_BURST:
                    raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
            elif deadline is not None and _monotonic() >= deadline:
                raise TimeoutError("timed out")

    def _learn_peer(self, raw: tuple[Any, ...]) -> tuple[Address, int]:
        """The (address, port) of a sender, cached: the same objects every time, which lets
        the engine's identity-keyed caches hit."""
        src, sport = peer_address(raw)
        peer = (_bare(src), sport)
        if len(self._peers) >= 1024:
            self._peers.clear()
        self._peers[raw] = peer
        return peer

    def _peek_keep(self, result: Delivered, flags: int) -> Delivered:
        if flags & MSG_PEEK:
            self._peeked = result
        return result

    def _from_peer(self, result: Delivered) -> bool:
        peer = self._peer
        return peer is None or (peer[0] == result.src and peer[1] == result.sport)

    def _app_address(self, result: Delivered, raw: tuple[Any, ...] | None) -> _SockAddr:
        if self.family == AF_INET:
            return (str(result.src), result.sport)
        scope = int(raw[3]) if raw is not None and len(raw) >= 4 else 0
        return (str(result.src), result.sport, 0, scope)

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        result, _addr, _anc = self._receive(flags)
        return result.payload[:bufsize]

    def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Any]:
        result, addr, _anc = self._receive(flags)
        return result.payload[:bufsize], addr

    def recv_into(self, buffer: Buffer, nbytes: int = 0, flags: int = 0, /) -> int:
        result, _addr, _anc = self._receive(flags)
        return _copy_into(buffer, result.payload, nbytes)

    def recvfrom_into(
        self, buffer: Buffer, nbytes: int = 0, flags: int = 0, /
    ) -> tuple[int, Any]:
        result, addr, _anc = self._receive(flags)
        return _copy_into(buffer, result.payload, nbytes), addr

    def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]:
        """Like socket.recvmsg: ancillary data is returned only for IP_PKTINFO/IPV6_PKTINFO
        the application asked for itself; MSG_TRUNC is set when the datagram was cut."""
        result, addr, _anc = self._receive(flags)
        msg_flags = MSG_TRUNC if len(result.payload) > bufsize else 0
        return result.payload[:bufsize], [], msg_flags, addr

    def recvmsg_into(
        self, buffers: Iterable[Buffer], ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[int, list[tuple[int, int, bytes]], int, Any]:
        result, addr, _anc = self._receive(flags)
        payload = result.payload
        total = 0
        for b in buffers:
            view = memoryview(b).cast("B")
            chunk = payload[total : total + len(view)]
            view[: len(chunk)] = chunk
            total += len(chunk)
            if total >= len(payload):
                break
        msg_flags = MSG_TRUNC if total < len(payload) else 0
        return total, [], msg_flags, addr

    # --- IPsec policy options -----------------------------------------------------------------
    def _is_policy_option(self, level: int, optname: int) -> bool:
        if level == IPPROTO_IP and optname == IP_IPSEC_POLICY:
            if self.family != AF_INET:
                raise OSError(errno.EOPNOTSUPP,
                              "IP_IPSEC_POLICY is for AF_INET sockets; use IPV6_IPSEC_POLICY "
                              "at IPPROTO_IPV6 on an AF_INET6 socket")
            return True
        if level == IPPROTO_IPV6 and optname == IPV6_IPSEC_POLICY:
            if self.family != AF_INET6:
                raise OSError(errno.ENOPROTOOPT, "Protocol not available")
            return True
        return False

    @overload
    def setsockopt(self, level: int, optname: int, value: int | Buffer, /) -> None: ...
    @overload
    def setsockopt(self, level: int, optname: int, value: None, optlen: int, /) -> None: ...
    def setsockopt(self, level: int, optname: int, value: int | Buffer | None,
                   optlen: int | None = None, /) -> None:
        """socket.setsockopt, except that IP_IPSEC_POLICY / IPV6_IPSEC_POLICY set the IPsec
        policy for the direction the buffer names, checked as the KAME kernel checks it.
        IPV6_V6ONLY cannot be cleared (secure AF_INET6 sockets are IPv6-only)."""
        if level == IPPROTO_IPV6 and _transport.check_v6only_option(
            level, optname, None if optlen is not None else value
        ):
            return  # already IPv6-only
        if not self._is_policy_option(level, optname):
            if optlen is not None:
                super().setsockopt(level, optname, None, optlen)
            else:
                assert value is not None
                super().setsockopt(level, optname, value)
            return
        if value is None:
            if optlen == 0:  # Linux: setsockopt(fd, level, opt, NULL, 0) clears both
                self._engine.reset_policies()
                return
            raise OSError(errno.EINVAL, "Invalid argument")
        if isinstance(value, int):
            raise OSError(errno.EINVAL,
                          "IP_IPSEC_POLICY takes a policy buffer from ipsec_set_policy(), "
                          f"got the integer {value}")
        buf = bytes(value)
        policy = check_socket_policy(buf, self.family, POLICY_LAYOUT)
        self._engine.set_policy(policy)

    @overload
    def getsockopt(self, level: int, optname: int, /) -> Any: ...
    @overload
    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...
    def getsockopt(self, level: int, optname: int, buflen: int | None = None,
                   /) -> Any:
        """socket.getsockopt; IP_IPSEC_POLICY / IPV6_IPSEC_POLICY return the inbound policy
        buffer followed by the outbound one (each a complete sadb_x_policy). A ``buflen``
        too small for both raises EINVAL."""
        if not self._is_policy_option(level, optname):
            if buflen is None:
                return super().getsockopt(level, optname)
            return super().getsockopt(level, optname, buflen)
        data = self.get_ipsec_policy("in") + self.get_ipsec_policy("out")
        if buflen is not None and buflen < len(data):
            raise OSError(errno.EINVAL,
                          f"the policies need {len(data)} bytes, buflen is {buflen}")
        return data

    def get_ipsec_policy(self, direction: Literal["in", "out"]) -> bytes:
        """The socket's policy buffer for ``direction`` ("in" or "out")."""
        return self._engine.get_policy(_dir(direction)).encode(POLICY_LAYOUT)

    def set_ipsec_policy(self, policy: str | Policy) -> None:
        """Set a policy from text (``"out ipsec esp/transport//require"``) or a Policy,
        with exactly the checks of ``setsockopt(IP_IPSEC_POLICY, ipsec_set_policy(text))``."""
        p = policy if isinstance(policy, Policy) else Policy.parse(policy)
        level, opt = ((IPPROTO_IP, IP_IPSEC_POLICY) if self.family == AF_INET
                      else (IPPROTO_IPV6, IPV6_IPSEC_POLICY))
        self.setsockopt(level, opt, p.encode(POLICY_LAYOUT))

    def ipsec_policy(self, direction: Literal["in", "out"]) -> Policy:
        """The socket's policy for ``direction`` as a :class:`~secsock.policy.model.Policy`."""
        return self._engine.get_policy(_dir(direction))

    def ipsec_stats(self) -> IPsecStats:
        """This socket's counters (drops a shared port could not attribute to a socket are
        only in the process-wide ``secsock.stats()``)."""
        return self._engine.statistics()

    def set_wire_tap(self, tap: WireTap | None) -> None:
        """Call ``tap(outbound)`` with each datagram just before it is sent (debugging, the
        demo, tests). It sees what goes on the wire -- ciphertext, never keys."""
        self._wire_tap = tap

    # --- lifetime -----------------------------------------------------------------------------
    def _release(self) -> None:
        net = self._net
        if net is not None:
            self._net = None
            self._flows.clear()
            self._finalizer.detach()
            net.unregister(self)
            net.release()

    def close(self) -> None:
        self._release()
        super().close()

    def detach(self) -> int:
        self._release()
        super().settimeout(self._timeout)  # hand the descriptor back in the mode it had
        return super().detach()

    def dup(self) -> SecureSocket:
        fd = os.dup(self.fileno())
        sock = SecureSocket(self.family, self.type, self.proto, fileno=fd,
                            transport=self._engine.transport, sadb=self._engine.sadb,
                            spd=self._engine.spd)
        sock._engine.set_policy(self._engine.get_policy(Direction.INBOUND))
        sock._engine.set_policy(self._engine.get_policy(Direction.OUTBOUND))
        sock.settimeout(self._timeout)
        return sock

    def __repr__(self) -> str:
        base = super().__repr__()
        return f"{base[:-1]}, transport={self._engine.transport.value}>"


#: ``secsock.socket(...)``: the class itself, named like ``socket.socket``.
socket = SecureSocket

# The C methods of the underlying socket, called directly on the hot path.
_c_sendto = _stdlib_socket.SocketType.sendto
_c_recvfrom = _stdlib_socket.SocketType.recvfrom
_c_recvmsg = _stdlib_socket.SocketType.recvmsg
_c_getpeername = _stdlib_socket.SocketType.getpeername


def _bare(addr: Address) -> Address:
    """The address without an IPv6 scope id (the engine compares plain addresses)."""
    if isinstance(addr, IPv6Address) and addr.scope_id:
        return IPv6Address(str(addr).split("%", 1)[0])
    return addr


def _stdlib_unspecified(version: int) -> Address:
    return IPv4Address(0) if version == 4 else IPv6Address(0)


def _copy_into(buffer: Buffer, payload: bytes, nbytes: int) -> int:
    view = memoryview(buffer).cast("B")
    if nbytes < 0:
        raise ValueError("negative buffersize in recv_into")
    size = len(view) if nbytes == 0 else min(nbytes, len(view))
    n = min(size, len(payload))
    view[:n] = payload[:n]
    return n
