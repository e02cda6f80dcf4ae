"""secsock for anyio (asyncio and trio backends): secure UDP sockets and secure byte streams.

* :func:`create_udp_socket` / :func:`create_connected_udp_socket` return objects implementing
  anyio's :class:`~anyio.abc.UDPSocket` / :class:`~anyio.abc.ConnectedUDPSocket`. Underneath is
  a non-blocking :class:`secsock.SecureSocket` (the same engine, SADB, carriers and
  counters as every secure socket) driven by anyio's own readiness primitives
  (:func:`anyio.wait_readable` / :func:`anyio.wait_writable`): nothing depends on asyncio, so
  trio works the same.
* :func:`connect_tcp` / :func:`create_tcp_listener` wrap anyio's own TCP streams in
  :class:`SecureByteStream`, which speaks secsock's RFC 8229 ESP-in-TCP framing (the same wire
  format as :mod:`secsock.asyncio` streams; see docs/asyncio.md).

IPsec details are typed attributes (:class:`IPsecAttribute`). ``SocketAttribute.raw_socket`` is
not offered: the raw socket would let a caller send around IPsec. See docs/anyio.md.
"""

from __future__ import annotations

import os
import socket as _stdlib_socket
import time
from collections.abc import Callable, Mapping
from ipaddress import ip_address
from typing import Any, Literal

import anyio
import anyio.lowlevel
from anyio import (
    BrokenResourceError,
    BusyResourceError,
    ClosedResourceError,
    EndOfStream,
    TypedAttributeSet,
    typed_attribute,
)
from anyio.abc import (
    ByteStream,
    ConnectedUDPSocket,
    Listener,
    SocketAttribute,
    SocketStream,
    TaskGroup,
    UDPPacketType,
    UDPSocket,
)

from secsock._socket import SecureSocket
from secsock._stats import IPsecStats
from secsock.asyncio._channel import SecureStreamConnection
from secsock.asyncio._policy import PolicyArg, socket_policies
from secsock.asyncio._protector import StreamSecurity, identity_of, stream_policy
from secsock.engine import EngineStore, Transport
from secsock.errors import IPsecStreamError, NoSAError
from secsock.sadb import default_sadb
from secsock.sadb.model import SAIdentity
from secsock.sadb.spd import SPD

__all__ = (
    "IPsecAttribute",
    "IPsecStreamBroken",
    "SecureByteStream",
    "SecureConnectedUDPSocket",
    "SecureTCPListener",
    "SecureUDPSocket",
    "connect_tcp",
    "create_connected_udp_socket",
    "create_tcp_listener",
    "create_udp_socket",
)

_MAX_DGRAM = 65535
_READ_SIZE = 1 << 18


class IPsecAttribute(TypedAttributeSet):
    """IPsec facts about a secure socket or stream; never any key."""

    #: the socket policies in force, inbound first, as ipsec_dump_policy(3) prints them
    policy: tuple[str, ...] = typed_attribute()
    #: the SPI of the outbound SA (the one last used, else the one that would be used now),
    #: or None when there is none
    spi: int | None = typed_attribute()
    #: the identity of that outbound SA, or None
    sa: SAIdentity | None = typed_attribute()
    #: the identity of the SA the last accepted datagram or frame came through, or None
    inbound_sa: SAIdentity | None = typed_attribute()
    #: a snapshot of this socket's or stream's counters
    statistics: IPsecStats = typed_attribute()


class IPsecStreamBroken(IPsecStreamError, BrokenResourceError):
    """A secure stream was aborted by what arrived (anyio's BrokenResourceError, and an
    :class:`~secsock.errors.IPsecStreamError` whose ``reason`` says why)."""

    @classmethod
    def of(cls, error: IPsecStreamError) -> IPsecStreamBroken:
        return cls(error.reason, str(error.strerror))


def _is_ip(host: str) -> bool:
    try:
        ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


async def _resolve(host: str, port: int, family: int) -> tuple[str, int]:
    if _is_ip(host):
        return host, port
    infos = await anyio.getaddrinfo(host, port, family=family, type=_stdlib_socket.SOCK_DGRAM)
    return str(infos[0][4][0]), port


# --- UDP ------------------------------------------------------------------------------------


