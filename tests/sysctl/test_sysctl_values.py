"""The variables, their KAME defaults and their validation."""

from __future__ import annotations

import re

import pytest

from secsock import sysctl
from secsock.errors import SecsockError

V4 = "net.inet.ipsec."
V6 = "net.inet6.ipsec6."

# IPSEC-REFERENCE.md §4.0: KAME defaults, in OID order.
KAME_DEFAULTS_V4 = {
    "def_policy": 1,
    "esp_trans_deflev": 1,
    "esp_net_deflev": 1,
    "ah_trans_deflev": 1,
    "ah_net_deflev": 1,
    "ah_cleartos": 1,
    "ah_offsetmask": 0,
    "dfbit": 0,
    "ecn": 0,
    "debug": 0,
    "esp_randpad": -1,
}
# The "(v6 twin)" rows of §4.0; ah_cleartos, ah_offsetmask and dfbit are IPv4-only in KAME.
V6_TWINS = (
    "def_policy",
    "esp_trans_deflev",
    "esp_net_deflev",
    "ah_trans_deflev",
    "ah_net_deflev",
    "ecn",
    "debug",
    "esp_randpad",
)

_DEFLEV_OK = (1, 2, "2")
_DEFLEV_BAD = (0, 3, -1, 4)
# leaf -> (accepted values, rejected values)
CASES: dict[str, tuple[tuple[int | str, ...], tuple[object, ...]]] = {
    "def_policy": ((0, 1, "0", " 1 "), (-1, 2, 3, "2")),
    "esp_trans_deflev": (_DEFLEV_OK, _DEFLEV_BAD),
    "esp_net_deflev": (_DEFLEV_OK, _DEFLEV_BAD),
    "ah_trans_deflev": (_DEFLEV_OK, _DEFLEV_BAD),
    "ah_net_deflev": (_DEFLEV_OK, _DEFLEV_BAD),
    "ah_cleartos": ((0, 1), (2, -1)),
    "ah_offsetmask": ((0, 0x4000, 0xFFFF, "0x4000", "0XFFFF", "16384"), (-1, 0x10000, "0x10000")),
    "dfbit": ((0, 1, 2), (3, -1)),
    "ecn": ((-1, 0, 1, "-1", "+1"), (2, -2)),
    "debug": ((0, 1, 7, 2**31 - 1), (-1, 2**31, "-1")),
    "esp_randpad": ((-1, 1, 64, 65535, "-1"), (0, -2, 65536, "0")),
}
NOT_NUMBERS: tuple[object, ...] = (1.0, True, None, "abc", "1.5", "", "1e3", "0b1", "1_0", b"1")


def _all_names() -> list[str]:
    return [V4 + leaf for leaf in KAME_DEFAULTS_V4] + [V6 + leaf for leaf in V6_TWINS]


def _params() -> list[tuple[str, tuple[int | str, ...], tuple[object, ...]]]:
    out = []
    for name in _all_names():
        ok, bad = CASES[name.rsplit(".", 1)[1]]
        out.append((name, ok, bad))
    return out


def test_names_are_both_trees_in_oid_order() -> None:
    assert sysctl.names() == _all_names()


def test_kame_defaults() -> None:
    expected = {V4 + k: v for k, v in KAME_DEFAULTS_V4.items()}
    expected.update({V6 + k: KAME_DEFAULTS_V4[k] for k in V6_TWINS})
    assert dict(sysctl.snapshot()) == expected
    for name, value in expected.items():
        assert sysctl.get(name) == value


def test_ipv4_only_variables_have_no_ipv6_twin() -> None:
    for leaf in ("ah_cleartos", "ah_offsetmask", "dfbit"):
        with pytest.raises(sysctl.UnknownSysctlError) as info:
            sysctl.get(V6 + leaf)
        assert V4 + leaf in str(info.value)  # the suggestion points at the IPv4 variable


@pytest.mark.parametrize(("name", "ok", "bad"), _params(), ids=lambda v: str(v)[:40])
def test_accepted_values(name: str, ok: tuple[int | str, ...], bad: tuple[object, ...]) -> None:
    for value in ok:
        gen = sysctl.generation()
        sysctl.set(name, value)
        expected = value if isinstance(value, int) else int(value.strip(), 0)
        assert sysctl.get(name) == expected
        assert sysctl.snapshot()[name] == expected
        assert sysctl.generation() != gen


