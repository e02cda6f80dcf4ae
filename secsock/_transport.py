"""Shared carriers for secure sockets: the encapsulation port, raw ESP/AH sockets, wakeups.

One :class:`NetContext` exists per network namespace the process uses (tests move threads
between namespaces; a socket stays in the namespace it was created in). It owns:

* the **encapsulation endpoints**: one UDP socket per (local address, NAT-T port), shared by
  every secure socket of the process, the way every socket of a host shares the kernel's
  port-4500 socket. A daemon thread reads it, ignores NAT keepalives, hands IKE (non-ESP
  marker) datagrams to the optional IKE handler, and runs the SA half of the engine on ESP;
  the decapsulated datagram then goes to the secure socket its inner UDP header names.
* the **raw endpoints** (transport "raw"): one raw socket per (family, IP protocol 50/51),
  likewise shared and read by a daemon thread; plus the IP_HDRINCL socket that sends AH over
  IPv4.
* the **wake sockets**: a secure socket's application-facing descriptor is its own, real UDP
  socket (so ``select``/``poll``/asyncio work on ``fileno()``); when a dispatcher queues a
  datagram for it, an empty datagram from the wake socket (bound to loopback) makes that
  descriptor readable. The secure socket recognises wakeups by their source port and length.
* a cache of source addresses (what the kernel's routing picks for a destination).

Nothing here is public API; docs/transports.md describes the behaviour.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket as _stdlib_socket
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import ClassVar, Final, Protocol

from secsock._stats import Counters
from secsock.core.framing.udp_encap import (
    UdpEncapKind,
    classify_untrusted,
    strip_non_esp_marker,
)
from secsock.engine import (
    Address,
    Carrier,
    Decapsulated,
    Dropped,
    EngineStore,
    IPsecEngine,
    Outbound,
)
from secsock.errors import DropReason, MalformedPacket
from secsock.sadb.model import SAProtocol

__all__ = (
    "IPV6_V6ONLY",
    "IKEHandler",
    "NetContext",
    "check_v6only_option",
    "get_ike_handler",
    "is_v4_mapped",
    "refuse_v4_mapped",
    "set_ike_handler",
    "set_v6only",
)

_LOG: Final = logging.getLogger("secsock")

#: The real socket class, captured at import: secsock.install() replaces socket.socket, and
#: the shared carriers must never be secure sockets themselves.
RealSocket: Final = _stdlib_socket.socket
AF_INET: Final = _stdlib_socket.AF_INET
AF_INET6: Final = _stdlib_socket.AF_INET6
IPPROTO_ESP: Final = 50
IPPROTO_AH: Final = 51
# Linux values where the socket module of Python 3.11 lacks them.
IP_PKTINFO: Final = int(getattr(_stdlib_socket, "IP_PKTINFO", 8))
IPV6_RECVPKTINFO: Final = int(getattr(_stdlib_socket, "IPV6_RECVPKTINFO", 49))
IPV6_PKTINFO: Final = int(getattr(_stdlib_socket, "IPV6_PKTINFO", 50))
IP_HDRINCL: Final = int(getattr(_stdlib_socket, "IP_HDRINCL", 3))
IPV6_V6ONLY: Final = int(getattr(_stdlib_socket, "IPV6_V6ONLY", 26))
_V4_MAPPED_PREFIX: Final = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96
_ANC_SIZE: Final = _stdlib_socket.CMSG_SPACE(32)
_MAX_DGRAM: Final = 65535
_IN_PKTINFO: Final = struct.Struct("=i4s4s")  # ifindex, spec_dst, addr
_IN6_PKTINFO: Final = struct.Struct("=16si")  # addr, ifindex

#: An IKE handler gets the IKE message (non-ESP marker stripped), the peer's (address, port)
#: and the local (address, port) of the encapsulation endpoint it arrived on.
IKEHandler = Callable[[bytes, tuple[str, int], tuple[str, int]], None]

_ike_handler: IKEHandler | None = None


def set_ike_handler(handler: IKEHandler | None) -> None:
    """Install (or with None remove) the process-wide handler for IKE datagrams.

    Datagrams with the RFC 3948 non-ESP marker that arrive on an encapsulation port are
    passed to it (marker stripped) and never to an application socket; without a handler they
    are counted (``in_ike``) and discarded. The handler runs on the dispatcher thread and must
    not block for long; an exception it raises is logged and otherwise ignored.
    """
    global _ike_handler
    _ike_handler = handler


def get_ike_handler() -> IKEHandler | None:
    return _ike_handler


class Inbox(Protocol):
    """What a dispatcher needs of a secure socket: its SADB, and a queue for datagrams."""

    @property
    def _sadb(self) -> EngineStore: ...

    def _enqueue(self, datagram: Decapsulated) -> None: ...


def _spi_of(data: bytes, offset: int) -> int | None:
    if len(data) < offset + 4:
        return None
    return int.from_bytes(data[offset : offset + 4], "big")


# --- IPv4-mapped addresses (::ffff:0:0/96) ----------------------------------------------------
#
# An AF_INET6 socket that is not IPV6_V6ONLY also sends and receives IPv4, under IPv4-mapped
# addresses. The SPD and def_policy would then be consulted with IPv6 selectors and the inet6
# sysctl tree, so IPv4 traffic would escape the IPv4 policies. Every AF_INET6 secure socket
# and endpoint is therefore IPv6-only (set_v6only), refuses to become dual-stack
# (check_v6only_option) and refuses mapped destinations (refuse_v4_mapped); the engine drops
# datagrams with mapped addresses as policy violations. docs/socket.md says so.


def is_v4_mapped(addr: Address | str) -> bool:
    """True for an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``), given as an ipaddress
    object or as text (a scope id is ignored; text that is no address is False)."""
    if isinstance(addr, str):
        try:
            addr = ip_address(addr.split("%", 1)[0])
        except ValueError:
            return False
    return isinstance(addr, IPv6Address) and addr.packed[:12] == _V4_MAPPED_PREFIX


def refuse_v4_mapped(addr: Address) -> None:
    """Raise OSError(EAFNOSUPPORT) for an IPv4-mapped destination of an AF_INET6 secure
    socket (IPv4 goes through an AF_INET one, where the IPv4 policies apply)."""
    if is_v4_mapped(addr):
        raise OSError(
            errno.EAFNOSUPPORT,
            f"{addr} is an IPv4-mapped address; secure AF_INET6 sockets are IPv6-only "
            f"(IPV6_V6ONLY), use an AF_INET socket for IPv4 so that the IPv4 policies apply",
        )


def set_v6only(sock: _stdlib_socket.socket) -> None:
    """Make an AF_INET6 socket IPv6-only (IPV6_V6ONLY=1); nothing for other families.

    The kernel refuses the change once the socket is bound: a bound dual-stack descriptor
    raises OSError(EINVAL) saying so (an already IPv6-only one is fine).
    """
    if sock.family != AF_INET6:
        return
    ipv6 = _stdlib_socket.IPPROTO_IPV6
    try:  # the real socket's methods: a secure socket's setsockopt filters this option
        RealSocket.setsockopt(sock, ipv6, IPV6_V6ONLY, 1)
    except OSError as exc:
        if RealSocket.getsockopt(sock, ipv6, IPV6_V6ONLY) != 0:
            return
        raise OSError(
            exc.errno or errno.EINVAL,
            "secure AF_INET6 sockets must be IPv6-only (IPV6_V6ONLY=1), and this descriptor "
            "is already bound as a dual-stack socket; set IPV6_V6ONLY before binding it",
        ) from None


def check_v6only_option(level: int, optname: int, value: object) -> bool:
    """For ``setsockopt(level, optname, value)`` on a secure AF_INET6 socket: raise
    OSError(EINVAL) when it would clear IPV6_V6ONLY; True when it sets it (already set, so
    the caller has nothing to do); False for any other option."""
    if level != _stdlib_socket.IPPROTO_IPV6 or optname != IPV6_V6ONLY:
        return False
    if isinstance(value, int):
        on = value != 0
    elif value is None:
        on = False  # setsockopt(..., None, optlen): the kernel reads 0
    else:
        try:
            raw = memoryview(value).cast("B").tobytes()  # type: ignore[arg-type]
        except TypeError:
            return False  # not a buffer: let the kernel call raise what it raises
        # the kernel reads an int, or 0 from a shorter buffer
        on = len(raw) >= 4 and int.from_bytes(raw[:4], sys.byteorder) != 0
    if not on:
        raise OSError(
            errno.EINVAL,
            "secure AF_INET6 sockets stay IPv6-only: clearing IPV6_V6ONLY would let IPv4 "
            "traffic through under IPv4-mapped addresses, outside the IPv4 policies; use an "
            "AF_INET secure socket for IPv4",
        )
    return True


def pktinfo_destination(ancdata: list[tuple[int, int, bytes]]) -> Address | None:
    """The destination address from an IP_PKTINFO / IPV6_PKTINFO control message, if any."""
    for level, kind, data in ancdata:
        if level == _stdlib_socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            return IPv4Address(data[8:12])
        if level == _stdlib_socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= 20:
            return IPv6Address(data[:16])
    return None


def enable_pktinfo(sock: _stdlib_socket.socket) -> None:
    """Ask the kernel for each datagram's destination address (wildcard-bound sockets)."""
    if sock.family == AF_INET:
        sock.setsockopt(_stdlib_socket.IPPROTO_IP, IP_PKTINFO, 1)
    else:
        sock.setsockopt(_stdlib_socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)


