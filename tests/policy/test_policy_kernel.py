"""The kernel's acceptance checks: each errno, and the policy the kernel would keep."""

from __future__ import annotations

import errno
import sys

import pytest

from secsock import constants as c
from secsock.errors import PolicyError
from secsock.policy.kernel import check_policy_buffer, check_socket_policy, check_spd_policy
from secsock.policy.libipsec import ipsec_get_policylen, ipsec_set_policy
from secsock.policy.model import Action, Direction, Level, Policy, Request

pytestmark = pytest.mark.skipif(sys.byteorder != "little", reason="hand-built little-endian")


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def patch(buf: bytes, off: int, new: bytes) -> bytes:
    return buf[:off] + new + buf[off + len(new):]


TUNNEL = ipsec_set_policy("out ipsec esp/tunnel/10.0.0.1-10.0.0.2/require")  # 56 bytes
TRANSPORT = ipsec_set_policy("in ipsec esp/transport//require")  # 24 bytes


def errno_of(call: object) -> int:
    assert callable(call)
    with pytest.raises(OSError) as info:
        call()
    assert info.value.strerror  # says what was expected and found
    return info.value.errno or 0


@pytest.mark.parametrize("layout", ["bsd", "linux"])
def test_socket_accepts_ipsec_entrust_bypass(layout: str) -> None:
    for text in ("out ipsec esp/transport//require", "in entrust", "out bypass"):
        buf = ipsec_set_policy(text, layout)  # type: ignore[arg-type]
        policy = check_socket_policy(buf, c.AF_INET, layout)  # type: ignore[arg-type]
        assert policy == Policy.parse(text)
        assert check_socket_policy(buf, c.AF_INET6, layout) == policy  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "err"),
    [
        ("in discard", errno.EINVAL),
        ("out none", errno.EINVAL),
        ("fwd ipsec esp/transport//require", errno.EINVAL),
    ],
)
def test_socket_rejects_types_and_directions(text: str, err: int) -> None:
    assert errno_of(lambda: check_socket_policy(ipsec_set_policy(text), c.AF_INET)) == err


def test_socket_direction_any_and_privilege() -> None:
    any_dir = patch(TRANSPORT, 6, h("00"))
    assert errno_of(lambda: check_socket_policy(any_dir, c.AF_INET)) == errno.EINVAL
    bypass = ipsec_set_policy("out bypass")
    assert errno_of(
        lambda: check_socket_policy(bypass, c.AF_INET, privileged=False)
    ) == errno.EACCES
    # ipsec and entrust need no privilege
    check_socket_policy(TRANSPORT, c.AF_INET, privileged=False)


def test_socket_family() -> None:
    assert errno_of(lambda: check_socket_policy(TRANSPORT, 1)) == errno.EOPNOTSUPP
    assert errno_of(lambda: check_socket_policy(TRANSPORT, 99)) == errno.EOPNOTSUPP


def test_socket_checks_type_before_lengths() -> None:
    # KAME rejects discard before key_msg2sp looks at the length
    bad = patch(ipsec_set_policy("in discard"), 0, h("0900"))
    assert errno_of(lambda: check_socket_policy(bad, c.AF_INET)) == errno.EINVAL
    with pytest.raises(OSError, match="discard"):
        check_socket_policy(bad, c.AF_INET)


MSG2SP_CASES = [
    ("short", TRANSPORT[:15], errno.EINVAL),
    ("len too small", patch(TRANSPORT, 0, h("0200")), errno.EINVAL),
    ("len too big", patch(TRANSPORT, 0, h("0400")), errno.EINVAL),
    ("trailing bytes", TRANSPORT + bytes(8), errno.EINVAL),
    ("type 5", patch(TRANSPORT, 4, h("0500")), errno.EINVAL),
    ("request len 4", patch(TRANSPORT, 16, h("0400")), errno.EINVAL),
    ("request past the end", patch(TRANSPORT, 16, h("1000")), errno.EINVAL),
    ("proto tcp", patch(TRANSPORT, 18, h("0600")), errno.EPROTONOSUPPORT),
    ("proto 0", patch(TRANSPORT, 18, h("0000")), errno.EPROTONOSUPPORT),
    ("mode any", patch(TRANSPORT, 20, h("00")), errno.EINVAL),
    ("mode 3", patch(TRANSPORT, 20, h("03")), errno.EINVAL),
    ("level 4", patch(TRANSPORT, 21, h("04")), errno.EINVAL),
    ("sa_len 200", patch(TUNNEL, 24, h("c8")), errno.EINVAL),
    ("sa_len 15", patch(TUNNEL, 24, h("0f")), errno.EINVAL),
    ("family 3", patch(TUNNEL, 25, h("03")), errno.EINVAL),
    ("half a header left", TRANSPORT[:20].replace(h("0300"), h("0300"), 1)[:16]
     + h("1400 3200 01 02 0000") + h("0800 3200"), errno.EINVAL),
]


@pytest.mark.parametrize(("name", "buf", "err"), MSG2SP_CASES, ids=[m[0] for m in MSG2SP_CASES])
def test_key_msg2sp_errnos(name: str, buf: bytes, err: int) -> None:
    assert errno_of(lambda: check_policy_buffer(buf)) == err
    if buf[4] in (2, 3, 4) and buf[6:7] in (b"\x01", b"\x02"):
        assert errno_of(lambda: check_socket_policy(buf, c.AF_INET)) == err


def test_proto_checked_before_mode_and_level() -> None:
    buf = patch(patch(patch(TRANSPORT, 18, h("0600")), 20, h("00")), 21, h("09"))
    assert errno_of(lambda: check_policy_buffer(buf)) == errno.EPROTONOSUPPORT


