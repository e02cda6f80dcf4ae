"""Model <-> ``sadb_x_policy`` buffers (what ``setsockopt(IP_IPSEC_POLICY)`` carries).

Layout "bsd" is KAME/FreeBSD's: a 16-byte ``sadb_x_policy`` followed, per request, by an 8-byte
``sadb_x_ipsecrequest`` and the src/dst ``sockaddr``s (``sa_len`` first, AF_INET6 = 28). Layout
"linux" uses Linux's 16-byte packed ``sadb_x_ipsecrequest`` (u32 reqid) and Linux sockaddrs (u16
family, AF_INET6 = 10, no length byte). Host-order fields use the machine's native byte order, as
the C code does; ports, addresses and flowinfo are in network order, ``sin6_scope_id`` is host
order. No padding is inserted: request length = header + both sockaddrs, and
``sadb_x_policy_len`` = total bytes / 8 (every request size is a multiple of 8).

:func:`decode_policy` applies ipsec_dump_policy(3)'s checks and raises only PolicyError. The
kernel's acceptance checks (errno-valued) are in :mod:`secsock.policy.kernel`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

from secsock import constants as c
from secsock.errors import PolicyError
from secsock.policy._errors import policy_error
from secsock.policy.model import (
    Action,
    Address,
    Direction,
    Layout,
    Level,
    Mode,
    Policy,
    Protocol,
    Request,
)

__all__ = (
    "LAYOUTS",
    "POLICY_HEADER",
    "LayoutSpec",
    "Sockaddr",
    "decode_policy",
    "encode_policy",
    "encode_sockaddr",
    "layout_spec",
    "read_sockaddr",
)

#: ``struct sadb_x_policy``: len (8-octet units), exttype, type, dir, reserved/scope, id,
#: reserved2/priority. Identical in both layouts.
POLICY_HEADER: Final = struct.Struct("=HHHBBII")

_PORT_ADDR4 = struct.Struct("!H4s8x")  # sin_port, sin_addr, sin_zero
_PORT_ADDR6 = struct.Struct("!HI16s")  # sin6_port, sin6_flowinfo, sin6_addr
_U32_HOST = struct.Struct("=I")  # sin6_scope_id
_U16_HOST = struct.Struct("=H")  # Linux sa_family
_SIN_LEN: Final = 16
_SIN6_LEN: Final = 28


@dataclass(frozen=True, slots=True)
class LayoutSpec:
    """What differs between the two layouts."""

    name: str
    #: ``struct sadb_x_ipsecrequest``
    request: struct.Struct
    #: AF_INET6 as written in that layout's sockaddrs
    af_inet6: int
    #: True when sockaddrs start with ``sa_len`` (BSD)
    sa_len: bool
    #: the largest reqid the request header can hold
    reqid_max: int

    def pack_request(self, length: int, req: Request) -> bytes:
        if self.sa_len:
            return self.request.pack(length, req.proto, req.mode, req.level, req.reqid)
        return self.request.pack(length, req.proto, req.mode, req.level, 0, req.reqid, 0)

    def unpack_request(self, buf: bytes, off: int) -> tuple[int, int, int, int, int]:
        """(len, proto, mode, level, reqid); the caller guarantees the header fits."""
        if self.sa_len:
            length, proto, mode, level, reqid = self.request.unpack_from(buf, off)
        else:
            length, proto, mode, level, _r1, reqid, _r2 = self.request.unpack_from(buf, off)
        return length, proto, mode, level, reqid


LAYOUTS: Final = {
    "bsd": LayoutSpec("bsd", struct.Struct("=HHBBH"), 28, True, 0xFFFF),
    "linux": LayoutSpec("linux", struct.Struct("=HHBBHII"), 10, False, 0xFFFFFFFF),
}


def layout_spec(layout: object) -> LayoutSpec:
    """The spec of a layout name; anything else is PolicyError(EIPSEC_INVAL_ARGUMENT)."""
    spec = LAYOUTS.get(layout) if isinstance(layout, str) else None
    if spec is None:
        raise policy_error(
            c.EIPSEC_INVAL_ARGUMENT, note=f"layout must be 'bsd' or 'linux', found {layout!r}"
        )
    return spec


# --- sockaddrs --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Sockaddr:
    """A decoded sockaddr_in/sockaddr_in6 and the bytes it took."""

    address: Address
    port: int
    scope_id: int
    size: int


def encode_sockaddr(spec: LayoutSpec, addr: Address, port: int, scope_id: int) -> bytes:
    """One sockaddr in the layout's form (no padding)."""
    if isinstance(addr, ipaddress.IPv4Address):
        head = bytes((_SIN_LEN, 2)) if spec.sa_len else _U16_HOST.pack(2)
        return head + _PORT_ADDR4.pack(port, addr.packed)
    head = bytes((_SIN6_LEN, spec.af_inet6)) if spec.sa_len else _U16_HOST.pack(spec.af_inet6)
    return head + _PORT_ADDR6.pack(port, 0, addr.packed) + _U32_HOST.pack(scope_id)