class _SecureDatagramBase:
    """What both UDP socket classes share: the SecureSocket, guards, attributes, closing."""

    def __init__(self, sock: SecureSocket) -> None:
        self._sock = sock
        self._send_guard = anyio.ResourceGuard("sending on")
        self._receive_guard = anyio.ResourceGuard("reading from")
        self._closed = False

    @property
    def secure_socket(self) -> SecureSocket:
        """The underlying :class:`secsock.SecureSocket` (for setsockopt and stats)."""
        return self._sock

    def _attributes(self) -> dict[Any, Callable[[], Any]]:
        sock = self._sock
        engine = sock.engine
        attrs: dict[Any, Callable[[], Any]] = {
            SocketAttribute.family: lambda: sock.family,
            SocketAttribute.local_address: lambda: tuple(sock.getsockname()[:2]),
            SocketAttribute.local_port: lambda: sock.getsockname()[1],
            IPsecAttribute.policy: lambda: (
                sock.ipsec_policy("in").to_text(),
                sock.ipsec_policy("out").to_text(),
            ),
            IPsecAttribute.statistics: engine.statistics,
        }
        try:
            peer = sock.getpeername()
        except OSError:
            peer = None
        if peer is not None:
            attrs[SocketAttribute.remote_address] = lambda: tuple(peer[:2])
            attrs[SocketAttribute.remote_port] = lambda: peer[1]
        return attrs

    async def _recvfrom(self) -> tuple[bytes, Any]:
        await anyio.lowlevel.checkpoint_if_cancelled()
        with self._receive_guard:
            while True:
                if self._closed:
                    raise ClosedResourceError
                try:
                    data, addr = self._sock.recvfrom(_MAX_DGRAM)
                except BlockingIOError:
                    try:
                        await anyio.wait_readable(self._sock)
                    except ClosedResourceError:
                        raise
                    except OSError as exc:  # the descriptor went away under us
                        raise ClosedResourceError from exc
                    continue
                except OSError as exc:
                    if self._closed:
                        raise ClosedResourceError from exc
                    raise BrokenResourceError from exc
                await anyio.lowlevel.cancel_shielded_checkpoint()
                return data, addr

    async def _sendto(self, data: bytes, addr: tuple[str, int] | None) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        with self._send_guard:
            while True:
                if self._closed:
                    raise ClosedResourceError
                try:
                    if addr is None:
                        self._sock.send(data)
                    else:
                        self._sock.sendto(data, addr)
                except BlockingIOError:
                    await anyio.wait_writable(self._sock)
                    continue
                await anyio.lowlevel.cancel_shielded_checkpoint()
                return

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            anyio.notify_closing(self._sock)
            self._sock.close()
        await anyio.lowlevel.checkpoint()


class SecureUDPSocket(_SecureDatagramBase, UDPSocket):
    """anyio's :class:`~anyio.abc.UDPSocket` under IPsec: ``send((data, (host, port)))`` and
    ``receive() -> (data, (host, port))``; only authenticated, policy-checked datagrams are
    received (drops are counted: ``IPsecAttribute.statistics``)."""

    @property
    def _raw_socket(self) -> _stdlib_socket.socket:
        raise TypeError("a secure socket does not hand out its raw socket")

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._attributes()

    async def receive(self) -> UDPPacketType:
        data, addr = await self._recvfrom()
        return data, (str(addr[0]), int(addr[1]))

    async def send(self, item: UDPPacketType) -> None:
        data, (host, port) = item
        await self._sendto(data, await _resolve(host, port, self._sock.family))


class SecureConnectedUDPSocket(_SecureDatagramBase, ConnectedUDPSocket):
    """anyio's :class:`~anyio.abc.ConnectedUDPSocket` under IPsec (datagrams from the peer only)."""

    @property
    def _raw_socket(self) -> _stdlib_socket.socket:
        raise TypeError("a secure socket does not hand out its raw socket")

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._attributes()

    async def receive(self) -> bytes:
        data, _addr = await self._recvfrom()
        return data

    async def send(self, item: bytes) -> None:
        await self._sendto(item, None)


