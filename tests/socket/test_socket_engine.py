"""The sans-IO engine on its own: remote garbage never raises, drops are logged without keys,
counters are per engine and process-wide, bundles and ESN round-trip."""

from __future__ import annotations

import logging
from ipaddress import ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secsock import sysctl
from secsock._stats import stats as process_stats
from secsock.engine import (
    Carrier,
    Decapsulated,
    Delivered,
    Dropped,
    Flow,
    IPsecEngine,
    Outbound,
)
from secsock.errors import DropReason
from secsock.policy.model import parse_policy
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore
from tests.socket.helpers import GCM_KEY, SHA256_KEY, add_ah, add_esp

A = "10.0.0.1"
B = "10.0.0.2"
FLOW = Flow(ip_address(A), ip_address(B), 5000, 6000)


def _engines(policy: str, transport: str = "udp") -> tuple[IPsecEngine, IPsecEngine,
                                                           MemoryStore]:
    store = MemoryStore()
    add_esp(store, 0x1000, A, B)
    add_esp(store, 0x1001, A, B, enc="aes-cbc", key=bytes(16), auth="hmac-sha256",
            auth_key=SHA256_KEY, reqid=3)
    add_ah(store, 0x2000, A, B)
    spd = SPD()
    tx = IPsecEngine(transport=transport, sadb=store, spd=spd)
    rx = IPsecEngine(transport=transport, sadb=store, spd=spd)
    tx.set_policy(parse_policy(f"out ipsec {policy}"))
    rx.set_policy(parse_policy(f"in ipsec {policy}"))
    return tx, rx, store


def _deliver(rx: IPsecEngine, out: Outbound) -> Delivered | Dropped:
    return rx.receive(out.data, carrier=out.carrier, src=out.src, dst=out.dst,
                      sport=out.sport, dport=out.dport, protocol=out.protocol,
                      header_included=out.header_included, now=0.0)


@pytest.mark.parametrize(
    ("policy", "transport", "carrier", "protocol"),
    [
        ("esp/transport//require", "udp", Carrier.UDP, 17),
        ("esp/transport//require", "raw", Carrier.IP, 50),
        ("esp/transport//unique:3", "raw", Carrier.IP, 50),
        ("ah/transport//require", "raw", Carrier.IP, 51),
        ("esp/transport//require ah/transport//require", "raw", Carrier.IP, 51),
    ],
)
def test_round_trip(policy: str, transport: str, carrier: Carrier, protocol: int) -> None:
    tx, rx, _ = _engines(policy, transport)
    [out] = tx.protect(FLOW, b"payload", now=0.0)
    assert (out.carrier, out.protocol) == (carrier, protocol)
    result = _deliver(rx, out)
    assert isinstance(result, Delivered)
    assert (result.payload, result.sport, result.dport) == (b"payload", 5000, 6000)
    assert [a.proto.keyword for a in result.applied] == (
        ["ah", "esp"] if "ah/" in policy and "esp/" in policy
        else ["ah"] if "ah/" in policy else ["esp"]
    )
    if "unique:3" in policy:
        assert result.applied[0].spi == 0x1001
    # the same bytes again: a replay
    again = _deliver(rx, out)
    assert isinstance(again, Dropped)
    assert again.reason == DropReason.REPLAY


def test_esn_crosses_two_to_the_32() -> None:
    store = MemoryStore()
    add_esp(store, 0x1000, A, B, esn=True, seq_start=2**32 - 2, replay=32)
    tx, rx = IPsecEngine(sadb=store, spd=SPD()), IPsecEngine(sadb=store, spd=SPD())
    tx.set_policy(parse_policy("out ipsec esp/transport//require"))
    seqs = []
    for i in range(4):
        [out] = tx.protect(FLOW, bytes([i]), now=0.0)
        result = _deliver(rx, out)
        assert isinstance(result, Delivered), result
        seqs.append(result.applied[0].seq)
    assert seqs == [2**32 - 1, 2**32, 2**32 + 1, 2**32 + 2]


def test_decapsulate_then_admit_is_receive() -> None:
    tx, rx, _ = _engines("esp/transport//require")
    [out] = tx.protect(FLOW, b"split", now=0.0)
    decap = IPsecEngine(sadb=rx.sadb, spd=rx.spd).decapsulate(
        out.data, carrier=out.carrier, src=out.src, dst=out.dst, sport=out.sport,
        dport=out.dport, now=0.0)
    assert isinstance(decap, Decapsulated)
    assert decap.applied
    assert decap.payload == b"split"
    result = rx.admit(decap, now=0.0)
    assert isinstance(result, Delivered)
    assert rx.statistics().in_success == 1