def read_sockaddr(spec: LayoutSpec, buf: bytes, off: int, limit: int) -> Sockaddr | None:
    """Read an AF_INET/AF_INET6 sockaddr at ``off`` that must end by ``limit``.

    None when the bytes are not one (unknown family, wrong ``sa_len``, too short). Flowinfo and
    sin_zero are not kept.
    """
    if limit > len(buf) or limit - off < 2:
        return None
    if spec.sa_len:
        sa_len, family = buf[off], buf[off + 1]
        size = _SIN_LEN if family == 2 else _SIN6_LEN if family == spec.af_inet6 else -1
        if sa_len != size:
            return None
    else:
        (family,) = _U16_HOST.unpack_from(buf, off)
        size = _SIN_LEN if family == 2 else _SIN6_LEN if family == spec.af_inet6 else -1
        if size < 0:
            return None
    if off + size > limit:
        return None
    if size == _SIN_LEN:
        port, raw4 = _PORT_ADDR4.unpack_from(buf, off + 2)
        return Sockaddr(ipaddress.IPv4Address(raw4), port, 0, size)
    port, _flowinfo, raw6 = _PORT_ADDR6.unpack_from(buf, off + 2)
    (scope_id,) = _U32_HOST.unpack_from(buf, off + 24)
    return Sockaddr(ipaddress.IPv6Address(raw6), port, scope_id, size)


# --- encode -----------------------------------------------------------------------------------
def encode_policy(policy: Policy, layout: Layout = "bsd") -> bytes:
    """The buffer ipsec_set_policy(3) builds for ``policy``.

    Requests are written whatever the action (the parser does so too; the kernel and the dump
    ignore them unless the action is IPSEC). ``sadb_x_policy_len`` is total // 8, truncating as
    ``PFKEY_UNIT64`` does: only a non-IPSEC policy with a mixed-family request can have a total
    that is not a multiple of 8, and then ``ipsec_get_policylen()`` is less than ``len(buf)``.
    Raises PolicyError when a value does not fit the layout (a reqid above 0xffff in "bsd"), an
    IPSEC request mixes families (EIPSEC_FAMILY_MISMATCH, as rule_check() would) or the policy
    exceeds ``sadb_x_policy_len``.
    """
    spec = layout_spec(layout)
    parts: list[bytes] = []
    total = POLICY_HEADER.size
    for i, req in enumerate(policy.requests, 1):
        if req.reqid > spec.reqid_max:
            raise policy_error(
                c.EIPSEC_INVAL_LEVEL,
                note=f"request {i}: reqid must be at most {spec.reqid_max} in the "
                f"{spec.name} layout, found {req.reqid}",
            )
        addrs = b""
        if req.src is not None and req.dst is not None:
            if policy.action is Action.IPSEC and req.src.version != req.dst.version:
                raise policy_error(
                    c.EIPSEC_FAMILY_MISMATCH,
                    note=f"request {i}: expected src and dst of one family, found "
                    f"IPv{req.src.version} and IPv{req.dst.version}",
                )
            addrs = encode_sockaddr(spec, req.src, req.src_port, req.src_scope_id)
            addrs += encode_sockaddr(spec, req.dst, req.dst_port, req.dst_scope_id)
        length = spec.request.size + len(addrs)
        parts.append(spec.pack_request(length, req))
        parts.append(addrs)
        total += length
    if total // 8 > 0xFFFF:
        raise policy_error(
            c.EIPSEC_INVAL_ARGUMENT,
            note=f"a policy holds at most {0xFFFF * 8} bytes, this one needs {total}",
        )
    header = POLICY_HEADER.pack(
        total // 8, c.SADB_X_EXT_POLICY, policy.action, policy.direction, 0, 0, policy.priority
    )
    return header + b"".join(parts)


# --- decode (ipsec_dump_policy's checks) ------------------------------------------------------
def _bad(code: int, note: str) -> PolicyError:
    return policy_error(code, note=note)