async def _secure_socket(
    family: int,
    local_host: str | None,
    local_port: int,
    reuse_port: bool,
    policy: PolicyArg | None,
    sadb: EngineStore | None,
    spd: SPD | None,
    transport: Transport | Literal["udp", "raw"],
) -> SecureSocket:
    if family == _stdlib_socket.AF_UNSPEC:
        if local_host is None:
            raise ValueError("Either the address family or local_host must be given")
        local_host, _ = await _resolve(local_host, local_port, family)
        family = _stdlib_socket.AF_INET6 if ":" in local_host else _stdlib_socket.AF_INET
    elif local_host is not None:
        local_host, _ = await _resolve(local_host, local_port, family)
    policies = socket_policies(policy, family)
    sock = SecureSocket(family, _stdlib_socket.SOCK_DGRAM, transport=transport, sadb=sadb,
                        spd=spd)
    try:
        if reuse_port:
            sock.setsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_REUSEPORT, 1)
        wildcard = "0.0.0.0" if family == _stdlib_socket.AF_INET else "::"
        sock.bind((local_host if local_host is not None else wildcard, local_port))
        for p in policies:
            sock.set_ipsec_policy(p)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def create_udp_socket(
    family: int = _stdlib_socket.AF_UNSPEC,
    *,
    local_host: str | None = None,
    local_port: int = 0,
    reuse_port: bool = False,
    policy: PolicyArg | None = None,
    sadb: EngineStore | None = None,
    spd: SPD | None = None,
    transport: Transport | Literal["udp", "raw"] = "udp",
) -> SecureUDPSocket:
    """A secure UDP socket, shaped like :func:`anyio.create_udp_socket`.

    ``policy`` is what ``setsockopt(IP_IPSEC_POLICY)`` takes, one per direction (text, buffer
    or Policy); ``sadb``/``spd`` default to the process-wide stores; ``transport`` "udp"
    (ESP-in-UDP) or "raw" (IP protocols 50/51, needs root). Raises the socket's errors.
    """
    sock = await _secure_socket(family, local_host, local_port, reuse_port, policy, sadb, spd,
                                transport)
    return SecureUDPSocket(sock)


async def create_connected_udp_socket(
    remote_host: str,
    remote_port: int,
    *,
    family: int = _stdlib_socket.AF_UNSPEC,
    local_host: str | None = None,
    local_port: int = 0,
    reuse_port: bool = False,
    policy: PolicyArg | None = None,
    sadb: EngineStore | None = None,
    spd: SPD | None = None,
    transport: Transport | Literal["udp", "raw"] = "udp",
) -> SecureConnectedUDPSocket:
    """A connected secure UDP socket, like :func:`anyio.create_connected_udp_socket`."""
    remote_host, remote_port = await _resolve(remote_host, remote_port, family)
    if family == _stdlib_socket.AF_UNSPEC:
        family = _stdlib_socket.AF_INET6 if ":" in remote_host else _stdlib_socket.AF_INET
    sock = await _secure_socket(family, local_host, local_port, reuse_port, policy, sadb, spd,
                                transport)
    try:
        sock.connect((remote_host, remote_port))
    except BaseException:
        sock.close()
        raise
    return SecureConnectedUDPSocket(sock)


# --- streams --------------------------------------------------------------------------------


