"""``secsock.patch()`` / ``install()`` / ``uninstall()``: make ``socket.socket`` secure.

After ``install()``, ``socket.socket(AF_INET or AF_INET6, SOCK_DGRAM)`` -- called by the
program itself, by asyncio's ``create_datagram_endpoint`` or by any library that looks the
class up at call time -- returns a :class:`secsock.SecureSocket` governed by the SPD
and the system defaults (its socket policies start at ``entrust``). Every other socket (TCP,
UNIX, raw, ...) is the ordinary ``socket.socket``. ``isinstance(x, socket.socket)`` keeps
working for both kinds.

Code that bound the class before ``install()`` (``from socket import socket`` at import time,
subclasses such as ``ssl.SSLSocket``) keeps the original; ``secsock run`` installs before the
program is imported, so a program's own ``from socket import socket`` is covered.
"""

from __future__ import annotations

import contextlib
import socket as _stdlib_socket
import threading
from collections.abc import Iterator
from typing import Any, Final, Literal

from secsock._socket import SecureSocket
from secsock._transport import RealSocket
from secsock.engine import EngineStore
from secsock.sadb.spd import SPD

__all__ = ("install", "installed", "patch", "uninstall")

_ORIGINAL: Final = RealSocket
_TYPE_MASK: Final = ~(
    int(getattr(_stdlib_socket, "SOCK_NONBLOCK", 0)) | int(getattr(_stdlib_socket, "SOCK_CLOEXEC", 0))
)
_lock = threading.Lock()
_config: dict[str, Any] = {}


def _secure_kind(family: int, type: int, proto: int) -> bool:
    return (
        family in (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6)
        and type & _TYPE_MASK == _stdlib_socket.SOCK_DGRAM
        and proto in (0, _stdlib_socket.IPPROTO_UDP)
    )


class _SocketMeta(type):
    """Keeps ``isinstance``/``issubclass`` against the patched name meaning the real class."""

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, _ORIGINAL)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, _ORIGINAL)


class PatchedSocket(metaclass=_SocketMeta):
    """What ``socket.socket`` is while secsock is installed: a factory with the same signature."""

    def __new__(  # type: ignore[misc]
        cls,
        family: int = -1,
        type: int = -1,
        proto: int = -1,
        fileno: int | None = None,
    ) -> _stdlib_socket.socket:
        if fileno is None:
            fam = _stdlib_socket.AF_INET if family == -1 else family
            typ = _stdlib_socket.SOCK_STREAM if type == -1 else type
            prt = 0 if proto == -1 else proto
            if _secure_kind(fam, typ, prt):
                return SecureSocket(fam, typ, prt, **_config)
            return _ORIGINAL(family, type, proto)
        plain = _ORIGINAL(family, type, proto, fileno)
        if _secure_kind(plain.family, plain.type, plain.proto):
            fd = plain.detach()
            return SecureSocket(fileno=fd, **_config)
        return plain


def install(
    *,
    transport: Literal["udp", "raw"] = "udp",
    sadb: EngineStore | None = None,
    spd: SPD | None = None,
) -> None:
    """Replace ``socket.socket`` so UDP sockets become secure sockets (idempotent; a second
    call updates the options). ``transport``/``sadb``/``spd`` are passed to each socket."""
    with _lock:
        _config.clear()
        _config.update(transport=transport, sadb=sadb, spd=spd)
        _stdlib_socket.socket = PatchedSocket  # type: ignore[misc]


def uninstall() -> None:
    """Restore the original ``socket.socket`` (idempotent). Existing secure sockets stay
    secure."""
    with _lock:
        _stdlib_socket.socket = _ORIGINAL  # type: ignore[misc]
        _config.clear()


def installed() -> bool:
    """True while ``socket.socket`` is secsock's factory."""
    return _stdlib_socket.socket is PatchedSocket


@contextlib.contextmanager
def patch(
    *,
    transport: Literal["udp", "raw"] = "udp",
    sadb: EngineStore | None = None,
    spd: SPD | None = None,
) -> Iterator[None]:
    """``with secsock.patch(): ...`` -- :func:`install` for the block, then restore what was
    there before (a patch already installed stays installed, with its options)."""
    with _lock:
        was = installed()
        saved = dict(_config)
    install(transport=transport, sadb=sadb, spd=spd)
    try:
        yield
    finally:
        if was:
            with _lock:
                _config.clear()
                _config.update(saved)
        else:
            uninstall()
