"""The SPD: the system policy table that ``setkey spdadd`` fills. Pure.

Each :class:`SPDEntry` has a selector (source and destination prefixes, upper-layer protocol,
ports -- or, for ICMP/ICMPv6, type and code in the port fields, as KAME's spidx keeps them), a
policy from the policy language (``discard``, ``none`` or ``ipsec`` with requests; its direction
is the entry's direction) and a priority. :meth:`SPD.lookup` returns the first entry that
matches, in priority order (lower value first; equal priorities in the order they were added),
as KAME's key_allocsp and Linux's xfrm policy lookup do (IPSEC-REFERENCE §4.2 step 4c).

Wildcards, as in KAME: a selector port of 0 matches any port, an upper-layer protocol of 255
(``any``) matches any protocol. The packet side is always concrete except that a packet whose
protocol is unknown (fragments: 255) only matches selectors whose protocol is ``any``.

``generation`` changes on every write, so sockets can cache lookups (KAME's PCB cache).
Lookups take no lock; writes take the SPD lock.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import Final

from secsock.constants import PRIORITY_DEFAULT
from secsock.errors import SADBError
from secsock.policy.model import Action, Direction, Policy
from secsock.sadb.model import IPAddress, as_address

__all__ = (
    "PORT_ANY",
    "SPD",
    "ULPROTO_ANY",
    "IPNetwork",
    "SPDEntry",
    "SPDSelector",
    "SPDTransaction",
    "default_spd",
)

IPNetwork = IPv4Network | IPv6Network

#: IPSEC_ULPROTO_ANY: the upper-layer protocol wildcard.
ULPROTO_ANY: Final = 255
#: IPSEC_PORT_ANY: the port wildcard.
PORT_ANY: Final = 0
_ICMP: Final = (1, 58)
_U32: Final = 0xFFFFFFFF


def _as_network(value: object, what: str) -> IPNetwork:
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    if isinstance(value, IPv4Address | IPv6Address):
        return ip_network(value)
    if isinstance(value, str):
        try:
            return ip_network(value, strict=False)
        except ValueError:
            raise ValueError(
                f"{what} must be a numeric IPv4/IPv6 address or prefix, found {value!r}"
            ) from None
    raise TypeError(f"{what} must be an IP network, address or string, found {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SPDSelector:
    """What an SPD entry matches: ``src``/``dst`` prefixes (host bits are masked off),
    ``ul_proto`` (255 = any), ``sport``/``dport`` (0 = any; for ICMP/ICMPv6: type and code)."""

    src: IPNetwork
    dst: IPNetwork
    ul_proto: int = ULPROTO_ANY
    sport: int = PORT_ANY
    dport: int = PORT_ANY
    _v: int = field(default=0, init=False, repr=False, compare=False)
    _sn: int = field(default=0, init=False, repr=False, compare=False)
    _sm: int = field(default=0, init=False, repr=False, compare=False)
    _dn: int = field(default=0, init=False, repr=False, compare=False)
    _dm: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        src = _as_network(self.src, "src")
        dst = _as_network(self.dst, "dst")
        if src.version != dst.version:
            raise ValueError(
                f"src and dst must be of one address family, found {src} and {dst}"
            )
        setattr_ = object.__setattr__
        setattr_(self, "src", src)
        setattr_(self, "dst", dst)
        if type(self.ul_proto) is not int or not 0 <= self.ul_proto <= 255:
            raise ValueError(f"ul_proto must be 0..255 (255 = any), found {self.ul_proto!r}")
        limit = 255 if self.ul_proto in _ICMP else 0xFFFF
        for name in ("sport", "dport"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= limit:
                what = "ICMP type/code" if limit == 255 else "port"
                raise ValueError(f"{name} ({what}) must be 0..{limit} (0 = any), found {value!r}")
        setattr_(self, "_v", src.version)
        setattr_(self, "_sn", int(src.network_address))
        setattr_(self, "_sm", int(src.netmask))
        setattr_(self, "_dn", int(dst.network_address))
        setattr_(self, "_dm", int(dst.netmask))

    @property
    def icmp_type(self) -> int | None:
        """For ICMP/ICMPv6 selectors the type (0 = any), else None."""
        return self.sport if self.ul_proto in _ICMP else None

    @property
    def icmp_code(self) -> int | None:
        """For ICMP/ICMPv6 selectors the code (0 = any), else None."""
        return self.dport if self.ul_proto in _ICMP else None

    def matches(
        self, src: IPAddress, dst: IPAddress, ul_proto: int, sport: int = 0, dport: int = 0
    ) -> bool:
        """True if a packet (src, dst, ul_proto, sport, dport) falls under this selector."""
        if src.version != self._v or dst.version != self._v:
            return False
        if int(src) & self._sm != self._sn or int(dst) & self._dm != self._dn:
            return False
        if self.ul_proto != ULPROTO_ANY and self.ul_proto != ul_proto:
            return False
        if self.sport and self.sport != sport:
            return False
        return not (self.dport and self.dport != dport)


@dataclass(frozen=True, slots=True, kw_only=True)
class SPDEntry:
    """One SPD entry: selector, policy (whose direction is the entry's), priority and spid."""

    spid: int
    selector: SPDSelector
    policy: Policy
    priority: int
    created: float = 0.0
    order: int = field(default=0, repr=False, compare=False)

    @property
    def direction(self) -> Direction:
        return self.policy.direction


def _check_policy(policy: object) -> Policy:
    if not isinstance(policy, Policy):
        raise TypeError(f"expected a Policy, found {type(policy).__name__}")
    if policy.direction not in (Direction.INBOUND, Direction.OUTBOUND, Direction.FWD):
        raise ValueError(
            f"an SPD policy needs direction in, out or fwd, found {policy.direction.keyword}"
        )
    if policy.action not in (Action.DISCARD, Action.NONE, Action.IPSEC):
        raise ValueError(
            "an SPD policy's action is discard, none or ipsec (entrust and bypass are for "
            f"sockets), found {policy.action.keyword}"
        )
    return policy


def _priority(policy: Policy, priority: int | None) -> int:
    if priority is None:
        # Policy.priority 0 means "none given": ipsec-tools then uses PRIORITY_DEFAULT.
        priority = policy.priority or PRIORITY_DEFAULT
    if type(priority) is not int or not 0 <= priority <= _U32:
        raise ValueError(f"priority must be 0..0xffffffff, found {priority!r}")
    return priority


class _SPDTables:
    __slots__ = ("by_dir", "next_order", "next_spid")

    def __init__(self) -> None:
        self.by_dir: dict[Direction, tuple[SPDEntry, ...]] = {}
        self.next_spid = 1
        self.next_order = 1

    def clone(self) -> _SPDTables:
        t = _SPDTables()
        t.by_dir = dict(self.by_dir)
        t.next_spid = self.next_spid
        t.next_order = self.next_order
        return t

    def find(self, selector: SPDSelector, direction: Direction) -> SPDEntry | None:
        for e in self.by_dir.get(direction, ()):
            if e.selector == selector:
                return e
        return None

    def insert(self, entry: SPDEntry) -> None:
        rows = [*self.by_dir.get(entry.direction, ()), entry]
        rows.sort(key=lambda e: (e.priority, e.order))
        self.by_dir[entry.direction] = tuple(rows)

    def remove(self, entry: SPDEntry) -> None:
        rest = tuple(e for e in self.by_dir.get(entry.direction, ()) if e is not entry)
        if rest:
            self.by_dir[entry.direction] = rest
        else:
            self.by_dir.pop(entry.direction, None)

    def all(self) -> list[SPDEntry]:
        out: list[SPDEntry] = []
        for d in (Direction.INBOUND, Direction.OUTBOUND, Direction.FWD):
            out.extend(self.by_dir.get(d, ()))
        return out


class SPDTransaction:
    """The SPD write verbs over one set of tables (a transaction's private copy, or live)."""

    __slots__ = ("_t", "changed")

    def __init__(self, tables: _SPDTables) -> None:
        self._t = tables
        self.changed = 0

    def _new_entry(
        self, selector: SPDSelector, policy: Policy, priority: int, now: float
    ) -> SPDEntry:
        t = self._t
        spid = t.next_spid
        t.next_spid = 1 if spid >= _U32 else spid + 1
        order = t.next_order
        t.next_order += 1
        return SPDEntry(
            spid=spid, selector=selector, policy=policy, priority=priority, created=float(now),
            order=order,
        )

    def add(
        self, selector: SPDSelector, policy: Policy, *, priority: int | None = None,
        now: float = 0.0,
    ) -> SPDEntry:
        """SADB_X_SPDADD: EEXIST if the selector already has a policy for that direction."""
        policy = _check_policy(policy)
        prio = _priority(policy, priority)
        if self._t.find(selector, policy.direction) is not None:
            raise SADBError(
                errno.EEXIST,
                f"a {policy.direction.keyword} policy for {_sel_text(selector)} already exists",
            )
        entry = self._new_entry(selector, policy, prio, now)
        self._t.insert(entry)
        self.changed += 1
        return entry

    def update(
        self, selector: SPDSelector, policy: Policy, *, priority: int | None = None,
        now: float = 0.0,
    ) -> SPDEntry:
        """SADB_X_SPDUPDATE: replace the policy of the selector and direction (or add it).
        The replacement gets a new spid and goes behind entries of equal priority, as KAME's
        delete-and-add does."""
        policy = _check_policy(policy)
        prio = _priority(policy, priority)  # before anything changes
        old = self._t.find(selector, policy.direction)
        if old is not None:
            self._t.remove(old)
        entry = self._new_entry(selector, policy, prio, now)
        self._t.insert(entry)
        self.changed += 1
        return entry

    def delete(self, selector: SPDSelector, direction: Direction) -> SPDEntry:
        """SADB_X_SPDDELETE: ENOENT if there is no such policy."""
        direction = Direction(direction)
        old = self._t.find(selector, direction)
        if old is None:
            raise SADBError(
                errno.ENOENT, f"no {direction.keyword} policy for {_sel_text(selector)}"
            )
        self._t.remove(old)
        self.changed += 1
        return old

    def delete_spid(self, spid: int) -> SPDEntry:
        """SADB_X_SPDDELETE2: by policy id; ENOENT if there is none."""
        for e in self._t.all():
            if e.spid == spid:
                self._t.remove(e)
                self.changed += 1
                return e
        raise SADBError(errno.ENOENT, f"no policy with spid {spid}")

    def get(self, selector: SPDSelector, direction: Direction) -> SPDEntry | None:
        return self._t.find(selector, Direction(direction))

    def flush(self) -> int:
        """SADB_X_SPDFLUSH: remove every entry; returns how many."""
        n = sum(len(v) for v in self._t.by_dir.values())
        self._t.by_dir.clear()
        self.changed += 1
        return n

    def dump(self) -> list[SPDEntry]:
        """Every entry: inbound, then outbound, then forward, each in lookup order."""
        return self._t.all()


def _sel_text(sel: SPDSelector) -> str:
    proto = "any" if sel.ul_proto == ULPROTO_ANY else str(sel.ul_proto)
    return f"{sel.src}[{sel.sport or 'any'}] {sel.dst}[{sel.dport or 'any'}] {proto}"


class SPD:
    """The system SPD. Thread-safe: lookups lock-free, writes under a lock."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tables = _SPDTables()
        self._generation = 0
        self._in_txn = False

    @property
    def generation(self) -> int:
        """Changes on every write (add, update, delete, flush, committed transaction)."""
        return self._generation

    def __len__(self) -> int:
        return sum(len(v) for v in self._tables.by_dir.values())

    @contextmanager
    def _writing(self) -> Iterator[SPDTransaction]:
        """One write on the live table, under the lock; generation moves if it changed it."""
        with self._lock:
            txn = SPDTransaction(self._tables)
            try:
                yield txn
            finally:
                if txn.changed:
                    self._generation += 1

    def add(
        self, selector: SPDSelector, policy: Policy, *, priority: int | None = None,
        now: float = 0.0,
    ) -> SPDEntry:
        with self._writing() as txn:
            return txn.add(selector, policy, priority=priority, now=now)

    def update(
        self, selector: SPDSelector, policy: Policy, *, priority: int | None = None,
        now: float = 0.0,
    ) -> SPDEntry:
        with self._writing() as txn:
            return txn.update(selector, policy, priority=priority, now=now)

    def delete(self, selector: SPDSelector, direction: Direction) -> SPDEntry:
        with self._writing() as txn:
            return txn.delete(selector, direction)

    def delete_spid(self, spid: int) -> SPDEntry:
        with self._writing() as txn:
            return txn.delete_spid(spid)

    def flush(self) -> int:
        with self._writing() as txn:
            return txn.flush()

    def get(self, selector: SPDSelector, direction: Direction) -> SPDEntry | None:
        return self._tables.find(selector, Direction(direction))

    def dump(self) -> list[SPDEntry]:
        return self._tables.all()

    @contextmanager
    def transaction(self) -> Iterator[SPDTransaction]:
        """All or nothing, as MemoryStore.transaction(): writes go to a private copy that
        replaces the live table when the block ends normally; nothing changes if it raises."""
        with self._lock:
            if self._in_txn:
                raise RuntimeError("SPD transactions do not nest")
            self._in_txn = True
            try:
                txn = SPDTransaction(self._tables.clone())
                yield txn
                self._tables = txn._t
                if txn.changed:
                    self._generation += 1
            finally:
                self._in_txn = False

    def lookup(
        self,
        direction: Direction,
        src: IPAddress | str,
        dst: IPAddress | str,
        ul_proto: int = ULPROTO_ANY,
        sport: int = PORT_ANY,
        dport: int = PORT_ANY,
    ) -> SPDEntry | None:
        """The first entry for ``direction`` whose selector matches the packet, or None.

        ``sport``/``dport`` carry ICMP type/code for ICMP and ICMPv6 (KAME's spidx).
        """
        rows = self._tables.by_dir.get(direction)
        if not rows:
            return None
        if not isinstance(src, IPv4Address | IPv6Address):
            src = as_address(src)
        if not isinstance(dst, IPv4Address | IPv6Address):
            dst = as_address(dst)
        version = src.version
        if dst.version != version:
            return None
        s = int(src)
        d = int(dst)
        for e in rows:
            sel = e.selector
            if sel._v != version or s & sel._sm != sel._sn or d & sel._dm != sel._dn:
                continue
            up = sel.ul_proto
            if up != ULPROTO_ANY and up != ul_proto:
                continue
            if (sel.sport and sel.sport != sport) or (sel.dport and sel.dport != dport):
                continue
            return e
        return None


_default_lock = threading.Lock()
_default: SPD | None = None


def default_spd() -> SPD:
    """The process-wide SPD (created on first use)."""
    global _default
    spd = _default
    if spd is None:
        with _default_lock:
            if _default is None:
                _default = SPD()
            spd = _default
    return spd
