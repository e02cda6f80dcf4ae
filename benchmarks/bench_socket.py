"""Datagrams per second: a plain UDP socket beside a secsock socket, in one run, as ratios.

    python benchmarks/bench_socket.py [--quick] [--count N]

* blast: one thread sends a batch of datagrams, then receives them (send + receive cost per
  datagram; no loss because a batch fits the receive buffer), 64 and 1400 bytes;
* ping-pong: a client and an echo server in two processes, one datagram in flight.

The secure sockets use ESP-in-UDP (transport "udp") with aes-gcm-16 and a 128-bit key and
``require`` policies both ways, between 127.0.0.1 and 127.0.0.2 (one SA per direction). The
target is a secure blast of at least 0.5x the plain rate at 1400 bytes.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import os
import socket
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from secsock._setkey import setkey
from secsock._socket import SecureSocket
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore

A, B = "127.0.0.1", "127.0.0.2"
SCRIPT = (
    f"add {A} {B} esp 0x1001 -m transport -E aes-gcm-16 0x{'11' * 20};\n"
    f"add {B} {A} esp 0x1002 -m transport -E aes-gcm-16 0x{'22' * 20};\n"
)
BATCH = 64


def _plain(addr: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    s.settimeout(5)
    return s


def _secure(addr: str, store: MemoryStore, spd: SPD) -> socket.socket:
    s = SecureSocket(sadb=store, spd=spd)
    s.bind((addr, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    s.set_ipsec_policy("in ipsec esp/transport//require")
    s.set_ipsec_policy("out ipsec esp/transport//require")
    s.settimeout(5)
    return s


def _make(kind: str, addr: str) -> socket.socket:
    if kind == "plain":
        return _plain(addr)
    store, spd = MemoryStore(), SPD()
    setkey(SCRIPT, sadb=store, spd=spd)
    return _secure(addr, store, spd)


def blast(kind: str, size: int, count: int) -> float:
    """Datagrams per second sent and received, batch by batch, in one thread."""
    if kind == "plain":
        a, b = _plain(A), _plain(B)
    else:
        store, spd = MemoryStore(), SPD()
        setkey(SCRIPT, sadb=store, spd=spd)
        a, b = _secure(A, store, spd), _secure(B, store, spd)
    payload = os.urandom(size)
    dest = b.getsockname()
    send, recv = a.sendto, b.recv
    rounds = max(1, count // BATCH)
    try:
        for _ in range(BATCH):  # warm up (caches, first-use paths)
            send(payload, dest)
        for _ in range(BATCH):
            recv(65535)
        t0 = time.perf_counter()
        for _ in range(rounds):
            for _ in range(BATCH):
                send(payload, dest)
            for _ in range(BATCH):
                recv(65535)
        elapsed = time.perf_counter() - t0
    finally:
        a.close()
        b.close()
    return rounds * BATCH / elapsed


def _echo_server(kind: str, conn: Connection) -> None:
    s = _make(kind, B)
    conn.send(s.getsockname())
    while True:
        data, addr = s.recvfrom(65535)
        if data == b"stop":
            break
        s.sendto(data, addr)
    s.close()


def ping_pong(kind: str, size: int, count: int) -> float:
    """Round trips per second with an echo server in another process."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_echo_server, args=(kind, child), daemon=True)
    server.start()
    try:
        dest = parent.recv()
        c = _make(kind, A)
        payload = os.urandom(size)
        for _ in range(50):
            c.sendto(payload, dest)
            c.recv(65535)
        t0 = time.perf_counter()
        for _ in range(count):
            c.sendto(payload, dest)
            c.recv(65535)
        elapsed = time.perf_counter() - t0
        c.sendto(b"stop", dest)
        c.close()
    finally:
        server.join(10)
        if server.is_alive():
            server.kill()
    return count / elapsed


def _best(fn: Callable[[], float], repeat: int) -> float:
    return max(fn() for _ in range(repeat))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer datagrams (a smoke run)")
    parser.add_argument("--count", type=int, default=20000, help="datagrams per blast run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (best kept)")
    args = parser.parse_args(argv)
    count = 2000 if args.quick else args.count
    repeat = 1 if args.quick else args.repeat
    pp_count = max(200, count // 4)
    print(f"secsock {sys.version.split()[0]} | blast {count} datagrams in batches of {BATCH}, "
          f"ping-pong {pp_count} round trips, best of {repeat}")
    print(f"{'test':<22}{'plain /s':>12}{'secsock /s':>13}{'ratio':>8}")
    results: dict[tuple[str, int], float] = {}
    cases: tuple[tuple[str, Callable[[str, int, int], float], int], ...] = (
        ("blast", blast, count), ("ping-pong", ping_pong, pp_count))
    for name, fn, n in cases:
        for size in (64, 1400):
            plain = _best(functools.partial(fn, "plain", size, n), repeat)
            secure = _best(functools.partial(fn, "secsock", size, n), repeat)
            ratio = secure / plain
            results[(name, size)] = ratio
            print(f"{name + f' {size} B':<22}{plain:>12,.0f}{secure:>13,.0f}{ratio:>8.2f}")
    target = results[("blast", 1400)]
    verdict = "met" if target >= 0.5 else "NOT met"
    print(f"target: secure blast at 1400 B >= 0.5x plain -> {target:.2f}x, {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
