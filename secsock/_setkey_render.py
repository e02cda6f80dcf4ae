"""``setkey -D`` and ``setkey -DP`` text for SADB records and SPD entries (FreeBSD's
libipsec pfkey_sadump()/pfkey_spdump(), IPSEC-REFERENCE §2.5-2.6).

Deliberate differences: keys are printed only with ``show_keys=True`` (otherwise
``(key hidden)``), times are UTC (setkey uses local time), and the SPD dump omits the
lifetime lines (secsock's SPD entries have no lifetimes). docs/setkey.md lists them all.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

from secsock.policy.grammar import format_address, format_policy
from secsock.sadb.model import LarvalSA, SAState
from secsock.sadb.spd import ULPROTO_ANY, SPDEntry
from secsock.sadb.store import SARecord

__all__ = (
    "PROTOCOL_NAMES",
    "ctime20",
    "hexdump",
    "render_sa",
    "render_sa_dump",
    "render_sp",
    "render_spd_dump",
    "upper_name",
)

_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

#: Upper-layer protocol names, as FreeBSD's /etc/protocols spells them for getprotobynumber().
PROTOCOL_NAMES: Final[dict[int, str]] = {
    0: "ip",
    1: "icmp",
    2: "igmp",
    6: "tcp",
    17: "udp",
    41: "ipv6",
    47: "gre",
    50: "esp",
    51: "ah",
    103: "pim",
    108: "ipcomp",
    132: "sctp",
    136: "udplite",
}


def ctime20(t: float) -> str:
    """``ctime(3) + 4``, 20 characters (``Jan  1 00:00:00 2024``), in UTC; 20 spaces for 0."""
    if t == 0:
        return " " * 20
    tm = time.gmtime(int(t))
    return (
        f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:{tm.tm_min:02d}:"
        f"{tm.tm_sec:02d} {tm.tm_year}"
    )


def hexdump(data: bytes) -> str:
    """libipsec's ipsec_hexdump(): `` xxxxxxxx`` per 4 bytes, a newline every 32 bytes."""
    parts: list[str] = []
    for i, b in enumerate(data):
        if i and i % 32 == 0:
            parts.append("\n")
        if i % 4 == 0:
            parts.append(" ")
        parts.append(f"{b:02x}")
    return "".join(parts)


def _key_text(key: bytes, show_keys: bool) -> str:
    if not key or show_keys:
        return hexdump(key)
    return "(key hidden)"


def render_sa(
    record: SARecord, *, now: float, sadb_seq: int, pid: int, show_keys: bool = False
) -> str:
    """One SA in ``setkey -D`` form (FreeBSD pfkey_sadump; LIFETIME_CURRENT always present)."""
    sa = record.sa
    st = record.status
    lines: list[str] = []
    src = format_address(sa.src)
    dst = format_address(sa.dst)
    if isinstance(sa, LarvalSA):
        satype = sa.proto.setkey_name
        lines.append(f"{src} {dst}")
        replay = flags = 0
        soft_add = hard_add = soft_bytes = hard_bytes = 0
    else:
        satype = sa.satype_name
        if sa.natt:
            lines.append(f"{src}[{sa.natt_sport}] {dst}[{sa.natt_dport}]")
        else:
            lines.append(f"{src} {dst}")
        replay, flags = sa.replay, sa.flags
        soft_add, hard_add = sa.soft.addtime, sa.hard.addtime
        soft_bytes, hard_bytes = sa.soft.bytes, sa.hard.bytes
    mode = sa.mode.name.lower()
    lines.append(
        f"\t{satype} mode={mode} spi={sa.spi}(0x{sa.spi:08x}) reqid={sa.reqid}(0x{sa.reqid:08x})"
    )
    if not isinstance(sa, LarvalSA):
        if sa.enc is not None:
            lines.append(f"\tE: {sa.enc} {_key_text(sa.enc_key, show_keys)}")
        if sa.auth is not None:
            lines.append(f"\tA: {sa.auth} {_key_text(sa.auth_key, show_keys)}")
    seq = max(st.seq, st.replay_top) & 0xFFFFFFFF
    state = st.state.name.lower() if st.state is not SAState.DEAD else "dead"
    lines.append(f"\tseq=0x{seq:08x} replay={replay} flags=0x{flags:08x} state={state} ")
    diff = 0 if st.created == 0 else max(0, int(now) - int(st.created))
    lines.append(f"\tcreated: {ctime20(st.created)}\tcurrent: {ctime20(now)}")
    lines.append(f"\tdiff: {diff}(s)\thard: {hard_add}(s)\tsoft: {soft_add}(s)")
    last = st.first_used if st.first_used is not None else 0
    lines.append(f"\tlast: {ctime20(last)}\thard: 0(s)\tsoft: 0(s)")
    lines.append(f"\tcurrent: {st.bytes}(bytes)\thard: {hard_bytes}(bytes)\tsoft: {soft_bytes}(bytes)")
    lines.append(f"\tallocated: {st.packets}\thard: 0\tsoft: 0")
    lines.append(f"\tsadb_seq={sadb_seq} pid={pid} refcnt=1")
    return "\n".join(lines) + "\n"


def render_sa_dump(
    records: Sequence[SARecord], *, now: float, pid: int, show_keys: bool = False
) -> str:
    """``setkey -D``: every record, ``sadb_seq`` counting down to 0; or ``No SAD entries.``"""
    if not records:
        return "No SAD entries.\n"
    n = len(records)
    return "".join(
        render_sa(r, now=now, sadb_seq=n - 1 - i, pid=pid, show_keys=show_keys)
        for i, r in enumerate(records)
    )


def upper_name(ul_proto: int) -> str:
    """The upper-layer protocol word of an SPD dump (FreeBSD str_upperspec, without ICMP)."""
    if ul_proto == ULPROTO_ANY:
        return "any"
    if ul_proto == 58:
        return "icmp6"
    if ul_proto == 4:
        return "ip4"
    return PROTOCOL_NAMES.get(ul_proto, str(ul_proto))


def _prefport(prefixlen: int, full: int, port: int, ul_proto: int) -> str:
    pref = "" if prefixlen == full else f"/{prefixlen}"
    if ul_proto == 58:
        return pref
    return pref + ("[any]" if port == 0 else f"[{port}]")


def render_sp(entry: SPDEntry, *, seq: int, pid: int) -> str:
    """One SPD entry in ``setkey -DP`` form (FreeBSD pfkey_spdump)."""
    sel = entry.selector
    full = 32 if sel.src.version == 4 else 128
    src = format_address(sel.src.network_address) + _prefport(
        sel.src.prefixlen, full, sel.sport, sel.ul_proto
    )
    dst = format_address(sel.dst.network_address) + _prefport(
        sel.dst.prefixlen, full, sel.dport, sel.ul_proto
    )
    upper = upper_name(sel.ul_proto)
    if sel.ul_proto == 58 and (sel.sport or sel.dport):
        upper += f" {sel.sport},{sel.dport}"
    return (
        f"{src} {dst} {upper}\n"
        f"\t{format_policy(entry.policy, chr(10) + chr(9))}\n"
        f"\tspid={entry.spid} seq={seq} pid={pid} scope=global \n"
        "\trefcnt=1\n"
    )


def render_spd_dump(entries: Sequence[SPDEntry], *, pid: int) -> str:
    """``setkey -DP``: every entry, ``seq`` counting down to 0; or ``No SPD entries.``"""
    if not entries:
        return "No SPD entries.\n"
    n = len(entries)
    return "".join(render_sp(e, seq=n - 1 - i, pid=pid) for i, e in enumerate(entries))