def test_linux_layout_checks() -> None:
    buf = ipsec_set_policy("out ipsec esp/tunnel/10.0.0.1-10.0.0.2/require", "linux")
    assert check_policy_buffer(buf, "linux").requests[0].dst is not None
    assert errno_of(lambda: check_policy_buffer(patch(buf, 32, h("1d00")), "linux")) == errno.EINVAL
    assert errno_of(lambda: check_policy_buffer(patch(buf, 18, h("0600")), "linux")) == (
        errno.EPROTONOSUPPORT
    )
    # the bsd reading of a linux buffer does not pass
    assert errno_of(lambda: check_policy_buffer(buf, "bsd")) == errno.EINVAL


def test_reqid_as_the_kernel_keeps_it() -> None:
    def reqid(text: str) -> int:
        return check_socket_policy(ipsec_set_policy(text), c.AF_INET).requests[0].reqid

    assert reqid("out ipsec esp/transport//unique:5") == 5
    assert reqid("out ipsec esp/transport//unique:16383") == 16383
    assert reqid("out ipsec esp/transport//unique:16384") == 0  # reset, to be auto-allocated
    assert reqid("out ipsec esp/transport//unique") == 0
    # a reqid on another level is not stored by the kernel
    buf = patch(ipsec_set_policy("out ipsec esp/transport//require"), 22, h("0500"))
    assert check_policy_buffer(buf).requests[0].reqid == 0
    assert check_policy_buffer(buf).requests[0].level is Level.REQUIRE


def test_kernel_drops_requests_of_non_ipsec_policies_and_ignores_exttype() -> None:
    buf = ipsec_set_policy("in none esp/transport//require")
    assert check_policy_buffer(buf) == Policy(direction=Direction.INBOUND, action=Action.NONE)
    # exttype is not looked at
    assert check_policy_buffer(patch(TRANSPORT, 2, h("0100"))) == Policy.decode(TRANSPORT)


def test_kernel_accepts_padding_inside_a_request() -> None:
    padded = (
        h("0800 1200 0200 02 00 00000000 00000000 3000 3200 02 02 0000")
        + TUNNEL[24:] + bytes(8)
    )
    (r,) = check_policy_buffer(padded).requests
    assert str(r.src) == "10.0.0.1"
    assert str(r.dst) == "10.0.0.2"


def test_ipsec_without_requests_is_fine_for_sockets_not_for_the_spd() -> None:
    buf = ipsec_set_policy("out ipsec")
    assert check_socket_policy(buf, c.AF_INET).requests == ()
    assert errno_of(lambda: check_spd_policy(buf)) == errno.EINVAL


def test_general_check_direction() -> None:
    fwd = ipsec_set_policy("fwd ipsec esp/transport//require")
    assert check_policy_buffer(fwd).direction is Direction.FWD
    for d in ("00", "04", "ff"):
        assert errno_of(lambda d=d: check_policy_buffer(patch(fwd, 6, h(d)))) == errno.EINVAL


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("in discard", True),
        ("out none", True),
        ("fwd ipsec esp/tunnel/1.1.1.1-2.2.2.2/require", True),
        ("in entrust", False),
        ("out bypass", False),
        ("out ipsec", False),
        ("in none esp/tunnel/1.1.1.1-::1", True),  # requests of non-ipsec: ignored
    ],
)
def test_spd_policy_types(text: str, ok: bool) -> None:
    buf = ipsec_set_policy(text)
    buf = buf[: ipsec_get_policylen(buf)]  # what a caller passes to setsockopt / PF_KEY
    if ok:
        assert check_spd_policy(buf).action == Policy.parse(text).action
    else:
        assert errno_of(lambda: check_spd_policy(buf)) == errno.EINVAL


def test_spd_rejects_mixed_families_in_a_request() -> None:
    # two v4->v6 tunnel requests (2 x 52 bytes) keep the policy a multiple of 8 bytes
    mixed = h("3400 3200 02 02 0000") + h("10 02 0000 01010101 0000000000000000") + (
        h("1c 1c 0000 00000000") + bytes(15) + b"\x02" + bytes(4)
    )
    buf = h("0f00 1200 0200 02 00 00000000 00000000") + mixed + mixed
    kept = check_policy_buffer(buf)  # key_msg2sp does not compare families
    assert [str(r.dst) for r in kept.requests] == ["::2", "::2"]
    assert errno_of(lambda: check_spd_policy(buf)) == errno.EINVAL
    with pytest.raises(PolicyError) as info:  # such a kept policy cannot be written back
        kept.encode()
    assert info.value.code == c.EIPSEC_FAMILY_MISMATCH


def test_encode_refuses_mixed_families_for_ipsec_only() -> None:
    r = Request(proto=50, mode=2, src="1.1.1.1", dst="::2")  # type: ignore[arg-type]
    with pytest.raises(PolicyError) as info:
        Policy(direction=Direction.OUTBOUND, action=Action.IPSEC, requests=(r,)).encode()
    assert info.value.code == c.EIPSEC_FAMILY_MISMATCH
    # a non-ipsec policy is written as the C parser writes it: len truncated to 8-byte units
    buf = Policy(direction=Direction.OUTBOUND, action=Action.NONE, requests=(r,)).encode()
    assert len(buf) == 16 + 52
    assert ipsec_get_policylen(buf) == 64


def test_check_rejects_non_bytes() -> None:
    with pytest.raises(TypeError):
        check_policy_buffer("x" * 16)  # type: ignore[arg-type]
