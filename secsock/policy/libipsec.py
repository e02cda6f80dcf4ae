"""The C-shaped libipsec API: ipsec_set_policy(3), ipsec_get_policylen(3),
ipsec_dump_policy(3), ipsec_strerror(3), plus the kernel-side acceptance checks.

Thin wrappers over :mod:`secsock.policy.model`. Where C returns NULL and sets
``__ipsec_errcode``, these raise :class:`~secsock.errors.PolicyError` (with ``.code``) *and*
record the error for :func:`ipsec_strerror`; a successful call records "Success". The record is
per thread (libipsec's is a process global).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from secsock import constants as c
from secsock.errors import PolicyError
from secsock.policy._errors import policy_error, strerror
from secsock.policy.grammar import parse_policy
from secsock.policy.kernel import check_policy_buffer, check_socket_policy, check_spd_policy
from secsock.policy.model import Layout
from secsock.policy.wire import POLICY_HEADER, decode_policy, layout_spec

__all__ = (
    "check_policy_buffer",
    "check_socket_policy",
    "check_spd_policy",
    "ipsec_dump_policy",
    "ipsec_get_policylen",
    "ipsec_set_policy",
    "ipsec_strerror",
)


class _LastError(threading.local):
    code: int = c.EIPSEC_NO_ERROR
    message: str = strerror(c.EIPSEC_NO_ERROR)


_last = _LastError()


def _record(code: int, message: str | None = None) -> None:
    _last.code = code
    _last.message = message if message is not None else strerror(code)


def _failed(exc: PolicyError) -> PolicyError:
    _record(exc.code, exc.message)
    return exc


def ipsec_strerror() -> str:
    """The message of the calling thread's last libipsec call ("Success" if it succeeded)."""
    return _last.message


def ipsec_set_policy(
    text: str, layout: Layout = "bsd", *, ifindex: Callable[[str], int] | None = None
) -> bytes:
    """Parse policy text into the ``sadb_x_policy`` buffer to pass to ``setsockopt``.

    ``layout`` "bsd" (KAME/FreeBSD structs) or "linux". ``ifindex`` resolves interface names in
    ``%scope`` (e.g. ``socket.if_nametoindex``); without it only numeric scopes are accepted.
    Raises PolicyError (code, message, token, 1-based column).
    """
    try:
        layout_spec(layout)
        buf = parse_policy(text, ifindex=ifindex).encode(layout)
    except PolicyError as exc:
        raise _failed(exc) from None
    _record(c.EIPSEC_NO_ERROR)
    return buf


def ipsec_get_policylen(buf: bytes | None, layout: Layout = "bsd") -> int:
    """``sadb_x_policy_len * 8``: the length to pass to ``setsockopt``; -1 for None (C's NULL).

    The header is the same in both layouts. A buffer shorter than the 16-byte header raises
    PolicyError(EIPSEC_INVAL_SADBMSG).
    """
    if buf is None:
        return -1
    try:
        layout_spec(layout)
        if len(buf) < POLICY_HEADER.size:
            raise policy_error(
                c.EIPSEC_INVAL_SADBMSG,
                note=f"a policy buffer holds at least {POLICY_HEADER.size} bytes, "
                f"found {len(buf)}",
            )
    except PolicyError as exc:
        raise _failed(exc) from None
    _record(c.EIPSEC_NO_ERROR)
    plen: int = POLICY_HEADER.unpack_from(buf)[0]
    return plen * 8


def ipsec_dump_policy(buf: bytes, delimiter: str | None = None, layout: Layout = "bsd") -> str:
    """The text of a policy buffer, e.g. ``out ipsec esp/transport//require``.

    ``delimiter`` goes before each request (None means a space). Raises PolicyError with the
    checks of libipsec's dump (see :func:`secsock.policy.wire.decode_policy`).
    """
    try:
        policy = decode_policy(buf, layout)
    except PolicyError as exc:
        raise _failed(exc) from None
    _record(c.EIPSEC_NO_ERROR)
    return policy.to_text(" " if delimiter is None else delimiter)

