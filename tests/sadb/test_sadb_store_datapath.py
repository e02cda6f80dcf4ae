"""MemoryStore's combined per-packet calls and its generation counter."""

from __future__ import annotations

import threading

import pytest

from secsock.errors import NoSAError, SequenceOverflowError
from secsock.sadb.events import HardExpire, SoftExpire
from secsock.sadb.lifetime import ExpireReason, Lifetime
from secsock.sadb.model import SAState
from secsock.sadb.store import MemoryStore
from tests.sadb.sadb_helpers import addr, esp_sa

A1, A2 = addr("10.0.0.1"), addr("10.0.0.2")


# --- reserve_and_account ----------------------------------------------------------------------


def test_reserve_and_account_is_reserve_seq_then_account() -> None:
    one, two = MemoryStore(), MemoryStore()
    e1 = one.add(esp_sa(seq_start=41), now=0)
    e2 = two.add(esp_sa(seq_start=41), now=0)
    got = [one.reserve_and_account(e1, n, now=t) for t, n in ((5, 100), (7, 50), (9, 1))]
    want = []
    for t, n in ((5, 100), (7, 50), (9, 1)):
        want.append(two.reserve_seq(e2))
        two.account(e2, n, now=t)
    assert got == want == [42, 43, 44]
    assert one.status(e1) == two.status(e2)
    st = one.status(e1)
    assert (st.seq, st.bytes, st.packets, st.first_used, st.last_used) == (44, 151, 3, 5, 9)


def test_reserve_and_account_applies_byte_lifetimes_after_the_packet() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(soft=Lifetime(bytes=100), hard=Lifetime(bytes=200)), now=0)
    assert store.reserve_and_account(e, 99, now=1) == 1
    assert store.events() == []
    assert store.reserve_and_account(e, 1, now=2) == 2  # this packet still goes out
    (soft,) = store.events()
    assert isinstance(soft, SoftExpire)
    assert soft.reason is ExpireReason.BYTES
    assert store.status(e).state is SAState.DYING
    assert store.reserve_and_account(e, 100, now=3) == 3
    (hard,) = store.events()
    assert isinstance(hard, HardExpire)
    assert e.state is SAState.DEAD
    assert store.lookup_outbound(A1, A2, 50, "transport") is None
    with pytest.raises(NoSAError):
        store.reserve_and_account(e, 1, now=4)
    assert store.status(e).packets == 3  # the refused packet was not charged


def test_reserve_and_account_never_wraps() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(seq_start=2**32 - 2), now=0)
    assert store.reserve_and_account(e, 10, now=1) == 2**32 - 1
    with pytest.raises(SequenceOverflowError, match="32-bit"):
        store.reserve_and_account(e, 10, now=2)
    assert e.state is SAState.DEAD
    assert store.status(e).bytes == 10  # nothing charged for the refused packet
    assert store.lookup_outbound(A1, A2, 50, "transport") is None
    (event,) = store.events()
    assert isinstance(event, HardExpire)
    assert event.reason is ExpireReason.SEQUENCE
    with pytest.raises(NoSAError):
        store.reserve_and_account(e, 10, now=3)


