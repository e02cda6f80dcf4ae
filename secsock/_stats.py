"""IPsec counters, modelled on KAME's ``ipsecstat`` (``netstat -s -p ipsec``).

Every :class:`~secsock.engine.IPsecEngine` (one per secure socket or endpoint) keeps its own
:class:`Counters`; each increment is also added to the process-wide counters that
:func:`stats` snapshots. Both are thread-safe (one small lock each).

A snapshot is an :class:`IPsecStats`, a frozen dataclass; ``after - before`` gives the
difference of two snapshots, which is how tests and the CLI look at one exchange.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from secsock.errors import DropReason

__all__ = (
    "COUNTER_NAMES",
    "DROP_COUNTER",
    "Counters",
    "IPsecStats",
    "counter_value",
    "process_counters",
    "stats",
)

#: Which ipsecstat counter each inbound drop reason increments.
DROP_COUNTER: Mapping[DropReason, str] = MappingProxyType(
    {
        DropReason.MALFORMED: "in_inval",
        DropReason.BAD_INNER: "in_inval",
        DropReason.NO_SA: "in_nosa",
        DropReason.SA_DEAD: "in_nosa",
        DropReason.REPLAY: "in_replay",
        DropReason.SEQ_OVERFLOW: "in_replay",
        DropReason.AUTH_FAILED: "in_authfail",
        DropReason.BAD_PADDING: "in_badpad",
        DropReason.POLICY: "in_polvio",
        DropReason.DUMMY: "in_dummy",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class IPsecStats:
    """A snapshot of the counters (all start at 0).

    Inbound: ``in_success`` protected datagrams delivered (decapsulated, verified, allowed by
    policy); ``in_clear`` clear datagrams the policy allowed; ``in_polvio`` rejected by policy
    (clear under ``require``, wrong protocol, SA/datagram address mismatch, ``discard``);
    ``in_nosa`` no (live) SA for the SPI; ``in_inval`` malformed outer packet or inner datagram;
    ``in_replay`` replayed or too old (or receive counter exhausted); ``in_authfail`` ICV
    mismatch; ``in_badpad`` ESP padding not 1, 2, 3, ...; ``in_dummy`` ESP next header 59
    (silently discarded); ``in_keepalive`` NAT keepalives (ignored); ``in_ike`` datagrams with
    the non-ESP marker (handed to the IKE callback, never to the application).

    Outbound: ``out_success`` protected datagrams sent; ``out_clear`` sent in the clear by
    policy (bypass, none, or ``use`` with no SA); ``out_polvio`` refused by a ``discard``
    policy; ``out_nosa`` refused because a ``require``/``unique`` SA is missing; ``out_inval``
    refused for another reason (AH over UDP, tunnel mode, dead SA, ...); ``out_seqoverflow``
    refused because the SA's sequence counter is exhausted.

    ``drops`` counts inbound drops by :class:`~secsock.errors.DropReason`.
    """

    in_success: int = 0
    in_clear: int = 0
    in_polvio: int = 0
    in_nosa: int = 0
    in_inval: int = 0
    in_replay: int = 0
    in_authfail: int = 0
    in_badpad: int = 0
    in_dummy: int = 0
    in_keepalive: int = 0
    in_ike: int = 0
    out_success: int = 0
    out_clear: int = 0
    out_polvio: int = 0
    out_nosa: int = 0
    out_inval: int = 0
    out_seqoverflow: int = 0
    drops: Mapping[DropReason, int] = field(
        default_factory=lambda: MappingProxyType(dict.fromkeys(DropReason, 0))
    )

    def __post_init__(self) -> None:
        for name in COUNTER_NAMES:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"counter {name} must be a non-negative int, got {value!r}")
        if not isinstance(self.drops, MappingProxyType):
            full = dict.fromkeys(DropReason, 0)
            full.update(self.drops)
            object.__setattr__(self, "drops", MappingProxyType(full))

    def __sub__(self, other: IPsecStats) -> IPsecStats:
        """The counts between two snapshots (``after - before``)."""
        values = {name: getattr(self, name) - getattr(other, name) for name in COUNTER_NAMES}
        drops = {r: self.drops.get(r, 0) - other.drops.get(r, 0) for r in DropReason}
        if any(v < 0 for v in values.values()) or any(v < 0 for v in drops.values()):
            raise ValueError("subtracting a later snapshot from an earlier one")
        return IPsecStats(**values, drops=drops)

    def items(self) -> Iterator[tuple[str, int]]:
        """``(name, value)`` for every counter, in ``netstat`` order."""
        for name in COUNTER_NAMES:
            yield name, getattr(self, name)

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly dict: the counters and ``drops`` keyed by reason string."""
        out: dict[str, object] = dict(self.items())
        out["drops"] = {str(r): n for r, n in self.drops.items()}
        return out

    @property
    def dropped(self) -> int:
        """Inbound datagrams dropped for any reason (dummy packets included)."""
        return sum(self.drops.values())