def decode_policy(buf: bytes, layout: Layout = "bsd") -> Policy:
    """Read a policy buffer with ipsec_dump_policy(3)'s checks, in its order.

    Raises only PolicyError: EIPSEC_INVAL_SADBMSG (lengths), EIPSEC_INVAL_EXTTYPE,
    EIPSEC_INVAL_DIR, EIPSEC_INVAL_POLICY, EIPSEC_INVAL_PROTO, EIPSEC_INVAL_MODE,
    EIPSEC_INVAL_ADDRESS, EIPSEC_INVAL_LEVEL. Bytes after ``sadb_x_policy_len * 8`` are ignored,
    and so are the requests of a non-IPSEC policy (as the dump and the kernel do).
    """
    spec = layout_spec(layout)
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise _bad(c.EIPSEC_INVAL_ARGUMENT, f"a policy buffer must be bytes, found {buf!r}")
    buf = bytes(buf)
    if len(buf) < POLICY_HEADER.size:
        raise _bad(
            c.EIPSEC_INVAL_SADBMSG,
            f"a policy buffer holds at least {POLICY_HEADER.size} bytes, found {len(buf)}",
        )
    plen, exttype, ptype, pdir, _scope, _pid, priority = POLICY_HEADER.unpack_from(buf)
    if exttype != c.SADB_X_EXT_POLICY:
        raise _bad(
            c.EIPSEC_INVAL_EXTTYPE,
            f"sadb_x_policy_exttype must be {c.SADB_X_EXT_POLICY}, found {exttype}",
        )
    if pdir not in Direction._value2member_map_:
        raise _bad(c.EIPSEC_INVAL_DIR, f"sadb_x_policy_dir must be 0-3, found {pdir}")
    if ptype not in Action._value2member_map_:
        raise _bad(c.EIPSEC_INVAL_POLICY, f"sadb_x_policy_type must be 0-4, found {ptype}")
    direction, action = Direction(pdir), Action(ptype)
    if action is not Action.IPSEC:
        return Policy(direction=direction, action=action, priority=priority)

    extlen = plen * 8
    if not POLICY_HEADER.size <= extlen <= len(buf):
        raise _bad(
            c.EIPSEC_INVAL_SADBMSG,
            f"sadb_x_policy_len * 8 must be between {POLICY_HEADER.size} and the buffer "
            f"length {len(buf)}, found {extlen}",
        )
    hsize = spec.request.size
    offsets: list[int] = []
    off = POLICY_HEADER.size
    while off < extlen:
        if extlen - off < hsize:
            raise _bad(
                c.EIPSEC_INVAL_SADBMSG,
                f"request at offset {off}: {hsize} header bytes needed, {extlen - off} left",
            )
        (rlen,) = _U16_HOST.unpack_from(buf, off)
        if rlen < hsize:
            raise _bad(
                c.EIPSEC_INVAL_SADBMSG,
                f"request at offset {off}: length must be at least {hsize}, found {rlen}",
            )
        offsets.append(off)
        off += rlen
    if off != extlen:
        raise _bad(
            c.EIPSEC_INVAL_SADBMSG,
            f"request lengths must add up to sadb_x_policy_len * 8 = {extlen}, found {off}",
        )

    requests: list[Request] = []
    for off in offsets:
        rlen, proto, mode, level, reqid = spec.unpack_request(buf, off)
        where = f"request at offset {off}"
        if proto not in Protocol._value2member_map_:
            raise _bad(c.EIPSEC_INVAL_PROTO, f"{where}: proto must be 50, 51 or 108, found {proto}")
        if mode not in Mode._value2member_map_:
            raise _bad(c.EIPSEC_INVAL_MODE, f"{where}: mode must be 0-2, found {mode}")
        src = dst = None
        if rlen > hsize:
            end = off + rlen
            src = read_sockaddr(spec, buf, off + hsize, end)
            dst = read_sockaddr(spec, buf, off + hsize + src.size, end) if src else None
            if src is None or dst is None or hsize + src.size + dst.size != rlen:
                raise _bad(
                    c.EIPSEC_INVAL_ADDRESS,
                    f"{where}: {rlen - hsize} address bytes must be exactly two AF_INET/"
                    f"AF_INET6 sockaddrs of the {spec.name} layout",
                )
        if level not in Level._value2member_map_:
            raise _bad(c.EIPSEC_INVAL_LEVEL, f"{where}: level must be 0-3, found {level}")
        requests.append(_request(proto, mode, level, reqid, src, dst))
    return Policy(direction=direction, action=action, requests=tuple(requests), priority=priority)


def _request(
    proto: int, mode: int, level: int, reqid: int, src: Sockaddr | None, dst: Sockaddr | None
) -> Request:
    if src is None or dst is None:
        return Request(proto=Protocol(proto), mode=Mode(mode), level=Level(level), reqid=reqid)
    return Request(
        proto=Protocol(proto),
        mode=Mode(mode),
        level=Level(level),
        reqid=reqid,
        src=src.address,
        dst=dst.address,
        src_port=src.port,
        dst_port=dst.port,
        src_scope_id=src.scope_id,
        dst_scope_id=dst.scope_id,
    )
