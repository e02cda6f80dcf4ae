"""Secure asyncio streams: ``open_connection()`` / ``start_server()`` over RFC 8229 ESP-in-TCP.

They return asyncio's own :class:`~asyncio.StreamReader`, :class:`~asyncio.StreamWriter` and
:class:`~asyncio.Server`. Underneath, a :class:`_SecureStreamProtocol` sits on the TCP transport
and drives the sans-IO :class:`~secsock.asyncio._channel.SecureStreamConnection`; the
application's ``StreamReaderProtocol`` sits on a :class:`_SecureStreamTransport`, which seals
every ``write()`` into whole frames and hands each frame to the TCP transport in one ``write``
call.

Every chunk written becomes one or more ESP packets; the reader gets bytes only after their
packet authenticated, passed the anti-replay window and proved to be the next bytes of the
stream. Anything else aborts the connection: the reader raises
:class:`~secsock.errors.IPsecStreamError` (a ``ConnectionError``) whose ``reason`` is a
:class:`~secsock.errors.DropReason`. See docs/asyncio.md.
"""

from __future__ import annotations

import asyncio
import os
import socket as _stdlib_socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from secsock.asyncio._channel import SecureStreamConnection
from secsock.asyncio._info import IPsecInfo
from secsock.asyncio._policy import PolicyArg, socket_policies
from secsock.asyncio._protector import StreamSecurity, stream_policy
from secsock.asyncio._sockview import SocketView
from secsock.engine import EngineStore
from secsock.errors import IPsecStreamError
from secsock.sadb import default_sadb

__all__ = ("open_connection", "start_server")

_DEFAULT_LIMIT = 2**16

ClientConnectedCallback = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None
]


def _now() -> float:
    return time.time()


class _SecureStreamTransport(asyncio.Transport):
    """The transport the application protocol sees: plaintext in, whole ESP frames out."""

    def __init__(
        self,
        tcp: asyncio.Transport,
        outer: _SecureStreamProtocol,
        conn: SecureStreamConnection,
        extra: dict[str, Any],
    ) -> None:
        super().__init__(extra)
        self._tcp = tcp
        self._outer = outer
        self._conn = conn
        self._closing = False

    # -- writing -----------------------------------------------------------------------------

    def _check_writable(self) -> None:
        outer = self._outer
        if outer.lost or outer.error is not None:
            raise outer.error or ConnectionResetError("the secure stream's connection was lost")
        if self._closing or self._tcp.is_closing():
            raise ConnectionResetError("the secure stream is closing")
        if self._conn.eof_sent:
            raise BrokenPipeError("write() after write_eof() on a secure stream")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Seal ``data`` into whole frames and pass them all to TCP in one call.

        Raises (before anything is sent) if the connection was lost or aborted, or if the SADB
        refuses the send (NoSAError, SequenceOverflowError, ...).
        """
        self._check_writable()
        pieces = self._conn.send_pieces(data, now=_now())
        if pieces:
            # One call for all of them: asyncio joins them, uvloop hands them to writev.
            self._tcp.writelines(pieces)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Send the authenticated end-of-stream segment, then half-close TCP."""
        if self._conn.eof_sent:
            return
        self._check_writable()
        self._tcp.write(self._conn.send_eof(now=_now()))
        self._tcp.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._tcp.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._tcp.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._tcp.set_write_buffer_limits(high, low)

    # -- reading -----------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return self._tcp.is_reading()

    def pause_reading(self) -> None:
        self._tcp.pause_reading()

    def resume_reading(self) -> None:
        self._tcp.resume_reading()

    # -- lifetime ----------------------------------------------------------------------------

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._outer.app = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._outer.app

    def is_closing(self) -> bool:
        return self._closing or self._tcp.is_closing()

    def close(self) -> None:
        """Send the end-of-stream segment (if still possible), flush, close the connection."""
        if self._closing:
            return
        self._closing = True
        outer = self._outer
        if not outer.lost and outer.error is None and not self._tcp.is_closing():
            try:
                wire = self._conn.send_eof(now=_now())
            except OSError:
                wire = b""  # no SA any more: the peer will see a truncated stream
            if wire:
                self._tcp.write(wire)
        self._tcp.close()

    def abort(self) -> None:
        """Close at once; the peer sees the stream end without an end-of-stream segment."""
        self._closing = True
        self._tcp.abort()


