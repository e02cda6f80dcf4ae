"""A read-only view of a socket, handed out as ``get_extra_info("socket")``.

asyncio's own ``TransportSocket`` still offers ``fileno()``, ``dup()`` and ``shutdown()``, any of
which would let a caller send around IPsec. This view offers what code legitimately inspects
(family, type, addresses, options) and nothing that reads, writes or closes.
"""

from __future__ import annotations

import socket as _stdlib_socket
from typing import Any

__all__ = ("SocketView",)


class SocketView:
    """Read-only facts about the socket under a secure transport; it cannot send or close.

    ``sock`` is a ``socket.socket`` or anything shaped like one (uvloop's pseudo-socket).
    """

    __slots__ = ("_peername", "_sock", "_sockname")

    def __init__(
        self,
        sock: _stdlib_socket.socket | Any,
        *,
        sockname: Any = None,
        peername: Any = None,
    ) -> None:
        self._sock = sock
        self._sockname = sockname
        self._peername = peername

    @property
    def family(self) -> _stdlib_socket.AddressFamily:
        return _stdlib_socket.AddressFamily(self._sock.family)

    @property
    def type(self) -> _stdlib_socket.SocketKind:
        return _stdlib_socket.SocketKind(self._sock.type)

    @property
    def proto(self) -> int:
        return int(self._sock.proto)

    def getsockname(self) -> Any:
        """The local address the application sees."""
        if self._sockname is not None:
            return self._sockname
        return self._sock.getsockname()

    def getpeername(self) -> Any:
        """The peer address the application sees (OSError ENOTCONN if unconnected)."""
        if self._peername is not None:
            return self._peername
        return self._sock.getpeername()

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> int | bytes:
        """Read a socket option of the underlying socket."""
        if buflen is None:
            value: int | bytes = self._sock.getsockopt(level, optname)
        else:
            value = self._sock.getsockopt(level, optname, buflen)
        return value

    def gettimeout(self) -> float:
        return 0.0

    def __repr__(self) -> str:
        try:
            name = self.getsockname()
        except OSError:
            name = None
        return (
            f"<secsock SocketView family={self.family.name} type={self.type.name} "
            f"laddr={name!r}>"
        )
