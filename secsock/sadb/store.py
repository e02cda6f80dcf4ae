"""The SADB: the :class:`SAStore` protocol and :class:`MemoryStore`, its in-process implementation.

Two kinds of callers use a store:

* key management and setkey (the *admin* verbs): ``add``, ``update``, ``getspi``, ``get``,
  ``delete``, ``deleteall``, ``flush``, ``dump``, and ``transaction()`` to apply many of them
  all or nothing;
* the engine, on every datagram (the *data path*): ``lookup_inbound`` (dst, proto, SPI) and
  ``lookup_outbound`` (src, dst, proto, mode, reqid; RFC 4301 / KAME key_allocsa_policy),
  ``reserve_seq``, ``replay_check``/``replay_commit``, ``account``, ``acquire``, ``tick``, and
  the combined per-packet calls ``reserve_and_account`` (outbound) and ``commit_and_account``
  (inbound, after ``replay_check`` and the ICV), one store call each way per packet;
  ``generation`` tells a caller that caches lookups when any answer may have changed.

The engine never mutates an SA itself: every change of runtime state (sequence counter, replay
window, byte counters, state) goes through a store method, so a host-wide store shared by
several processes, or a networked one, can stand behind the same protocol.

``generation`` (MemoryStore): a number that changes after every change that can alter the answer
of a lookup -- any admin verb or transaction, an SA's state change (dying, dead, overflowed,
deleted), ``prefered_oldsa``. It changes *after* the change is visible, so a caller that reads
it before a lookup and later finds it unchanged knows its cached answer still holds.

Concurrency (MemoryStore): lookups take no lock (they read immutable tuples from dicts whose
updates are atomic); each data-path operation on an SA takes that SA's own lock once; admin
verbs take the store lock. Lock order is store lock, then SA lock; the data path releases the SA
lock before it takes the store lock (to remove an SA that died). Events are published after all
locks are released.

Time is always a parameter (``now``: wall-clock seconds, what ``time.time()`` returns); the
store draws no randomness (``getspi`` takes the caller's ``rng``).
"""

from __future__ import annotations

import dataclasses
import errno
import heapq
import hmac
import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Final, Protocol, cast, final, runtime_checkable

from secsock.core._shown import shown
from secsock.core.ah import AhContext
from secsock.core.algorithms import auth_algorithm, encryption_algorithm
from secsock.core.esp import EspContext
from secsock.core.replay import ReplayWindow
from secsock.errors import NoSAError, SADBError, SequenceOverflowError
from secsock.sadb.events import (
    DEFAULT_QUEUE_SIZE,
    Acquire,
    EventCallback,
    EventHub,
    HardExpire,
    SADBEvent,
    SoftExpire,
)
from secsock.sadb.lifetime import ExpireReason, limit_reached
from secsock.sadb.model import (
    IPAddress,
    LarvalSA,
    SAMode,
    SAProtocol,
    SAState,
    SecurityAssociation,
    as_address,
    as_ipproto,
    as_mode,
)

__all__ = (
    "BLOCKACQ_COUNT",
    "BLOCKACQ_LIFETIME",
    "LARVAL_LIFETIME",
    "REQID_FIRST",
    "SPI_MAX",
    "SPI_MIN",
    "CryptoContext",
    "MemoryStore",
    "SAAdmin",
    "SAEntry",
    "SARecord",
    "SAStatus",
    "SAStore",
    "SATransaction",
    "build_crypto",
    "default_sadb",
)

#: KAME key engine defaults (key_blockacq_count, key_blockacq_lifetime, key_larval_lifetime).
BLOCKACQ_COUNT: Final = 10
BLOCKACQ_LIFETIME: Final = 20.0
LARVAL_LIFETIME: Final = 30.0
#: KAME's getspi range (key_spi_minval, key_spi_maxval) and tries.
SPI_MIN: Final = 0x100
SPI_MAX: Final = 0x0FFFFFFF
_SPI_TRIES: Final = 1000
#: First automatically allocated reqid (IPSEC_MANUAL_REQID_MAX + 1).
REQID_FIRST: Final = 0x4000
_U32: Final = 0xFFFFFFFF

CryptoContext = EspContext | AhContext

_MATURE: Final = SAState.MATURE
_DYING: Final = SAState.DYING
_DEAD: Final = SAState.DEAD


def build_crypto(sa: SecurityAssociation) -> CryptoContext:
    """Prepare the codec context of ``sa`` (cipher objects built once, reused per packet)."""
    if sa.proto is SAProtocol.ESP:
        assert sa.enc is not None
        return EspContext.create(
            enc=encryption_algorithm(sa.enc),
            enc_key=sa.enc_key,
            auth=None if sa.auth is None else auth_algorithm(sa.auth),
            auth_key=sa.auth_key if sa.auth is not None else None,
        )
    assert sa.auth is not None
    return AhContext.create(auth=auth_algorithm(sa.auth), auth_key=sa.auth_key, align=sa.ah_align)


# --- runtime state and handles -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SAStatus:
    """A snapshot of an SA's runtime state (what ``setkey -D`` shows besides the config).

    ``seq`` is the last sequence number sent (the outbound counter), ``replay_top`` the highest
    authenticated inbound sequence number; both start at the SA's ``seq_start``.
    ``first_used`` is the time of first use (RFC 2367 CURRENT usetime), ``last_used`` of the last.
    """

    state: SAState
    created: float
    first_used: float | None
    last_used: float | None
    bytes: int
    packets: int
    seq: int
    replay_top: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SARecord:
    """One SADB entry as the admin verbs return it: configuration plus runtime snapshot."""

    sa: SecurityAssociation | LarvalSA
    status: SAStatus


