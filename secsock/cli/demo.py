"""``secsock demo``: two secure sockets on loopback exchange ESP; forgeries are dropped.

Alice (127.0.0.1) and Bob (127.0.0.2) get an SA pair from a setkey script (aes-gcm-16, fresh
random keys) and ``require`` policies on both sides. The demo prints the policies, the SADB
(keys hidden), one ESP packet as it was on the wire, then lets Mallory (a plain UDP socket)
race a modified copy of a packet to Bob, replay a packet, and send clear text -- each is
dropped and counted -- and prints the counters. Unprivileged: ESP-in-UDP on loopback.
"""

from __future__ import annotations

import argparse
import os
import socket as _stdlib_socket
from collections.abc import Callable

from secsock._setkey import setkey
from secsock._socket import SecureSocket
from secsock._stats import IPsecStats, stats
from secsock.constants import IP_IPSEC_POLICY
from secsock.engine import Outbound
from secsock.errors import DropReason
from secsock.policy.libipsec import ipsec_dump_policy, ipsec_get_policylen
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore

__all__ = ("add_parser", "hexdump", "run_demo")

ALICE = "127.0.0.1"
BOB = "127.0.0.2"
_SPI_AB = 0x1001
_SPI_BA = 0x1002


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "demo",
        help="two secure sockets on loopback exchange ESP; forged and replayed packets drop",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=_main)


def hexdump(data: bytes, *, marks: list[tuple[int, str]] | None = None) -> list[str]:
    """Lines of ``offset  hex  |ascii|``; ``marks`` name the field starting at an offset."""
    lines = []
    names = dict(marks or [])
    for off in range(0, len(data), 16):
        chunk = data[off : off + 16]
        hexpart = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        here = [n for o, n in sorted(names.items()) if off <= o < off + 16]
        note = f"   <- {', '.join(here)}" if here else ""
        lines.append(f"  {off:04x}  {hexpart:<47}  |{text}|{note}")
    return lines


def _counters(title: str, s: IPsecStats) -> list[str]:
    shown = [f"{name}={value}" for name, value in s.items() if value]
    drops = [f"{reason}={n}" for reason, n in s.drops.items() if n]
    lines = [f"  {title:<14} {' '.join(shown) or '(all zero)'}"]
    if drops:
        lines.append(f"  {'':<14} drops: {' '.join(drops)}")
    return lines


def _flip(data: bytes, index: int) -> bytes:
    buf = bytearray(data)
    buf[index] ^= 0x01
    return bytes(buf)