@pytest.mark.parametrize(("name", "ok", "bad"), _params(), ids=lambda v: str(v)[:40])
def test_rejected_values_change_nothing(
    name: str, ok: tuple[int | str, ...], bad: tuple[object, ...]
) -> None:
    allowed = sysctl.describe(name).split("allowed: ", 1)[1].rsplit("; default", 1)[0]
    sysctl.set(name, ok[-1])  # start from a non-default value where there is one
    before = dict(sysctl.snapshot())
    gen = sysctl.generation()
    for value in (*bad, *NOT_NUMBERS):
        with pytest.raises(sysctl.SysctlError) as info:
            sysctl.set(name, value)  # type: ignore[arg-type]
        err = info.value
        assert isinstance(err, SecsockError)
        assert isinstance(err, ValueError)
        assert err.name == name
        assert name in str(err)
        if value in bad:
            assert allowed in str(err)  # the message lists what is allowed
        assert dict(sysctl.snapshot()) == before
        assert sysctl.generation() == gen


def test_deflev_3_is_rejected_as_undefined() -> None:
    with pytest.raises(sysctl.SysctlError, match="undefined"):
        sysctl.set(V4 + "esp_trans_deflev", 3)


def test_unknown_name_names_close_matches() -> None:
    with pytest.raises(sysctl.UnknownSysctlError) as info:
        sysctl.get("net.inet.ipsec.def_polcy")
    err = info.value
    assert isinstance(err, SecsockError)
    assert isinstance(err, LookupError)
    assert "net.inet.ipsec.def_policy" in str(err)
    # the tree the caller named comes first
    msg = str(err)
    assert msg.index("net.inet.ipsec.def_policy") < msg.index("net.inet6.ipsec6.def_policy")

    with pytest.raises(sysctl.UnknownSysctlError, match=re.escape("net.inet6.ipsec6.esp_randpad")):
        sysctl.set("net.inet6.ipsec6.esp_randpd", 1)
    with pytest.raises(sysctl.UnknownSysctlError) as info:
        sysctl.get("kern.hostname")
    assert "did you mean" not in str(info.value)


def test_unknown_name_on_set_changes_nothing() -> None:
    before = dict(sysctl.snapshot())
    gen = sysctl.generation()
    with pytest.raises(sysctl.UnknownSysctlError):
        sysctl.set("net.inet.ipsec.nope", 1)
    assert dict(sysctl.snapshot()) == before
    assert sysctl.generation() == gen


def test_snapshot_is_read_only_and_frozen_in_time() -> None:
    snap = sysctl.snapshot()
    with pytest.raises(TypeError):
        snap[V4 + "debug"] = 1  # type: ignore[index]
    sysctl.set(V4 + "ecn", 1)
    assert snap[V4 + "ecn"] == 0  # an old snapshot does not move
    assert sysctl.snapshot()[V4 + "ecn"] == 1


def test_reset_restores_defaults_and_bumps_generation() -> None:
    sysctl.set(V4 + "def_policy", 0)
    sysctl.set(V6 + "esp_randpad", 128)
    gen = sysctl.generation()
    sysctl.reset()
    assert sysctl.get(V4 + "def_policy") == 1
    assert sysctl.get(V6 + "esp_randpad") == -1
    assert sysctl.generation() != gen


def test_ipv4_and_ipv6_twins_are_independent() -> None:
    sysctl.set(V4 + "def_policy", 0)
    assert sysctl.get(V6 + "def_policy") == 1
    sysctl.set(V6 + "ecn", -1)
    assert sysctl.get(V4 + "ecn") == 0


def test_describe_does_not_need_a_known_value() -> None:
    text = sysctl.describe(V4 + "dfbit")
    assert "0 (clear), 1 (set) or 2 (copy)" in text
    assert "default 0" in text
    with pytest.raises(sysctl.UnknownSysctlError):
        sysctl.describe("net.inet.ipsec.bogus")


@pytest.mark.parametrize(
    "value",
    ["9" * 5000, "-" + "9" * 5000, "0" * 5000 + "1" * 21, 10**5000],
    ids=["digits", "negative", "zeros-then-21-digits", "int"],
)
def test_numbers_beyond_cpythons_digit_limit_are_sysctl_errors(value: int | str) -> None:
    # int() and str() refuse more than 4300 decimal digits with a bare ValueError.
    before = dict(sysctl.snapshot())
    with pytest.raises(sysctl.SysctlError) as info:
        sysctl.set(V4 + "debug", value)
    assert info.value.name == V4 + "debug"
    assert "more than 20 digits" in str(info.value)
    assert dict(sysctl.snapshot()) == before
    sysctl.set(V4 + "debug", "0" * 5000 + "7")
    assert sysctl.get(V4 + "debug") == 7


@pytest.mark.parametrize("name", [None, 123, b"net.inet.ipsec.debug"])
def test_a_name_that_is_not_a_str_is_a_clear_error(name: object) -> None:
    calls = (
        lambda: sysctl.get(name),  # type: ignore[arg-type]
        lambda: sysctl.set(name, 1),  # type: ignore[arg-type]
        lambda: sysctl.describe(name),  # type: ignore[arg-type]
    )
    for call in calls:
        with pytest.raises(sysctl.UnknownSysctlError, match="expected a sysctl name"):
            call()
