"""MemoryStore: admin verbs, lookups, sequence numbers, replay, lifetimes, acquire, events."""

from __future__ import annotations

import errno
import threading

import pytest

from secsock.core.ah import AhContext
from secsock.core.esp import EspContext
from secsock.errors import NoSAError, SADBError, SequenceOverflowError
from secsock.sadb.events import Acquire, HardExpire, SADBEvent, SoftExpire
from secsock.sadb.lifetime import ExpireReason, Lifetime
from secsock.sadb.model import LarvalSA, SAMode, SAProtocol, SAState
from secsock.sadb.store import MemoryStore, SAAdmin, SAStore, default_sadb
from tests.sadb.sadb_helpers import Rng, addr, ah_sa, esp_sa

A1, A2, A3 = addr("10.0.0.1"), addr("10.0.0.2"), addr("10.0.0.3")


def test_memory_store_implements_the_protocols() -> None:
    store = MemoryStore()
    assert isinstance(store, SAStore)
    assert isinstance(store, SAAdmin)
    with store.transaction() as txn:
        assert isinstance(txn, SAAdmin)


def test_default_sadb_is_one_store() -> None:
    assert default_sadb() is default_sadb()
    assert isinstance(default_sadb(), MemoryStore)


# --- admin verbs ----------------------------------------------------------------------------


def test_add_builds_the_crypto_context_once() -> None:
    store = MemoryStore()
    esp = store.add(esp_sa(), now=10.0)
    ah = store.add(ah_sa(ah_align=8), now=10.0)
    assert isinstance(esp.crypto, EspContext)
    assert isinstance(ah.crypto, AhContext)
    assert ah.crypto.align == 8
    assert esp.state is SAState.MATURE
    assert esp.alive
    assert esp.created == 10.0
    assert store.lookup_inbound(A2, 50, 0x1000) is esp  # the same handle, same context
    assert len(store) == 2


def test_duplicate_spi_is_eexist_and_changes_nothing() -> None:
    store = MemoryStore()
    first = store.add(esp_sa(), now=0)
    with pytest.raises(SADBError) as info:
        store.add(esp_sa(src="10.0.0.9", enc_key=bytes(20)), now=1)
    assert info.value.errno == errno.EEXIST
    assert "4096(0x00001000)" in str(info.value)
    assert store.lookup_inbound(A2, 50, 0x1000) is first
    # same SPI, other protocol or other dst: different SAs
    store.add(ah_sa(spi=0x1000), now=0)
    store.add(esp_sa(dst="10.0.0.3"), now=0)
    assert len(store) == 3


def test_get_delete_deleteall_flush_dump() -> None:
    store = MemoryStore()
    store.add(esp_sa(0x1000), now=0)
    store.add(esp_sa(0x1001), now=0)
    store.add(esp_sa(0x1002, src="10.0.0.2", dst="10.0.0.1"), now=0)
    store.add(ah_sa(0x2000), now=0)
    rec = store.get(A2, "esp", 0x1000)
    assert rec is not None
    assert rec.sa == esp_sa(0x1000)
    assert rec.status.state is SAState.MATURE
    assert store.get(A2, 50, 0x1000, src=A3) is None  # wrong source
    assert store.get(A2, 50, 0x9999) is None
    assert [r.sa.spi for r in store.dump()] == [0x1000, 0x1001, 0x1002, 0x2000]
    assert [r.sa.spi for r in store.dump("ah")] == [0x2000]
    entry = store.lookup_inbound(A2, 50, 0x1001)
    assert entry is not None
    store.delete(A2, 50, 0x1001, src=A1)
    assert entry.state is SAState.DEAD  # a held handle stops working
    with pytest.raises(NoSAError):
        store.reserve_seq(entry)
    with pytest.raises(SADBError) as info:
        store.delete(A2, 50, 0x1001)
    assert info.value.errno == errno.ESRCH
    assert store.deleteall(A1, A2, "esp") == 1  # 0x1000 only; 0x1002 goes the other way
    assert store.deleteall(A1, A2, "esp") == 0
    assert [r.sa.spi for r in store.dump()] == [0x1002, 0x2000]
    assert store.flush("ah") == 1
    assert store.flush() == 1
    assert store.dump() == []
    assert len(store) == 0