def test_concurrent_reserve_and_account_never_repeats_and_counts_every_packet() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(), now=0)
    results: list[list[int]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def worker(out: list[int]) -> None:
        start.wait()
        out.extend(store.reserve_and_account(e, 3, 1.0) for _ in range(20_000))

    threads = [threading.Thread(target=worker, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [s for r in results for s in r]
    assert sorted(every) == list(range(1, 80_001))
    st = store.status(e)
    assert (st.seq, st.packets, st.bytes) == (80_000, 80_000, 240_000)


# --- commit_and_account -----------------------------------------------------------------------


def test_commit_and_account_records_and_charges_only_on_success() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(replay=1), now=0)
    seq = store.replay_check(e, 5)
    assert seq == 5
    assert store.commit_and_account(e, seq, 120, now=3)
    assert store.replay_check(e, 5) is None
    assert not store.commit_and_account(e, 5, 120, now=4)  # a duplicate that raced past check
    st = store.status(e)
    assert (st.replay_top, st.packets, st.bytes, st.first_used, st.last_used) == (5, 1, 120, 3, 3)


def test_commit_and_account_on_a_dead_sa_is_false() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(), now=0)
    store.delete(A2, 50, 0x1000)
    assert not store.commit_and_account(e, 1, 10, now=1)
    assert store.status(e).packets == 0


def test_commit_and_account_applies_lifetimes() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(soft=Lifetime(bytes=10), hard=Lifetime(addtime=50)), now=0)
    assert store.commit_and_account(e, 1, 10, now=1)
    assert store.status(e).state is SAState.DYING
    assert [type(x) for x in store.events()] == [SoftExpire]
    assert store.commit_and_account(e, 2, 1, now=60)  # this packet is delivered, then it dies
    assert e.state is SAState.DEAD
    assert [type(x) for x in store.events()] == [HardExpire]
    assert store.lookup_inbound(A2, 50, 0x1000) is None


# --- generation -------------------------------------------------------------------------------


def test_generation_moves_on_every_change_a_lookup_can_see() -> None:
    store = MemoryStore()
    seen = [store.generation]

    def moved() -> bool:
        now = store.generation
        fresh = now not in seen
        seen.append(now)
        return fresh

    e = store.add(esp_sa(soft=Lifetime(bytes=10), hard=Lifetime(bytes=20)), now=0)
    assert moved()
    store.update(esp_sa(soft=Lifetime(bytes=10), hard=Lifetime(bytes=20)), now=1)
    assert moved()
    store.reserve_and_account(e, 5, now=1)
    assert not moved()  # a packet that changes no state leaves it alone
    store.reserve_and_account(e, 5, now=2)  # soft limit: dying
    assert moved()
    store.account(e, 10, now=3)  # hard limit: dead and removed
    assert moved()
    assert store.lookup_outbound(A1, A2, 50, "transport") is None
    store.getspi(A1, A2, "esp", now=4, hint=0x2000)
    assert moved()
    e2 = store.add(esp_sa(0x3000, seq_start=2**32 - 1), now=4)
    assert moved()
    with pytest.raises(SequenceOverflowError):
        store.reserve_and_account(e2, 1, now=5)
    assert moved()
    store.add(esp_sa(0x4000, hard=Lifetime(addtime=10)), now=5)
    assert moved()
    store.tick(10)
    assert not moved()
    store.tick(15)  # the add-time limit: dead
    assert moved()
    store.add(esp_sa(0x5000), now=20)
    assert moved()
    store.delete(A2, 50, 0x5000)
    assert moved()
    with store.transaction() as txn:
        txn.add(esp_sa(0x6000), now=21)
        assert not moved()  # not visible before the commit
    assert moved()
    store.deleteall(A1, A2, "esp")
    assert moved()
    store.flush()
    assert moved()
    store.prefered_oldsa = False
    assert moved()


def test_generation_is_read_before_a_lookup_to_validate_a_cached_answer() -> None:
    # The pattern the engine uses: remember (generation, answer); reuse while unchanged.
    store = MemoryStore()
    old = store.add(esp_sa(0x1000), now=0)
    gen = store.generation
    assert store.lookup_outbound(A1, A2, 50, "transport") is old
    store.add(esp_sa(0x1001, soft=Lifetime(bytes=1)), now=1)  # a newer SA: the oldest wins
    assert store.generation != gen
    assert store.lookup_outbound(A1, A2, 50, "transport") is old
    gen = store.generation
    store.account(old, 0, now=2)
    assert store.generation == gen
    store.update(esp_sa(0x1000, soft=Lifetime(bytes=1)), now=2)
    store.account(old, 1, now=3)  # the old SA is dying now: the newer mature one is chosen
    assert store.generation != gen
    assert store.lookup_outbound(A1, A2, 50, "transport") is not old
