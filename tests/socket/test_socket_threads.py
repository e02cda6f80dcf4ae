"""Two threads receiving on one secure socket each get their own datagram (t_concurrent_recv.py:
on wildcard-bound sockets the threads shared one receive buffer, so a thread could read the
other's datagram -- a replay drop, and its own datagram lost). The interleaving is forced:
thread A is held right after its receive system call until thread B's has returned."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any

import pytest

from secsock.sadb.store import MemoryStore
from tests.socket.helpers import Sockets, add_esp

secmod = importlib.import_module("secsock._socket")


@pytest.mark.parametrize("bind", ["0.0.0.0", "127.0.0.2"], ids=["wildcard", "address"])
def test_interleaved_receivers_each_get_their_own_datagram(
    socks: Sockets, store: MemoryStore, monkeypatch: pytest.MonkeyPatch, bind: str,
) -> None:
    add_esp(store, 0x1001, "127.0.0.1", "127.0.0.2")
    rx = socks.secure(bind)
    rx.set_ipsec_policy("in ipsec esp/transport//require")
    tx = socks.secure("127.0.0.1")
    tx.set_ipsec_policy("out ipsec esp/transport//require")
    dest = ("127.0.0.2", rx.getsockname()[1])
    tx.sendto(b"first, longer datagram", dest)
    tx.sendto(b"second", dest)

    lock = threading.Lock()
    returned = [0]
    a_read, b_read = threading.Event(), threading.Event()

    def held(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            result = real(*args)  # BlockingIOError passes through uncounted
            with lock:
                returned[0] += 1
                mine = returned[0]
            if mine == 1:  # thread A: hold it until B has read too
                a_read.set()
                b_read.wait(5.0)
            elif mine == 2:
                b_read.set()
            return result
        return call

    # every receive system call of the socket module, whatever its name
    for name in ("_c_recvfrom", "_c_recvmsg", "_c_recvmsg_into"):
        if hasattr(secmod, name):
            monkeypatch.setattr(secmod, name, held(getattr(secmod, name)))

    got: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def reader(tag: str) -> None:
        try:
            got[tag] = rx.recv(100)  # rx has a 5 s timeout: an upper bound only
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    a = threading.Thread(target=reader, args=("A",))
    a.start()
    assert a_read.wait(5.0)
    b = threading.Thread(target=reader, args=("B",))
    b.start()
    a.join(10.0)
    b.join(10.0)
    assert not errors
    assert got == {"A": b"first, longer datagram", "B": b"second"}
    stats = rx.ipsec_stats()
    assert stats.dropped == 0
    assert stats.in_success == 2