def source_pktinfo(src: Address) -> list[tuple[int, int, bytes]]:
    """Ancillary data that makes the kernel send from ``src``."""
    if isinstance(src, IPv4Address):
        return [(_stdlib_socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, src.packed, b"\0" * 4))]
    return [(_stdlib_socket.IPPROTO_IPV6, IPV6_PKTINFO, _IN6_PKTINFO.pack(src.packed, 0))]


def sockaddr(addr: Address, port: int) -> tuple[str, int] | tuple[str, int, int, int]:
    """The socket-module address tuple for ``addr``:``port``."""
    if isinstance(addr, IPv6Address):
        scope = addr.scope_id
        return (str(addr).split("%", 1)[0], port, 0, int(scope) if scope and scope.isdigit()
                else (_stdlib_socket.if_nametoindex(scope) if scope else 0))
    return (str(addr), port)


def peer_address(raw: tuple[object, ...]) -> tuple[Address, int]:
    """(address, port) of a socket-module address tuple (IPv6 scope id kept)."""
    host = str(raw[0])
    port = int(raw[1])  # type: ignore[call-overload]
    if len(raw) >= 4 and raw[3]:
        return ip_address(f"{host.split('%', 1)[0]}%{raw[3]}"), port
    return ip_address(host.split("%", 1)[0]), port


