"""The grammar beyond the docs table: lexer tie rules, whitespace, columns, every request form,
address forms, scopes and the order in which libipsec's checks fire."""

from __future__ import annotations

import ipaddress

import pytest

from secsock import constants as c
from secsock.errors import PolicyError
from secsock.policy.grammar import format_address, parse_policy
from secsock.policy.libipsec import ipsec_set_policy
from secsock.policy.model import Action, Direction, Level, Mode, Policy, Protocol, Request

V6 = ipaddress.IPv6Address
V4 = ipaddress.IPv4Address


def err(text: str, **kw: object) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, **kw)  # type: ignore[arg-type]
    return info.value


@pytest.mark.parametrize(
    ("text", "direction", "action"),
    [
        ("in discard", Direction.INBOUND, Action.DISCARD),
        ("out none", Direction.OUTBOUND, Action.NONE),
        ("out ipsec", Direction.OUTBOUND, Action.IPSEC),
        ("in entrust", Direction.INBOUND, Action.ENTRUST),
        ("in bypass", Direction.INBOUND, Action.BYPASS),
        ("fwd ipsec", Direction.FWD, Action.IPSEC),
        ("out", Direction.OUTBOUND, Action.DISCARD),
    ],
)
def test_directions_and_actions(text: str, direction: Direction, action: Action) -> None:
    p = parse_policy(text)
    assert (p.direction, p.action, p.requests, p.priority) == (direction, action, (), 0)


@pytest.mark.parametrize(
    ("request_text", "level", "reqid", "addrs"),
    [
        ("esp/transport", Level.DEFAULT, 0, None),
        ("esp/transport/", Level.DEFAULT, 0, None),
        ("esp/transport//use", Level.USE, 0, None),
        ("esp/transport//require", Level.REQUIRE, 0, None),
        ("esp/transport//unique", Level.UNIQUE, 0, None),
        ("esp/transport//unique:00042", Level.UNIQUE, 42, None),
        ("esp/transport//default", Level.DEFAULT, 0, None),
        ("esp/transport/me-any", Level.DEFAULT, 0, None),
        ("esp/transport/me-any/", Level.DEFAULT, 0, None),
        ("esp/transport/me-any/unique:3", Level.UNIQUE, 3, None),
        ("esp/tunnel/10.1.1.1-10.1.1.2", Level.DEFAULT, 0, (V4("10.1.1.1"), V4("10.1.1.2"))),
        ("esp/tunnel/10.1.1.1-10.1.1.2/", Level.DEFAULT, 0, (V4("10.1.1.1"), V4("10.1.1.2"))),
        ("esp/tunnel/::1-::2/use", Level.USE, 0, (V6("::1"), V6("::2"))),
    ],
)
def test_every_request_form(
    request_text: str, level: Level, reqid: int, addrs: tuple[object, object] | None
) -> None:
    (r,) = parse_policy(f"out ipsec {request_text}").requests
    assert (r.proto, r.level, r.reqid) == (Protocol.ESP, level, reqid)
    assert (r.src, r.dst) == (addrs if addrs else (None, None))


def test_any_me_for_inbound() -> None:
    (r,) = parse_policy("in ipsec ah/transport/any-me/require").requests
    assert r == Request(proto=Protocol.AH, mode=Mode.TRANSPORT, level=Level.REQUIRE)


def test_whitespace_tabs_newlines_and_no_space_around_slashes() -> None:
    a = parse_policy("out ipsec esp/transport//require ah/transport//use")
    b = parse_policy("\n\t out\t\tipsec\n esp/transport//require\n\nah/transport//use \n")
    assert a == b
    assert ipsec_set_policy("  out   ipsec esp/transport//require  ") == ipsec_set_policy(
        "out ipsec esp/transport//require"
    )


def test_several_requests_keep_their_order() -> None:
    p = parse_policy(
        "out ipsec ipcomp/transport//use ah/transport//require esp/tunnel/1.1.1.1-2.2.2.2/unique:9"
    )
    assert [r.proto for r in p.requests] == [Protocol.IPCOMP, Protocol.AH, Protocol.ESP]
    assert [r.mode for r in p.requests] == [Mode.TRANSPORT, Mode.TRANSPORT, Mode.TUNNEL]
    assert p.requests[2].reqid == 9


