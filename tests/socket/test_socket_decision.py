"""The outbound and inbound decision on real loopback sockets (IPSEC-REFERENCE §4.1-4.5).

Each case sets up the socket policy / SPD / sysctls, sends one datagram and checks what went
on the wire (the wire tap and a plain receiver) and what the receiver delivered or dropped.
"""

from __future__ import annotations

import errno

import pytest

from secsock import sysctl
from secsock.engine import Carrier
from secsock.errors import DropReason, NoSAError
from secsock.sadb.events import Acquire
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore
from tests.socket.helpers import (
    GCM_KEY2,
    Sockets,
    Tap,
    add_esp,
    spdadd,
)

LO = "127.0.0.1"
REQ = "esp/transport//require"


def _pair_sas(store: MemoryStore) -> None:
    add_esp(store, 0x1000, LO, LO)


def _send_and_see(socks: Sockets, sender_policy: str | None = None) -> tuple[Tap, bytes]:
    """Send b'ping' from a secure socket to a plain one; return the tap and the raw bytes."""
    a = socks.secure()
    if sender_policy is not None:
        a.set_ipsec_policy(sender_policy)
    tap = Tap(a)
    p = socks.plain()
    a.sendto(b"ping", p.getsockname())
    data, _ = p.recvfrom(2048)
    return tap, data


# --- outbound ---------------------------------------------------------------------------------


def test_new_socket_starts_at_entrust_both_ways(socks: Sockets) -> None:
    a = socks.secure()
    assert a.ipsec_policy("in").to_text() == "in entrust"
    assert a.ipsec_policy("out").to_text() == "out entrust"


@pytest.mark.parametrize("tree", ["net.inet.ipsec", "net.inet6.ipsec6"])
def test_entrust_no_spd_def_policy_none_sends_clear(socks: Sockets, tree: str) -> None:
    with sysctl.override({f"{tree}.def_policy": 1}):
        addr = LO if tree == "net.inet.ipsec" else "::1"
        a = socks.secure(addr)
        tap = Tap(a)
        p = socks.plain(addr)
        a.sendto(b"ping", p.getsockname())
        assert p.recvfrom(100)[0] == b"ping"
        assert tap.last.carrier == Carrier.CLEAR
        assert a.ipsec_stats().out_clear == 1


@pytest.mark.parametrize("tree", ["net.inet.ipsec", "net.inet6.ipsec6"])
def test_entrust_no_spd_def_policy_discard_refuses(socks: Sockets, tree: str) -> None:
    addr = LO if tree == "net.inet.ipsec" else "::1"
    a = socks.secure(addr)
    p = socks.plain(addr)
    with sysctl.override({f"{tree}.def_policy": 0}), pytest.raises(PermissionError) as info:
        a.sendto(b"ping", p.getsockname())
    assert info.value.errno == errno.EACCES
    assert "def_policy" in str(info.value)
    assert a.ipsec_stats().out_polvio == 1
    p.setblocking(False)
    with pytest.raises(BlockingIOError):
        p.recvfrom(100)  # nothing was sent


def test_entrust_spd_match_protects(socks: Sockets, store: MemoryStore, spd: SPD) -> None:
    _pair_sas(store)
    spdadd(spd, LO, LO, f"out ipsec {REQ}")
    tap, wire = _send_and_see(socks)
    assert tap.last.carrier == Carrier.UDP
    assert wire[:4] == (0x1000).to_bytes(4, "big")
    assert b"ping" not in wire


def test_spd_selectors_use_the_datagram_ports(socks: Sockets, store: MemoryStore,
                                              spd: SPD) -> None:
    _pair_sas(store)
    a = socks.secure()
    tap = Tap(a)
    p1, p2 = socks.plain(), socks.plain()
    spdadd(spd, LO, LO, f"out ipsec {REQ}", dport=p1.getsockname()[1])
    a.sendto(b"one", p1.getsockname())
    a.sendto(b"two", p2.getsockname())
    assert [o.carrier for o in tap.sent] == [Carrier.UDP, Carrier.CLEAR]
    assert p2.recvfrom(100)[0] == b"two"


