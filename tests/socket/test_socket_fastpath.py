"""The engine's per-packet fast paths: the cached outbound route and the inbound per-SPI record
must give exactly what the general path gives, and follow every change of SAs, policies, the
SPD and the sysctls on the very next datagram."""

from __future__ import annotations

import dataclasses
from ipaddress import ip_address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secsock import sysctl
from secsock._stats import stats as process_stats
from secsock.core import esp
from secsock.engine import Carrier, Decapsulated, Delivered, Dropped, Flow, IPsecEngine
from secsock.errors import DropReason, NoSAError
from secsock.policy.model import parse_policy
from secsock.sadb.lifetime import Lifetime
from secsock.sadb.model import Padding
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore
from tests.socket.helpers import GCM_KEY2, SHA256_KEY, add_ah, add_esp, spdadd

A = "10.0.0.1"
B = "10.0.0.2"
FLOW = Flow(ip_address(A), ip_address(B), 5000, 6000)
SRC, DST = FLOW.src, FLOW.dst
REQUIRE = "esp/transport//require"


def _tx(store: MemoryStore, spd: SPD | None = None, policy: str | None = REQUIRE,
        transport: str = "udp") -> IPsecEngine:
    tx = IPsecEngine(transport=transport, sadb=store, spd=spd if spd is not None else SPD())
    if policy is not None:
        tx.set_policy(parse_policy(f"out ipsec {policy}"))
    return tx


def _rx(store: MemoryStore, spd: SPD | None = None, policy: str | None = REQUIRE) -> IPsecEngine:
    rx = IPsecEngine(sadb=store, spd=spd if spd is not None else SPD())
    if policy is not None:
        rx.set_policy(parse_policy(f"in ipsec {policy}"))
    return rx


def _receive(rx: IPsecEngine, data: bytes, src: object = SRC, dport: int = 6000
             ) -> Delivered | Dropped:
    return rx.receive(data, carrier=Carrier.UDP, src=src, dst=DST,  # type: ignore[arg-type]
                      sport=5000, dport=dport, now=1.0)


def _general(rx: IPsecEngine, data: bytes, src: object = SRC, dport: int = 6000
             ) -> Delivered | Dropped:
    """The general path: decapsulate (carrier UDP) then admit."""
    decap = rx.decapsulate(data, carrier=Carrier.UDP, src=src,  # type: ignore[arg-type]
                           dst=DST, sport=5000, dport=dport, now=1.0)
    if isinstance(decap, Dropped):
        return decap
    return rx.admit(decap, now=1.0)


# --- outbound: the route follows every change ------------------------------------------------


def test_route_follows_sa_changes() -> None:
    store = MemoryStore()
    add_esp(store, 0x1000, A, B)
    tx = _tx(store)
    assert tx.protect_one(FLOW, b"a", now=1.0).spi == 0x1000
    store.delete(DST, "esp", 0x1000)
    with pytest.raises(NoSAError):
        tx.protect_one(FLOW, b"b", now=1.0)
    sa = add_esp(store, 0x1001, A, B)
    assert tx.protect_one(FLOW, b"c", now=1.0).spi == 0x1001
    # the chosen SA turns dying: a newer mature SA takes over on the next datagram
    store.update(dataclasses.replace(sa, soft=Lifetime(bytes=1)), now=1.0)
    add_esp(store, 0x1002, A, B, key=GCM_KEY2)
    assert tx.protect_one(FLOW, b"d", now=1.0).spi == 0x1001  # this one made it dying
    assert tx.protect_one(FLOW, b"e", now=1.0).spi == 0x1002


def test_route_follows_socket_policy_spd_and_sysctls() -> None:
    store, spd = MemoryStore(), SPD()
    add_esp(store, 0x1000, A, B)
    tx = _tx(store, spd)
    assert tx.protect_one(FLOW, b"x", now=1.0).carrier == Carrier.UDP
    tx.set_policy(parse_policy("out bypass"))
    assert tx.protect_one(FLOW, b"x", now=1.0).carrier == Carrier.CLEAR
    tx.set_policy(parse_policy("out entrust"))  # SPD, then def_policy (1: none)
    assert tx.protect_one(FLOW, b"x", now=1.0).carrier == Carrier.CLEAR
    spdadd(spd, f"{A}/32", f"{B}/32", f"out ipsec {REQUIRE}")
    assert tx.protect_one(FLOW, b"x", now=1.0).spi == 0x1000
    spd.flush()
    with sysctl.override({"net.inet.ipsec.def_policy": 0}), pytest.raises(PermissionError):
        tx.protect_one(FLOW, b"x", now=1.0)
    tx.set_policy(parse_policy(f"out ipsec {REQUIRE}"))
    plain = len(tx.protect_one(FLOW, b"x", now=1.0).data)
    with sysctl.override({"net.inet.ipsec.esp_randpad": 64}):
        padded = tx.protect_one(FLOW, b"x", now=1.0)
    assert len(padded.data) > plain
    assert len(tx.protect_one(FLOW, b"x", now=1.0).data) == plain