def test_lexer_longest_match_and_keyword_ties() -> None:
    # "inbound" is longer than "in": an address token, hence a syntax error at column 1
    assert err("inbound ipsec").token == "inbound"
    # "unique:5x" lexes as one address token, not LEVEL_SPECIFY
    e = err("out ipsec esp/transport//unique:5x")
    assert (e.code, e.token) == (c.EIPSEC_INVAL_ARGUMENT, "unique:5x")
    # "mex" is an address, so me-any cannot start there
    e = err("out ipsec esp/transport/mex-any/require")
    assert e.code == c.EIPSEC_SYSTEM_ERROR
    assert e.token == "mex"
    # a bare digit string is a priority offset (flex rule before {ipaddress}) -> syntax error
    e = err("out ipsec esp/transport/10-20/require")
    assert (e.code, e.token, e.column) == (c.EIPSEC_INVAL_ARGUMENT, "10", 25)
    # ... and in tunnel mode the default reduction runs rule_check() first
    e = err("out ipsec esp/tunnel/10-20/require")
    assert (e.code, e.token) == (c.EIPSEC_INVAL_ADDRESS, "tunnel")


def test_keywords_are_case_sensitive() -> None:
    assert err("OUT ipsec").token == "OUT"
    assert err("out IPSEC").token == "IPSEC"


def test_column_counts_from_start_of_text_across_lines() -> None:
    e = err("out ipsec\n  esp/tunnel//require")
    assert e.code == c.EIPSEC_INVAL_ADDRESS
    assert e.column == len("out ipsec\n  esp/") + 1
    assert e.token == "tunnel"


def test_empty_and_blank_text() -> None:
    for text in ("", "   \n\t"):
        e = err(text)
        assert (e.code, e.token, e.column) == (c.EIPSEC_INVAL_ARGUMENT, None, len(text) + 1)


def test_nul_and_stray_characters_are_errors() -> None:
    e = err("out ipsec\x00esp/transport//require")
    assert (e.token, e.column) == ("\x00", 10)
    e = err("out ipsec esp/transport//require # comment")
    assert (e.token, e.column) == ("#", 34)


def test_few_arguments_wins_over_a_following_syntax_error() -> None:
    # bison's default reduction: "esp" not followed by "/" is EIPSEC_FEW_ARGUMENTS
    for text in ("out ipsec esp esp/transport", "out ipsec esp 1.2.3.4", "out ipsec esp/1.2.3.4"):
        e = err(text)
        assert (e.code, e.token, e.column) == (c.EIPSEC_FEW_ARGUMENTS, "esp", 11)


def test_rule_check_runs_before_a_following_syntax_error() -> None:
    e = err("out ipsec esp/tunnel foo")
    assert e.code == c.EIPSEC_INVAL_ADDRESS
    e = err("out ipsec esp/transport bar")
    assert (e.code, e.token) == (c.EIPSEC_INVAL_ARGUMENT, "bar")


def test_address_is_checked_before_the_missing_hyphen() -> None:
    e = err("out ipsec esp/tunnel/300.1.1.1 2.2.2.2")
    assert (e.code, e.token) == (c.EIPSEC_SYSTEM_ERROR, "300.1.1.1")
    e = err("out ipsec esp/tunnel/1.1.1.1 2.2.2.2")
    assert (e.code, e.token) == (c.EIPSEC_INVAL_ARGUMENT, "2.2.2.2")