def test_getspi_with_rng_hint_and_range() -> None:
    store = MemoryStore()
    rng = Rng(5, 5, 7)  # 0x100 + 5 twice (second time taken), then 0x100 + 7
    a = store.getspi(A1, A2, "esp", now=0, rng=rng)
    assert a == LarvalSA(spi=0x105, proto=SAProtocol.ESP, src=A1, dst=A2)
    b = store.getspi(A1, A2, "esp", now=0, rng=rng)
    assert b.spi == 0x107
    assert rng.calls == 3
    rec = store.get(A2, 50, 0x105)
    assert rec is not None
    assert rec.status.state is SAState.LARVAL
    assert store.lookup_inbound(A2, 50, 0x105) is None  # larval SAs carry no traffic
    c = store.getspi(A1, A2, "esp", now=0, hint=0x4242, mode="transport", reqid=9)
    assert (c.spi, c.mode, c.reqid) == (0x4242, SAMode.TRANSPORT, 9)
    with pytest.raises(SADBError) as info:
        store.getspi(A1, A2, "esp", now=0, hint=0x4242)
    assert info.value.errno == errno.EEXIST
    assert store.getspi(A1, A2, "esp", now=0, hint=0x4242, rng=Rng(1)).spi == 0x101
    assert store.getspi(A1, A2, "ah", now=0, spi_min=0x5000, spi_max=0x5000).spi == 0x5000
    with pytest.raises(ValueError, match="rng"):
        store.getspi(A1, A2, "esp", now=0)
    with pytest.raises(ValueError, match="hint must lie"):
        store.getspi(A1, A2, "esp", now=0, hint=0x10)
    full = MemoryStore()
    full.getspi(A1, A2, "esp", now=0, hint=0x300, spi_min=0x300, spi_max=0x300)
    with pytest.raises(SADBError) as info:
        full.getspi(A1, A2, "esp", now=0, rng=Rng(*[0] * 1000), spi_min=0x300, spi_max=0x300)
    assert info.value.errno == errno.EAGAIN
    with pytest.raises(SADBError):
        store.add(esp_sa(0x105), now=0)  # the reservation holds the SPI


def test_update_makes_a_larval_sa_mature() -> None:
    store = MemoryStore()
    larval = store.getspi(A1, A2, "esp", now=100.0, hint=0x1000, mode=SAMode.TRANSPORT)
    entry = store.update(esp_sa(larval.spi), now=105.0)
    assert entry.state is SAState.MATURE
    assert entry.created == 100.0
    assert store.lookup_inbound(A2, 50, 0x1000) is entry
    with pytest.raises(SADBError) as info:
        store.update(esp_sa(0x7777), now=0)
    assert info.value.errno == errno.ESRCH
    store.getspi(A1, A2, "esp", now=0, hint=0x1001)
    with pytest.raises(SADBError, match="reserved with mode any"):
        store.update(esp_sa(0x1001), now=0)  # mode transport != any


def test_update_of_a_mature_sa_changes_lifetimes_only() -> None:
    store = MemoryStore()
    entry = store.add(esp_sa(), now=0)
    same = store.update(esp_sa(hard=Lifetime(bytes=500)), now=1)
    assert same is entry
    assert entry.sa.hard.bytes == 500
    with pytest.raises(SADBError) as info:
        store.update(esp_sa(enc_key=bytes(20)), now=1)
    assert info.value.errno == errno.EINVAL
    with pytest.raises(SADBError):
        store.update(esp_sa(replay=4), now=1)
    with pytest.raises(SADBError):
        store.update(esp_sa(natt_sport=4500, natt_dport=4500), now=1)  # esp -> esp-udp
    store.account(entry, 600, now=2)
    assert entry.state is SAState.DEAD  # the new hard limit applies


def test_update_of_natt_ports() -> None:
    store = MemoryStore()
    entry = store.add(esp_sa(natt_sport=4500, natt_dport=4500), now=0)
    store.update(esp_sa(natt_sport=4500, natt_dport=1234), now=0)
    assert entry.sa.natt_dport == 1234


