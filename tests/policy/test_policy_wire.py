"""Byte-exact buffers, checked against bytes assembled by hand from the C struct layouts
(IPSEC-REFERENCE §1.4), and every check of the dump/decode path."""

from __future__ import annotations

import ipaddress
import sys

import pytest

from secsock import constants as c
from secsock.errors import PolicyError
from secsock.policy.libipsec import ipsec_dump_policy, ipsec_get_policylen, ipsec_set_policy
from secsock.policy.model import Action, Direction, Level, Mode, Policy, Protocol, Request

pytestmark = pytest.mark.skipif(
    sys.byteorder != "little", reason="hand-assembled host-order fields are little-endian"
)


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# (policy text, bsd bytes, linux bytes), every byte written out by hand
VECTORS = [
    (
        "out ipsec esp/transport//require",
        h("0300 1200 0200 02 00 00000000 00000000"
          "0800 3200 01 02 0000"),
        h("0400 1200 0200 02 00 00000000 00000000"
          "1000 3200 01 02 0000 00000000 00000000"),
    ),
    (
        "out ipsec esp/tunnel/10.0.0.1-10.0.0.2/require",
        h("0700 1200 0200 02 00 00000000 00000000"
          "2800 3200 02 02 0000"
          "10 02 0000 0a000001 0000000000000000"
          "10 02 0000 0a000002 0000000000000000"),
        h("0800 1200 0200 02 00 00000000 00000000"
          "3000 3200 02 02 0000 00000000 00000000"
          "0200 0000 0a000001 0000000000000000"
          "0200 0000 0a000002 0000000000000000"),
    ),
    (
        "in prio high + 1 ipsec esp/transport/fe80::1%3[500]-fe80::2%3[4500]/unique:7",
        h("0a00 1200 0200 01 00 00000000 ffffff3f"
          "4000 3200 01 03 0700"
          "1c 1c 01f4 00000000 fe800000000000000000000000000001 03000000"
          "1c 1c 1194 00000000 fe800000000000000000000000000002 03000000"),
        h("0b00 1200 0200 01 00 00000000 ffffff3f"
          "4800 3200 01 03 0000 07000000 00000000"
          "0a00 01f4 00000000 fe800000000000000000000000000001 03000000"
          "0a00 1194 00000000 fe800000000000000000000000000002 03000000"),
    ),
    (
        "out prio def + 5 ipsec ah/transport//use ipcomp/tunnel/192.0.2.1[1]-192.0.2.2[2]/unique",
        h("0800 1200 0200 02 00 00000000 fbffff7f"
          "0800 3300 01 01 0000"
          "2800 6c00 02 03 0000"
          "10 02 0001 c0000201 0000000000000000"
          "10 02 0002 c0000202 0000000000000000"),
        h("0a00 1200 0200 02 00 00000000 fbffff7f"
          "1000 3300 01 01 0000 00000000 00000000"
          "3000 6c00 02 03 0000 00000000 00000000"
          "0200 0001 c0000201 0000000000000000"
          "0200 0002 c0000202 0000000000000000"),
    ),
    (
        "in",
        h("0200 1200 0000 01 00 00000000 00000000"),
        h("0200 1200 0000 01 00 00000000 00000000"),
    ),
    (
        "fwd prio low bypass",
        h("0200 1200 0400 03 00 00000000 000000c0"),
        h("0200 1200 0400 03 00 00000000 000000c0"),
    ),
    (  # requests after a non-ipsec action are written, as the C parser does
        "in discard esp/transport//require",
        h("0300 1200 0000 01 00 00000000 00000000"
          "0800 3200 01 02 0000"),
        h("0400 1200 0000 01 00 00000000 00000000"
          "1000 3200 01 02 0000 00000000 00000000"),
    ),
    (
        "out ipsec esp/transport//unique:16383",
        h("0300 1200 0200 02 00 00000000 00000000"
          "0800 3200 01 03 ff3f"),
        h("0400 1200 0200 02 00 00000000 00000000"
          "1000 3200 01 03 0000 ff3f0000 00000000"),
    ),
]


@pytest.mark.parametrize(("text", "bsd", "linux"), VECTORS, ids=[v[0] for v in VECTORS])
def test_encode_is_byte_exact(text: str, bsd: bytes, linux: bytes) -> None:
    assert ipsec_set_policy(text) == bsd
    assert ipsec_set_policy(text, "bsd") == bsd
    assert ipsec_set_policy(text, "linux") == linux
    assert ipsec_get_policylen(bsd) == len(bsd)
    assert ipsec_get_policylen(linux, "linux") == len(linux)


