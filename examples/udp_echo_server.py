"""A UDP echo server whose socket requires ESP both ways (per-socket IPsec policy).

    python examples/udp_echo_server.py [--setkey examples/echo.setkey] [--port 0] [--count N]

It loads the SAs, binds 127.0.0.1, sets its policies with
``setsockopt(IPPROTO_IP, IP_IPSEC_POLICY, ipsec_set_policy(...))`` exactly as a C program on
FreeBSD would, prints ``listening on HOST PORT`` and echoes ``--count`` datagrams (forever
with 0). Clear-text, forged or replayed datagrams are dropped and counted, never echoed; the
counters are printed at the end. Pair it with udp_echo_client.py.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from secsock._setkey import setkey
from secsock._socket import SecureSocket
from secsock.constants import IP_IPSEC_POLICY
from secsock.policy.libipsec import ipsec_set_policy

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setkey", default=str(HERE / "echo.setkey"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=0, help="datagrams to echo (0: forever)")
    args = parser.parse_args(argv)
    setkey(Path(args.setkey).read_text(encoding="utf-8"))

    sock = SecureSocket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, IP_IPSEC_POLICY,
                    ipsec_set_policy("in ipsec esp/transport//require"))
    sock.setsockopt(socket.IPPROTO_IP, IP_IPSEC_POLICY,
                    ipsec_set_policy("out ipsec esp/transport//require"))
    sock.bind((args.host, args.port))
    host, port = sock.getsockname()
    print(f"listening on {host} {port}", flush=True)
    echoed = 0
    with sock:
        while args.count == 0 or echoed < args.count:
            data, addr = sock.recvfrom(65535)
            sock.sendto(data, addr)
            echoed += 1
            print(f"echoed {len(data)} bytes to {addr[0]}:{addr[1]}", flush=True)
        stats = sock.ipsec_stats()
    print(f"counters: in_success={stats.in_success} out_success={stats.out_success} "
          f"dropped={stats.dropped}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