# --- lookups --------------------------------------------------------------------------------


def test_inbound_lookup_is_by_dst_proto_spi() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(), now=0)
    other = store.add(esp_sa(dst="10.0.0.3"), now=0)
    assert store.lookup_inbound(A2, 50, 0x1000) is e
    assert store.lookup_inbound("10.0.0.3", "esp", 0x1000) is other
    assert store.lookup_inbound(A2, 51, 0x1000) is None
    assert store.lookup_inbound(A2, 50, 0x1001) is None
    assert store.lookup_inbound(A1, 50, 0x1000) is None


def test_outbound_reqid_binding() -> None:
    store = MemoryStore()
    plain = store.add(esp_sa(0x1000), now=0)
    bound = store.add(esp_sa(0x1001, reqid=7), now=1)
    assert store.lookup_outbound(A1, A2, 50, SAMode.TRANSPORT, 7) is bound
    assert store.lookup_outbound(A1, A2, 50, SAMode.TRANSPORT, 0) is plain  # oldest
    assert store.lookup_outbound(A1, A2, 50, SAMode.TRANSPORT, 8) is None
    assert store.lookup_outbound(A2, A1, 50, SAMode.TRANSPORT, 0) is None  # direction matters
    assert store.lookup_outbound(A1, A2, 51, SAMode.TRANSPORT, 0) is None


def test_outbound_mode_any_matches_any_request() -> None:
    store = MemoryStore()
    anymode = store.add(esp_sa(0x1000, mode=SAMode.ANY), now=0)
    assert store.lookup_outbound(A1, A2, 50, SAMode.TRANSPORT) is anymode
    assert store.lookup_outbound(A1, A2, 50, SAMode.TUNNEL) is anymode
    store.delete(A2, 50, 0x1000)
    store.add(esp_sa(0x1001, mode=SAMode.TRANSPORT), now=0)
    assert store.lookup_outbound(A1, A2, 50, "tunnel") is None
    assert store.lookup_outbound(A1, A2, 50, "transport") is not None


@pytest.mark.parametrize("prefer_old", [True, False])
def test_outbound_prefers_mature_then_age(prefer_old: bool) -> None:
    store = MemoryStore(prefered_oldsa=prefer_old)
    old = store.add(esp_sa(0x1000, soft=Lifetime(bytes=10)), now=0)
    mid = store.add(esp_sa(0x1001), now=1)
    new = store.add(esp_sa(0x1002), now=2)
    assert store.lookup_outbound(A1, A2, 50, 1) is (old if prefer_old else new)
    store.account(old, 10, now=3)
    assert old.state is SAState.DYING
    assert store.lookup_outbound(A1, A2, 50, 1) is (mid if prefer_old else new)
    store.delete(A2, 50, 0x1001)
    store.delete(A2, 50, 0x1002)
    assert store.lookup_outbound(A1, A2, 50, 1) is old  # dying is still usable
    store.prefered_oldsa = not prefer_old
    assert store.prefered_oldsa is (not prefer_old)


def test_outbound_dying_order_follows_knob() -> None:
    for prefer_old in (True, False):
        store = MemoryStore(prefered_oldsa=prefer_old)
        a = store.add(esp_sa(0x1000, soft=Lifetime(bytes=1)), now=0)
        b = store.add(esp_sa(0x1001, soft=Lifetime(bytes=1)), now=1)
        store.account(a, 1, now=2)
        store.account(b, 1, now=2)
        assert store.lookup_outbound(A1, A2, 50, 1) is (a if prefer_old else b)


# --- sequence numbers -----------------------------------------------------------------------


def test_reserve_seq_blocks_and_start() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(seq_start=41), now=0)
    assert store.reserve_seq(e) == 42
    assert store.reserve_seq(e, 10) == 43
    assert store.reserve_seq(e) == 53
    assert store.status(e).seq == 53
    with pytest.raises(ValueError, match="positive"):
        store.reserve_seq(e, 0)


