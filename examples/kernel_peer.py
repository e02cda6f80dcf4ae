#!/usr/bin/env python3
"""secsock and a real Linux kernel exchange ESP (run as root from the repository root).

    sudo .venv/bin/python examples/kernel_peer.py

Boots the project's kernel peer rig (tests/kernel/rig.py: Debian's User-Mode Linux 6.1 in a
private network namespace, fetched with apt-get on first use), gives the kernel an SA pair
with ``ip xfrm`` (AES-GCM-16, ESP-in-UDP on port 4500 as RFC 3948 and ``encap espinudp``
describe it) and secsock the same pair with a setkey(8) script, then:

1. a secsock socket with per-socket ``require`` policies sends a datagram to an ordinary UDP
   echo socket in the guest; the kernel decrypts it, the echo answers, the kernel encrypts the
   answer and secsock decrypts it;
2. the kernel originates a datagram through its own out policy; secsock receives it;
3. prints the kernel's ``ip -s xfrm state`` (note the packet counters) and secsock's counters.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.kernel.rig

from secsock._setkey import setkey
from secsock._socket import SecureSocket
from secsock.constants import IP_IPSEC_POLICY
from secsock.policy.libipsec import ipsec_set_policy
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore
from tests.kernel.rig import KernelPeer, RigError

HOST, GUEST = "10.99.0.1", "10.99.0.2"  # the secsock side and the kernel, in the rig's netns
APP_PORT, ECHO_PORT = 40000, 7000
KEY_IN = "00112233445566778899aabbccddeeff" + "01020304"  # host -> guest: AES-128 key + salt
KEY_OUT = "ffeeddccbbaa99887766554433221100" + "05060708"  # guest -> host

KERNEL = [
    (
        f"xfrm state add src {HOST} dst {GUEST} proto esp spi 0x1000 reqid 1 mode transport "
        f"replay-window 32 aead rfc4106(gcm(aes)) 0x{KEY_IN} 128 encap espinudp 4500 4500 0.0.0.0"
    ),
    (
        f"xfrm state add src {GUEST} dst {HOST} proto esp spi 0x2000 reqid 1 mode transport "
        f"replay-window 32 aead rfc4106(gcm(aes)) 0x{KEY_OUT} 128 encap espinudp 4500 4500 0.0.0.0"
    ),
    (
        f"xfrm policy add src {HOST}/32 dst {GUEST}/32 proto udp dport {ECHO_PORT} dir in "
        f"tmpl src {HOST} dst {GUEST} proto esp reqid 1 mode transport"
    ),
    (
        f"xfrm policy add src {GUEST}/32 dst {HOST}/32 proto udp sport {ECHO_PORT} dir out "
        f"tmpl src {GUEST} dst {HOST} proto esp reqid 1 mode transport"
    ),
]

SETKEY = f"""
add {HOST}[4500] {GUEST}[4500] esp-udp 0x1000 -m transport -E aes-gcm-16 0x{KEY_IN};
add {GUEST}[4500] {HOST}[4500] esp-udp 0x2000 -m transport -E aes-gcm-16 0x{KEY_OUT};
"""


def main() -> int:
    if os.geteuid() != 0:
        print("kernel_peer.py needs root (network namespace, tap device)", file=sys.stderr)
        return 2
    try:
        peer = KernelPeer.start()
    except RigError as e:
        print(f"cannot start the kernel peer: {e}", file=sys.stderr)
        return 1
    try:
        print(f"kernel peer: Linux {peer.release} at {GUEST} (namespace {peer.name})")
        peer.configure(KERNEL)
        peer.udp_echo(ECHO_PORT, encap=True)  # also the kernel's UDP_ENCAP socket on 4500

        sadb, spd = MemoryStore(), SPD()
        setkey(SETKEY, sadb=sadb, spd=spd)
        with peer.netns(), SecureSocket(socket.AF_INET, socket.SOCK_DGRAM, sadb=sadb, spd=spd) as s:
            for text in ("out ipsec esp/transport//require", "in ipsec esp/transport//require"):
                s.setsockopt(socket.IPPROTO_IP, IP_IPSEC_POLICY, ipsec_set_policy(text))
            s.bind((HOST, APP_PORT))
            s.settimeout(5.0)

            s.sendto(b"hello from secsock", (GUEST, ECHO_PORT))
            reply, addr = s.recvfrom(2048)
            print(f"secsock -> kernel -> secsock: {reply!r} from {addr[0]}:{addr[1]}")

            peer.send(sport=ECHO_PORT, dport=APP_PORT, data=b"hello from the kernel")
            data, addr = s.recvfrom(2048)
            print(f"kernel -> secsock: {data!r} from {addr[0]}:{addr[1]}")
            stats = s.ipsec_stats()

        print("\nthe kernel's SAs (ip -s xfrm state):")
        print(peer.xfrm_state())
        print(
            f"secsock: in_success={stats.in_success} out_success={stats.out_success} "
            f"in_authfail={stats.in_authfail} in_replay={stats.in_replay}"
        )
        errors = {k: v for k, v in peer.xfrm_stat().items() if v}
        print(f"kernel XFRM error counters: {errors or 'all zero'}")
        return 0
    finally:
        peer.close()


if __name__ == "__main__":
    sys.exit(main())
