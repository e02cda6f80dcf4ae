"""The kernel's acceptance checks of a policy buffer, raising OSError with the kernel's errno.

:func:`check_policy_buffer` is KAME's ``key_msg2sp()`` (plus a direction check);
:func:`check_socket_policy` adds the per-socket rules of ``ipsec4_set_policy()`` /
``ipsec_set_policy()`` (the ``setsockopt(IP_IPSEC_POLICY)`` path); :func:`check_spd_policy` adds
``key_spdadd()``'s rules (the ``setkey spdadd`` path). All return the :class:`Policy` the kernel
would store: requests of non-IPSEC policies dropped, the reqid of non-``unique`` requests 0, and a
``unique`` reqid above IPSEC_MANUAL_REQID_MAX reset to 0 (to be auto-allocated by the SADB layer,
as ``key_newreqid()`` does).

The checks apply KAME semantics in both layouts; the layout only changes the structures read.
Unlike libipsec's dump, the kernel does not look at ``sadb_x_policy_exttype``.
"""

from __future__ import annotations

import errno
from typing import Final

from secsock import constants as c
from secsock.policy.model import (
    Action,
    Direction,
    Layout,
    Level,
    Mode,
    Policy,
    Protocol,
    Request,
)
from secsock.policy.wire import POLICY_HEADER, _request, layout_spec, read_sockaddr

__all__ = ("check_policy_buffer", "check_socket_policy", "check_spd_policy")

#: sizeof(struct sockaddr_storage): the kernel's limit on a request sockaddr's sa_len
_SOCKADDR_STORAGE: Final = 128


def _einval(why: str) -> OSError:
    return OSError(errno.EINVAL, f"Invalid argument: {why}")


def _header(buf: bytes) -> tuple[int, int, int, int]:
    """(sadb_x_policy_len * 8, type, dir, priority); EINVAL when shorter than the header."""
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise TypeError(f"a policy buffer must be bytes, found {type(buf).__name__}")
    if len(buf) < POLICY_HEADER.size:
        raise _einval(
            f"a policy buffer holds at least {POLICY_HEADER.size} bytes, found {len(buf)}"
        )
    plen, _exttype, ptype, pdir, _scope, _pid, priority = POLICY_HEADER.unpack_from(buf)
    return plen * 8, ptype, pdir, priority


def _msg2sp(buf: bytes, layout: Layout) -> Policy:
    """key_msg2sp(): the caller has checked the header size and the direction."""
    spec = layout_spec(layout)
    buf = bytes(buf)
    extlen, ptype, pdir, priority = _header(buf)
    if extlen != len(buf):
        raise _einval(f"sadb_x_policy_len * 8 must equal the option length {len(buf)}, "
                      f"found {extlen}")
    if ptype not in Action._value2member_map_:
        raise _einval(f"policy type must be 0-4 (discard..bypass), found {ptype}")
    direction, action = Direction(pdir), Action(ptype)
    if action is not Action.IPSEC:
        return Policy(direction=direction, action=action, priority=priority)

    hsize = spec.request.size
    requests: list[Request] = []
    off = POLICY_HEADER.size
    while off < extlen:
        where = f"request {len(requests) + 1} (offset {off})"
        if extlen - off < hsize:
            raise _einval(f"{where}: {hsize} header bytes needed, {extlen - off} left")
        rlen, proto, mode, level, reqid = spec.unpack_request(buf, off)
        if rlen < hsize:
            raise _einval(f"{where}: length must be at least {hsize}, found {rlen}")
        if proto not in Protocol._value2member_map_:
            raise OSError(
                errno.EPROTONOSUPPORT,
                f"Protocol not supported: {where}: proto must be esp (50), ah (51) or "
                f"ipcomp (108), found {proto}",
            )
        if mode not in (Mode.TRANSPORT, Mode.TUNNEL):
            raise _einval(f"{where}: mode must be transport (1) or tunnel (2), found {mode}")
        if level not in Level._value2member_map_:
            raise _einval(f"{where}: level must be 0-3 (default..unique), found {level}")
        if level != Level.UNIQUE or reqid > c.IPSEC_MANUAL_REQID_MAX:
            reqid = 0  # kept only for unique; out-of-range manual reqids are re-allocated
        end = off + rlen
        if end > extlen:
            raise _einval(f"{where}: length {rlen} runs past the end of the policy")
        src = dst = None
        if rlen > hsize:
            first = off + hsize
            if spec.sa_len and buf[first] > _SOCKADDR_STORAGE:
                raise _einval(f"{where}: sa_len {buf[first]} exceeds {_SOCKADDR_STORAGE}")
            src = read_sockaddr(spec, buf, first, end)
            dst = read_sockaddr(spec, buf, first + src.size, end) if src else None
            if src is None or dst is None:
                raise _einval(f"{where}: the address bytes must start with two AF_INET/"
                              f"AF_INET6 sockaddrs of the {spec.name} layout")
        requests.append(_request(proto, mode, level, reqid, src, dst))
        off = end
    return Policy(direction=direction, action=action, requests=tuple(requests), priority=priority)