class _Runtime:
    """The mutable state of one mature SA in a MemoryStore; every field is guarded by ``lock``."""

    __slots__ = (
        "bytes",
        "created",
        "first_used",
        "has_limits",
        "last_used",
        "lock",
        "packets",
        "replay",
        "sa",
        "seq",
        "seq_max",
        "state",
    )

    def __init__(self, sa: SecurityAssociation, created: float) -> None:
        self.lock = threading.Lock()
        self.sa = sa
        self.state = SAState.MATURE
        self.created = created
        self.first_used: float | None = None
        self.last_used: float | None = None
        self.bytes = 0
        self.packets = 0
        self.seq = sa.seq_start
        self.seq_max = sa.seq_max
        self.replay = ReplayWindow(sa.replay_window, esn=sa.esn, top=sa.seq_start)
        self.has_limits = not (sa.soft.unlimited and sa.hard.unlimited)

    def snapshot(self) -> SAStatus:
        with self.lock:
            return SAStatus(
                state=self.state,
                created=self.created,
                first_used=self.first_used,
                last_used=self.last_used,
                bytes=self.bytes,
                packets=self.packets,
                seq=self.seq,
                replay_top=self.replay.top,
            )


@final
class SAEntry:
    """The data path's handle on one usable SA: its config, crypto context and state.

    Returned by ``lookup_inbound``/``lookup_outbound`` and ``add``; pass it back to the store's
    data-path methods. Read-only: nothing here changes the SA.
    """

    __slots__ = ("_crypto", "_rt")

    def __init__(self, rt: _Runtime, crypto: CryptoContext) -> None:
        self._rt = rt
        self._crypto = crypto

    @property
    def sa(self) -> SecurityAssociation:
        """The SA's current configuration (``update`` may change its lifetimes)."""
        return self._rt.sa

    @property
    def crypto(self) -> CryptoContext:
        """The prepared :class:`EspContext` (ESP) or :class:`AhContext` (AH)."""
        return self._crypto

    @property
    def state(self) -> SAState:
        return self._rt.state

    @property
    def alive(self) -> bool:
        """True while the SA may carry packets (mature or dying)."""
        st = self._rt.state
        return st is _MATURE or st is _DYING

    @property
    def created(self) -> float:
        return self._rt.created

    def __repr__(self) -> str:
        return f"<SAEntry {self._rt.sa} state={self._rt.state.name.lower()}>"


class _Larval:
    """A getspi reservation in a MemoryStore."""

    __slots__ = ("created", "sa")

    def __init__(self, sa: LarvalSA, created: float) -> None:
        self.sa = sa
        self.created = created

    def snapshot(self) -> SAStatus:
        top = 0
        return SAStatus(
            state=SAState.LARVAL, created=self.created, first_used=None, last_used=None,
            bytes=0, packets=0, seq=top, replay_top=top,
        )


_Key = tuple[IPAddress, int, int]  # (dst, proto, spi)
_HeadKey = tuple[bytes, bytes, int]  # (src.packed, dst.packed, proto): cheaper to hash
_AcqKey = tuple[IPAddress, IPAddress, int, int, int]  # (src, dst, proto, mode, reqid)


class _Tables:
    """The indexes of a MemoryStore. Values of ``by_spi`` and ``heads`` are immutable tuples,
    replaced whole, so lock-free readers always see a consistent value."""

    __slots__ = ("by_key", "by_spi", "heads")

    def __init__(self) -> None:
        self.by_key: dict[_Key, SAEntry | _Larval] = {}
        self.by_spi: dict[int, tuple[SAEntry, ...]] = {}
        self.heads: dict[_HeadKey, tuple[SAEntry, ...]] = {}

    def clone(self) -> _Tables:
        t = _Tables()
        t.by_key = dict(self.by_key)
        t.by_spi = dict(self.by_spi)
        t.heads = dict(self.heads)
        return t

    def link(self, entry: SAEntry) -> None:
        sa = entry.sa
        self.by_key[sa.key] = entry
        self.by_spi[sa.spi] = (*self.by_spi.get(sa.spi, ()), entry)
        hk = (sa.src.packed, sa.dst.packed, int(sa.proto))
        self.heads[hk] = (*self.heads.get(hk, ()), entry)

    def unlink(self, item: SAEntry | _Larval) -> bool:
        """Remove ``item`` from every index; False if it was not there."""
        sa = item.sa
        key = sa.key
        if self.by_key.get(key) is not item:
            return False
        del self.by_key[key]
        if isinstance(item, SAEntry):
            rest = tuple(e for e in self.by_spi.get(sa.spi, ()) if e is not item)
            if rest:
                self.by_spi[sa.spi] = rest
            else:
                self.by_spi.pop(sa.spi, None)
            hk = (sa.src.packed, sa.dst.packed, int(sa.proto))
            rest = tuple(e for e in self.heads.get(hk, ()) if e is not item)
            if rest:
                self.heads[hk] = rest
            else:
                self.heads.pop(hk, None)
        return True


class _Acq:
    __slots__ = ("count", "created", "seq")

    def __init__(self, created: float, seq: int) -> None:
        self.created = created
        self.count = 0
        self.seq = seq


# --- the protocols ----------------------------------------------------------------------------


@runtime_checkable
class SAAdmin(Protocol):
    """The setkey verbs, on a store or inside one of its transactions."""

    def add(self, sa: SecurityAssociation, *, now: float) -> SAEntry: ...

    def update(self, sa: SecurityAssociation, *, now: float) -> SAEntry: ...

    def getspi(
        self,
        src: IPAddress | str,
        dst: IPAddress | str,
        proto: int | str,
        *,
        now: float,
        rng: Callable[[int], bytes] | None = None,
        hint: int | None = None,
        spi_min: int = SPI_MIN,
        spi_max: int = SPI_MAX,
        mode: int | str = SAMode.ANY,
        reqid: int = 0,
    ) -> LarvalSA: ...

    def get(
        self, dst: IPAddress | str, proto: int | str, spi: int, *, src: IPAddress | str | None = None
    ) -> SARecord | None: ...

    def delete(
        self, dst: IPAddress | str, proto: int | str, spi: int, *, src: IPAddress | str | None = None
    ) -> SARecord: ...

    def deleteall(self, src: IPAddress | str, dst: IPAddress | str, proto: int | str) -> int: ...

    def flush(self, proto: int | str | None = None) -> int: ...

    def dump(self, proto: int | str | None = None) -> list[SARecord]: ...