def run_demo(
    out: Callable[[str], None] = print,
    *,
    sadb: MemoryStore | None = None,
    spd: SPD | None = None,
) -> int:
    """Run the demo, writing lines with ``out``; returns 0 when every step went as expected.

    By default the demo uses private stores; ``secsock stats --demo`` passes the default ones
    so its SAs show up there (SPIs 0x1001 and 0x1002 must then be free).
    """
    sadb = MemoryStore() if sadb is None else sadb
    spd = SPD() if spd is None else spd
    key_ab, key_ba = os.urandom(20), os.urandom(20)
    script = (
        f"add {ALICE} {BOB} esp 0x{_SPI_AB:x} -m transport -E aes-gcm-16 0x{key_ab.hex()};\n"
        f"add {BOB} {ALICE} esp 0x{_SPI_BA:x} -m transport -E aes-gcm-16 0x{key_ba.hex()};\n"
    )
    setkey(script, sadb=sadb, spd=spd)
    before = stats()
    alice = SecureSocket(sadb=sadb, spd=spd)
    bob = SecureSocket(sadb=sadb, spd=spd)
    mallory = _stdlib_socket.socket(_stdlib_socket.AF_INET, _stdlib_socket.SOCK_DGRAM)
    ok = True
    try:
        alice.bind((ALICE, 0))
        try:
            bob.bind((BOB, 0))
        except OSError as exc:
            out(f"cannot bind {BOB} ({exc.strerror}); this demo needs Linux's 127.0.0.0/8")
            return 1
        mallory.bind((ALICE, 0))
        for s in (alice, bob):
            s.set_ipsec_policy("in ipsec esp/transport//require")
            s.set_ipsec_policy("out ipsec esp/transport//require")
            s.settimeout(5.0)
        a_addr, b_addr = alice.getsockname(), bob.getsockname()

        out("secsock demo: two secure UDP sockets on loopback, ESP-in-UDP (RFC 3948), aes-gcm-16")
        out("")
        out("== setkey script (fresh random keys, not shown) ==")
        for line in script.splitlines():
            out("  " + line.replace(key_ab.hex(), "<key>").replace(key_ba.hex(), "<key>"))
        out("")
        out("== SADB: setkey -D (keys hidden) ==")
        dump = setkey(f"get {ALICE} {BOB} esp 0x{_SPI_AB:x}; get {BOB} {ALICE} esp 0x{_SPI_BA:x};",
                      sadb=sadb, spd=spd)
        for line in dump.splitlines():
            out("  " + line)
        out("")
        out("== socket policies: getsockopt(IP_IPSEC_POLICY) -> ipsec_dump_policy ==")
        for name, s in (("alice", alice), ("bob", bob)):
            buf = s.getsockopt(_stdlib_socket.IPPROTO_IP, IP_IPSEC_POLICY, 1024)
            n = ipsec_get_policylen(buf)
            host, port = s.getsockname()
            out(f"  {name:<6} {host}:{port:<5}  {ipsec_dump_policy(buf[:n])}  |  "
                f"{ipsec_dump_policy(buf[n:])}")
        out("")

        wire: list[Outbound] = []
        alice.set_wire_tap(wire.append)
        alice.sendto(b"hello bob", b_addr)
        got, frm = bob.recvfrom(2048)
        ok &= got == b"hello bob" and frm == a_addr
        first = wire[0]
        out("== one ESP packet as it was on the wire ==")
        out(f"  UDP {first.src}:{first.sport} -> {first.dst}:{first.dport}, "
            f"{len(first.data)} bytes of UDP payload = ESP: SPI 0x{first.spi:08x}, seq {first.seq}")
        icv_at = len(first.data) - 16
        for line in hexdump(first.data, marks=[(0, "SPI"), (4, "sequence number"),
                                               (8, "IV (8)"), (16, "ciphertext"),
                                               (icv_at, "ICV (16)")]):
            out(line)
        out("  (the ciphertext holds the inner UDP header -- ports and checksum -- and the data,")
        out("   then padding, pad length and next header 17, as kernel IPsec sends it)")
        out("")
        out("== exchange ==")
        out(f"  alice -> bob: {got!r}")
        bob.sendto(b"hello alice", a_addr)
        got = alice.recv(2048)
        ok &= got == b"hello alice"
        out(f"  bob -> alice: {got!r}")
        out("")

        out("== attacks (Mallory is a plain UDP socket) ==")

        def race_a_forgery(o: Outbound) -> None:
            # Mallory, on the path, gets a modified copy to Bob before the genuine packet.
            wire.append(o)
            mallory.sendto(_flip(o.data, len(o.data) - 20), b_addr)

        alice.set_wire_tap(race_a_forgery)
        alice.sendto(b"transfer 10 EUR to bob", b_addr)
        alice.set_wire_tap(None)
        transfer = wire[-1]
        got = bob.recv(2048)
        ok &= got == b"transfer 10 EUR to bob"
        out(f"  forged:   one ciphertext bit of alice's packet seq {transfer.seq} flipped, "
            f"the copy raced ahead of it")
        out(f"            -> dropped (auth-failed); bob then received the genuine {got!r}")
        mallory.sendto(transfer.data, b_addr)
        out(f"  replayed: the genuine packet seq {transfer.seq} sent again "
            f"-> dropped (replay): no second transfer")
        mallory.sendto(b"hello from mallory, in the clear", b_addr)
        out("  clear text to bob's port -> dropped (policy: bob requires ESP)")
        alice.sendto(b"still here", b_addr)
        got = bob.recv(2048)
        ok &= got == b"still here"
        out(f"  alice -> bob: {got!r} (every bad packet before it was dropped, no error raised)")
        out("")

        b_stats = bob.ipsec_stats()
        ok &= b_stats.drops.get(DropReason("auth-failed"), 0) == 1
        ok &= b_stats.drops.get(DropReason("replay"), 0) == 1
        ok &= b_stats.drops.get(DropReason("policy"), 0) == 1
        out("== counters ==")
        for line in (*_counters("alice", alice.ipsec_stats()), *_counters("bob", b_stats),
                     *_counters("process-wide", stats() - before)):
            out(line)
        out("")
        out("result: " + ("ok -- every forged, replayed and clear packet was dropped"
                          if ok else "UNEXPECTED -- see the counters above"))
        return 0 if ok else 1
    finally:
        alice.close()
        bob.close()
        mallory.close()


def _main(args: argparse.Namespace) -> int:
    del args
    return run_demo()
