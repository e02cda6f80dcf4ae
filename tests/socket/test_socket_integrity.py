"""Under an inbound require/unique policy, unauthenticated data never reaches the application:
ESP with confidentiality only (a cipher without AEAD and without -A) counts as protected only
when AH covers it; 'use' and clear policies still accept it. Outbound such SAs stay usable."""

from __future__ import annotations

import logging
import struct
from ipaddress import ip_address

import pytest

from secsock.engine import Carrier, Delivered, Dropped, Flow, IPsecEngine, Outbound
from secsock.errors import DropReason
from secsock.policy.model import parse_policy
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore
from tests.socket.helpers import Sockets, Tap, add_ah, add_esp

A, B, C = "127.0.0.1", "127.0.0.2", "127.0.0.3"
CBC_KEY = bytes(range(16))


def test_confidentiality_only_esp_does_not_satisfy_require(socks: Sockets,
                                                           store: MemoryStore) -> None:
    """t_enc_only: a captured CBC packet whose (unauthenticated) sequence number is rewritten
    and whose IV is flipped to change 'PAY 10' into 'PAY 99' is not delivered -- nor is the
    genuine packet: under require nothing unauthenticated reaches the application."""
    add_esp(store, 0x1001, A, B, enc="aes-cbc", key=CBC_KEY)  # no -A
    add_esp(store, 0x1003, C, B)  # aes-gcm-16: authenticated
    a, b, c = socks.secure(A), socks.secure(B), socks.secure(C)
    a.set_ipsec_policy("out ipsec esp/transport//require")  # outbound: still allowed
    c.set_ipsec_policy("out ipsec esp/transport//require")
    b.set_ipsec_policy("in ipsec esp/transport//require")
    tap = Tap(a)
    a.sendto(b"PAY 10 EUR to bob", b.getsockname())
    assert a.ipsec_stats().out_success == 1
    forged = bytearray(tap.last.data)
    struct.pack_into("!I", forged, 4, 7)  # a new sequence number: not authenticated
    for i, (x, y) in enumerate(zip(b"10", b"99", strict=True)):
        forged[8 + 8 + 4 + i] ^= x ^ y  # IV at 8; the inner UDP header (8) and "PAY " (4)
    socks.plain(A).sendto(bytes(forged), b.getsockname())
    c.sendto(b"authenticated", b.getsockname())
    assert b.recvfrom(100) == (b"authenticated", c.getsockname())
    stats = b.ipsec_stats()
    assert stats.drops[DropReason.POLICY] == 2
    assert stats.in_polvio == 2
    assert stats.in_success == 1


@pytest.mark.parametrize("level", ["require", "unique:7"])
def test_engine_drops_unauthenticated_esp_under_require_and_unique(level: str) -> None:
    store = MemoryStore()
    add_esp(store, 0x1001, A, B, enc="aes-cbc", key=CBC_KEY, reqid=7)
    tx, rx = _pair(store, f"esp/transport//{level}")
    result = _deliver(rx, tx.protect_one(_FLOW, b"data", now=0.0))
    assert isinstance(result, Dropped)
    assert result.reason is DropReason.POLICY
    assert "without integrity" in result.detail
    assert rx.statistics().in_polvio == 1


@pytest.mark.parametrize("policy", ["in ipsec esp/transport//use", "in bypass", "in entrust"])
def test_use_and_clear_policies_still_accept_it(policy: str) -> None:
    store = MemoryStore()
    add_esp(store, 0x1001, A, B, enc="aes-cbc", key=CBC_KEY)
    tx, rx = _pair(store, "esp/transport//require")
    rx.set_policy(parse_policy(policy))
    for n in range(3):  # the fast path's memo too
        result = _deliver(rx, tx.protect_one(_FLOW, b"data %d" % n, now=0.0))
        assert isinstance(result, Delivered)
        assert result.applied[0].integrity is False
    rx.set_policy(parse_policy("in ipsec esp/transport//require"))  # and the memo is not kept
    result = _deliver(rx, tx.protect_one(_FLOW, b"data", now=0.0))
    assert isinstance(result, Dropped)
    assert result.reason is DropReason.POLICY


def test_authenticated_esp_is_marked_and_accepted() -> None:
    store = MemoryStore()
    add_esp(store, 0x1001, A, B, enc="aes-cbc", key=CBC_KEY, auth="hmac-sha256",
            auth_key=bytes(32))
    tx, rx = _pair(store, "esp/transport//require")
    result = _deliver(rx, tx.protect_one(_FLOW, b"data", now=0.0))
    assert isinstance(result, Delivered)
    assert result.applied[0].integrity is True


def test_ah_covering_confidentiality_only_esp_satisfies_require() -> None:
    """IP | AH | ESP(cbc) | UDP: AH authenticates the whole ESP packet, so both requests are
    met (engine only: the raw transport's packets, no sockets)."""
    store = MemoryStore()
    add_esp(store, 0x1001, A, B, enc="aes-cbc", key=CBC_KEY)
    add_ah(store, 0x2001, A, B)
    tx, rx = _pair(store, "esp/transport//require ah/transport//require", transport="raw")
    out = tx.protect_one(_FLOW, b"data", now=0.0)
    assert out.header_included
    result = _deliver(rx, out)
    assert isinstance(result, Delivered)
    assert [a.proto.keyword for a in result.applied] == ["ah", "esp"]
    # an ESP-only requirement is met by the same datagram too
    rx.set_policy(parse_policy("in ipsec esp/transport//require"))
    assert isinstance(_deliver(rx, tx.protect_one(_FLOW, b"data", now=0.0)), Delivered)


def test_a_warning_once_per_sa(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    add_esp(store, 0x1001, A, B, enc="aes-cbc", key=CBC_KEY)
    tx, rx = _pair(store, "esp/transport//require")
    with caplog.at_level(logging.WARNING, logger="secsock"):
        for _ in range(3):
            _deliver(rx, tx.protect_one(_FLOW, b"data", now=0.0))
    warnings = [r for r in caplog.records if "0x00001001 has no integrity" in r.getMessage()]
    assert len(warnings) == 1
    assert CBC_KEY.hex() not in caplog.text


_FLOW = Flow(ip_address(A), ip_address(B), 5000, 6000)


def _pair(store: MemoryStore, requests: str,
          transport: str = "udp") -> tuple[IPsecEngine, IPsecEngine]:
    spd = SPD()
    tx = IPsecEngine(transport=transport, sadb=store, spd=spd)
    rx = IPsecEngine(transport=transport, sadb=store, spd=spd)
    tx.set_policy(parse_policy(f"out ipsec {requests}"))
    rx.set_policy(parse_policy(f"in ipsec {requests}"))
    return tx, rx


def _deliver(rx: IPsecEngine, out: Outbound) -> Delivered | Dropped:
    if out.carrier is Carrier.UDP:
        return rx.receive_udp(out.data, out.src, out.dst, _FLOW.sport, _FLOW.dport, 0.0)
    return rx.receive(out.data, carrier=out.carrier, src=out.src, dst=out.dst,
                      sport=out.sport, dport=out.dport, protocol=out.protocol,
                      header_included=out.header_included, now=0.0)
