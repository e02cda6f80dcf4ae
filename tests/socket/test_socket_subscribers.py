"""A key manager's bug -- an SADB event subscriber that raises -- never reaches the application
through recv() or sendto(): the exception is logged on the secsock logger and the datagram is
sent or delivered as if the subscriber had returned. Errors of the store itself still propagate."""

from __future__ import annotations

import logging
from ipaddress import ip_address

import pytest

from secsock.engine import Carrier, Delivered, Flow, IPsecEngine
from secsock.errors import NoSAError
from secsock.policy.model import parse_policy
from secsock.sadb.events import SADBEvent, raised_by_subscriber
from secsock.sadb.lifetime import Lifetime
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore, SAEntry
from tests.socket.helpers import Sockets, add_esp, both_policies

A, B = "127.0.0.1", "127.0.0.2"
REQ = "esp/transport//require"


def _raise(event: SADBEvent) -> None:
    raise RuntimeError(f"key daemon bug on {type(event).__name__}")


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "secsock" and r.levelno == logging.ERROR and "subscriber" in r.message]


def test_subscriber_errors_never_escape_sendto_or_recv(
    socks: Sockets, caplog: pytest.LogCaptureFixture,
) -> None:
    """t_callback_raises: the soft byte limit is reached on the sender's reserve and on the
    receiver's commit; every datagram is still sent and delivered, in order."""
    sender, receiver = MemoryStore(), MemoryStore()  # two hosts, each its own SADB
    for st in (sender, receiver):
        add_esp(st, 0x1001, A, B, soft=Lifetime(bytes=200))
        st.subscribe(_raise)
    a = socks.secure(A, store=sender)
    b = socks.secure(B, store=receiver)
    both_policies(a, REQ)
    both_policies(b, REQ)
    with caplog.at_level(logging.ERROR, logger="secsock"):
        for i in range(6):
            assert a.sendto(b"datagram %d" % i + b"x" * 50, b.getsockname()) == 60
        got = [b.recv(100)[:10] for _ in range(6)]
    assert got == [b"datagram %d" % i for i in range(6)]
    assert a.ipsec_stats().out_success == 6
    assert b.ipsec_stats().in_success == 6
    assert b.ipsec_stats().dropped == 0
    errors = _errors(caplog)
    assert len(errors) == 2  # one SoftExpire on each side
    assert all(r.exc_info is not None and "SoftExpire" in str(r.exc_info[1]) for r in errors)


def _engines(store: MemoryStore) -> tuple[IPsecEngine, IPsecEngine]:
    spd = SPD()
    tx, rx = IPsecEngine(sadb=store, spd=spd), IPsecEngine(sadb=store, spd=spd)
    tx.set_policy(parse_policy(f"out ipsec {REQ}"))
    rx.set_policy(parse_policy(f"in ipsec {REQ}"))
    return tx, rx


FLOW = Flow(ip_address(A), ip_address(B), 5000, 6000)


def test_tick_acquire_and_general_path_errors_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    # CBC + HMAC takes the general outbound path (reserve_seq + account)
    add_esp(store, 0x1001, A, B, enc="aes-cbc", key=bytes(16), auth="hmac-sha256",
            auth_key=bytes(32), soft=Lifetime(addtime=10))
    store.subscribe(_raise)
    tx, rx = _engines(store)
    with caplog.at_level(logging.ERROR, logger="secsock"):
        # tick() at now=1e10 reaches the soft add-time limit inside protect_one
        out = tx.protect_one(FLOW, b"after the soft limit", now=1e10)
        result = rx.receive(out.data, carrier=Carrier.UDP, src=out.src, dst=out.dst,
                            sport=5000, dport=6000, now=1e10)
        assert isinstance(result, Delivered)
        assert result.payload == b"after the soft limit"
        # no SA for the reverse direction: the Acquire's subscriber error is logged and the
        # caller gets the NoSAError it would have got anyway
        with pytest.raises(NoSAError):
            tx.protect_one(Flow(ip_address(B), ip_address(A), 6000, 5000), b"x", now=1e10)
    assert len(_errors(caplog)) == 2


def test_reservation_lost_to_a_subscriber_is_skipped_not_reused() -> None:
    store = MemoryStore()
    add_esp(store, 0x1001, A, B, soft=Lifetime(bytes=150))  # ~104 bytes per packet
    store.subscribe(_raise)
    tx, _rx = _engines(store)
    seqs = [tx.protect_one(FLOW, b"x" * 60, now=0.0).seq for _ in range(4)]
    # the second packet crossed the soft limit; its first reservation (2) was lost with the
    # exception and the packet went out with 3
    assert seqs == [1, 3, 4, 5]


def test_a_hard_limit_reached_with_a_raising_subscriber_is_nosaerror() -> None:
    store = MemoryStore()
    add_esp(store, 0x1001, A, B, hard=Lifetime(bytes=100))
    store.subscribe(_raise)
    tx, _rx = _engines(store)
    tx.protect_one(FLOW, b"x" * 10, now=0.0)
    with pytest.raises(NoSAError):  # the SA died with the packet that reached the limit
        tx.protect_one(FLOW, b"x" * 100, now=0.0)
    assert tx.statistics().out_nosa == 1


class _FailingStore(MemoryStore):
    """A store whose own operations fail (a networked store losing its connection)."""

    def commit_and_account(self, entry: SAEntry, seq: int, nbytes: int, now: float) -> bool:
        raise ConnectionError("store unreachable")

    def reserve_and_account(self, entry: SAEntry, nbytes: int, now: float) -> int:
        raise ConnectionError("store unreachable")


def test_store_errors_still_propagate() -> None:
    good = MemoryStore()
    add_esp(good, 0x1001, A, B)
    out = _engines(good)[0].protect_one(FLOW, b"x", now=0.0)
    failing = _FailingStore()
    add_esp(failing, 0x1001, A, B)
    tx, rx = _engines(failing)
    with pytest.raises(ConnectionError):
        tx.protect_one(FLOW, b"x", now=0.0)
    with pytest.raises(ConnectionError):  # never taken for a committed packet
        rx.receive(out.data, carrier=Carrier.UDP, src=out.src, dst=out.dst, sport=5000,
                   dport=6000, now=0.0)


def test_raised_by_subscriber_marks_only_published_errors() -> None:
    store = MemoryStore()
    store.subscribe(_raise)
    with pytest.raises(RuntimeError, match="key daemon bug") as info:  # admin calls: raised
        store.acquire(A, B, "esp", "transport", 0, now=0)
    assert raised_by_subscriber(info.value)
    assert not raised_by_subscriber(RuntimeError("key daemon bug"))