Info = Callable[[StreamSecurity, SecureStreamConnection], dict[str, Any]]


class _SecureStreamProtocol(asyncio.Protocol):
    """The protocol on the TCP transport: frames in, plaintext out to the application."""

    def __init__(
        self,
        app: asyncio.BaseProtocol,
        make_security: Callable[[tuple[str, int], tuple[str, int]], StreamSecurity],
        *,
        initiator: bool,
        send_prefix: bool,
        require_prefix: bool,
        inner_checksum: bool,
    ) -> None:
        self.app = app
        self._make_security = make_security
        self._initiator = initiator
        self._send_prefix = send_prefix
        self._require_prefix = require_prefix
        self._inner_checksum = inner_checksum
        self._tcp: asyncio.Transport | None = None
        self.conn: SecureStreamConnection | None = None
        self.security: StreamSecurity | None = None
        self.app_transport: _SecureStreamTransport | None = None
        self.error: Exception | None = None
        self.setup_error: Exception | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport does not subclass asyncio.Transport; it has its methods.
        transport = cast(asyncio.Transport, transport)
        self._tcp = transport
        sockname = transport.get_extra_info("sockname")
        peername = transport.get_extra_info("peername")
        local = (str(sockname[0]), int(sockname[1]))
        peer = (str(peername[0]), int(peername[1]))
        try:
            security = self._make_security(local, peer)
            self.conn = SecureStreamConnection(
                security,
                local=local,
                peer=peer,
                initiator=self._initiator,
                send_prefix=self._send_prefix,
                require_prefix=self._require_prefix,
                inner_checksum=self._inner_checksum,
            )
        except (OSError, ValueError) as exc:  # a local error (no SA...): refuse the connection
            self.setup_error = exc
            transport.abort()
            return
        self.security = security
        sock = transport.get_extra_info("socket")
        extra: dict[str, Any] = {
            "sockname": sockname,
            "peername": peername,
            "socket": SocketView(getattr(sock, "_sock", sock)) if sock is not None else None,
            "ipsec": IPsecInfo(
                policies=lambda: security.policy.texts,
                outbound=lambda: security.last_out,
                inbound=lambda: security.last_in,
                stats=security.statistics,
            ),
        }
        self.app_transport = _SecureStreamTransport(transport, self, self.conn, extra)
        self.app.connection_made(self.app_transport)

    def _abort(self, error: IPsecStreamError) -> None:
        self.error = error
        if self._tcp is not None:
            self._tcp.abort()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None or self.error is not None:
            return
        payloads, error = conn.receive_data(data, now=_now())
        if payloads:
            app = self.app
            assert isinstance(app, asyncio.Protocol)
            if type(app) is asyncio.StreamReaderProtocol:
                # Its StreamReader copies what it is given (bytearray.extend), so it takes the
                # views of the decrypted frames as they are.
                for payload in payloads:
                    app.data_received(payload)  # type: ignore[arg-type]
            else:
                for payload in payloads:
                    app.data_received(bytes(payload))
        if error is not None:
            self._abort(error)

    def eof_received(self) -> bool | None:
        conn = self.conn
        if conn is None or self.error is not None:
            return None
        error = conn.receive_eof()
        if error is not None:
            self._abort(error)
            return None
        app = self.app
        assert isinstance(app, asyncio.Protocol)
        return app.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.conn is None:
            return
        if self.error is None:
            self.error = exc
        self.app.connection_lost(self.error)

    def pause_writing(self) -> None:
        self.app.pause_writing()

    def resume_writing(self) -> None:
        self.app.resume_writing()


class _Setup:
    """Checks the policy once and builds the StreamSecurity of each connection."""

    def __init__(
        self, policy: PolicyArg, sadb: EngineStore | None, rng: Callable[[int], bytes]
    ) -> None:
        self.sadb = sadb if sadb is not None else default_sadb()
        self.policy = stream_policy(socket_policies(policy, _stdlib_socket.AF_INET), self.sadb)
        self.rng = rng

    def __call__(self, local: tuple[str, int], peer: tuple[str, int]) -> StreamSecurity:
        return StreamSecurity(sadb=self.sadb, policy=self.policy, local=local, peer=peer,
                              rng=self.rng)