COUNTER_NAMES: tuple[str, ...] = tuple(f.name for f in fields(IPsecStats) if f.name != "drops")
_INDEX: dict[str, int] = {name: i for i, name in enumerate(COUNTER_NAMES)}
_REASONS: tuple[DropReason, ...] = tuple(DropReason)
_REASON_INDEX: dict[DropReason, int] = {
    r: len(COUNTER_NAMES) + i for i, r in enumerate(_REASONS)
}
_DROP_INDICES: dict[DropReason, tuple[int, int]] = {
    r: (_INDEX[DROP_COUNTER[r]], _REASON_INDEX[r]) for r in _REASONS
}


class Counters:
    """Mutable, thread-safe counters; increments also go to ``parent`` (the process-wide set).

    Each counter is an ``itertools.count``, whose ``next()`` is atomic in CPython, so the
    per-packet increment takes no lock; :meth:`snapshot` reads them all.
    """

    __slots__ = ("_counts", "_parent")

    def __init__(self, parent: Counters | None = None) -> None:
        self._counts = [itertools.count() for _ in range(len(COUNTER_NAMES) + len(_REASONS))]
        self._parent = parent

    @staticmethod
    def index(name: str) -> int:
        """The slot of counter ``name`` (raises KeyError naming the known counters)."""
        try:
            return _INDEX[name]
        except KeyError:
            raise KeyError(f"unknown counter {name!r}; known: {', '.join(COUNTER_NAMES)}") from None

    def add(self, slot: int, n: int = 1) -> None:
        """Add ``n`` (>= 0) to the counter in ``slot`` (see :meth:`index`)."""
        if n == 1:  # the per-packet case: two C calls
            next(self._counts[slot])
            if self._parent is not None:
                self._parent.add(slot)
            return
        counter = self._counts[slot]
        for _ in range(n):
            next(counter)
        if self._parent is not None:
            self._parent.add(slot, n)

    def chain(self, slot: int) -> tuple[itertools.count[int], ...]:
        """The counters that one increment of ``slot`` advances: this set's, then its parent's
        (and so on). A per-packet caller keeps the tuple and calls ``next()`` on each member,
        which is what :meth:`add` does, without the method calls."""
        out = [self._counts[slot]]
        parent = self._parent
        while parent is not None:
            out.append(parent._counts[slot])
            parent = parent._parent
        return tuple(out)

    def drop(self, reason: DropReason) -> None:
        """Count one inbound drop: its ipsecstat counter and its per-reason count."""
        counter, per_reason = _DROP_INDICES[reason]
        next(self._counts[counter])
        next(self._counts[per_reason])
        if self._parent is not None:
            self._parent.drop(reason)

    def snapshot(self) -> IPsecStats:
        # counter_value inlined (one call less per counter)
        values = [int(t[t.index("(") + 1 : -1]) for t in map(repr, self._counts)]
        n = len(COUNTER_NAMES)
        counters = dict(zip(COUNTER_NAMES, values[:n], strict=True))
        drops = dict(zip(_REASONS, values[n:], strict=True))
        return IPsecStats(**counters, drops=drops)


def counter_value(counter: itertools.count[int]) -> int:
    """The next value of an itertools.count (= how often next() was called), without
    advancing it: read from its repr, ``count(N)`` (``__reduce__``, which exposed it before,
    is deprecated since Python 3.12 and removed in 3.14). The repr is built under the GIL
    from the counter's current value, like next(), so a read never sees half an update."""
    text = repr(counter)
    return int(text[text.index("(") + 1 : -1])


_PROCESS = Counters()


def process_counters() -> Counters:
    """The process-wide counters every engine adds to (for adapters building engines)."""
    return _PROCESS


def stats() -> IPsecStats:
    """A snapshot of the process-wide IPsec counters (all secure sockets and endpoints)."""
    return _PROCESS.snapshot()