def check_policy_buffer(buf: bytes, layout: Layout = "bsd") -> Policy:
    """key_msg2sp()'s checks, for any policy type; direction must be in, out or fwd.

    EINVAL: shorter than 16 bytes, ``sadb_x_policy_len * 8 != len(buf)``, direction not 1-3,
    type not 0-4, a request shorter than its header or running past the end, mode not
    transport/tunnel, level not 0-3, unreadable sockaddrs. EPROTONOSUPPORT: proto not
    esp/ah/ipcomp. A bad ``layout`` is PolicyError (a ValueError).
    """
    layout_spec(layout)
    _, _, pdir, _ = _header(buf)
    if pdir not in (Direction.INBOUND, Direction.OUTBOUND, Direction.FWD):
        raise _einval(f"direction must be in (1), out (2) or fwd (3), found {pdir}")
    return _msg2sp(buf, layout)


def check_socket_policy(
    buf: bytes, family: int, layout: Layout = "bsd", *, privileged: bool = True
) -> Policy:
    """KAME's per-socket acceptance of ``setsockopt(IP_IPSEC_POLICY / IPV6_IPSEC_POLICY)``.

    ``family`` is the socket's address family (AF_INET, or the platform's AF_INET6 as the
    ``socket`` module gives it); any other is EOPNOTSUPP. Then, in KAME's order: shorter than 16
    bytes EINVAL; direction not in/out (fwd included) EINVAL; type discard/none EINVAL; bypass
    on an unprivileged socket (``privileged=False``) EACCES; then :func:`check_policy_buffer`'s
    key_msg2sp() checks. Request addresses are not compared with ``family`` (KAME does not).
    """
    layout_spec(layout)
    if family not in (c.AF_INET, c.AF_INET6):
        raise OSError(
            errno.EOPNOTSUPP,
            f"Operation not supported: socket family must be AF_INET ({c.AF_INET}) or "
            f"AF_INET6 ({c.AF_INET6}), found {family}",
        )
    _, ptype, pdir, _ = _header(buf)
    if pdir not in (Direction.INBOUND, Direction.OUTBOUND):
        raise _einval(f"a socket policy's direction must be in (1) or out (2), found {pdir}")
    if ptype in (Action.DISCARD, Action.NONE):
        raise _einval(
            f"a socket policy must be ipsec, entrust or bypass, found "
            f"{Action(ptype).keyword}"
        )
    if ptype == Action.BYPASS and not privileged:
        raise OSError(errno.EACCES, "Permission denied: bypass needs a privileged socket")
    return _msg2sp(buf, layout)


def check_spd_policy(buf: bytes, layout: Layout = "bsd") -> Policy:
    """key_spdadd()'s policy checks (``setkey spdadd``): direction in, out or fwd; type discard,
    none or ipsec (entrust/bypass EINVAL); ipsec needs at least one request (EINVAL); then
    key_msg2sp(); finally a request whose src and dst families differ is EINVAL (FreeBSD checks
    the first request; secsock checks all)."""
    layout_spec(layout)
    extlen, ptype, pdir, _ = _header(buf)
    if pdir not in (Direction.INBOUND, Direction.OUTBOUND, Direction.FWD):
        raise _einval(f"direction must be in (1), out (2) or fwd (3), found {pdir}")
    if ptype in (Action.ENTRUST, Action.BYPASS):
        raise _einval(f"an SPD policy must be discard, none or ipsec, found "
                      f"{Action(ptype).keyword}")
    if ptype == Action.IPSEC and extlen <= POLICY_HEADER.size:
        raise _einval("an ipsec policy in the SPD needs at least one request, found none")
    policy = _msg2sp(buf, layout)
    for i, req in enumerate(policy.requests, 1):
        if req.src is not None and req.dst is not None and req.src.version != req.dst.version:
            raise _einval(f"request {i}: src is IPv{req.src.version} but dst is "
                          f"IPv{req.dst.version}")
    return policy
