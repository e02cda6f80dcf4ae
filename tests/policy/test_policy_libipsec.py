"""The C-shaped functions: errors recorded for ipsec_strerror(), per thread."""

from __future__ import annotations

import threading

import pytest

from secsock import constants as c
from secsock.errors import PolicyError
from secsock.policy.libipsec import (
    ipsec_dump_policy,
    ipsec_get_policylen,
    ipsec_set_policy,
    ipsec_strerror,
)


def test_strerror_follows_the_last_call() -> None:
    ipsec_set_policy("out ipsec esp/transport//require")
    assert ipsec_strerror() == "Success"
    with pytest.raises(PolicyError):
        ipsec_set_policy("out ipsec esp/tunnel")
    assert ipsec_strerror() == "Invalid address specification"
    with pytest.raises(PolicyError):
        ipsec_dump_policy(b"\x02\x00\x13\x00" + bytes(12))
    assert ipsec_strerror() == "Invalid extension type"
    assert ipsec_dump_policy(ipsec_set_policy("in none")) == "in none"
    assert ipsec_strerror() == "Success"
    with pytest.raises(PolicyError):
        ipsec_get_policylen(b"\x00")
    assert ipsec_strerror() == "Invalid sadb message"
    assert ipsec_get_policylen(ipsec_set_policy("in none")) == 16
    assert ipsec_strerror() == "Success"


def test_system_error_text_is_the_strerror() -> None:
    with pytest.raises(PolicyError) as info:
        ipsec_set_policy("out ipsec esp/tunnel/1.2.3.4-1.2.3.5[70000]")
    assert info.value.code in (c.EIPSEC_INVAL_ARGUMENT, c.EIPSEC_SYSTEM_ERROR)
    with pytest.raises(PolicyError) as info:
        ipsec_set_policy("out ipsec esp/tunnel/1.2.3.4[1]-1.2.3.5[70000]")
    assert info.value.code == c.EIPSEC_SYSTEM_ERROR
    assert ipsec_strerror() == "servname not supported for ai_socktype"


def test_priority_error_texts() -> None:
    with pytest.raises(PolicyError):
        ipsec_set_policy("in prio 4294967296 none")
    assert ipsec_strerror() == "Priority offset not in valid range [-2147483647, 2147483648]"


def test_strerror_is_per_thread() -> None:
    """Thread A fails, then thread B succeeds; A still sees its own error and B "Success"."""
    a_failed, b_done = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def thread_a() -> None:
        try:
            ipsec_set_policy("out ipsec esp")
        except PolicyError as exc:
            seen["a_code"] = exc.code
        a_failed.set()
        seen["a_waited"] = b_done.wait(10)
        seen["a"] = ipsec_strerror()

    def thread_b() -> None:
        seen["b_waited"] = a_failed.wait(10)
        seen["b_before"] = ipsec_strerror()
        ipsec_set_policy("in ipsec ah/transport//use")
        seen["b"] = ipsec_strerror()
        b_done.set()

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == {
        "a_code": c.EIPSEC_FEW_ARGUMENTS,
        "a_waited": True,
        "a": "Too few arguments",
        "b_waited": True,
        "b_before": "Success",
        "b": "Success",
    }


def test_new_thread_starts_with_success() -> None:
    with pytest.raises(PolicyError):
        ipsec_set_policy("bogus")
    assert ipsec_strerror() == "Invalid argument"
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(ipsec_strerror()))
    t.start()
    t.join(10)
    assert out == ["Success"]
    assert ipsec_strerror() == "Invalid argument"