@runtime_checkable
class SAStore(SAAdmin, Protocol):
    """What the engine and setkey need of an SADB. :class:`MemoryStore` implements it; a
    host-wide or networked store must implement the same methods with the same guarantees:

    * ``add`` of an existing (dst, proto, SPI) raises ``SADBError(EEXIST)``; ``delete``/``update``
      /``get``-style misses are ``SADBError(ESRCH)`` (``get`` itself returns None).
    * ``reserve_seq`` never hands out one number twice, from any thread or process, and never
      wraps: past 2^32-1 (2^64-1 with ESN) it raises SequenceOverflowError and the SA is dead.
    * ``transaction()`` applies everything done through the yielded :class:`SAAdmin` at once
      on normal exit and nothing if the block raises.
    * ``reserve_and_account(e, n, now)`` is ``reserve_seq(e)`` then ``account(e, n, now)`` as one
      atomic step, and ``commit_and_account(e, seq, n, now)`` is ``replay_commit(e, seq)`` then,
      if it succeeded, ``account(e, n, now)``: one round trip per packet each way for a store
      behind a lock or a network.
    * ``generation`` is cheap to read (a local value; a networked store keeps it current from
      its change notifications) and changes after anything that can change a lookup's answer.
    """

    def transaction(self) -> AbstractContextManager[SAAdmin]: ...

    def lookup_inbound(
        self, dst: IPAddress | str, proto: int | str, spi: int
    ) -> SAEntry | None: ...

    def lookup_outbound(
        self,
        src: IPAddress | str,
        dst: IPAddress | str,
        proto: int | str,
        mode: int | str = SAMode.ANY,
        reqid: int = 0,
    ) -> SAEntry | None: ...

    def reserve_seq(self, entry: SAEntry, count: int = 1) -> int: ...

    def replay_check(self, entry: SAEntry, seq_lo: int) -> int | None: ...

    def replay_commit(self, entry: SAEntry, seq: int) -> bool: ...

    def account(self, entry: SAEntry, nbytes: int, now: float) -> SAState: ...

    def reserve_and_account(self, entry: SAEntry, nbytes: int, now: float) -> int: ...

    def commit_and_account(self, entry: SAEntry, seq: int, nbytes: int, now: float) -> bool: ...

    @property
    def generation(self) -> int: ...

    def status(self, entry: SAEntry) -> SAStatus: ...

    def tick(self, now: float) -> list[SADBEvent]: ...

    def expire(self, now: float) -> list[SADBEvent]: ...

    def acquire(
        self,
        src: IPAddress | str,
        dst: IPAddress | str,
        proto: int | str,
        mode: int | str,
        reqid: int,
        *,
        now: float,
    ) -> bool: ...

    def allocate_reqid(self) -> int: ...

    def subscribe(self, callback: EventCallback) -> Callable[[], None]: ...

    def events(self) -> list[SADBEvent]: ...

    def next_event(self) -> SADBEvent | None: ...


# --- admin operations over one set of tables ---------------------------------------------------