@pytest.mark.parametrize(("text", "bsd", "linux"), VECTORS, ids=[v[0] for v in VECTORS])
def test_decode_of_hand_bytes_matches_parse(text: str, bsd: bytes, linux: bytes) -> None:
    parsed = Policy.parse(text)
    for layout, buf in (("bsd", bsd), ("linux", linux)):
        decoded = Policy.decode(buf, layout)  # type: ignore[arg-type]
        if parsed.action is Action.IPSEC:
            assert decoded == parsed
        else:  # the dump and the kernel ignore requests of non-ipsec policies
            assert decoded == Policy(direction=parsed.direction, action=parsed.action,
                                     priority=parsed.priority)
        assert ipsec_dump_policy(buf, None, layout) == parsed.to_text()  # type: ignore[arg-type]


def test_decoded_fields_of_ipv6_vector() -> None:
    buf = VECTORS[2][1]
    p = Policy.decode(buf)
    assert p.direction is Direction.INBOUND
    assert p.action is Action.IPSEC
    assert p.priority == c.PRIORITY_HIGH - 1
    (r,) = p.requests
    assert (r.proto, r.mode, r.level, r.reqid) == (Protocol.ESP, Mode.TRANSPORT, Level.UNIQUE, 7)
    assert r.src == ipaddress.IPv6Address("fe80::1")
    assert r.dst == ipaddress.IPv6Address("fe80::2")
    assert (r.src_port, r.dst_port, r.src_scope_id, r.dst_scope_id) == (500, 4500, 3, 3)


def test_worked_example_of_the_reference() -> None:
    assert ipsec_set_policy("out ipsec esp/transport//require") == h(
        "03 00 12 00 02 00 02 00  00 00 00 00 00 00 00 00  08 00 32 00 01 02 00 00"
    )
    assert ipsec_set_policy("out ipsec esp/transport//require", "linux") == h(
        "04 00 12 00 02 00 02 00  00 00 00 00 00 00 00 00"
        "10 00 32 00 01 02 00 00  00 00 00 00 00 00 00 00"
    )


def test_bsd_reqid_limit_and_linux_u32_reqid() -> None:
    p = Policy(direction=Direction.OUTBOUND, action=Action.IPSEC,
               requests=(Request(proto=Protocol.ESP, mode=Mode.TRANSPORT, level=Level.UNIQUE,
                                 reqid=0x12345),))
    with pytest.raises(PolicyError) as info:
        p.encode("bsd")
    assert info.value.code == c.EIPSEC_INVAL_LEVEL
    buf = p.encode("linux")
    assert buf[16 + 8 : 16 + 12] == h("45230100")
    assert ipsec_dump_policy(buf, None, "linux") == "out ipsec esp/transport//unique#74565"


def test_dump_delimiter() -> None:
    buf = ipsec_set_policy("out ipsec ah/transport//require esp/transport//use")
    assert ipsec_dump_policy(buf, "\n\t") == "out ipsec\n\tah/transport//require\n\tesp/transport//use"
    assert ipsec_dump_policy(buf, "") == "out ipsecah/transport//requireesp/transport//use"


# --- decode / dump checks -------------------------------------------------------------------
GOOD = VECTORS[1][1]  # bsd IPv4 tunnel, 56 bytes


def patch(buf: bytes, off: int, new: bytes) -> bytes:
    return buf[:off] + new + buf[off + len(new):]


