"""The shared carriers' lifetime (NetContext): a socket created while the last one of the
namespace is being closed waits for the teardown, then binds the encapsulation port itself; a
port that could not be bound is tried again on the next rescan (t_ctx_race.py)."""

from __future__ import annotations

import socket as stdlib_socket
import threading

import pytest

from secsock import _transport
from secsock._socket import SecureSocket
from secsock._transport import NetContext
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore
from tests.socket.helpers import Sockets, add_esp, both_policies, ip

A, B = "127.0.0.1", "127.0.0.2"
REQ = "esp/transport//require"


def _free_port(addr: str) -> int:
    with stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM) as s:
        s.bind((addr, 0))
        port: int = s.getsockname()[1]
        return port


def test_a_socket_opened_during_the_teardown_gets_the_port(
    store: MemoryStore, spd: SPD, socks: Sockets, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a namespace key of this test's own, so that no other test's socket keeps it alive
    monkeypatch.setattr(_transport, "_netns_key", lambda: -4242)
    sport, dport = _free_port(A), _free_port(B)
    add_esp(store, 0x3001, A, B, natt=(sport, dport))
    first = SecureSocket(sadb=store, spd=spd)
    first.bind((B, 0))
    ctx1 = first._net
    assert ctx1 is not None
    assert (ip(B), dport) in ctx1._encap  # the encapsulation port is open

    progress = threading.Event()  # the second socket is waiting, or is done
    waiting: list[bool] = []
    real_wait = getattr(NetContext, "_wait_for_close", None)

    def wait_for_close(closing: threading.Event) -> bool:
        waiting.append(True)
        progress.set()
        assert real_wait is not None
        return bool(real_wait(closing))

    monkeypatch.setattr(NetContext, "_wait_for_close", staticmethod(wait_for_close),
                        raising=False)
    second: list[SecureSocket] = []
    errors: list[BaseException] = []

    def open_second() -> None:
        try:
            s = SecureSocket(sadb=store, spd=spd)
            second.append(s)
            s.bind((B, 0))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            progress.set()

    t = threading.Thread(target=open_second)
    real_close = ctx1._close_all

    def close_all() -> None:  # the teardown, with a socket being opened in the middle of it
        t.start()
        assert progress.wait(5.0)
        real_close()

    monkeypatch.setattr(ctx1, "_close_all", close_all)
    first.close()
    t.join(10.0)
    assert not errors
    assert waiting  # the second socket waited for the teardown
    s2 = second[0]
    try:
        ctx2 = s2._net
        assert ctx2 is not None
        assert ctx2 is not ctx1
        assert (ip(B), dport) in ctx2._encap
        assert not ctx2._encap_failed
        # and ESP-in-UDP through the port reaches it
        both_policies(s2, REQ)
        peer = socks.secure(A)
        both_policies(peer, REQ)
        peer.sendto(b"through the new context", s2.getsockname())
        s2.settimeout(5.0)
        assert s2.recv(100) == b"through the new context"
    finally:
        s2.close()


def test_a_port_taken_at_bind_is_tried_again_on_the_next_rescan(
    store: MemoryStore, socks: Sockets,
) -> None:
    sport, dport = _free_port(A), _free_port(B)
    add_esp(store, 0x3001, A, B, natt=(sport, dport))
    squatter = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    squatter.bind((B, dport))
    rx = socks.secure(B)  # cannot open B:dport yet
    both_policies(rx, REQ)
    net = rx._net
    assert net is not None
    assert (ip(B), dport) not in net._encap
    squatter.close()
    # a new socket's bind rescans: the port is free now
    other = socks.secure(B)
    assert (ip(B), dport) in net._encap
    tx = socks.secure(A)
    both_policies(tx, REQ)
    tx.sendto(b"esp-udp after all", rx.getsockname())
    assert rx.recv(100) == b"esp-udp after all"
    del other


def test_a_changed_sadb_rescans_failed_ports(store: MemoryStore, socks: Sockets) -> None:
    sport, dport = _free_port(A), _free_port(B)
    add_esp(store, 0x3001, A, B, natt=(sport, dport))
    squatter = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    squatter.bind((B, dport))
    rx = socks.secure(B)
    both_policies(rx, REQ)
    squatter.close()
    add_esp(store, 0x3002, B, A)  # the SADB changed size: the next wait rescans
    rx.setblocking(False)
    with pytest.raises(BlockingIOError):
        rx.recv(100)
    tx = socks.secure(A)
    both_policies(tx, REQ)
    tx.sendto(b"esp-udp after the rescan", rx.getsockname())
    rx.settimeout(5.0)
    assert rx.recv(100) == b"esp-udp after the rescan"