def test_rule_check_only_for_ipsec() -> None:
    # discard/none/entrust/bypass do not validate their requests, as rule_check() does not
    p = parse_policy("in none esp/tunnel ah/tunnel/1.2.3.4-::1/use")
    assert p.action is Action.NONE
    assert len(p.requests) == 2
    assert p.requests[1].src == V4("1.2.3.4")
    assert p.requests[1].dst == V6("::1")
    assert p.to_text() == "in none"
    # but the syntax and the address checks still apply
    assert err("in none esp").code == c.EIPSEC_FEW_ARGUMENTS
    assert err("in discard esp/tunnel/1.2.3.x-1.2.3.4").code == c.EIPSEC_SYSTEM_ERROR
    assert err("in discard esp/transport/me-any").code == c.EIPSEC_INVAL_DIR


def test_ports_and_scopes() -> None:
    (r,) = parse_policy("out ipsec esp/transport/fe80::a%7[500]-fe80::b%8[4500]/use").requests
    assert (r.src, r.dst) == (V6("fe80::a"), V6("fe80::b"))
    assert (r.src_port, r.dst_port, r.src_scope_id, r.dst_scope_id) == (500, 4500, 7, 8)
    (r,) = parse_policy("out ipsec esp/transport/1.2.3.4[0]-5.6.7.8[65535]").requests
    assert (r.src_port, r.dst_port) == (0, 65535)


def test_interface_scope_needs_a_resolver() -> None:
    text = "out ipsec esp/transport/fe80::1%eth0-fe80::2%eth1/require"
    e = err(text)
    assert e.code == c.EIPSEC_SYSTEM_ERROR
    assert e.token == "fe80::1%eth0"
    seen: list[str] = []

    def resolve(name: str) -> int:
        seen.append(name)
        return {"eth0": 4, "eth1": 5}[name]

    (r,) = parse_policy(text, ifindex=resolve).requests
    assert (r.src_scope_id, r.dst_scope_id) == (4, 5)
    assert seen == ["eth0", "eth1"]

    def missing(name: str) -> int:
        raise OSError(6, "No such device or address")

    e = err(text, ifindex=missing)
    assert e.code == c.EIPSEC_SYSTEM_ERROR
    assert e.token == "fe80::1%eth0"
    assert "eth0" in e.__notes__[0]


def test_bad_scopes() -> None:
    assert err("out ipsec esp/transport/1.2.3.4%1-1.2.3.5%1").code == c.EIPSEC_SYSTEM_ERROR
    e = err("out ipsec esp/transport/fe80::1%4294967296-fe80::2")
    assert e.code == c.EIPSEC_SYSTEM_ERROR
    assert e.token == "fe80::1%4294967296"


@pytest.mark.parametrize(
    "addr",
    ["1.2.3", "01.2.3.4", "1.2.3.4.", "10.0.0.256", "::g", "1:2:3:4:5:6:7:8:9", "host.example"],
)
def test_only_numeric_addresses(addr: str) -> None:
    e = err(f"out ipsec esp/tunnel/{addr}-1.2.3.4/require")
    assert e.code == c.EIPSEC_SYSTEM_ERROR
    assert e.message == "hostname nor servname provided, or not known"
    assert e.token == addr
    assert e.column == 22


def test_port_only_on_one_side() -> None:
    e = err("out ipsec esp/transport/1.2.3.4-5.6.7.8[500]/use")
    assert (e.code, e.token) == (c.EIPSEC_INVAL_ARGUMENT, "[500]")


def test_priority_forms() -> None:
    def prio(text: str) -> int:
        return parse_policy(text).priority

    assert prio("in ipsec") == 0
    assert prio("in prio def ipsec") == 0x80000000
    assert prio("in priority low none") == 0xC0000000
    assert prio("in prio high none") == 0x40000000
    assert prio("in prio 5 none") == 0x80000000 - 5
    assert prio("in prio -5 none") == 0x80000000 + 5
    assert prio("in prio - 5 none") == 0x80000000 + 5
    assert prio("in prio def+5 none") == 0x80000000 - 5
    assert prio("in prio low - 7 none") == 0xC0000000 + 7
    assert prio("in prio high + 1073741824 none") == 0
    assert prio("in prio low - 1073741823 none") == 0xFFFFFFFF
    assert prio("in prio 2147483648 none") == 0
    assert prio("in prio -2147483647 none") == 0xFFFFFFFF
    assert prio("in prio 000012 none") == 0x80000000 - 12


