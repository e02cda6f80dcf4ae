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

uvloop's ``create_datagram_endpoint`` opens libuv sockets and never calls ``socket.socket``
(and with ``sock=`` it writes to the descriptor itself), so while installed,
``uvloop.Loop.create_datagram_endpoint`` is :func:`secsock.asyncio.create_datagram_endpoint`
with the installed options and ``entrust`` policies; ``sock=`` a secure socket becomes an
endpoint with that socket's engine. Other event loops are covered only if they create their
sockets through ``socket.socket``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket as _stdlib_socket
import threading
from collections.abc import Callable, Iterator
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
_UNSET: Final = object()
# uvloop.Loop while its create_datagram_endpoint is secsock's, and what it had before
_uvloop_class: type | None = None
_uvloop_original: Callable[..., Any] | None = None
_uvloop_own: object = None
_METHOD: Final = "create_datagram_endpoint"


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
        _route_uvloop()


def uninstall() -> None:
    """Restore the original ``socket.socket`` (and uvloop's ``create_datagram_endpoint``)
    (idempotent). Existing secure sockets and endpoints stay secure."""
    with _lock:
        _stdlib_socket.socket = _ORIGINAL  # type: ignore[misc]
        _config.clear()
        _unroute_uvloop()


# --- uvloop -------------------------------------------------------------------------------------


async def _uvloop_datagram_endpoint(
    self: asyncio.AbstractEventLoop,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    local_addr: tuple[str, int] | None = None,
    remote_addr: tuple[str, int] | None = None,
    *,
    family: int = 0,
    proto: int = 0,
    flags: int = 0,
    reuse_address: object = _UNSET,
    reuse_port: bool | None = None,
    allow_broadcast: bool | None = None,
    sock: _stdlib_socket.socket | None = None,
) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
    """``uvloop.Loop.create_datagram_endpoint`` while secsock is installed: UDP endpoints are
    secsock.asyncio's (libuv's would never see the patched ``socket.socket``)."""
    from secsock.asyncio.datagram import adopt_socket, open_endpoint

    original = _uvloop_original
    assert original is not None
    with _lock:
        config = dict(_config)
    if sock is not None:
        if not isinstance(sock, SecureSocket):  # not UDP, or made before install(): as is
            return await original(self, protocol_factory, local_addr, remote_addr,  # type: ignore[no-any-return]
                                  family=family, proto=proto, flags=flags,
                                  reuse_address=reuse_address, reuse_port=reuse_port,
                                  allow_broadcast=allow_broadcast, sock=sock)
        given = {"local_addr": local_addr, "remote_addr": remote_addr, "family": family,
                 "proto": proto, "flags": flags, "reuse_port": reuse_port,
                 "allow_broadcast": allow_broadcast}
        problems = ", ".join(f"{k}={v}" for k, v in given.items() if v)
        if problems:
            raise ValueError(
                f"socket modifier keyword arguments can not be used when sock is specified. "
                f"({problems})"
            )
        return await adopt_socket(self, protocol_factory, sock)
    if family not in (0, _stdlib_socket.AF_INET, _stdlib_socket.AF_INET6) or proto not in (
        0, _stdlib_socket.IPPROTO_UDP
    ):  # other families and protocols are not secsock's, as for socket.socket
        return await original(self, protocol_factory, local_addr, remote_addr,  # type: ignore[no-any-return]
                              family=family, proto=proto, flags=flags,
                              reuse_address=reuse_address, reuse_port=reuse_port,
                              allow_broadcast=allow_broadcast, sock=sock)
    if reuse_address is not _UNSET and reuse_address:
        raise ValueError("Passing `reuse_address=True` is no longer supported, as the usage of "
                         "SO_REUSEPORT in UDP poses a significant security concern.")
    return await open_endpoint(
        self, protocol_factory, local_addr, remote_addr, family=family, flags=flags,
        sadb=config.get("sadb"), spd=config.get("spd"),
        transport=config.get("transport", "udp"), reuse_port=reuse_port,
        allow_broadcast=allow_broadcast,
    )


def _route_uvloop() -> None:
    """Point ``uvloop.Loop.create_datagram_endpoint`` at secsock (if uvloop is installed)."""
    global _uvloop_class, _uvloop_original, _uvloop_own
    if _uvloop_class is not None:
        return
    try:
        import uvloop
    except ImportError:
        return
    cls: type = uvloop.Loop
    _uvloop_original = getattr(cls, _METHOD)
    _uvloop_own = cls.__dict__.get(_METHOD)  # None: inherited from the Cython base
    _uvloop_class = cls
    setattr(cls, _METHOD, _uvloop_datagram_endpoint)


def _unroute_uvloop() -> None:
    global _uvloop_class, _uvloop_original, _uvloop_own
    cls = _uvloop_class
    if cls is None:
        return
    if cls.__dict__.get(_METHOD) is _uvloop_datagram_endpoint:
        if _uvloop_own is None:
            delattr(cls, _METHOD)
        else:
            setattr(cls, _METHOD, _uvloop_own)
    _uvloop_class = _uvloop_original = _uvloop_own = None


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
