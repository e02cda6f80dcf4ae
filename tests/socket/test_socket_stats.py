"""The counters are read without itertools.count.__reduce__ (deprecated in Python 3.12,
removed in 3.14): snapshots work on a counter type that refuses to be reduced."""

from __future__ import annotations

import itertools
import threading
import warnings

from secsock._stats import COUNTER_NAMES, Counters
from secsock.errors import DropReason


class _Unreducible(itertools.count):  # type: ignore[type-arg]
    """An itertools.count as Python 3.14 has it: no pickling support."""

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("cannot pickle 'itertools.count' object")


def test_snapshot_reads_counters_without_reduce() -> None:
    counters = Counters()
    counters._counts = [_Unreducible() for _ in counters._counts]
    for _ in range(3):
        counters.add(Counters.index("in_success"))
    counters.add(Counters.index("out_success"), 5)
    counters.drop(DropReason.REPLAY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DeprecationWarning either
        snap = counters.snapshot()
    assert snap.in_success == 3
    assert snap.out_success == 5
    assert snap.in_replay == 1
    assert snap.drops[DropReason.REPLAY] == 1
    assert sum(v for _, v in snap.items()) == 9
    assert len(list(snap.items())) == len(COUNTER_NAMES)


def test_large_values_and_the_parent_chain() -> None:
    parent = Counters()
    child = Counters(parent)
    big = 2**70  # beyond a C long: the repr still holds the exact value
    child._counts[Counters.index("in_clear")] = itertools.count(big)
    next(child.chain(Counters.index("in_clear"))[0])
    assert child.snapshot().in_clear == big + 1
    for counter in child.chain(Counters.index("in_success")):
        next(counter)
    assert child.snapshot().in_success == parent.snapshot().in_success == 1


def test_concurrent_increments_are_all_counted() -> None:
    counters = Counters()
    slot = Counters.index("in_success")

    def work() -> None:
        for _ in range(20000):
            counters.add(slot)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counters.snapshot().in_success == 80000
