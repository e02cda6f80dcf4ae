"""The typed model: enums, validation on construction, coercion."""

from __future__ import annotations

import ipaddress

import pytest

from secsock import constants as c
from secsock.errors import PolicyError
from secsock.policy.model import Action, Direction, Level, Mode, Policy, Protocol, Request


def test_enum_values_match_the_c_constants() -> None:
    assert [int(d) for d in Direction] == [
        c.IPSEC_DIR_ANY, c.IPSEC_DIR_INBOUND, c.IPSEC_DIR_OUTBOUND, c.IPSEC_DIR_FWD
    ]
    assert [int(a) for a in Action] == [0, 1, 2, 3, 4]
    assert [int(p) for p in Protocol] == [50, 51, 108]
    assert [int(m) for m in Mode] == [0, 1, 2]
    assert [int(lv) for lv in Level] == [0, 1, 2, 3]
    assert [d.keyword for d in Direction] == ["any", "in", "out", "fwd"]
    assert [a.keyword for a in Action] == ["discard", "none", "ipsec", "entrust", "bypass"]
    assert Protocol.IPCOMP.keyword == "ipcomp"
    assert Mode.TUNNEL.keyword == "tunnel"
    assert Level.UNIQUE.keyword == "unique"


def test_ints_and_strings_are_coerced() -> None:
    r = Request(proto=50, mode=1, level=2, src="fe80::1%9", dst="fe80::2")  # type: ignore[arg-type]
    assert r.proto is Protocol.ESP
    assert r.mode is Mode.TRANSPORT
    assert r.level is Level.REQUIRE
    assert r.src == ipaddress.IPv6Address("fe80::1")
    assert r.src_scope_id == 9
    assert r.dst_scope_id == 0
    p = Policy(direction=2, action=2, requests=[r])  # type: ignore[arg-type]
    assert p.direction is Direction.OUTBOUND
    assert p.action is Action.IPSEC
    assert p.requests == (r,)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"proto": 6, "mode": 1}, c.EIPSEC_INVAL_PROTO),
        ({"proto": 50, "mode": 3}, c.EIPSEC_INVAL_MODE),
        ({"proto": 50, "mode": 1, "level": 4}, c.EIPSEC_INVAL_LEVEL),
        ({"proto": 50, "mode": 1, "reqid": -1}, c.EIPSEC_INVAL_LEVEL),
        ({"proto": 50, "mode": 1, "reqid": 1 << 32}, c.EIPSEC_INVAL_LEVEL),
        ({"proto": 50, "mode": 2, "src": "1.2.3.4"}, c.EIPSEC_INVAL_ADDRESS),
        ({"proto": 50, "mode": 2, "src": "1.2.3.4", "dst": "x"}, c.EIPSEC_INVAL_ADDRESS),
        ({"proto": 50, "mode": 1, "src_port": 5}, c.EIPSEC_INVAL_ADDRESS),
        ({"proto": 50, "mode": 1, "src": "::1", "dst": "::2", "dst_port": 65536},
         c.EIPSEC_INVAL_ADDRESS),
        ({"proto": 50, "mode": 1, "src": "1.1.1.1", "dst": "2.2.2.2", "src_scope_id": 1},
         c.EIPSEC_INVAL_ADDRESS),
        ({"proto": 50, "mode": 1, "src": "fe80::1%eth0", "dst": "fe80::2"},
         c.EIPSEC_INVAL_ADDRESS),
        ({"proto": 50, "mode": 1, "src": "fe80::1%3", "dst": "fe80::2", "src_scope_id": 4},
         c.EIPSEC_INVAL_ADDRESS),
    ],
)
def test_invalid_requests(kwargs: dict[str, object], code: int) -> None:
    with pytest.raises(PolicyError) as info:
        Request(**kwargs)  # type: ignore[arg-type]
    assert info.value.code == code
    assert info.value.__notes__


def test_invalid_policies() -> None:
    with pytest.raises(PolicyError) as info:
        Policy(direction=4, action=Action.IPSEC)  # type: ignore[arg-type]
    assert info.value.code == c.EIPSEC_INVAL_DIR
    with pytest.raises(PolicyError) as info:
        Policy(direction=Direction.INBOUND, action=5)  # type: ignore[arg-type]
    assert info.value.code == c.EIPSEC_INVAL_POLICY
    with pytest.raises(PolicyError):
        Policy(direction=Direction.INBOUND, action=Action.NONE, priority=1 << 32)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"proto": "esp", "mode": 1},
        {"proto": True, "mode": 1},
        {"proto": 50, "mode": 1, "reqid": 1.0},
        {"proto": 50, "mode": 1, "src": 16909060, "dst": 16909061},
    ],
)
def test_wrong_types_are_type_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        Request(**kwargs)  # type: ignore[arg-type]


def test_policy_requests_must_be_requests() -> None:
    with pytest.raises(TypeError):
        Policy(direction=Direction.INBOUND, action=Action.IPSEC, requests=["esp"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Policy(direction=Direction.INBOUND, action=Action.IPSEC, requests="esp")  # type: ignore[arg-type]


def test_frozen_hashable_and_equal() -> None:
    a = Policy.parse("out ipsec esp/transport//require")
    b = Policy.parse("out   ipsec   esp/transport//require")
    assert a == b
    assert hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.priority = 5  # type: ignore[misc]


def test_with_requests_and_has_addresses() -> None:
    p = Policy.parse("out prio def ipsec esp/transport//require")
    r = Request(proto=Protocol.AH, mode=Mode.TUNNEL,
                src=ipaddress.IPv4Address("1.1.1.1"), dst=ipaddress.IPv4Address("2.2.2.2"))
    q = p.with_requests([r])
    assert q.requests == (r,)
    assert q.priority == p.priority
    assert q.direction == p.direction
    assert r.has_addresses
    assert not p.requests[0].has_addresses
    assert q.to_text("\n") == "out prio def ipsec\nah/tunnel/1.1.1.1-2.2.2.2/default"