def test_admit_refuses_a_clear_datagram_under_require() -> None:
    _, rx, _ = _engines("esp/transport//require")
    clear = Decapsulated(b"x", ip_address(A), ip_address(B), 5000, 6000, ())
    result = rx.admit(clear, now=0.0)
    assert isinstance(result, Dropped)
    assert result.reason == DropReason.POLICY
    assert "requires esp" in result.detail


_ADDRS = st.sampled_from([(A, B), (B, A), ("::1", "::1")])


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=200),
    carrier=st.sampled_from(list(Carrier)),
    protocol=st.sampled_from([17, 50, 51, 6]),
    header_included=st.booleans(),
    addrs=_ADDRS,
    prefix=st.sampled_from([b"", b"\x00\x00\x10\x00", b"\x00\x00\x20\x00", b"\x45\x00"]),
)
def test_receive_never_raises(data: bytes, carrier: Carrier, protocol: int,
                              header_included: bool, addrs: tuple[str, str],
                              prefix: bytes) -> None:
    _, rx, _ = _engines("esp/transport//use")
    result = rx.receive(prefix + data, carrier=carrier, src=ip_address(addrs[0]),
                        dst=ip_address(addrs[1]), sport=1, dport=2, protocol=protocol,
                        header_included=header_included, now=0.0)
    assert isinstance(result, Delivered | Dropped)


@settings(max_examples=200, deadline=None)
@given(flip=st.integers(min_value=0), payload=st.binary(max_size=64))
def test_any_flipped_bit_is_dropped(flip: int, payload: bytes) -> None:
    tx, rx, _ = _engines("esp/transport//require")
    [out] = tx.protect(FLOW, payload, now=0.0)
    bad = bytearray(out.data)
    bit = flip % (len(bad) * 8)
    bad[bit // 8] ^= 1 << (bit % 8)
    result = _deliver(rx, out._replace(data=bytes(bad)))
    assert isinstance(result, Dropped)


def test_drop_logs_one_debug_line_without_keys(caplog: pytest.LogCaptureFixture) -> None:
    tx, rx, _ = _engines("esp/transport//require")
    [out] = tx.protect(FLOW, b"secret payload", now=0.0)
    bad = bytearray(out.data)
    bad[-1] ^= 1
    with sysctl.override({"net.inet.ipsec.debug": 1}), caplog.at_level(logging.DEBUG, "secsock"):
        _deliver(rx, out._replace(data=bytes(bad)))
    lines = [r.getMessage() for r in caplog.records if r.name == "secsock"]
    assert len(lines) == 1
    assert "reason=auth-failed" in lines[0]
    assert "spi=0x00001000" in lines[0]
    assert "seq=1" in lines[0]
    assert GCM_KEY.hex() not in lines[0]
    assert "secret" not in lines[0]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, "secsock"):
        _deliver(rx, out._replace(data=bytes(bad)))  # debug off: silent
    assert [r for r in caplog.records if r.name == "secsock"] == []


def test_counters_are_per_engine_and_process_wide() -> None:
    before = process_stats()
    tx, rx, _ = _engines("esp/transport//require")
    [out] = tx.protect(FLOW, b"x", now=0.0)
    _deliver(rx, out)
    _deliver(rx, out)
    delta = process_stats() - before
    assert (delta.out_success, delta.in_success, delta.in_replay) == (1, 1, 1)
    assert tx.statistics().out_success == 1
    assert rx.statistics().in_success == 1
    assert rx.statistics().drops[DropReason.REPLAY] == 1
    assert tx.statistics().in_success == 0


def test_nothing_in_the_engine_reprs_leaks_keys() -> None:
    tx, rx, store = _engines("esp/transport//require")
    [out] = tx.protect(FLOW, b"x", now=0.0)
    text = repr(out) + repr(_deliver(rx, out)) + repr(store.dump())
    for key in (GCM_KEY, SHA256_KEY):
        assert key.hex() not in text
        assert repr(key) not in text


def test_transport_is_validated() -> None:
    with pytest.raises(ValueError, match="'udp' or 'raw'"):
        IPsecEngine(transport="tcp")