@pytest.mark.parametrize(
    ("enc", "key", "extra"),
    [
        ("aes-gcm-16", bytes(20), {}),
        ("aes-gcm-16", bytes(36), {"esn": True}),
        ("chacha20-poly1305", bytes(36), {}),
        ("aes-cbc", bytes(16), {"auth": "hmac-sha256", "auth_key": SHA256_KEY}),
        ("aes-gcm-16", bytes(20), {"padding": Padding.RANDOM}),
    ],
)
def test_every_sa_kind_charges_exactly_the_packets_sent(
    enc: str, key: bytes, extra: dict[str, Any]
) -> None:
    store = MemoryStore()
    add_esp(store, 0x1000, A, B, enc=enc, key=key, **extra)
    tx, rx = _tx(store), _rx(store)
    sent = 0
    for n in range(20):
        out = tx.protect_one(FLOW, bytes(n), now=1.0)
        sent += len(out.data)
        result = _receive(rx, out.data)
        assert isinstance(result, Delivered), result
        assert result.payload == bytes(n)
    entry = store.lookup_inbound(DST, "esp", 0x1000)
    assert entry is not None
    status = store.status(entry)
    assert status.seq == 20
    assert status.packets == 40  # 20 sent + 20 received on the one SA
    assert status.bytes == 2 * sent


def test_an_oversized_payload_spends_no_sequence_number() -> None:
    store = MemoryStore()
    add_esp(store, 0x1000, A, B)
    tx = _tx(store)
    assert tx.protect_one(FLOW, b"a", now=1.0).seq == 1
    with pytest.raises(ValueError, match="at most 65527"):
        tx.protect_one(FLOW, bytes(65528), now=1.0)
    assert tx.protect_one(FLOW, b"b", now=1.0).seq == 2
    assert tx.statistics().out_success == 2


def test_fast_path_counts_per_engine_and_process_wide() -> None:
    store = MemoryStore()
    add_esp(store, 0x1000, A, B)
    tx, rx = _tx(store), _rx(store)
    before = process_stats()
    for _ in range(5):
        assert isinstance(_receive(rx, tx.protect_one(FLOW, b"p", now=1.0).data), Delivered)
    diff = process_stats() - before
    assert (diff.out_success, diff.in_success) == (5, 5)
    assert tx.statistics().out_success == 5
    assert rx.statistics().in_success == 5


# --- inbound: the same answers as the general path --------------------------------------------


def _pair() -> tuple[MemoryStore, MemoryStore]:
    """Two stores with identical SAs: one for the fast path, one for the general path."""
    stores = (MemoryStore(), MemoryStore())
    for s in stores:
        add_esp(s, 0x1000, A, B, replay=4)
        add_esp(s, 0x1001, "10.0.0.9", B, key=GCM_KEY2)
    return stores


_MUTATIONS = st.sampled_from(["as-is", "flip", "truncate", "replay", "wrong-src", "wrong-port",
                              "clear"])


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(_MUTATIONS, st.integers(0, 200), st.integers(0, 80)),
                      min_size=1, max_size=12))
def test_fast_receive_equals_the_general_path(steps: list[tuple[str, int, int]]) -> None:
    fast_store, slow_store = _pair()
    tx = _tx(MemoryStore())
    add_esp(tx.sadb, 0x1000, A, B)  # type: ignore[arg-type]
    fast, slow = _rx(fast_store), _rx(slow_store)
    sent: list[bytes] = []
    for kind, where, size in steps:
        data = tx.protect_one(FLOW, bytes(range(size % 256))[:size], now=1.0).data
        src: object = SRC
        dport = 6000
        if kind == "flip":
            i = where % len(data)
            data = data[:i] + bytes([data[i] ^ 0x40]) + data[i + 1 :]
        elif kind == "truncate":
            data = data[: where % len(data)]
        elif kind == "replay" and sent:
            data = sent[where % len(sent)]
        elif kind == "wrong-src":
            src = ip_address("10.0.0.7")
        elif kind == "wrong-port":
            dport = 6001
        elif kind == "clear":
            data = bytes(size)
        sent.append(data)
        a, b = _receive(fast, data, src, dport), _general(slow, data, src, dport)
        assert type(a) is type(b), (kind, a, b)
        assert a == b, (kind, a, b)
    assert fast.statistics() == slow.statistics()
    for spi in (0x1000, 0x1001):
        ea = fast_store.lookup_inbound(DST, "esp", spi)
        eb = slow_store.lookup_inbound(DST, "esp", spi)
        assert ea is not None
        assert eb is not None
        sa, sb = fast_store.status(ea), slow_store.status(eb)
        assert (sa.replay_top, sa.packets, sa.bytes) == (sb.replay_top, sb.packets, sb.bytes)


