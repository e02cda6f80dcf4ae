"""Scoped overrides, thread safety, generation() and the debug -> logging switch."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from secsock import sysctl

V4 = "net.inet.ipsec."
V6 = "net.inet6.ipsec6."
SECSOCK_LOGGER = logging.getLogger("secsock")


class Boom(Exception):
    pass


def test_override_with_keywords_and_with_a_mapping() -> None:
    kwargs: dict[str, int | str] = {V4 + "def_policy": 0, V6 + "def_policy": "0"}
    with sysctl.override(**kwargs):
        assert sysctl.get(V4 + "def_policy") == 0
        assert sysctl.get(V6 + "def_policy") == 0
    assert sysctl.get(V4 + "def_policy") == 1
    assert sysctl.get(V6 + "def_policy") == 1
    with sysctl.override({V4 + "esp_trans_deflev": 2}, **{V4 + "ecn": -1}):
        assert sysctl.get(V4 + "esp_trans_deflev") == 2
        assert sysctl.get(V4 + "ecn") == -1
    assert sysctl.get(V4 + "esp_trans_deflev") == 1
    assert sysctl.get(V4 + "ecn") == 0


def test_nested_overrides_restore_in_order() -> None:
    name = V4 + "esp_randpad"
    sysctl.set(name, 100)
    with sysctl.override({name: 200}):
        with sysctl.override({name: 300}):
            assert sysctl.get(name) == 300
        assert sysctl.get(name) == 200
    assert sysctl.get(name) == 100


def test_override_restores_on_exception() -> None:
    name = V4 + "dfbit"
    inside: list[int] = []

    def body() -> None:
        with sysctl.override({name: 2}):
            inside.append(sysctl.get(name))
            raise Boom

    with pytest.raises(Boom):
        body()
    assert inside == [2]
    assert sysctl.get(name) == 0


def test_override_restores_only_what_it_changed() -> None:
    with sysctl.override({V4 + "dfbit": 2}):
        sysctl.set(V4 + "ecn", 1)  # a write to another variable inside the scope survives it
    assert sysctl.get(V4 + "dfbit") == 0
    assert sysctl.get(V4 + "ecn") == 1


def test_an_invalid_override_changes_nothing() -> None:
    before = dict(sysctl.snapshot())
    gen = sysctl.generation()
    with pytest.raises(sysctl.SysctlError), sysctl.override({V4 + "ecn": 1, V4 + "dfbit": 9}):
        pytest.fail("the body must not run")
    with pytest.raises(sysctl.UnknownSysctlError), sysctl.override(**{V4 + "nope": 1}):
        pytest.fail("the body must not run")
    assert dict(sysctl.snapshot()) == before
    assert sysctl.generation() == gen


def test_generation_changes_on_every_write() -> None:
    seen = [sysctl.generation()]
    sysctl.set(V4 + "ecn", 1)
    seen.append(sysctl.generation())
    sysctl.set(V4 + "ecn", 1)  # same value: still a write
    seen.append(sysctl.generation())
    with sysctl.override({V4 + "ecn": 0}):
        seen.append(sysctl.generation())
    seen.append(sysctl.generation())
    sysctl.reset()
    seen.append(sysctl.generation())
    assert len(set(seen)) == len(seen)
    assert seen == sorted(seen)
    # reads do not change it
    sysctl.get(V4 + "ecn")
    sysctl.snapshot()
    assert sysctl.generation() == seen[-1]


# --- threads --------------------------------------------------------------------------------


@pytest.fixture
def _fast_switching() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.mark.usefixtures("_fast_switching")
def test_concurrent_writers_and_readers_see_consistent_tables() -> None:
    rounds = 400
    mask, randpad = V4 + "ah_offsetmask", V6 + "esp_randpad"
    ecn4, ecn6 = V4 + "ecn", V6 + "ecn"
    sysctl.get(mask)  # first use done before the race
    gen0 = sysctl.generation()
    start = threading.Barrier(6)
    stop = threading.Event()
    errors: list[str] = []

    def pair_writer() -> None:  # the two ecn twins always change together
        start.wait()
        for i in range(rounds):
            v = (-1, 1)[i % 2]
            with sysctl.override({ecn4: v, ecn6: v}):
                pass

    def counter_writer(name: str) -> None:  # strictly increasing values
        start.wait()
        for i in range(1, rounds + 1):
            sysctl.set(name, i)

    def reader() -> None:
        start.wait()
        last_mask = last_pad = last_gen = -1
        while not stop.is_set():
            snap = sysctl.snapshot()
            gen = sysctl.generation()
            if snap[ecn4] != snap[ecn6]:
                errors.append(f"torn read: ecn {snap[ecn4]} / {snap[ecn6]}")
            if snap[mask] < last_mask or snap[randpad] < last_pad:
                errors.append("a value went backwards")
            if gen < last_gen:
                errors.append("generation went backwards")
            if sysctl.get(mask) < snap[mask]:
                errors.append("get() older than an earlier snapshot")
            last_mask, last_pad, last_gen = snap[mask], snap[randpad], gen

    writers = [
        threading.Thread(target=pair_writer),
        threading.Thread(target=counter_writer, args=(mask,)),
        threading.Thread(target=counter_writer, args=(randpad,)),
    ]
    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    final = sysctl.snapshot()
    assert final[mask] == rounds
    assert final[randpad] == rounds
    assert final[ecn4] == final[ecn6] == 0  # every override restored
    # no lost update: one publication per set, two per override
    assert sysctl.generation() - gen0 == 2 * rounds + rounds + rounds


def test_concurrent_first_use_loads_the_env_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "env.conf"
    path.write_text("net.inet.ipsec.def_policy = 0\n", encoding="utf-8")
    monkeypatch.setenv(sysctl.ENV_VAR, str(path))
    sysctl._reset_for_tests()
    gen0 = sysctl.generation()
    results: list[int] = []
    barrier = threading.Barrier(8)

    def first_use() -> None:
        barrier.wait()
        results.append(sysctl.get(V4 + "def_policy"))

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [0] * 8
    assert sysctl.generation() == gen0 + 1  # the file was published exactly once


# --- debug -> logging -----------------------------------------------------------------------


def test_debug_switches_the_secsock_logger() -> None:
    assert SECSOCK_LOGGER.level == logging.NOTSET
    assert not sysctl.debug_enabled()
    sysctl.set(V4 + "debug", 1)
    assert sysctl.debug_enabled()
    assert SECSOCK_LOGGER.level == logging.DEBUG
    assert logging.getLogger("secsock.engine").isEnabledFor(logging.DEBUG)
    sysctl.set(V6 + "debug", 3)
    sysctl.set(V4 + "debug", 0)
    assert sysctl.debug_enabled()  # the IPv6 knob alone keeps it on
    assert SECSOCK_LOGGER.level == logging.DEBUG
    sysctl.set(V6 + "debug", 0)
    assert not sysctl.debug_enabled()
    assert SECSOCK_LOGGER.level == logging.NOTSET


def test_debug_via_override_and_reset() -> None:
    with sysctl.override({V6 + "debug": 1}):
        assert SECSOCK_LOGGER.level == logging.DEBUG
    assert SECSOCK_LOGGER.level == logging.NOTSET
    sysctl.set(V4 + "debug", 1)
    sysctl.reset()
    assert SECSOCK_LOGGER.level == logging.NOTSET


def test_changes_are_logged_at_debug_while_debug_is_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="secsock")
    sysctl.set(V4 + "ecn", 1)  # debug off: nothing from the sysctl module
    assert not [r for r in caplog.records if r.name == "secsock.sysctl"]
    sysctl.set(V4 + "debug", 1)
    sysctl.set(V4 + "dfbit", 2)
    messages = [r.getMessage() for r in caplog.records if r.name == "secsock.sysctl"]
    assert "sysctl net.inet.ipsec.debug: 0 -> 1" in messages
    assert "sysctl net.inet.ipsec.dfbit: 0 -> 2" in messages