def test_spd_require_without_sa_raises_nosa_and_acquires(socks: Sockets, store: MemoryStore,
                                                          spd: SPD) -> None:
    spdadd(spd, LO, LO, f"out ipsec {REQ}")
    events: list[object] = []
    store.subscribe(events.append)
    a = socks.secure()
    p = socks.plain()
    with pytest.raises(NoSAError) as info:
        a.sendto(b"secret", p.getsockname())
    assert info.value.errno == errno.ENOENT
    msg = str(info.value)
    assert "esp/transport 127.0.0.1->127.0.0.1" in msg
    assert "SPD entry" in msg
    acquires = [e for e in events if isinstance(e, Acquire)]
    assert len(acquires) == 1
    # rate-limited: the next failure raises again but acquires no more
    with pytest.raises(NoSAError):
        a.sendto(b"secret", p.getsockname())
    assert len([e for e in events if isinstance(e, Acquire)]) == 1
    assert a.ipsec_stats().out_nosa == 2
    p.setblocking(False)
    with pytest.raises(BlockingIOError):
        p.recvfrom(100)  # never in the clear


def test_spd_discard_refuses(socks: Sockets, spd: SPD) -> None:
    spdadd(spd, LO, LO, "out discard")
    a = socks.secure()
    with pytest.raises(PermissionError) as info:
        a.sendto(b"x", (LO, 9))
    assert info.value.errno == errno.EACCES


def test_spd_none_sends_clear_even_under_def_policy_discard(socks: Sockets,
                                                             spd: SPD) -> None:
    spdadd(spd, LO, LO, "out none")
    with sysctl.override({"net.inet.ipsec.def_policy": 0}):
        tap, wire = _send_and_see(socks)
    assert wire == b"ping"
    assert tap.last.carrier == Carrier.CLEAR


def test_socket_bypass_wins_over_spd(socks: Sockets, spd: SPD) -> None:
    spdadd(spd, LO, LO, f"out ipsec {REQ}")
    tap, wire = _send_and_see(socks, "out bypass")
    assert wire == b"ping"
    assert tap.last.carrier == Carrier.CLEAR


def test_socket_ipsec_wins_over_spd_discard(socks: Sockets, store: MemoryStore,
                                            spd: SPD) -> None:
    _pair_sas(store)
    spdadd(spd, LO, LO, "out discard")
    tap, wire = _send_and_see(socks, f"out ipsec {REQ}")
    assert tap.last.carrier == Carrier.UDP
    assert tap.last.spi == 0x1000
    assert wire == tap.last.data


def test_level_use_protects_when_an_sa_exists(socks: Sockets, store: MemoryStore) -> None:
    _pair_sas(store)
    tap, _ = _send_and_see(socks, "out ipsec esp/transport//use")
    assert tap.last.carrier == Carrier.UDP


def test_level_use_without_sa_sends_clear_and_acquires(socks: Sockets,
                                                        store: MemoryStore) -> None:
    events: list[object] = []
    store.subscribe(events.append)
    tap, wire = _send_and_see(socks, "out ipsec esp/transport//use")
    assert wire == b"ping"
    assert tap.last.carrier == Carrier.CLEAR
    assert any(isinstance(e, Acquire) for e in events)


@pytest.mark.parametrize(("deflev", "protected"), [(1, False), (2, True)])
def test_level_default_follows_esp_trans_deflev(socks: Sockets, deflev: int,
                                                protected: bool) -> None:
    a = socks.secure()
    a.set_ipsec_policy("out ipsec esp/transport//default")
    p = socks.plain()
    with sysctl.override({"net.inet.ipsec.esp_trans_deflev": deflev}):
        if protected:
            with pytest.raises(NoSAError):
                a.sendto(b"x", p.getsockname())
        else:
            a.sendto(b"x", p.getsockname())
            assert p.recvfrom(10)[0] == b"x"


def test_deflev_is_per_family(socks: Sockets) -> None:
    a = socks.secure("::1")
    a.set_ipsec_policy("out ipsec esp/transport//default")
    p = socks.plain("::1")
    with sysctl.override({"net.inet.ipsec.esp_trans_deflev": 2,
                          "net.inet6.ipsec6.esp_trans_deflev": 1}):
        a.sendto(b"x", p.getsockname())  # the IPv6 tree says use
        assert p.recvfrom(10)[0] == b"x"