def test_sequence_overflow_kills_the_sa() -> None:
    store = MemoryStore()
    seen: list[SADBEvent] = []
    store.subscribe(seen.append)
    e = store.add(esp_sa(seq_start=2**32 - 2), now=0)
    sent: list[int] = []

    def send_until_overflow() -> None:
        while True:
            sent.append(store.reserve_seq(e))

    with pytest.raises(SequenceOverflowError) as info:
        send_until_overflow()
    assert sent == [2**32 - 1]
    assert info.value.errno == errno.EOVERFLOW
    assert e.state is SAState.DEAD
    assert store.get(A2, 50, 0x1000) is None
    assert store.lookup_inbound(A2, 50, 0x1000) is None
    assert [type(ev) for ev in seen] == [HardExpire]
    assert isinstance(seen[0], HardExpire)
    assert seen[0].reason is ExpireReason.SEQUENCE
    with pytest.raises(NoSAError):
        store.reserve_seq(e)


def test_block_that_does_not_fit_kills_the_sa() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(seq_start=2**32 - 3), now=0)
    with pytest.raises(SequenceOverflowError):
        store.reserve_seq(e, 3)
    assert e.state is SAState.DEAD


def test_esn_counter_runs_to_2_64() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(esn=True, seq_start=2**32 - 1), now=0)
    assert store.reserve_seq(e) == 2**32  # crosses the 32-bit boundary
    top = store.add(esp_sa(0x1001, esn=True, seq_start=2**64 - 2), now=0)
    assert store.reserve_seq(top) == 2**64 - 1
    with pytest.raises(SequenceOverflowError, match="64-bit"):
        store.reserve_seq(top)


def test_concurrent_reservations_never_repeat() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(), now=0)
    results: list[list[int]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def worker(out: list[int]) -> None:
        reserve = store.reserve_seq
        start.wait()
        out.extend(reserve(e) for _ in range(100_000))

    threads = [threading.Thread(target=worker, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    numbers = [n for r in results for n in r]
    assert len(numbers) == 800_000
    assert len(set(numbers)) == 800_000
    assert min(numbers) == 1
    assert max(numbers) == 800_000
    assert store.status(e).seq == 800_000
    for r in results:  # each thread saw its own numbers increase
        assert r == sorted(r)


# --- replay ---------------------------------------------------------------------------------


def test_replay_window_through_the_store() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(replay=1), now=0)  # 8 packets
    seq = store.replay_check(e, 5)
    assert seq == 5
    assert store.replay_commit(e, seq)
    assert store.replay_check(e, 5) is None  # replay
    assert store.replay_check(e, 4) == 4
    for s in (13, 14):
        assert store.replay_commit(e, s)
    assert store.replay_check(e, 6) is None  # left of the 8-packet window
    assert store.replay_commit(e, 7)
    assert not store.replay_commit(e, 7)  # a duplicate that raced past check
    assert store.status(e).replay_top == 14


def test_replay_start_with_seq_start_and_esn() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(esn=True, seq_start=2**32 - 1), now=0)
    assert store.replay_check(e, 2**32 - 1) is None  # the top counts as received
    seq = store.replay_check(e, 0)  # low half 0 just after the top: the next sub-space
    assert seq == 2**32
    assert store.replay_commit(e, seq)


def test_replay_disabled_accepts_repeats() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(replay=0), now=0)
    assert store.replay_check(e, 3) == 3
    assert store.replay_commit(e, 3)
    assert store.replay_check(e, 3) == 3


def test_replay_on_a_dead_sa_drops() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(), now=0)
    store.flush()
    assert store.replay_check(e, 1) is None
    assert store.replay_commit(e, 1) is False


# --- lifetimes ------------------------------------------------------------------------------


def test_byte_lifetimes() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(soft=Lifetime(bytes=1000), hard=Lifetime(bytes=2000)), now=0)
    assert store.account(e, 999, now=1) is SAState.MATURE
    assert store.events() == []
    assert store.account(e, 1, now=2) is SAState.DYING
    (soft,) = store.events()
    assert isinstance(soft, SoftExpire)
    assert soft.reason is ExpireReason.BYTES
    assert soft.bytes == 1000
    assert soft.age == 2
    assert soft.sa == esp_sa().identity
    assert store.account(e, 999, now=3) is SAState.DYING
    assert store.account(e, 1, now=4) is SAState.DEAD
    (hard,) = store.events()
    assert isinstance(hard, HardExpire)
    assert hard.reason is ExpireReason.BYTES
    assert store.get(A2, 50, 0x1000) is None
    assert store.account(e, 1, now=5) is SAState.DEAD  # no more events
    assert store.events() == []