def test_priority_syntax_errors() -> None:
    assert err("in prio").token is None
    assert err("in prio + 5 none").token == "+"
    assert err("in prio def 5 none").token == "5"
    assert err("in prio def +").token is None
    assert err("in prio 5").token is None
    assert err("in prio -x none").token == "x"


def test_priority_range_checked_only_after_the_action() -> None:
    # the yacc action runs once ACTION is read, so a missing action is a syntax error first
    e = err("in prio 9999999999 esp")
    assert (e.code, e.token) == (c.EIPSEC_INVAL_ARGUMENT, "esp")
    e = err("in prio 9999999999 none")
    assert (e.code, e.token, e.column) == (c.EIPSEC_INVAL_PRIORITY_OFFSET, "9999999999", 9)


def test_unique_reqid_bounds() -> None:
    (r,) = parse_policy("out ipsec esp/transport//unique:65535").requests
    assert r.reqid == 65535
    assert parse_policy("out ipsec esp/transport//unique:65535").to_text() == (
        "out ipsec esp/transport//unique#65535"
    )


def test_text_must_be_str() -> None:
    with pytest.raises(TypeError):
        parse_policy(b"out ipsec")  # type: ignore[arg-type]


def test_format_address_matches_inet_ntop() -> None:
    assert format_address(V6("::ffff:1.2.3.4")) == "::ffff:1.2.3.4"
    assert format_address(V6("::ffff:0.0.0.0")) == "::ffff:0.0.0.0"
    assert format_address(V6("::1.2.3.4")) == "::1.2.3.4"
    assert format_address(V6("::0.0.1.2")) == "::102"  # word 6 is zero: not the v4 form
    assert format_address(V6("::1")) == "::1"
    assert format_address(V6("::")) == "::"
    assert format_address(V6("2001:db8:0:0:1:0:0:1")) == "2001:db8::1:0:0:1"
    assert format_address(V6("2001:db8:0:1:1:1:1:1")) == "2001:db8:0:1:1:1:1:1"
    assert format_address(V6("fe80::1"), 3) == "fe80::1%3"
    assert format_address(V4("192.0.2.1")) == "192.0.2.1"


def test_policy_parse_classmethod_and_str() -> None:
    p = Policy.parse("out ipsec esp/transport//require")
    assert str(p) == "out ipsec esp/transport//require"
    assert str(p.requests[0]) == "esp/transport//require"


@pytest.mark.parametrize(
    ("text", "code", "token"),
    [
        (f"in prio {'9' * 5000} none", c.EIPSEC_INVAL_PRIORITY_OFFSET, "9" * 5000),
        (f"in prio -{'9' * 5000} none", c.EIPSEC_INVAL_PRIORITY_OFFSET, "9" * 5000),
        (f"in prio def + {'9' * 5000} none", c.EIPSEC_INVAL_PRIORITY_BASE_OFFSET, "9" * 5000),
        (f"out ipsec esp/transport//unique:{'9' * 5000}", c.EIPSEC_INVAL_LEVEL,
         f"unique:{'9' * 5000}"),
        (f"out ipsec esp/transport/1.2.3.4[{'9' * 5000}]-5.6.7.8[1]/use",
         c.EIPSEC_SYSTEM_ERROR, f"[{'9' * 5000}]"),
        (f"out ipsec esp/transport/fe80::1%{'9' * 5000}-fe80::2/use", c.EIPSEC_SYSTEM_ERROR,
         f"fe80::1%{'9' * 5000}"),
    ],
)
def test_numbers_beyond_cpythons_int_digit_limit_are_range_errors(
    text: str, code: int, token: str
) -> None:
    # int() refuses more than 4300 decimal digits with a plain ValueError; the parser must
    # still answer with its own PolicyError, code and column.
    e = err(text)
    assert (e.code, e.token) == (code, token)
    assert "more than 20 digits" in e.__notes__[0]
    assert parse_policy(f"in prio {'0' * 5000}12 none").priority == 0x80000000 - 12