def test_decision_follows_sysctl_changes(socks: Sockets) -> None:
    a = socks.secure()
    p = socks.plain()
    a.sendto(b"1", p.getsockname())
    with sysctl.override({"net.inet.ipsec.def_policy": 0}), pytest.raises(PermissionError):
        a.sendto(b"2", p.getsockname())
    a.sendto(b"3", p.getsockname())
    assert [p.recvfrom(10)[0] for _ in range(2)] == [b"1", b"3"]


def test_unique_binds_the_reqid(socks: Sockets, store: MemoryStore) -> None:
    add_esp(store, 0x2001, LO, LO, reqid=7)
    add_esp(store, 0x2002, LO, LO, reqid=9, key=GCM_KEY2)
    for reqid, spi in ((9, 0x2002), (7, 0x2001)):
        tap, _ = _send_and_see(socks, f"out ipsec esp/transport//unique:{reqid}")
        assert tap.last.spi == spi
    a = socks.secure()
    a.set_ipsec_policy("out ipsec esp/transport//unique:5")
    with pytest.raises(NoSAError, match="reqid 5"):
        a.sendto(b"x", (LO, 9))


def test_unique_without_number_gets_an_allocated_reqid(socks: Sockets) -> None:
    a = socks.secure()
    a.set_ipsec_policy("out ipsec esp/transport//unique")
    text = a.ipsec_policy("out").to_text()
    assert text.startswith("out ipsec esp/transport//unique#")
    assert int(text.rsplit("#", 1)[1]) >= 0x4000
    with pytest.raises(NoSAError, match="reqid"):
        a.sendto(b"x", (LO, 9))


def test_ah_over_udp_transport_is_refused_with_advice(socks: Sockets, store: MemoryStore) -> None:
    from tests.socket.helpers import add_ah

    add_ah(store, 0x3000, LO, LO)
    a = socks.secure()
    a.set_ipsec_policy("out ipsec ah/transport//require")
    with pytest.raises(OSError, match="RFC 3948") as info:
        a.sendto(b"x", (LO, 9))
    assert info.value.errno == errno.EPROTONOSUPPORT
    assert "ESP with integrity" in str(info.value)
    assert a.ipsec_stats().out_inval == 1


def test_tunnel_mode_is_refused(socks: Sockets) -> None:
    a = socks.secure()
    a.set_ipsec_policy("out ipsec esp/tunnel/10.0.0.1-10.0.0.2/require")
    with pytest.raises(OSError, match="transport mode only") as info:
        a.sendto(b"x", (LO, 9))
    assert info.value.errno == errno.EOPNOTSUPP


def test_ipsec_policy_without_requests_sends_nothing(socks: Sockets) -> None:
    a = socks.secure()
    a.set_ipsec_policy("out ipsec")
    with pytest.raises(NoSAError, match="no requests"):
        a.sendto(b"x", (LO, 9))


# --- inbound ----------------------------------------------------------------------------------


def test_inbound_require_drops_clear(socks: Sockets) -> None:
    b = socks.secure()
    b.set_ipsec_policy(f"in ipsec {REQ}")
    p = socks.plain()
    p.sendto(b"clear", b.getsockname())
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recvfrom(100)
    stats = b.ipsec_stats()
    assert stats.in_polvio == 1
    assert stats.drops[DropReason.POLICY] == 1


def test_inbound_use_accepts_clear_and_protected(socks: Sockets, store: MemoryStore) -> None:
    _pair_sas(store)
    a = socks.secure()
    a.set_ipsec_policy(f"out ipsec {REQ}")
    b = socks.secure()
    b.set_ipsec_policy("in ipsec esp/transport//use")
    p = socks.plain()
    p.sendto(b"clear", b.getsockname())
    a.sendto(b"protected", b.getsockname())
    got = [b.recvfrom(100)[0] for _ in range(2)]
    assert got == [b"clear", b"protected"]
    stats = b.ipsec_stats()
    assert (stats.in_clear, stats.in_success) == (1, 1)