def test_time_lifetimes_with_injected_clock() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(soft=Lifetime(addtime=30), hard=Lifetime(addtime=60)), now=1000.0)
    assert store.tick(1029.9) == []
    assert e.state is SAState.MATURE
    evs = store.tick(1030.0)
    assert [type(x) for x in evs] == [SoftExpire]
    assert isinstance(evs[0], SoftExpire)
    assert evs[0].reason is ExpireReason.ADDTIME
    assert store.status(e).state is SAState.DYING
    assert store.events() == evs  # also queued
    assert store.expire(1059.0) == []
    evs = store.expire(1060.0)
    assert [type(x) for x in evs] == [HardExpire]
    assert store.status(e).state is SAState.DEAD
    assert len(store) == 0
    assert store.tick(5000.0) == []


def test_soft_and_hard_at_once_emit_both() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(soft=Lifetime(addtime=10), hard=Lifetime(addtime=20)), now=0)
    evs = store.tick(100)
    assert [type(x) for x in evs] == [SoftExpire, HardExpire]
    assert e.state is SAState.DEAD


def test_account_applies_time_limits_too() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(hard=Lifetime(addtime=5)), now=0)
    assert store.account(e, 10, now=6) is SAState.DEAD
    assert isinstance(store.next_event(), HardExpire)
    assert store.next_event() is None


def test_updated_lifetime_is_scheduled() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(), now=0)
    assert store.tick(100) == []
    store.update(esp_sa(soft=Lifetime(addtime=150)), now=100)
    assert store.tick(149) == []
    assert [type(x) for x in store.tick(150)] == [SoftExpire]
    assert e.state is SAState.DYING


def test_larval_sa_expires_silently() -> None:
    store = MemoryStore(larval_lifetime=30)
    store.getspi(A1, A2, "esp", now=0, hint=0x1000)
    assert store.tick(29) == []
    assert len(store) == 1
    assert store.tick(30) == []
    assert len(store) == 0
    assert store.events() == []


def test_first_and_last_use_are_recorded() -> None:
    store = MemoryStore()
    e = store.add(esp_sa(), now=0)
    store.account(e, 100, now=5)
    store.account(e, 50, now=9)
    st = store.status(e)
    assert (st.first_used, st.last_used, st.bytes, st.packets) == (5, 9, 150, 2)


# --- acquire --------------------------------------------------------------------------------


def test_acquire_rate_limit_by_count() -> None:
    store = MemoryStore()
    results = [store.acquire(A1, A2, "esp", "transport", 0, now=0) for _ in range(25)]
    # the first emits; KAME then suppresses until more than blockacq_count (10) were counted
    assert results[0] is True
    assert results[1:12] == [False] * 11
    assert results[12] is True
    assert results[13:24] == [False] * 11
    assert results[24] is True
    evs = store.events()
    assert len(evs) == 3
    assert all(isinstance(ev, Acquire) for ev in evs)
    first = evs[0]
    assert isinstance(first, Acquire)
    assert (first.src, first.dst, first.proto, first.mode, first.reqid) == (
        A1, A2, SAProtocol.ESP, SAMode.TRANSPORT, 0,
    )
    assert {ev.seq for ev in evs if isinstance(ev, Acquire)} == {first.seq}


def test_acquire_rate_limit_by_time_and_index() -> None:
    store = MemoryStore()
    assert store.acquire(A1, A2, 50, 1, 0, now=100.0)
    assert not store.acquire(A1, A2, 50, 1, 0, now=119.9)
    assert store.acquire(A1, A2, 50, 1, 5, now=119.9)  # another reqid: another index
    assert store.acquire(A1, A3, 50, 1, 0, now=119.9)
    assert store.acquire(A1, A2, 50, 1, 0, now=120.0)  # 20 s passed
    seqs = [ev.seq for ev in store.events() if isinstance(ev, Acquire)]
    assert len(seqs) == 4
    assert seqs[-1] > seqs[0]
    store.tick(1000.0)  # purges the suppression entries
    assert store.acquire(A1, A2, 50, 1, 0, now=1000.0)