class SecureByteStream(ByteStream):
    """An anyio byte stream carried as ESP in RFC 8229 frames over an anyio TCP stream.

    ``receive()`` returns only authenticated, in-order bytes; a forged, replayed, reordered,
    missing or truncated frame breaks the stream with :class:`IPsecStreamBroken` (the bytes of
    the frames before it are still returned first). ``send()`` seals the data into whole frames
    and sends them shielded from cancellation, so a cancelled sender never leaves half a frame
    on the wire (it returns once the frames are handed to the transport). ``send_eof()`` sends
    the authenticated end of stream.
    """

    def __init__(
        self, transport: SocketStream, conn: SecureStreamConnection, security: StreamSecurity
    ) -> None:
        self._transport = transport
        self._conn = conn
        self._security = security
        self._buffer = bytearray()
        self._eof = False
        self._error: IPsecStreamBroken | None = None
        self._closed = False
        self._send_guard = anyio.ResourceGuard("sending on")
        self._receive_guard = anyio.ResourceGuard("reading from")

    @property
    def transport_stream(self) -> SocketStream:
        """The TCP stream underneath (carrying ciphertext only)."""
        return self._transport

    async def _break(self, error: IPsecStreamError) -> None:
        if self._error is None:
            self._error = IPsecStreamBroken.of(error)
        await anyio.aclose_forcefully(self._transport)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if max_bytes < 1:
            raise ValueError(f"expected max_bytes >= 1, found {max_bytes}")
        with self._receive_guard:
            buf = self._buffer
            while not buf:
                if self._closed:
                    raise ClosedResourceError
                if self._error is not None:
                    raise self._error
                if self._eof:
                    raise EndOfStream
                try:
                    data = await self._transport.receive(_READ_SIZE)
                except EndOfStream:
                    eof_error = self._conn.receive_eof()
                    if eof_error is not None:
                        await self._break(eof_error)
                        continue
                    self._eof = True
                    continue
                except (BrokenResourceError, OSError) as exc:
                    if self._closed:
                        raise ClosedResourceError from exc
                    raise
                payloads, error = self._conn.receive_data(data, now=time.time())
                for p in payloads:
                    buf += p
                if error is not None:
                    await self._break(error)
            if len(buf) <= max_bytes:
                out = bytes(buf)
                buf.clear()
            else:
                out = bytes(buf[:max_bytes])
                del buf[:max_bytes]
            return out

    async def send(self, item: bytes) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        with self._send_guard:
            if self._closed:
                raise ClosedResourceError
            if self._error is not None:
                raise self._error
            pieces = self._conn.send_pieces(item, now=time.time())  # local errors raise here
            if not pieces:
                return
            wire = b"".join(pieces)  # whole frames, sent in one call
            with anyio.CancelScope(shield=True):
                await self._transport.send(wire)

    async def send_eof(self) -> None:
        with self._send_guard:
            if self._closed:
                raise ClosedResourceError
            if self._conn.eof_sent:
                return
            wire = self._conn.send_eof(now=time.time())
            with anyio.CancelScope(shield=True):
                await self._transport.send(wire)
                await self._transport.send_eof()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._error is None and not self._conn.eof_sent:
            try:
                wire = self._conn.send_eof(now=time.time())
                with anyio.CancelScope(shield=True):
                    await self._transport.send(wire)
            except (OSError, BrokenResourceError, ClosedResourceError, BusyResourceError):
                pass  # the peer will see a truncated stream
        await self._transport.aclose()

    def _outbound(self) -> SAIdentity | None:
        if self._security.last_out is not None:
            return self._security.last_out
        try:
            return identity_of(self._security.select(now=time.time()).sa)
        except NoSAError:
            return None

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        attrs: dict[Any, Callable[[], Any]] = {
            k: v for k, v in self._transport.extra_attributes.items()
            if k is not SocketAttribute.raw_socket
        }
        security = self._security

        def spi() -> int | None:
            sa = self._outbound()
            return None if sa is None else sa.spi

        attrs.update({
            IPsecAttribute.policy: lambda: security.policy.texts,
            IPsecAttribute.spi: spi,
            IPsecAttribute.sa: self._outbound,
            IPsecAttribute.inbound_sa: lambda: security.last_in,
            IPsecAttribute.statistics: security.statistics,
        })
        return attrs


class _StreamSetup:
    def __init__(self, policy: PolicyArg, sadb: EngineStore | None,
                 rng: Callable[[int], bytes], *, inner_checksum: bool) -> None:
        self.sadb: EngineStore = sadb if sadb is not None else default_sadb()
        self.policy = stream_policy(socket_policies(policy, _stdlib_socket.AF_INET), self.sadb)
        self.rng = rng
        self.inner_checksum = inner_checksum

    def wrap(self, stream: SocketStream, *, initiator: bool, send_prefix: bool,
             require_prefix: bool) -> SecureByteStream:
        attrs = stream.extra_attributes
        local = attrs[SocketAttribute.local_address]()
        peer = attrs[SocketAttribute.remote_address]()
        assert isinstance(local, tuple)
        assert isinstance(peer, tuple)
        local_ = (str(local[0]), int(local[1]))
        peer_ = (str(peer[0]), int(peer[1]))
        security = StreamSecurity(sadb=self.sadb, policy=self.policy, local=local_, peer=peer_,
                                  rng=self.rng)
        if initiator:
            security.select(now=time.time())  # no SA: refuse now, not at the first send
        conn = SecureStreamConnection(security, local=local_, peer=peer_, initiator=initiator,
                                      send_prefix=send_prefix, require_prefix=require_prefix,
                                      inner_checksum=self.inner_checksum)
        return SecureByteStream(stream, conn, security)