def _eq_keys(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def _norm_key(dst: IPAddress | str, proto: int | str, spi: int) -> _Key:
    if type(spi) is not int:
        raise ValueError(f"SPI must be an integer, found {shown(spi)}")
    return (as_address(dst), as_ipproto(proto), spi)


class SATransaction:
    """The admin verbs applied to one set of tables.

    Obtained from ``MemoryStore.transaction()`` (a private copy of the tables, applied on
    commit) -- or used internally on the live tables for single operations.
    """

    __slots__ = ("_live", "_on_commit", "_store", "_t")

    def __init__(self, store: MemoryStore, tables: _Tables, *, live: bool) -> None:
        self._store = store
        self._t = tables
        self._live = live
        self._on_commit: list[Callable[[], None]] = []

    def _defer(self, action: Callable[[], None]) -> None:
        if self._live:
            action()
        else:
            self._on_commit.append(action)

    def _commit(self) -> None:
        for action in self._on_commit:
            action()
        self._on_commit.clear()

    def _kill_later(self, item: SAEntry | _Larval) -> None:
        if isinstance(item, SAEntry):
            rt = item._rt

            def kill() -> None:
                with rt.lock:
                    rt.state = _DEAD

            self._defer(kill)

    # --- verbs -----------------------------------------------------------------------------

    def add(self, sa: SecurityAssociation, *, now: float) -> SAEntry:
        """SADB_ADD: install a mature SA. EEXIST if (dst, proto, SPI) is taken."""
        if not isinstance(sa, SecurityAssociation):
            raise TypeError(f"expected a SecurityAssociation, found {type(sa).__name__}")
        if sa.key in self._t.by_key:
            raise SADBError(
                errno.EEXIST,
                f"an SA with dst {sa.dst}, protocol {sa.proto.setkey_name} and SPI "
                f"{sa.spi}(0x{sa.spi:08x}) already exists",
            )
        entry = SAEntry(_Runtime(sa, float(now)), build_crypto(sa))
        self._t.link(entry)
        self._defer(lambda: self._store._installed(entry))
        return entry

    def update(self, sa: SecurityAssociation, *, now: float) -> SAEntry:
        """SADB_UPDATE: make a larval SA (from getspi) mature with ``sa``'s keys, or change the
        lifetimes / NAT-T ports of a mature one. ESRCH if there is no such SA."""
        if not isinstance(sa, SecurityAssociation):
            raise TypeError(f"expected a SecurityAssociation, found {type(sa).__name__}")
        old = self._t.by_key.get(sa.key)
        if old is None or old.sa.src != sa.src:
            raise SADBError(
                errno.ESRCH,
                f"no SA {sa.src}->{sa.dst} {sa.proto.setkey_name} spi {sa.spi}(0x{sa.spi:08x}) "
                "to update",
            )
        if isinstance(old, _Larval):
            if (old.sa.mode, old.sa.reqid) != (sa.mode, sa.reqid):
                raise SADBError(
                    errno.ESRCH,
                    f"the larval SA spi {sa.spi}(0x{sa.spi:08x}) was reserved with mode "
                    f"{old.sa.mode.name.lower()} reqid {old.sa.reqid}; the update names mode "
                    f"{sa.mode.name.lower()} reqid {sa.reqid}",
                )
            entry = SAEntry(_Runtime(sa, old.created), build_crypto(sa))
            self._t.unlink(old)
            self._t.link(entry)
            self._defer(lambda: self._store._installed(entry))
            return entry
        current = old.sa
        same_keys = _eq_keys(sa.enc_key, current.enc_key) and _eq_keys(
            sa.auth_key, current.auth_key
        )
        rest = dataclasses.replace(
            sa,
            enc_key=current.enc_key,
            auth_key=current.auth_key,
            soft=current.soft,
            hard=current.hard,
            natt_sport=current.natt_sport if sa.natt and current.natt else sa.natt_sport,
            natt_dport=current.natt_dport if sa.natt and current.natt else sa.natt_dport,
            seq_start=current.seq_start,
        )
        if not same_keys or rest != current:
            raise SADBError(
                errno.EINVAL,
                f"SA spi {sa.spi}(0x{sa.spi:08x}) is mature: only its lifetimes and NAT-T ports "
                "can change (delete and add it to change anything else)",
            )
        new_sa = dataclasses.replace(sa, seq_start=current.seq_start)
        rt = old._rt

        def apply() -> None:
            with rt.lock:
                rt.sa = new_sa
                rt.has_limits = not (new_sa.soft.unlimited and new_sa.hard.unlimited)
            self._store._schedule_sa(old)

        self._defer(apply)
        return old

    def getspi(
        self,
        src: IPAddress | str,
        dst: IPAddress | str,
        proto: int | str,
        *,
        now: float,
        rng: Callable[[int], bytes] | None = None,
        hint: int | None = None,
        spi_min: int = SPI_MIN,
        spi_max: int = SPI_MAX,
        mode: int | str = SAMode.ANY,
        reqid: int = 0,
    ) -> LarvalSA:
        """SADB_GETSPI: reserve an unused SPI in [spi_min, spi_max] as a larval SA.

        ``hint`` is tried first (it must lie in the range). Otherwise (or if it is taken) up to
        1000 candidates are drawn from ``rng(8)``, as KAME's key_do_getnewspi does. Without
        ``rng`` a taken or missing hint fails: EEXIST, or ValueError when neither is given.
        EAGAIN when no free SPI was found.
        """
        srca, dsta = as_address(src), as_address(dst)
        p = as_ipproto(proto)
        if type(spi_min) is not int or type(spi_max) is not int or not (
            256 <= spi_min <= spi_max <= _U32
        ):
            raise ValueError(
                f"SPI range must satisfy 256 <= min <= max <= 0xffffffff, found "
                f"{shown(spi_min)}..{shown(spi_max)}"
            )
        if hint is not None and (type(hint) is not int or not spi_min <= hint <= spi_max):
            raise ValueError(f"SPI hint must lie in {spi_min}..{spi_max}, found {shown(hint)}")
        if spi_min == spi_max and hint is None:
            hint = spi_min
        by_key = self._t.by_key
        chosen: int | None = None
        if hint is not None and (dsta, p, hint) not in by_key:
            chosen = hint
        elif rng is None:
            if hint is None:
                raise ValueError("getspi needs an rng (random source) or an SPI hint")
            raise SADBError(
                errno.EEXIST, f"SPI {hint}(0x{hint:08x}) is in use for dst {dsta} and no rng "
                "was given to draw another",
            )
        else:
            span = spi_max - spi_min + 1
            for _ in range(_SPI_TRIES):
                raw = rng(8)
                if not isinstance(raw, bytes | bytearray) or len(raw) != 8:
                    raise ValueError("rng(8) must return 8 bytes")
                cand = spi_min + int.from_bytes(raw, "big") % span
                if (dsta, p, cand) not in by_key:
                    chosen = cand
                    break
            if chosen is None:
                raise SADBError(
                    errno.EAGAIN,
                    f"no free SPI found in {spi_min:#x}..{spi_max:#x} after {_SPI_TRIES} tries",
                )
        larval = LarvalSA(
            spi=chosen, proto=SAProtocol(p), src=srca, dst=dsta, mode=SAMode(as_mode(mode)),
            reqid=reqid,
        )
        item = _Larval(larval, float(now))
        by_key[larval.key] = item
        self._defer(lambda: self._store._schedule_larval(item))
        return larval

    def get(
        self, dst: IPAddress | str, proto: int | str, spi: int, *, src: IPAddress | str | None = None
    ) -> SARecord | None:
        """SADB_GET: the SA (dst, proto, SPI) -- and from ``src`` if given -- or None."""
        item = self._t.by_key.get(_norm_key(dst, proto, spi))
        if item is None or (src is not None and item.sa.src != as_address(src)):
            return None
        if isinstance(item, SAEntry):
            return SARecord(sa=item.sa, status=item._rt.snapshot())
        return SARecord(sa=item.sa, status=item.snapshot())

    def delete(
        self, dst: IPAddress | str, proto: int | str, spi: int, *, src: IPAddress | str | None = None
    ) -> SARecord:
        """SADB_DELETE: remove the SA; ESRCH if there is none."""
        key = _norm_key(dst, proto, spi)
        item = self._t.by_key.get(key)
        if item is None or (src is not None and item.sa.src != as_address(src)):
            where = f"{as_address(src)}->" if src is not None else ""
            raise SADBError(
                errno.ESRCH,
                f"no SA {where}{key[0]} {SAProtocol(key[1]).setkey_name} spi "
                f"{spi}(0x{spi:08x}) to delete",
            )
        record = self._record(item)
        self._t.unlink(item)
        self._kill_later(item)
        return record

    def deleteall(self, src: IPAddress | str, dst: IPAddress | str, proto: int | str) -> int:
        """Remove every SA from ``src`` to ``dst`` of ``proto`` (larval ones too)."""
        srca, dsta, p = as_address(src), as_address(dst), as_ipproto(proto)
        victims = [
            item
            for item in self._t.by_key.values()
            if item.sa.src == srca and item.sa.dst == dsta and int(item.sa.proto) == p
        ]
        for item in victims:
            self._t.unlink(item)
            self._kill_later(item)
        return len(victims)

    def flush(self, proto: int | str | None = None) -> int:
        """SADB_FLUSH: remove every SA (of ``proto`` if given)."""
        p = None if proto is None else as_ipproto(proto)
        victims = [
            item for item in self._t.by_key.values() if p is None or int(item.sa.proto) == p
        ]
        for item in victims:
            self._t.unlink(item)
            self._kill_later(item)
        return len(victims)

    def dump(self, proto: int | str | None = None) -> list[SARecord]:
        """SADB_DUMP: every SA (of ``proto`` if given), in the order they were added."""
        p = None if proto is None else as_ipproto(proto)
        return [
            self._record(item)
            for item in list(self._t.by_key.values())
            if p is None or int(item.sa.proto) == p
        ]

    @staticmethod
    def _record(item: SAEntry | _Larval) -> SARecord:
        if isinstance(item, SAEntry):
            return SARecord(sa=item.sa, status=item._rt.snapshot())
        return SARecord(sa=item.sa, status=item.snapshot())


# --- the in-memory store ---------------------------------------------------------------------


_K_SA: Final = 0
_K_LARVAL: Final = 1
_K_ACQ: Final = 2


class MemoryStore:
    """An in-process SADB (implements :class:`SAStore`). Thread-safe; see the module docstring.

    Knobs (KAME key engine variables): ``prefered_oldsa`` (True = use the oldest of several
    mature SAs, KAME's default; False = the newest), ``blockacq_count``/``blockacq_lifetime``
    (acquire rate limiting), ``larval_lifetime`` (getspi reservations), ``event_queue_size``.
    """

    def __init__(
        self,
        *,
        prefered_oldsa: bool = True,
        blockacq_count: int = BLOCKACQ_COUNT,
        blockacq_lifetime: float = BLOCKACQ_LIFETIME,
        larval_lifetime: float = LARVAL_LIFETIME,
        event_queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        if type(blockacq_count) is not int or blockacq_count < 0:
            raise ValueError(f"blockacq_count must be an integer >= 0, found {blockacq_count!r}")
        if blockacq_lifetime < 0 or larval_lifetime <= 0:
            raise ValueError(
                "blockacq_lifetime must be >= 0 and larval_lifetime > 0, found "
                f"{blockacq_lifetime!r} and {larval_lifetime!r}"
            )
        self._lock = threading.RLock()
        self._tables = _Tables()
        self._hub = EventHub(maxlen=event_queue_size)
        self._prefered_oldsa = bool(prefered_oldsa)
        self._blockacq_count = blockacq_count
        self._blockacq_lifetime = float(blockacq_lifetime)
        self._larval_lifetime = float(larval_lifetime)
        self._acq: dict[_AcqKey, _Acq] = {}
        self._acq_seq = 0
        self._next_reqid = REQID_FIRST
        self._heap: list[tuple[float, int, int, object]] = []
        self._heap_n = 0
        self._next_due = float("inf")
        self._in_txn = False
        self._gen_counter = itertools.count(1)
        self._generation = 0

    # --- knobs -----------------------------------------------------------------------------

    @property
    def prefered_oldsa(self) -> bool:
        """KAME's ``net.key.prefered_oldsa``: True (default) selects the oldest mature SA."""
        return self._prefered_oldsa

    @prefered_oldsa.setter
    def prefered_oldsa(self, value: bool) -> None:
        self._prefered_oldsa = bool(value)
        self._bump()

    @property
    def generation(self) -> int:
        """Changes after every change that can alter a lookup's answer (see the module
        docstring); a caller caching ``lookup_outbound``/``lookup_inbound`` answers compares it."""
        return self._generation

    def _bump(self) -> None:
        # next() on an itertools.count is atomic: concurrent bumps never repeat a value
        self._generation = next(self._gen_counter)

    @property
    def events_overflowed(self) -> int:
        """Events not queued because the queue was full (callbacks still saw them)."""
        return self._hub.overflowed

    def __len__(self) -> int:
        return len(self._tables.by_key)

    # --- admin verbs (each one a small transaction on the live tables) ---------------------

    def _live(self) -> SATransaction:
        return SATransaction(self, self._tables, live=True)

    def add(self, sa: SecurityAssociation, *, now: float) -> SAEntry:
        with self._lock:
            try:
                return self._live().add(sa, now=now)
            finally:
                self._bump()

    def update(self, sa: SecurityAssociation, *, now: float) -> SAEntry:
        with self._lock:
            try:
                return self._live().update(sa, now=now)
            finally:
                self._bump()

    def getspi(
        self,
        src: IPAddress | str,
        dst: IPAddress | str,
        proto: int | str,
        *,
        now: float,
        rng: Callable[[int], bytes] | None = None,
        hint: int | None = None,
        spi_min: int = SPI_MIN,
        spi_max: int = SPI_MAX,
        mode: int | str = SAMode.ANY,
        reqid: int = 0,
    ) -> LarvalSA:
        with self._lock:
            try:
                return self._live().getspi(
                    src, dst, proto, now=now, rng=rng, hint=hint, spi_min=spi_min,
                    spi_max=spi_max, mode=mode, reqid=reqid,
                )
            finally:
                self._bump()

    def get(
        self, dst: IPAddress | str, proto: int | str, spi: int, *, src: IPAddress | str | None = None
    ) -> SARecord | None:
        with self._lock:
            return self._live().get(dst, proto, spi, src=src)

    def delete(
        self, dst: IPAddress | str, proto: int | str, spi: int, *, src: IPAddress | str | None = None
    ) -> SARecord:
        with self._lock:
            try:
                return self._live().delete(dst, proto, spi, src=src)
            finally:
                self._bump()

    def deleteall(self, src: IPAddress | str, dst: IPAddress | str, proto: int | str) -> int:
        with self._lock:
            try:
                return self._live().deleteall(src, dst, proto)
            finally:
                self._bump()

    def flush(self, proto: int | str | None = None) -> int:
        with self._lock:
            try:
                return self._live().flush(proto)
            finally:
                self._bump()

    def dump(self, proto: int | str | None = None) -> list[SARecord]:
        with self._lock:
            return self._live().dump(proto)

    @contextmanager
    def transaction(self) -> Iterator[SATransaction]:
        """All or nothing: the verbs called on the yielded object work on a private copy of the
        tables, which replaces the live ones when the block ends normally (readers see the old
        or the new state, never a mix). If the block raises, nothing changes. Other admin calls
        wait; the data path keeps running on the old tables meanwhile."""
        with self._lock:
            if self._in_txn:
                raise RuntimeError("MemoryStore transactions do not nest")
            self._in_txn = True
            try:
                txn = SATransaction(self, self._tables.clone(), live=False)
                yield txn
                # re-validate entries that died on the data path while the block ran
                for item in [i for i in txn._t.by_key.values() if isinstance(i, SAEntry)]:
                    if item._rt.state is _DEAD:
                        txn._t.unlink(item)
                self._tables = txn._t
                txn._commit()
                self._bump()
            finally:
                self._in_txn = False

    # --- data path: lookups ----------------------------------------------------------------

    def lookup_inbound(self, dst: IPAddress | str, proto: int | str, spi: int) -> SAEntry | None:
        """The mature or dying SA for an inbound packet: (dst, proto, SPI), source ignored
        (RFC 4301 §4.1; KAME key_allocsa). O(1), lock-free."""
        cands = self._tables.by_spi.get(spi)
        if cands is None:
            return None
        if not isinstance(dst, IPAddress):
            dst = as_address(dst)
        if not isinstance(proto, int):
            proto = as_ipproto(proto)
        for e in cands:
            rt = e._rt
            sa = rt.sa
            if sa.dst == dst and sa.proto == proto:
                st = rt.state
                if st is _MATURE or st is _DYING:
                    return e
                return None
        return None

    def lookup_outbound(
        self,
        src: IPAddress | str,
        dst: IPAddress | str,
        proto: int | str,
        mode: int | str = SAMode.ANY,
        reqid: int = 0,
    ) -> SAEntry | None:
        """The SA for an outbound request (IPSEC-REFERENCE §4.2 step 7c, KAME
        key_allocsa_policy): same src, dst and proto; the SA's mode is ANY or equals ``mode``;
        if ``reqid`` != 0 the SA's reqid equals it. A mature SA is preferred to a dying one;
        among several, the oldest (``prefered_oldsa``, default) or the newest."""
        if not isinstance(src, IPAddress):
            src = as_address(src)
        if not isinstance(dst, IPAddress):
            dst = as_address(dst)
        if not isinstance(proto, int):
            proto = as_ipproto(proto)
        if not isinstance(mode, int):
            mode = as_mode(mode)
        head = self._tables.heads.get((src.packed, dst.packed, proto))
        if not head:
            return None
        dying: SAEntry | None = None
        for e in head if self._prefered_oldsa else reversed(head):
            rt = e._rt
            sa = rt.sa
            if sa.mode != 0 and sa.mode != mode:
                continue
            if reqid and sa.reqid != reqid:
                continue
            st = rt.state
            if st is _MATURE:
                return e
            if st is _DYING and dying is None:
                dying = e
        return dying

    # --- data path: per-SA state ------------------------------------------------------------

    def reserve_seq(self, entry: SAEntry, count: int = 1) -> int:
        """Reserve ``count`` consecutive outbound sequence numbers; returns the first.

        Atomic per SA: no number is ever handed out twice. The counter never wraps: when the
        block would pass 2^32-1 (2^64-1 with ESN) nothing is reserved, the SA dies (removed,
        HardExpire with reason ``sequence``) and SequenceOverflowError is raised. NoSAError
        if the SA is no longer usable.
        """
        if type(count) is not int or count < 1:
            raise ValueError(f"count must be a positive integer, found {shown(count)}")
        rt = entry._rt
        lock = rt.lock
        lock.acquire()  # not `with`: half the cost per packet
        try:
            st = rt.state
            if st is not _MATURE and st is not _DYING:
                raise NoSAError(f"SA {rt.sa.identity} is {st.name.lower()}, not usable")
            first = rt.seq + 1
            last = rt.seq + count
            if last <= rt.seq_max:
                rt.seq = last
                return first
            event = _overflowed(rt)
        finally:
            lock.release()
        raise self._overflow(entry, event)

    def reserve_and_account(self, entry: SAEntry, nbytes: int, now: float) -> int:
        """``reserve_seq(entry)`` and ``account(entry, nbytes, now)`` in one step: the sequence
        number of one outbound packet of ``nbytes``, charged to the SA's lifetime.

        One lock for both (the per-packet path). The sequence number has every guarantee of
        :meth:`reserve_seq` (SequenceOverflowError or NoSAError, and then nothing is charged);
        the charge may make the SA dying or dead *after* this packet, which is still sent,
        exactly as ``account`` after ``reserve_seq`` does.
        """
        rt = entry._rt
        lock = rt.lock
        lock.acquire()  # not `with`: half the cost per packet
        try:
            st = rt.state
            if st is not _MATURE and st is not _DYING:
                raise NoSAError(f"SA {rt.sa.identity} is {st.name.lower()}, not usable")
            seq = rt.seq + 1
            if seq > rt.seq_max:
                overflow = _overflowed(rt)
            else:
                rt.seq = seq
                rt.bytes += nbytes
                rt.packets += 1
                if rt.first_used is None:
                    rt.first_used = now
                rt.last_used = now
                if not rt.has_limits:
                    return seq
                events, dead = _evaluate(rt, now)
                if not events:
                    return seq
                overflow = None
        finally:
            lock.release()
        if overflow is not None:
            raise self._overflow(entry, overflow)
        self._changed(entry, events, dead)
        return seq

    def _overflow(self, entry: SAEntry, event: HardExpire) -> SequenceOverflowError:
        """After :func:`_overflowed` (outside the SA lock): remove the SA, publish, the error."""
        self._remove(entry)
        self._hub.publish((event,))
        bits = 64 if entry.sa.esn else 32
        return SequenceOverflowError(
            f"sequence counter of SA {entry.sa.identity} exhausted: last sent {entry._rt.seq}, "
            f"the {bits}-bit counter may not wrap; the SA is dead and was removed"
        )

    def _changed(self, entry: SAEntry, events: list[SADBEvent], dead: bool) -> None:
        """After :func:`_evaluate` changed an SA's state (outside its lock)."""
        if dead:
            self._remove(entry)
        else:
            self._bump()
        self._hub.publish(events)

    def replay_check(self, entry: SAEntry, seq_lo: int) -> int | None:
        """Before the ICV: the full (ESN-inferred) sequence number if the packet may be new,
        None if it is a replay, too old, or the SA is no longer usable."""
        rt = entry._rt
        lock = rt.lock
        lock.acquire()  # not `with`: half the cost per packet
        try:
            st = rt.state
            if st is not _MATURE and st is not _DYING:
                return None
            return rt.replay.check(seq_lo)
        finally:
            lock.release()

    def replay_commit(self, entry: SAEntry, seq: int) -> bool:
        """After the ICV verified: record ``seq`` in the window. False = a duplicate won the
        race (drop it as a replay) or the SA is gone."""
        rt = entry._rt
        lock = rt.lock
        lock.acquire()  # not `with`: half the cost per packet
        try:
            st = rt.state
            if st is not _MATURE and st is not _DYING:
                return False
            return rt.replay.commit(seq)
        finally:
            lock.release()

    def commit_and_account(self, entry: SAEntry, seq: int, nbytes: int, now: float) -> bool:
        """``replay_commit(entry, seq)`` and, when it succeeds, ``account(entry, nbytes, now)``,
        in one step (one lock; the per-packet path after the ICV verified). False = a
        duplicate won the race or the SA is gone: nothing was recorded or charged."""
        rt = entry._rt
        lock = rt.lock
        lock.acquire()  # not `with`: half the cost per packet
        try:
            st = rt.state
            if st is not _MATURE and st is not _DYING:
                return False
            if not rt.replay.commit(seq):
                return False
            rt.bytes += nbytes
            rt.packets += 1
            if rt.first_used is None:
                rt.first_used = now
            rt.last_used = now
            if not rt.has_limits:
                return True
            events, dead = _evaluate(rt, now)
            if not events:
                return True
        finally:
            lock.release()
        self._changed(entry, events, dead)
        return True

    def account(self, entry: SAEntry, nbytes: int, now: float) -> SAState:
        """Count one packet of ``nbytes`` on the SA at time ``now`` and apply its lifetimes:
        soft limit -> dying + SoftExpire, hard limit -> dead, removed + HardExpire.
        Returns the SA's state afterwards."""
        rt = entry._rt
        lock = rt.lock
        lock.acquire()  # not `with`: half the cost per packet
        try:
            st = rt.state
            if st is not _MATURE and st is not _DYING:
                return st
            rt.bytes += nbytes
            rt.packets += 1
            if rt.first_used is None:
                rt.first_used = now
            rt.last_used = now
            if not rt.has_limits:
                return st
            events, dead = _evaluate(rt, now)
            st = rt.state
        finally:
            lock.release()
        if events:
            self._changed(entry, events, dead)
        return st

    def status(self, entry: SAEntry) -> SAStatus:
        """A snapshot of the SA's runtime state."""
        return entry._rt.snapshot()

    # --- time ------------------------------------------------------------------------------

    def tick(self, now: float) -> list[SADBEvent]:
        """Apply every time-based limit due at ``now``: soft/hard add-time lifetimes, larval
        SAs older than ``larval_lifetime`` (deleted silently, as KAME does) and acquire
        suppression entries. Returns the events emitted (also published). Cheap when nothing
        is due: one float comparison, no lock."""
        if now < self._next_due:
            return []
        events: list[SADBEvent] = []
        with self._lock:
            heap = self._heap
            while heap and heap[0][0] <= now:
                _, _, kind, obj = heapq.heappop(heap)
                if kind == _K_SA:
                    assert isinstance(obj, SAEntry)
                    rt = obj._rt
                    with rt.lock:
                        st = rt.state
                        if st is not _MATURE and st is not _DYING:
                            continue
                        evs, dead = _evaluate(rt, now)
                    events.extend(evs)
                    if dead:
                        self._tables.unlink(obj)
                elif kind == _K_LARVAL:
                    assert isinstance(obj, _Larval)
                    if now - obj.created >= self._larval_lifetime:
                        self._tables.unlink(obj)
                else:
                    key = cast(_AcqKey, obj)
                    acq = self._acq.get(key)
                    if acq is not None and now - acq.created >= self._blockacq_lifetime:
                        del self._acq[key]
            self._next_due = heap[0][0] if heap else float("inf")
            if events:
                self._bump()
        if events:
            self._hub.publish(events)
        return events

    expire = tick

    # --- acquire and reqids ---------------------------------------------------------------

    def acquire(
        self,
        src: IPAddress | str,
        dst: IPAddress | str,
        proto: int | str,
        mode: int | str,
        reqid: int,
        *,
        now: float,
    ) -> bool:
        """Raise an Acquire event for a missing SA, rate-limited as KAME's key_acquire: the
        first request emits; further ones for the same (src, dst, proto, mode, reqid) are
        suppressed until more than ``blockacq_count`` (10) were suppressed, or until
        ``blockacq_lifetime`` (20 s) passed since the first. Returns whether it emitted."""
        srca, dsta = as_address(src), as_address(dst)
        p, m = as_ipproto(proto), as_mode(mode)
        key: _AcqKey = (srca, dsta, p, m, reqid)
        with self._lock:
            acq = self._acq.get(key)
            if acq is not None and now - acq.created >= self._blockacq_lifetime:
                del self._acq[key]
                acq = None
            if acq is None:
                self._acq_seq = 1 if self._acq_seq >= _U32 else self._acq_seq + 1
                acq = _Acq(now, self._acq_seq)
                self._acq[key] = acq
                self._push(now + self._blockacq_lifetime, _K_ACQ, key)
            elif acq.count > self._blockacq_count:
                acq.count = 0
            else:
                acq.count += 1
                return False
            event = Acquire(
                src=srca, dst=dsta, proto=SAProtocol(p), mode=SAMode(m), reqid=reqid,
                seq=acq.seq, time=now,
            )
        self._hub.publish((event,))
        return True

    def allocate_reqid(self) -> int:
        """A fresh reqid for a ``unique`` request without a number: 0x4000, 0x4001, ...
        wrapping back to 0x4000 after 0xffffffff, skipping reqids that SAs in this store use."""
        with self._lock:
            in_use = {
                item.sa.reqid for item in self._tables.by_key.values() if item.sa.reqid
            }
            span = _U32 - REQID_FIRST + 1
            for _ in range(min(span, len(in_use) + 1)):
                candidate = self._next_reqid
                self._next_reqid = REQID_FIRST if candidate >= _U32 else candidate + 1
                if candidate not in in_use:
                    return candidate
            raise SADBError(errno.EAGAIN, "no free reqid")  # pragma: no cover - 4 billion SAs

    # --- events ----------------------------------------------------------------------------

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event)`` for every event; returns the unsubscribe function."""
        return self._hub.subscribe(callback)

    def events(self) -> list[SADBEvent]:
        """Drain the event queue (oldest first)."""
        return self._hub.events()

    def next_event(self) -> SADBEvent | None:
        """Pop the oldest queued event, or None."""
        return self._hub.next_event()

    # --- internals -------------------------------------------------------------------------

    def _push(self, due: float, kind: int, obj: object) -> None:
        # caller holds self._lock
        self._heap_n += 1
        heapq.heappush(self._heap, (due, self._heap_n, kind, obj))
        self._next_due = min(self._next_due, due)

    def _installed(self, entry: SAEntry) -> None:
        """After an SA became mature: schedule its deadlines, end acquire suppression for it."""
        sa = entry.sa
        p = int(sa.proto)
        for k in [k for k in self._acq if k[0] == sa.src and k[1] == sa.dst and k[2] == p]:
            del self._acq[k]
        self._schedule_sa(entry)

    def _schedule_sa(self, entry: SAEntry) -> None:
        rt = entry._rt
        sa = rt.sa
        for limit in (sa.soft.addtime, sa.hard.addtime):
            if limit:
                self._push(rt.created + limit, _K_SA, entry)

    def _schedule_larval(self, item: _Larval) -> None:
        self._push(item.created + self._larval_lifetime, _K_LARVAL, item)

    def _remove(self, entry: SAEntry) -> None:
        """Unlink an SA that died on the data path."""
        with self._lock:
            self._tables.unlink(entry)
            self._bump()


def _overflowed(rt: _Runtime) -> HardExpire:
    """The sequence counter would pass its maximum: kill ``rt`` (caller holds rt.lock)."""
    rt.state = _DEAD
    return HardExpire(
        sa=rt.sa.identity, reason=ExpireReason.SEQUENCE, bytes=rt.bytes,
        age=0.0 if rt.last_used is None else max(0.0, rt.last_used - rt.created),
    )


def _evaluate(rt: _Runtime, now: float) -> tuple[list[SADBEvent], bool]:
    """Apply ``rt``'s lifetimes at ``now`` (caller holds rt.lock; rt is mature or dying)."""
    sa = rt.sa
    age = now - rt.created
    events: list[SADBEvent] = []
    if rt.state is _MATURE:
        reason = limit_reached(sa.soft, age=age, nbytes=rt.bytes)
        if reason is not None:
            rt.state = _DYING
            events.append(SoftExpire(sa=sa.identity, reason=reason, bytes=rt.bytes, age=age))
    reason = limit_reached(sa.hard, age=age, nbytes=rt.bytes)
    if reason is not None:
        rt.state = _DEAD
        events.append(HardExpire(sa=sa.identity, reason=reason, bytes=rt.bytes, age=age))
        return events, True
    return events, False


_default_lock = threading.Lock()
_default: MemoryStore | None = None


def default_sadb() -> MemoryStore:
    """The process-wide SADB (created on first use)."""
    global _default
    store = _default
    if store is None:
        with _default_lock:
            if _default is None:
                _default = MemoryStore()
            store = _default
    return store
