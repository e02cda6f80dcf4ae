"""secsock.constants: the platform's option numbers and the C constants."""

from __future__ import annotations

import sys

import pytest

from secsock import constants as c
from secsock.policy._errors import EIPSEC_MESSAGES, strerror


@pytest.mark.parametrize(
    ("platform", "v4", "v6", "af6"),
    [
        ("linux", 16, 34, 10),
        ("freebsd14", 21, 28, 28),
        ("darwin", 21, 28, 30),
        ("netbsd10", 22, 28, 24),
        ("openbsd7", 21, 28, 24),
        ("dragonfly6", 21, 28, 28),
    ],
)
def test_platform_values(platform: str, v4: int, v6: int, af6: int) -> None:
    assert c._platform_sockopts(platform) == (v4, v6)
    assert c._platform_af_inet6(platform) == af6


def test_running_platform() -> None:
    assert c._platform_sockopts(sys.platform) == (c.IP_IPSEC_POLICY, c.IPV6_IPSEC_POLICY)
    if sys.platform.startswith("linux"):
        import socket

        assert (c.IP_IPSEC_POLICY, c.IPV6_IPSEC_POLICY) == (16, 34)
        assert int(socket.AF_INET6) == c.AF_INET6
        assert int(socket.AF_INET) == c.AF_INET
        assert getattr(socket, "IP_MINTTL", 21) == 21 != c.IP_IPSEC_POLICY


def test_all_lists_every_public_constant() -> None:
    public = {n for n in vars(c) if n.isupper() and not n.startswith("_")}
    assert set(c.__all__) == public
    assert all(isinstance(getattr(c, n), int) for n in c.__all__)


def test_errors_all_lists_every_error_class() -> None:
    from secsock import errors

    classes = {n for n, v in vars(errors).items()
               if isinstance(v, type) and v.__module__ == errors.__name__}
    assert set(errors.__all__) == classes


def test_eipsec_numbering_and_texts() -> None:
    codes = sorted(getattr(c, n) for n in c.__all__ if n.startswith("EIPSEC_"))
    assert codes == list(range(31))
    assert set(EIPSEC_MESSAGES) == set(codes) - {c.EIPSEC_SYSTEM_ERROR}
    assert strerror(c.EIPSEC_INVAL_DIR) == "Invalid direciton"
    assert strerror(c.EIPSEC_FEW_ARGUMENTS) == "Too few arguments"
    assert strerror(99) == strerror(-1) == "Unknown error"
    assert (c.EIPSEC_INVAL_PRIORITY_OFFSET, c.EIPSEC_INVAL_PRIORITY_BASE_OFFSET,
            c.EIPSEC_PRIORITY_NOT_COMPILED, c.EIPSEC_MAX) == (27, 28, 29, 30)


def test_misc_values() -> None:
    assert (c.IPPROTO_ESP, c.IPPROTO_AH, c.IPPROTO_IPCOMP) == (50, 51, 108)
    assert c.IPSEC_MANUAL_REQID_MAX == 0x3FFF
    assert (c.IPSEC_ULPROTO_ANY, c.IPSEC_PORT_ANY, c.IPSEC_PROTO_ANY) == (255, 0, 255)
    assert c.IPSEC_REPLAYWSIZE == 32
    assert c.SADB_X_EXT_POLICY == 18
    assert (c.PRIORITY_HIGH, c.PRIORITY_DEFAULT, c.PRIORITY_LOW) == (
        0x40000000, 0x80000000, 0xC0000000)