async def open_connection(
    host: str | None = None,
    port: int | str | None = None,
    *,
    policy: PolicyArg,
    sadb: EngineStore | None = None,
    limit: int = _DEFAULT_LIMIT,
    send_prefix: bool = True,
    inner_checksum: bool = False,
    rng: Callable[[int], bytes] = os.urandom,
    **kwds: Any,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a secure stream (ESP in RFC 8229 framing over TCP) to ``host``:``port``.

    Returns asyncio's own (StreamReader, StreamWriter). ``policy`` is the socket policy (text,
    buffer or Policy; one per direction, a missing direction mirrors the other) and must ask
    for ``esp/transport``. ``sadb`` defaults to the process-wide SADB. ``send_prefix`` sends
    the "IKETCP" stream prefix first (RFC 8229 §4). ``inner_checksum`` fills in the inner TCP
    checksum. ``rng`` supplies CBC IVs and random padding. Other keywords go to
    :meth:`asyncio.loop.create_connection`.

    Raises the policy errors of ``setsockopt`` (PolicyError, OSError) before connecting, and
    :class:`~secsock.errors.NoSAError` when no outbound SA exists for the connection's
    addresses (the connection is closed again).
    """
    if kwds.get("ssl") is not None:
        raise ValueError("a secure stream runs over plain TCP; ssl= is not supported")
    setup = _Setup(policy, sadb, rng)

    def make(local: tuple[str, int], peer: tuple[str, int]) -> StreamSecurity:
        security = setup(local, peer)
        security.select(now=_now())  # no SA: refuse now rather than at the first write
        return security

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    app = asyncio.StreamReaderProtocol(reader, loop=loop)

    def factory() -> _SecureStreamProtocol:
        return _SecureStreamProtocol(app, make, initiator=True, send_prefix=send_prefix,
                                     require_prefix=False, inner_checksum=inner_checksum)

    create: Callable[..., Awaitable[tuple[asyncio.BaseTransport, _SecureStreamProtocol]]] = (
        loop.create_connection
    )
    _, outer = await create(factory, host, port, **kwds)
    if outer.setup_error is not None:
        raise outer.setup_error
    assert outer.app_transport is not None
    writer = asyncio.StreamWriter(outer.app_transport, app, reader, loop)
    return reader, writer


async def start_server(
    client_connected_cb: ClientConnectedCallback,
    host: str | Iterable[str] | None = None,
    port: int | str | None = None,
    *,
    policy: PolicyArg,
    sadb: EngineStore | None = None,
    limit: int = _DEFAULT_LIMIT,
    require_prefix: bool = False,
    inner_checksum: bool = False,
    rng: Callable[[int], bytes] = os.urandom,
    **kwds: Any,
) -> asyncio.Server:
    """Start a secure stream server; ``client_connected_cb(reader, writer)`` per connection.

    Returns asyncio's own Server. ``policy``/``sadb``/``inner_checksum``/``rng`` as for
    :func:`open_connection`. The "IKETCP" prefix is accepted when present; with
    ``require_prefix`` a connection without it is aborted. Other keywords go to
    :meth:`asyncio.loop.create_server`. A connection whose outbound SA is missing is still
    accepted (it can read); its first write raises NoSAError.
    """
    if kwds.get("ssl") is not None:
        raise ValueError("a secure stream runs over plain TCP; ssl= is not supported")
    setup = _Setup(policy, sadb, rng)
    loop = asyncio.get_running_loop()

    def factory() -> _SecureStreamProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        app = asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)
        return _SecureStreamProtocol(app, setup, initiator=False, send_prefix=False,
                                     require_prefix=require_prefix,
                                     inner_checksum=inner_checksum)

    create: Callable[..., Awaitable[asyncio.Server]] = loop.create_server
    return await create(factory, host, port, **kwds)