def test_inbound_default_level_follows_deflev(socks: Sockets) -> None:
    b = socks.secure()
    b.set_ipsec_policy("in ipsec esp/transport//default")
    p = socks.plain()
    b.setblocking(False)
    with sysctl.override({"net.inet.ipsec.esp_trans_deflev": 2}):
        p.sendto(b"dropped", b.getsockname())
        with pytest.raises(BlockingIOError):
            b.recvfrom(100)
    p.sendto(b"accepted", b.getsockname())
    b.setblocking(True)
    assert b.recvfrom(100)[0] == b"accepted"


def test_inbound_entrust_consults_the_spd(socks: Sockets, spd: SPD) -> None:
    b = socks.secure()
    p = socks.plain()
    spdadd(spd, LO, LO, f"in ipsec {REQ}", dport=b.getsockname()[1])
    p.sendto(b"clear", b.getsockname())
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recvfrom(100)
    assert b.ipsec_stats().in_polvio == 1


def test_inbound_socket_bypass_wins_over_spd(socks: Sockets, spd: SPD) -> None:
    b = socks.secure()
    b.set_ipsec_policy("in bypass")
    spdadd(spd, LO, LO, f"in ipsec {REQ}")
    p = socks.plain()
    p.sendto(b"clear", b.getsockname())
    assert b.recvfrom(100)[0] == b"clear"


@pytest.mark.parametrize("def_policy", [0, 1])
def test_inbound_def_policy(socks: Sockets, store: MemoryStore, def_policy: int) -> None:
    _pair_sas(store)
    a = socks.secure()
    a.set_ipsec_policy(f"out ipsec {REQ}")
    b = socks.secure()
    p = socks.plain()
    with sysctl.override({"net.inet.ipsec.def_policy": def_policy}):
        p.sendto(b"clear", b.getsockname())
        a.sendto(b"protected", b.getsockname())
        b.setblocking(False)
        got = []
        while True:
            try:
                got.append(b.recvfrom(100)[0])
            except BlockingIOError:
                break
    if def_policy == 1:
        assert got == [b"clear", b"protected"]
    else:  # KAME: a discard default policy refuses protected datagrams too
        assert got == []
        assert b.ipsec_stats().in_polvio == 2


def test_inbound_sa_address_mismatch_is_a_policy_drop(socks: Sockets,
                                                      store: MemoryStore) -> None:
    """RFC 4301 §5.2: the SA found by (dst, SPI) must match the datagram's source."""
    from secsock.engine import Flow, IPsecEngine
    from tests.socket.helpers import ip

    add_esp(store, 0x4000, "127.0.0.9", LO)
    b = socks.secure()
    b.set_ipsec_policy(f"in ipsec {REQ}")
    p = socks.plain()
    forger = IPsecEngine(sadb=store)
    from secsock.policy.model import parse_policy

    forger.set_policy(parse_policy(f"out ipsec {REQ}"))
    out = forger.protect(Flow(ip("127.0.0.9"), ip(LO), p.getsockname()[1], b.getsockname()[1]),
                         b"spoofed", now=0.0)[0]
    p.sendto(out.data, b.getsockname())  # arrives from 127.0.0.1, not 127.0.0.9
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recvfrom(100)
    assert b.ipsec_stats().drops[DropReason.POLICY] == 1


def test_ipv6_esp_on_the_sockets_own_ports(socks: Sockets, store: MemoryStore) -> None:
    add_esp(store, 0x6000, "::1", "::1")
    a, b = socks.secure("::1"), socks.secure("::1")
    for s in (a, b):
        s.set_ipsec_policy(f"in ipsec {REQ}")
        s.set_ipsec_policy(f"out ipsec {REQ}")
    tap = Tap(a)
    a.sendto(b"over IPv6", b.getsockname())
    data, addr = b.recvfrom(100)
    assert data == b"over IPv6"
    assert addr[:2] == a.getsockname()[:2]
    assert len(addr) == 4
    assert (tap.last.carrier, tap.last.spi) == (Carrier.UDP, 0x6000)
    b.sendto(b"back", addr)
    assert a.recv(100) == b"back"