BAD_DUMPS = [
    ("short", GOOD[:15], c.EIPSEC_INVAL_SADBMSG),
    ("exttype", patch(GOOD, 2, h("1300")), c.EIPSEC_INVAL_EXTTYPE),
    ("dir 4", patch(GOOD, 6, h("04")), c.EIPSEC_INVAL_DIR),
    ("type 5", patch(GOOD, 4, h("0500")), c.EIPSEC_INVAL_POLICY),
    ("len beyond buffer", patch(GOOD, 0, h("0800")), c.EIPSEC_INVAL_SADBMSG),
    ("len below header", patch(GOOD, 0, h("0100")), c.EIPSEC_INVAL_SADBMSG),
    ("request len 0", patch(GOOD, 16, h("0000")), c.EIPSEC_INVAL_SADBMSG),
    ("request len 7", patch(GOOD, 16, h("0700")), c.EIPSEC_INVAL_SADBMSG),
    ("lengths do not add up", patch(GOOD, 16, h("2000")), c.EIPSEC_INVAL_SADBMSG),
    ("request past the end", patch(GOOD, 16, h("3000")), c.EIPSEC_INVAL_SADBMSG),
    ("proto tcp", patch(GOOD, 18, h("0600")), c.EIPSEC_INVAL_PROTO),
    ("mode 3", patch(GOOD, 20, h("03")), c.EIPSEC_INVAL_MODE),
    ("level 4", patch(GOOD, 21, h("04")), c.EIPSEC_INVAL_LEVEL),
    ("sa_len 15", patch(GOOD, 24, h("0f")), c.EIPSEC_INVAL_ADDRESS),
    ("family 3", patch(GOOD, 25, h("03")), c.EIPSEC_INVAL_ADDRESS),
    ("dst family 10 in bsd", patch(GOOD, 41, h("0a")), c.EIPSEC_INVAL_ADDRESS),
    # a request with 8 spare bytes: the header+sockaddrs must fill it exactly
    ("padding after sockaddrs",
     patch(GOOD, 0, h("0800")) [:16] + h("3000 3200 02 02 0000") + GOOD[24:] + bytes(8),
     c.EIPSEC_INVAL_ADDRESS),
    ("one sockaddr only",
     h("0500 1200 0200 02 00 00000000 00000000 1800 3200 02 02 0000")
     + h("10 02 0000 0a000001 0000000000000000"), c.EIPSEC_INVAL_ADDRESS),
]


@pytest.mark.parametrize(("name", "buf", "code"), BAD_DUMPS, ids=[b[0] for b in BAD_DUMPS])
def test_dump_rejects(name: str, buf: bytes, code: int) -> None:
    with pytest.raises(PolicyError) as info:
        ipsec_dump_policy(buf)
    assert info.value.code == code
    assert info.value.__notes__  # says what was expected and found
    with pytest.raises(PolicyError):
        Policy.decode(buf)


def test_dump_checks_in_libipsec_order() -> None:
    # proto is checked before mode, mode before addresses, addresses before level
    buf = patch(patch(patch(GOOD, 18, h("0600")), 20, h("03")), 21, h("04"))
    with pytest.raises(PolicyError) as info:
        ipsec_dump_policy(buf)
    assert info.value.code == c.EIPSEC_INVAL_PROTO
    buf = patch(patch(GOOD, 24, h("0f")), 21, h("04"))
    with pytest.raises(PolicyError) as info:
        ipsec_dump_policy(buf)
    assert info.value.code == c.EIPSEC_INVAL_ADDRESS


def test_linux_unknown_family_is_invalid_address() -> None:
    good = VECTORS[1][2]
    with pytest.raises(PolicyError) as info:
        ipsec_dump_policy(patch(good, 32, h("1c00")), None, "linux")
    assert info.value.code == c.EIPSEC_INVAL_ADDRESS


def test_dump_ignores_trailing_bytes_and_non_ipsec_garbage() -> None:
    assert ipsec_dump_policy(GOOD + b"\xff" * 9) == (
        "out ipsec esp/tunnel/10.0.0.1-10.0.0.2/require"
    )
    # a discard policy is not read past its header, whatever its length says (as in C)
    assert ipsec_dump_policy(h("0000 1200 0000 02 00 00000000 00000000") + b"junk") == "out discard"


def test_dump_prints_what_text_cannot_say() -> None:
    # mode any and a reqid on a non-unique level only come from buffers
    buf = h("0300 1200 0200 00 00 00000000 00000000 0800 3200 00 02 0500")
    assert ipsec_dump_policy(buf) == "any ipsec esp/any//require:5"


def test_ipsec_get_policylen() -> None:
    assert ipsec_get_policylen(None) == -1
    assert ipsec_get_policylen(GOOD + bytes(8)) == 56  # what len says, not len(buf)
    with pytest.raises(PolicyError) as info:
        ipsec_get_policylen(GOOD[:10])
    assert info.value.code == c.EIPSEC_INVAL_SADBMSG


@pytest.mark.parametrize("layout", ["BSD", "kame", "", None])
def test_bad_layout_is_policy_error(layout: object) -> None:
    for call in (
        lambda: ipsec_set_policy("in none", layout),  # type: ignore[arg-type]
        lambda: ipsec_dump_policy(GOOD, None, layout),  # type: ignore[arg-type]
        lambda: Policy.decode(GOOD, layout),  # type: ignore[arg-type]
        lambda: Policy.parse("in none").encode(layout),  # type: ignore[arg-type]
    ):
        with pytest.raises(PolicyError) as info:
            call()
        assert info.value.code == c.EIPSEC_INVAL_ARGUMENT


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(PolicyError):
        Policy.decode("03001200", "bsd")  # type: ignore[arg-type]