def test_an_sa_of_other_addresses_is_a_policy_drop_after_a_good_packet() -> None:
    store = MemoryStore()
    add_esp(store, 0x1000, A, B)
    tx, rx = _tx(store), _rx(store)
    assert isinstance(_receive(rx, tx.protect_one(FLOW, b"ok", now=1.0).data), Delivered)
    result = _receive(rx, tx.protect_one(FLOW, b"spoof", now=1.0).data, ip_address("10.0.0.7"))
    assert isinstance(result, Dropped)
    assert result.reason == DropReason.POLICY
    assert "does not match" in result.detail


def test_inbound_memo_follows_policy_spd_sysctl_and_sa_changes() -> None:
    store, spd = MemoryStore(), SPD()
    add_esp(store, 0x1000, A, B)
    tx, rx = _tx(store), _rx(store, spd)

    def deliver() -> Delivered | Dropped:
        return _receive(rx, tx.protect_one(FLOW, b"m", now=1.0).data)

    assert isinstance(deliver(), Delivered)
    assert isinstance(deliver(), Delivered)  # from the memo
    rx.set_policy(parse_policy("in ipsec ah/transport//require"))
    dropped = deliver()
    assert isinstance(dropped, Dropped)
    assert dropped.reason == DropReason.POLICY
    rx.set_policy(parse_policy("in entrust"))
    assert isinstance(deliver(), Delivered)  # def_policy 1
    with sysctl.override({"net.inet.ipsec.def_policy": 0}):
        dropped = deliver()
    assert isinstance(dropped, Dropped)
    assert dropped.reason == DropReason.POLICY
    assert isinstance(deliver(), Delivered)
    spdadd(spd, f"{A}/32", f"{B}/32", "in discard")
    dropped = deliver()
    assert isinstance(dropped, Dropped)
    assert dropped.reason == DropReason.POLICY
    spd.flush()
    assert isinstance(deliver(), Delivered)
    packet = tx.protect_one(FLOW, b"m", now=1.0).data
    store.delete(DST, "esp", 0x1000)
    gone = _receive(rx, packet)  # no SA for its SPI any more: a clear datagram on the port,
    assert isinstance(gone, Delivered)  # which entrust and def_policy 1 accept
    assert gone.applied == ()
    assert gone.payload == packet


def test_receive_udp_is_receive_with_carrier_udp() -> None:
    store = MemoryStore()
    add_esp(store, 0x1000, A, B)
    add_ah(store, 0x2000, A, B)
    tx, rx = _tx(store), _rx(store)
    out = tx.protect_one(FLOW, b"same", now=1.0)
    result = rx.receive_udp(out.data, SRC, DST, 5000, 6000, 1.0)
    assert isinstance(result, Delivered)
    assert (result.payload, result.src, result.dst, result.sport, result.dport) == (
        b"same", SRC, DST, 5000, 6000)
    [applied] = result.applied
    assert (applied.spi, applied.seq, applied.natt) == (0x1000, out.seq, False)
    assert isinstance(rx.receive_udp(out.data, SRC, DST, 5000, 6000, 1.0), Dropped)


def test_dummy_and_non_udp_inner_packets_are_dropped_on_the_fast_path() -> None:
    store = MemoryStore()
    add_esp(store, 0x1000, A, B)
    entry = store.lookup_outbound(SRC, DST, "esp", "transport")
    assert entry is not None
    rx = _rx(store)
    for seq, nh, reason in ((1, 59, DropReason.DUMMY), (2, 6, DropReason.BAD_INNER)):
        data = esp.seal(entry.crypto, spi=0x1000, seq=seq,  # type: ignore[arg-type]
                        payload=b"\0" * 20, next_header=nh)
        result = _receive(rx, data)
        assert isinstance(result, Dropped)
        assert result.reason == reason
        assert result.seq == seq
    assert rx.statistics().drops[DropReason.DUMMY] == 1


def test_a_pktinfo_destination_object_per_datagram_still_delivers() -> None:
    store = MemoryStore()
    add_esp(store, 0x1000, A, B)
    tx, rx = _tx(store), _rx(store)
    for i in range(3):
        out = tx.protect_one(FLOW, bytes([i]), now=1.0)
        result = rx.receive_udp(out.data, ip_address(A), ip_address(B), 5000, 6000, 1.0)
        assert isinstance(result, Delivered)
        assert result.payload == bytes([i])


def test_decapsulated_clear_path_is_unchanged() -> None:
    store = MemoryStore()
    rx = _rx(store, policy=None)
    result = _receive(rx, b"plain datagram")
    assert isinstance(result, Delivered)
    assert result == Delivered(b"plain datagram", SRC, DST, 5000, 6000, ())
    assert isinstance(rx.admit(Decapsulated(b"", SRC, DST, 1, 2, ()), now=0.0), Delivered)