def test_acquire_suppression_ends_when_the_sa_arrives() -> None:
    store = MemoryStore()
    assert store.acquire(A1, A2, 50, 1, 0, now=0)
    assert not store.acquire(A1, A2, 50, 1, 0, now=1)
    store.add(esp_sa(), now=2)
    store.delete(A2, 50, 0x1000)
    assert store.acquire(A1, A2, 50, 1, 0, now=3)


# --- events ---------------------------------------------------------------------------------


def test_callbacks_queue_and_unsubscribe() -> None:
    store = MemoryStore()
    got: list[SADBEvent] = []
    unsubscribe = store.subscribe(got.append)
    store.acquire(A1, A2, 50, 1, 0, now=0)
    assert len(got) == 1
    assert store.next_event() == got[0]
    assert store.next_event() is None
    unsubscribe()
    unsubscribe()  # idempotent
    store.acquire(A1, A3, 50, 1, 0, now=0)
    assert len(got) == 1
    assert len(store.events()) == 1


def test_event_queue_is_bounded_and_counts_overflow() -> None:
    store = MemoryStore(event_queue_size=2)
    got: list[SADBEvent] = []
    store.subscribe(got.append)
    for i in range(5):
        store.acquire(A1, A2, 50, 1, i + 1, now=0)
    assert len(got) == 5  # callbacks see everything
    queued = store.events()
    assert [ev.reqid for ev in queued if isinstance(ev, Acquire)] == [1, 2]  # the oldest kept
    assert store.events_overflowed == 3


def test_a_raising_callback_does_not_stop_the_others() -> None:
    store = MemoryStore()
    got: list[SADBEvent] = []

    def bad(ev: SADBEvent) -> None:
        raise RuntimeError("callback bug")

    store.subscribe(bad)
    store.subscribe(got.append)
    with pytest.raises(RuntimeError, match="callback bug"):
        store.acquire(A1, A2, 50, 1, 0, now=0)
    assert len(got) == 1
    assert len(store.events()) == 1


# --- reqids ---------------------------------------------------------------------------------


def test_allocate_reqid_sequence_and_skip() -> None:
    store = MemoryStore()
    assert store.allocate_reqid() == 0x4000
    store.add(esp_sa(reqid=0x4001), now=0)
    assert store.allocate_reqid() == 0x4002  # 0x4001 is bound to an SA
    store._next_reqid = 0xFFFFFFFF  # jump to the end to see the wrap
    assert store.allocate_reqid() == 0xFFFFFFFF
    assert store.allocate_reqid() == 0x4000


# --- transactions ---------------------------------------------------------------------------


def test_transaction_commits_at_once() -> None:
    store = MemoryStore()
    with store.transaction() as txn:
        txn.add(esp_sa(0x1000), now=0)
        txn.add(esp_sa(0x1001), now=0)
        assert store.lookup_inbound(A2, 50, 0x1000) is None  # not visible before commit
    assert store.lookup_inbound(A2, 50, 0x1000) is not None
    assert len(store) == 2


def test_transaction_rolls_back_on_error() -> None:
    store = MemoryStore()
    kept = store.add(esp_sa(0x1000, soft=Lifetime(addtime=10)), now=0)
    before = store.dump()
    def failing_script() -> None:
        with store.transaction() as txn:
            txn.delete(A2, 50, 0x1000)
            txn.add(esp_sa(0x2000), now=0)
            txn.update(esp_sa(0x1000), now=0)  # deleted above: ESRCH

    with pytest.raises(SADBError):
        failing_script()
    assert store.dump() == before
    assert kept.state is SAState.MATURE
    assert store.lookup_inbound(A2, 50, 0x2000) is None
    with pytest.raises(RuntimeError, match="nest"), store.transaction(), store.transaction():
        pass
