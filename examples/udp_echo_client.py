"""A UDP echo client whose socket requires ESP both ways (per-socket IPsec policy).

    python examples/udp_echo_client.py --port PORT [--setkey examples/echo.setkey] MESSAGE...

Binds 127.0.0.2, sets ``in``/``out ipsec esp/transport//require`` with setsockopt, sends each
message to the echo server (udp_echo_server.py) and prints the reply. A missing SA is an
error (NoSAError, ENOENT) before anything leaves in the clear.
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
    parser.add_argument("--server", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", default="127.0.0.2")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("messages", nargs="+")
    args = parser.parse_args(argv)
    setkey(Path(args.setkey).read_text(encoding="utf-8"))

    with SecureSocket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, IP_IPSEC_POLICY,
                        ipsec_set_policy("in ipsec esp/transport//require"))
        sock.setsockopt(socket.IPPROTO_IP, IP_IPSEC_POLICY,
                        ipsec_set_policy("out ipsec esp/transport//require"))
        sock.bind((args.bind, 0))
        sock.settimeout(args.timeout)
        for message in args.messages:
            sock.sendto(message.encode(), (args.server, args.port))
            reply, _ = sock.recvfrom(65535)
            print(f"reply: {reply.decode()}", flush=True)
        stats = sock.ipsec_stats()
    print(f"counters: in_success={stats.in_success} out_success={stats.out_success}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
