"""Datagrams per second: a plain UDP socket beside a secsock socket, in one run, as ratios.

    python benchmarks/bench_socket.py [--quick] [--count N] [--repeat R] [--breakdown]

* blast: one thread sends a batch of datagrams, then receives them (send + receive cost per
  datagram; no loss because a batch fits the receive buffer), 64 and 1400 bytes;
* ping-pong: a client and an echo server in two processes, one datagram in flight.

The secure sockets use ESP-in-UDP (transport "udp") with aes-gcm-16 and a 128-bit key and
``require`` policies both ways, between 127.0.0.1 and 127.0.0.2 (one SA per direction). The
target is a secure blast of at least 0.5x the plain rate at 1400 bytes.

Plain and secure runs alternate (the machine's noise hits both) and the median of ``--repeat``
runs is printed. ``--breakdown`` also times the steps of one secure datagram on their own
(medians of alternating batches): what docs/socket.md's floor table is made from.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import os
import socket
import statistics
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


def _secure(addr: str, store: MemoryStore, spd: SPD) -> SecureSocket:
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


def _medians(plain: Callable[[], float], secure: Callable[[], float],
             repeat: int) -> tuple[float, float]:
    """Alternate plain and secure runs; the median of each."""
    p: list[float] = []
    s: list[float] = []
    for _ in range(repeat):
        p.append(plain())
        s.append(secure())
    return statistics.median(p), statistics.median(s)


def _ns_per_call(fn: Callable[[], object], n: int = 64) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n


def breakdown(size: int, rounds: int = 31) -> list[tuple[str, float]]:
    """The steps of one secure datagram, each timed alone, in ns (medians of ``rounds``)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from secsock.core import esp, upper

    store, spd = MemoryStore(), SPD()
    setkey(SCRIPT, sadb=store, spd=spd)
    a, b = _secure(A, store, spd), _secure(B, store, spd)
    pa, pb = _plain(A), _plain(B)
    payload = os.urandom(size)
    dest, pdest = b.getsockname(), pb.getsockname()
    a.sendto(payload, dest)
    b.recv(65535)
    tx, rx = a.engine, b.engine
    flow = a._flows[dest][0]  # the socket's cached flow to b
    src, sport = b._learn_peer(a.getsockname())
    entry = store.lookup_outbound(flow.src, flow.dst, "esp", "transport")
    assert entry is not None
    ctx = entry.crypto
    assert isinstance(ctx, esp.EspContext)
    segment = upper.build_udp(flow.src_p, flow.dst_p, flow.sport, flow.dport, payload)
    sealed = esp.seal(ctx, spi=1, seq=1, payload=segment, next_header=17)
    partial = upper.udp_partial_sum(flow.src_p, flow.dst_p, flow.sport, flow.dport)
    gcm = AESGCM(bytes(16))
    nonce, aad = bytes(12), bytes(8)
    plaintext = segment + b"\x01\x02\x02\x11"
    ct = gcm.encrypt(nonce, plaintext, aad)

    def blast_of(s: socket.socket, r: socket.socket, d: tuple[str, int]) -> Callable[[], float]:
        def run() -> float:
            t0 = time.perf_counter_ns()
            for _ in range(BATCH):
                s.sendto(payload, d)
            for _ in range(BATCH):
                r.recv(65535)
            return (time.perf_counter_ns() - t0) / BATCH
        return run

    def receive() -> float:
        packets = [tx.protect_one(flow, payload, now=1.0).data for _ in range(BATCH)]
        recv_udp, dst, port = rx.receive_udp, b._local, b._port
        assert dst is not None
        t0 = time.perf_counter_ns()
        for packet in packets:
            recv_udp(packet, src, dst, sport, port, 1.0)
        return (time.perf_counter_ns() - t0) / BATCH

    seq = [1]

    def reserve() -> int:
        return store.reserve_and_account(entry, 100, 1.0)

    def check() -> object:
        seq[0] += 1
        return store.replay_check(entry, seq[0])

    steps: list[tuple[str, Callable[[], float]]] = [
        ("plain send + recv (kernel, Python call)", blast_of(pa, pb, pdest)),
        ("secure send + recv (the whole datagram)", blast_of(a, b, dest)),
        ("  engine.protect_one", lambda: _ns_per_call(
            lambda: tx.protect_one(flow, payload, now=1.0))),
        ("  engine.receive_udp", receive),
        ("    esp.seal", lambda: _ns_per_call(
            lambda: esp.seal(ctx, spi=1, seq=1, payload=segment, next_header=17))),
        ("    esp.open_untrusted", lambda: _ns_per_call(lambda: esp.open_untrusted(ctx, sealed))),
        ("      AESGCM.encrypt alone", lambda: _ns_per_call(
            lambda: gcm.encrypt(nonce, plaintext, aad))),
        ("      AESGCM.decrypt alone", lambda: _ns_per_call(lambda: gcm.decrypt(nonce, ct, aad))),
        ("    upper.build_udp_partial (checksum)", lambda: _ns_per_call(
            lambda: upper.build_udp_partial(partial, 1, 2, payload))),
        ("    store.reserve_and_account", lambda: _ns_per_call(reserve)),
        ("    store.replay_check", lambda: _ns_per_call(check)),
    ]
    for _ in range(3):  # warm up
        for _name, fn in steps:
            fn()
    samples: dict[str, list[float]] = {name: [] for name, _ in steps}
    for _ in range(rounds):
        for name, fn in steps:
            samples[name].append(fn())
    for s in (a, b, pa, pb):
        s.close()
    return [(name, statistics.median(v)) for name, v in samples.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer datagrams (a smoke run)")
    parser.add_argument("--count", type=int, default=20000, help="datagrams per blast run")
    parser.add_argument("--repeat", type=int, default=5,
                        help="alternating runs per case (median kept)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the steps of one secure datagram")
    args = parser.parse_args(argv)
    count = 2000 if args.quick else args.count
    repeat = 1 if args.quick else args.repeat
    pp_count = max(200, count // 4)
    print(f"secsock {sys.version.split()[0]} | blast {count} datagrams in batches of {BATCH}, "
          f"ping-pong {pp_count} round trips, median of {repeat} alternating runs")
    print(f"{'test':<22}{'plain /s':>12}{'secsock /s':>13}{'ratio':>8}")
    results: dict[tuple[str, int], float] = {}
    cases: tuple[tuple[str, Callable[[str, int, int], float], int], ...] = (
        ("blast", blast, count), ("ping-pong", ping_pong, pp_count))
    for name, fn, n in cases:
        for size in (64, 1400):
            plain, secure = _medians(functools.partial(fn, "plain", size, n),
                                     functools.partial(fn, "secsock", size, n), repeat)
            ratio = secure / plain
            results[(name, size)] = ratio
            print(f"{name + f' {size} B':<22}{plain:>12,.0f}{secure:>13,.0f}{ratio:>8.2f}")
    target = results[("blast", 1400)]
    verdict = "met" if target >= 0.5 else "NOT met"
    print(f"target: secure blast at 1400 B >= 0.5x plain -> {target:.2f}x, {verdict}")
    if args.breakdown:
        for size in (64, 1400):
            print(f"\none datagram of {size} B, steps timed alone (ns, median):")
            for name, ns in breakdown(size, 5 if args.quick else 31):
                print(f"  {name:<42}{ns:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