def _netns_key() -> int:
    """An identity for the calling thread's network namespace (0 where not knowable)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            return os.stat("/proc/thread-self/ns/net").st_ino
    return 0


def _raw_permission_error(exc: OSError) -> PermissionError:
    return PermissionError(
        exc.errno or errno.EPERM,
        "transport='raw' sends ESP and AH as IP protocols 50/51 through raw sockets, which "
        "needs root or CAP_NET_RAW; use transport='udp' (ESP-in-UDP, no privilege) instead",
    )


class _Dispatcher:
    """A daemon thread that reads one shared socket until stopped."""

    def __init__(self, sock: _stdlib_socket.socket, name: str,
                 handle: Callable[[bytes, list[tuple[int, int, bytes]], tuple[object, ...]],
                                  None]) -> None:
        self.sock = sock
        self._handle = handle
        sock.setblocking(False)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            try:
                events = poller.poll()
            except InterruptedError:  # pragma: no cover
                continue
            if any(fd == self._stop_r for fd, _ in events):
                return
            for _ in range(64):  # drain a burst before polling again
                try:
                    data, anc, _flags, addr = self.sock.recvmsg(_MAX_DGRAM, _ANC_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # e.g. ICMP errors surfacing on the socket
                    _LOG.debug("dispatcher %s: %s", self._thread.name, exc)
                    break
                try:
                    self._handle(data, anc, addr)
                except Exception:  # noqa: BLE001 - a bug: log it, keep the port alive
                    _LOG.exception("dispatcher %s failed on a datagram", self._thread.name)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.sock.close()


class EncapEndpoint:
    """The shared ESP-in-UDP socket on one (local address, port)."""

    def __init__(self, ctx: NetContext, local: Address, port: int) -> None:
        self.local = local
        self.port = port
        family = AF_INET if isinstance(local, IPv4Address) else AF_INET6
        sock = RealSocket(family, _stdlib_socket.SOCK_DGRAM)
        try:
            sock.bind(sockaddr(local, port))
        except OSError:
            sock.close()
            raise
        self._ctx = ctx
        self._counters = ctx.decap_engine(local.version).counters
        self._c_keepalive = Counters.index("in_keepalive")
        self._c_ike = Counters.index("in_ike")
        self._local_tuple = (str(local), port)
        self._dispatcher = _Dispatcher(sock, f"secsock-encap-{local}:{port}", self._handle)

    def sendto(self, data: bytes, addr: tuple[object, ...]) -> None:
        self._dispatcher.sock.sendto(data, addr)

    def _handle(self, data: bytes, _anc: list[tuple[int, int, bytes]],
                raw: tuple[object, ...]) -> None:
        try:
            kind = classify_untrusted(data)
        except MalformedPacket:
            self._counters.drop(DropReason.MALFORMED)
            return
        if kind is UdpEncapKind.KEEPALIVE:
            self._counters.add(self._c_keepalive)
            return
        src, sport = peer_address(raw)
        if kind is UdpEncapKind.IKE:
            self._counters.add(self._c_ike)
            handler = _ike_handler
            if handler is not None:
                try:
                    handler(strip_non_esp_marker(data), (str(src), sport), self._local_tuple)
                except Exception:  # noqa: BLE001 - the handler's bug must not kill the port
                    _LOG.exception("the IKE handler raised")
            return
        engine = self._ctx.engine_for(self.local, IPPROTO_ESP, _spi_of(data, 0))
        result = engine.decapsulate(
            data, carrier=Carrier.NATT, src=src, dst=self.local, sport=sport, dport=self.port,
            now=time.time(),
        )
        if not isinstance(result, Dropped):
            self._ctx.dispatch(result, engine)

    def close(self) -> None:
        self._dispatcher.close()


class RawEndpoint:
    """The shared raw socket for one (family, IP protocol): receives and sends ESP or AH."""

    def __init__(self, ctx: NetContext, family: int, protocol: int) -> None:
        try:
            sock = RealSocket(family, _stdlib_socket.SOCK_RAW, protocol)
        except PermissionError as exc:
            raise _raw_permission_error(exc) from None
        self.family = family
        self.protocol = protocol
        if family == AF_INET6:
            sock.setsockopt(_stdlib_socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        self._ctx = ctx
        self._dispatcher = _Dispatcher(sock, f"secsock-raw-{family}-{protocol}", self._handle)

    def sendto(self, data: bytes, src: Address, dst: Address) -> None:
        self._dispatcher.sock.sendmsg([data], source_pktinfo(src), 0, sockaddr(dst, 0))

    def _handle(self, data: bytes, anc: list[tuple[int, int, bytes]],
                raw: tuple[object, ...]) -> None:
        src, _ = peer_address(raw)
        offset = 4 if self.protocol == IPPROTO_AH else 0
        if self.family == AF_INET:
            assert isinstance(src, IPv4Address)
            ihl = (data[0] & 0x0F) * 4 if data else 0
            dst4 = IPv4Address(data[16:20]) if len(data) >= 20 else src
            engine = self._ctx.engine_for(dst4, self.protocol, _spi_of(data, ihl + offset))
            # Raw IPv4 sockets deliver the IP header; the engine reads the addresses from it.
            result = engine.decapsulate(
                data, carrier=Carrier.IP, src=src, dst=src, protocol=self.protocol,
                header_included=True, now=time.time(),
            )
        else:
            dst = pktinfo_destination(anc)
            if dst is None:
                self._ctx.decap_engine(6).counters.drop(DropReason.MALFORMED)
                return
            if isinstance(src, IPv6Address) and src.scope_id:
                src = IPv6Address(str(src).split("%", 1)[0])
            engine = self._ctx.engine_for(dst, self.protocol, _spi_of(data, offset))
            result = engine.decapsulate(
                data, carrier=Carrier.IP, src=src, dst=dst, protocol=self.protocol,
                now=time.time(),
            )
        if not isinstance(result, Dropped):
            self._ctx.dispatch(result, engine)

    def close(self) -> None:
        self._dispatcher.close()


class NetContext:
    """Per-network-namespace shared state for secure sockets (see the module docstring)."""

    _contexts: ClassVar[dict[int, NetContext]] = {}
    #: namespaces whose last context is being torn down: set when its sockets are closed
    _closing: ClassVar[dict[int, threading.Event]] = {}
    _contexts_lock = threading.Lock()
    #: how long acquire() waits for a closing context (its dispatcher threads join in 5 s)
    _CLOSE_WAIT: ClassVar[float] = 10.0

    def __init__(self, key: int) -> None:
        self._key = key
        self._lock = threading.RLock()
        self._refs = 0
        self._sources: dict[tuple[int, str], Address] = {}
        self._probes: dict[int, _stdlib_socket.socket] = {}
        self._wakers: dict[int, _stdlib_socket.socket] = {}
        self._wake_ports: dict[int, int] = {}
        self._encap: dict[tuple[Address, int], EncapEndpoint] = {}
        self._encap_failed: dict[tuple[Address, int], int] = {}
        self._raw: dict[tuple[int, int], RawEndpoint] = {}
        self._hdrincl: _stdlib_socket.socket | None = None
        # the engines shared endpoints decapsulate with: one per SADB in use, keyed by id()
        self._engines: dict[int, IPsecEngine] = {}
        self._default_engine: IPsecEngine | None = None
        # (ip version, port) -> [(bound address or None for wildcard, socket)]
        self._sockets: dict[tuple[int, int], list[tuple[Address | None,
                                                        weakref.ref[Inbox]]]] = {}

    # --- lifetime ---------------------------------------------------------------------------
    @classmethod
    def acquire(cls) -> NetContext:
        """The context of the calling thread's network namespace, with a reference taken.

        If the namespace's previous context is being closed (its last socket just went), wait
        for that to finish first: its shared sockets still hold their ports, which the new
        context will bind again.
        """
        key = _netns_key()
        stale: threading.Event | None = None
        while True:
            with cls._contexts_lock:
                closing = cls._closing.get(key)
                if closing is None or closing is stale:
                    ctx = cls._contexts.get(key)
                    if ctx is None:
                        ctx = cls._contexts[key] = NetContext(key)
                    ctx._refs += 1
                    return ctx
            if not cls._wait_for_close(closing):
                stale = closing  # a teardown stuck for long (a dispatcher that will not stop)

    @classmethod
    def _wait_for_close(cls, closing: threading.Event) -> bool:
        """Wait (bounded) until a closing context's teardown has finished; False on timeout."""
        return closing.wait(cls._CLOSE_WAIT)

    def release(self) -> None:
        """Drop a reference; the last one closes the shared sockets and threads.

        The teardown runs outside the contexts lock (it joins dispatcher threads, which may
        themselves release sockets); acquire() meanwhile waits for it to finish.
        """
        key = self._key
        with NetContext._contexts_lock:
            self._refs -= 1
            if self._refs > 0:
                return
            if NetContext._contexts.get(key) is self:
                del NetContext._contexts[key]
            done = threading.Event()
            NetContext._closing[key] = done
        try:
            self._close_all()
        finally:
            with NetContext._contexts_lock:
                if NetContext._closing.get(key) is done:
                    del NetContext._closing[key]
            done.set()

    def _close_all(self) -> None:
        with self._lock:
            endpoints: list[EncapEndpoint | RawEndpoint] = [*self._encap.values(),
                                                            *self._raw.values()]
            self._encap.clear()
            self._raw.clear()
            socks = [*self._probes.values(), *self._wakers.values()]
            if self._hdrincl is not None:
                socks.append(self._hdrincl)
                self._hdrincl = None
            self._probes.clear()
            self._wakers.clear()
        for ep in endpoints:
            ep.close()
        for s in socks:
            s.close()

    # --- engines for decapsulation ------------------------------------------------------------
    def decap_engine(self, version: int) -> IPsecEngine:
        """The engine of the process-wide SADB (SA work only; policy is per socket)."""
        del version
        engine = self._default_engine
        if engine is None:
            with self._lock:
                if self._default_engine is None:
                    self._default_engine = IPsecEngine()
                engine = self._default_engine
        return engine

    def engine_for(self, dst: Address, protocol: int, spi: int | None) -> IPsecEngine:
        """The engine whose SADB holds the inbound SA (dst, protocol, spi).

        Secure sockets may use their own stores; a shared endpoint finds the SA in the store of
        one of the sockets registered here, else falls back to the process-wide SADB (which
        then drops the packet as no-SA if it has no such SA either).
        """
        engines = self._engines
        if spi is not None and engines:
            proto = SAProtocol.AH if protocol == IPPROTO_AH else SAProtocol.ESP
            for engine in list(engines.values()):
                if engine.sadb.lookup_inbound(dst, proto, spi) is not None:
                    return engine
        return self.decap_engine(dst.version)

    def _refresh_engines(self) -> None:
        stores: dict[int, EngineStore] = {}
        for entries in self._sockets.values():
            for _local, ref in entries:
                sock = ref()
                if sock is not None:
                    store = sock._sadb
                    stores[id(store)] = store
        engines = {k: e for k, e in self._engines.items() if stores.get(k) is e.sadb}
        for k, store in stores.items():
            if k not in engines:
                engines[k] = IPsecEngine(sadb=store)
        self._engines = engines

    # --- registry of secure sockets ---------------------------------------------------------
    def register(self, sock: Inbox, version: int, local: Address | None, port: int) -> None:
        with self._lock:
            entries = self._sockets.setdefault((version, port), [])
            entries[:] = [(a, r) for a, r in entries if r() is not None and r() is not sock]
            entries.append((local, weakref.ref(sock)))
            self._refresh_engines()

    def unregister(self, sock: Inbox) -> None:
        with self._lock:
            for key, entries in list(self._sockets.items()):
                entries[:] = [(a, r) for a, r in entries if r() is not None and r() is not sock]
                if not entries:
                    del self._sockets[key]
            self._refresh_engines()

    def dispatch(self, datagram: Decapsulated, engine: IPsecEngine) -> None:
        """Queue a datagram ``engine`` decapsulated for the socket bound to its destination.

        The socket is chosen as the kernel chooses (an exact address match, else a wildcard
        one); it gets the datagram only if its SADB is ``engine``'s, the store whose SA
        authenticated it. Otherwise the datagram is a ``no-sa`` drop: for that socket, no SA
        exists (secure sockets of one process may bring their own SADBs).
        """
        target: Inbox | None = None
        with self._lock:
            entries = self._sockets.get((datagram.dst.version, datagram.dport), ())
            for local, ref in entries:
                sock = ref()
                if sock is None:
                    continue
                if local is not None and local == datagram.dst:
                    target = sock
                    break
                if local is None and target is None:
                    target = sock
        if target is None:
            _LOG.debug("no secure socket on port %d for a datagram from %s",
                       datagram.dport, datagram.src)
            return
        if target._sadb is not engine.sadb:
            outer = datagram.applied[0] if datagram.applied else None
            engine.drop(DropReason.NO_SA, None if outer is None else outer.spi,
                        None if outer is None else outer.seq,
                        f"the secure socket on port {datagram.dport} uses another SADB than "
                        f"the one holding the SA")
            return
        target._enqueue(datagram)

    # --- wakeups ----------------------------------------------------------------------------
    def wake_port(self, family: int) -> int:
        with self._lock:
            port = self._wake_ports.get(family)
            if port is None:
                self._waker(family)
                port = self._wake_ports[family]
            return port

    def _waker(self, family: int) -> _stdlib_socket.socket:
        s = self._wakers.get(family)
        if s is None:
            s = RealSocket(family, _stdlib_socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0) if family == AF_INET else ("::1", 0))
            s.setblocking(False)
            self._wakers[family] = s
            self._wake_ports[family] = s.getsockname()[1]
        return s

    def wake(self, family: int, local: Address | None, port: int) -> None:
        """Make the secure socket bound to ``local``:``port`` readable (an empty datagram)."""
        with self._lock:
            s = self._waker(family)
        if local is None or local.is_unspecified:
            target: tuple[object, ...] = ("127.0.0.1", port) if family == AF_INET else ("::1", port)
        else:
            target = sockaddr(local, port)
        with contextlib.suppress(OSError):  # a full buffer: the inbox is checked anyway
            s.sendto(b"", target)

    # --- routing ------------------------------------------------------------------------------
    def source_for(self, dst: Address) -> Address:
        """The source address the kernel's routing picks for ``dst``."""
        key = (dst.version, str(dst))
        src = self._sources.get(key)
        if src is not None:
            return src
        family = AF_INET if dst.version == 4 else AF_INET6
        with self._lock:
            probe = self._probes.get(family)
            if probe is None:
                probe = self._probes[family] = RealSocket(family,
                                                                     _stdlib_socket.SOCK_DGRAM)
            try:
                probe.connect(sockaddr(dst, 9))
            except OSError as exc:
                raise OSError(exc.errno, f"no route to {dst}: {exc.strerror}") from None
            src, _ = peer_address(probe.getsockname())
        if isinstance(src, IPv6Address) and src.scope_id:
            src = IPv6Address(str(src).split("%", 1)[0])
        if len(self._sources) > 1024:
            self._sources.clear()
        self._sources[key] = src
        return src

    # --- shared carriers ----------------------------------------------------------------------
    def encap_endpoint(self, local: Address, port: int) -> EncapEndpoint:
        """The shared encapsulation socket on ``local``:``port`` (opened on first use)."""
        key = (local, port)
        with self._lock:
            ep = self._encap.get(key)
            if ep is None:
                ep = self._encap[key] = EncapEndpoint(self, local, port)
            return ep

    def listen_encap(self, local: Address, port: int) -> bool:
        """Open the encapsulation endpoint if ``local`` is an address of this host.

        Returns False when the address is not local or the port is taken by another socket;
        secsock then cannot receive on it. A failure is not final: the next rescan (a socket
        bound, the SADB changed size) tries again; the warning is logged once per failure.
        """
        key = (local, port)
        with self._lock:
            if key in self._encap:
                return True
            try:
                self._encap[key] = EncapEndpoint(self, local, port)
            except OSError as exc:
                code = exc.errno or 0
                if self._encap_failed.get(key) != code and code == errno.EADDRINUSE:
                    _LOG.warning("encapsulation port %s:%d is in use by another socket; "
                                 "ESP-in-UDP for it will not be received until it is free",
                                 local, port)
                self._encap_failed[key] = code
                return False
            self._encap_failed.pop(key, None)
            return True

    def listen_natt(
        self,
        sadb: EngineStore,
        version: int,
        local: Address | None,
        listened: set[tuple[Address, int]],
    ) -> None:
        """Open the shared encapsulation ports of the inbound ``esp-udp`` SAs in ``sadb`` whose
        destination is of IP ``version`` (and is ``local``, for a socket bound to an address);
        ``listened`` is the caller's record of the ports already open, updated here."""
        for record in sadb.dump(SAProtocol.ESP):
            sa = record.sa
            dport = getattr(sa, "natt_dport", None)
            if dport is None or sa.dst.version != version:
                continue
            if local is not None and sa.dst != local:
                continue
            key = (sa.dst, dport)
            if key not in listened and self.listen_encap(sa.dst, dport):
                listened.add(key)

    def raw_endpoint(self, family: int, protocol: int) -> RawEndpoint:
        key = (family, protocol)
        with self._lock:
            ep = self._raw.get(key)
            if ep is None:
                ep = self._raw[key] = RawEndpoint(self, family, protocol)
            return ep

    def send_raw(self, out: Outbound) -> None:
        """Send an IP-carrier datagram (ESP or AH) through the shared raw sockets."""
        if out.header_included:
            with self._lock:
                s = self._hdrincl
                if s is None:
                    try:
                        s = RealSocket(AF_INET, _stdlib_socket.SOCK_RAW,
                                                  _stdlib_socket.IPPROTO_RAW)
                    except PermissionError as exc:
                        raise _raw_permission_error(exc) from None
                    self._hdrincl = s
            s.sendto(out.data, (str(out.dst), 0))
            return
        family = AF_INET if out.dst.version == 4 else AF_INET6
        self.raw_endpoint(family, out.protocol).sendto(out.data, out.src, out.dst)