async def connect_tcp(
    remote_host: str,
    remote_port: int,
    *,
    policy: PolicyArg,
    sadb: EngineStore | None = None,
    local_host: str | None = None,
    send_prefix: bool = True,
    inner_checksum: bool = False,
    rng: Callable[[int], bytes] = os.urandom,
) -> SecureByteStream:
    """Connect a secure byte stream (ESP in RFC 8229 frames over TCP), like
    :func:`anyio.connect_tcp`. ``policy`` must ask for ``esp/transport`` (a missing direction
    mirrors the given one); raises the policy errors before connecting and NoSAError when there
    is no outbound SA for the connection's addresses (the TCP connection is closed again)."""
    setup = _StreamSetup(policy, sadb, rng, inner_checksum=inner_checksum)
    stream = await anyio.connect_tcp(remote_host, remote_port, local_host=local_host)
    try:
        return setup.wrap(stream, initiator=True, send_prefix=send_prefix, require_prefix=False)
    except BaseException:
        await anyio.aclose_forcefully(stream)
        raise


class SecureTCPListener(Listener[SecureByteStream]):
    """A listener whose connections are :class:`SecureByteStream` s (RFC 8229 framing)."""

    def __init__(self, listener: Listener[SocketStream], setup: _StreamSetup, *,
                 require_prefix: bool) -> None:
        self._listener = listener
        self._setup = setup
        self._require_prefix = require_prefix

    def _wrap(self, stream: SocketStream) -> SecureByteStream:
        return self._setup.wrap(stream, initiator=False, send_prefix=False,
                                require_prefix=self._require_prefix)

    async def accept(self) -> SecureByteStream:
        """Accept one connection (from the first of the listening sockets)."""
        inner: Any = self._listener
        listeners = getattr(inner, "listeners", [inner])
        stream = await listeners[0].accept()
        try:
            return self._wrap(stream)
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise

    async def serve(
        self, handler: Callable[[SecureByteStream], Any], task_group: TaskGroup | None = None
    ) -> None:
        async def wrapped(stream: SocketStream) -> None:
            try:
                secure = self._wrap(stream)
            except (OSError, ValueError):
                await anyio.aclose_forcefully(stream)
                return
            await handler(secure)

        await self._listener.serve(wrapped, task_group)

    async def aclose(self) -> None:
        await self._listener.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        attrs: dict[Any, Callable[[], Any]] = {
            k: v for k, v in self._listener.extra_attributes.items()
            if k is not SocketAttribute.raw_socket
        }
        policy = self._setup.policy
        attrs[IPsecAttribute.policy] = lambda: policy.texts
        return attrs


async def create_tcp_listener(
    *,
    local_host: str | None = None,
    local_port: int = 0,
    family: int = _stdlib_socket.AF_UNSPEC,
    backlog: int = 65536,
    reuse_port: bool = False,
    policy: PolicyArg,
    sadb: EngineStore | None = None,
    require_prefix: bool = False,
    inner_checksum: bool = False,
    rng: Callable[[int], bytes] = os.urandom,
) -> SecureTCPListener:
    """A secure TCP listener, like :func:`anyio.create_tcp_listener`; its streams are
    :class:`SecureByteStream` s. The "IKETCP" prefix is accepted when present and required
    with ``require_prefix``."""
    setup = _StreamSetup(policy, sadb, rng, inner_checksum=inner_checksum)
    listener = await anyio.create_tcp_listener(local_host=local_host, local_port=local_port,
                                               family=family, backlog=backlog,  # type: ignore[arg-type]
                                               reuse_port=reuse_port)
    return SecureTCPListener(listener, setup, require_prefix=require_prefix)


