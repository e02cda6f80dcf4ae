"""An ordinary UDP program that knows nothing about IPsec.

A server thread on 127.0.0.1 upper-cases what a client on 127.0.0.2 sends. Run it plainly
(``python examples/unmodified_program.py``) and the datagrams travel in the clear; run it as

    secsock run --setkey examples/unmodified.setkey --stats -- examples/unmodified_program.py

and, without a line changed, every datagram travels as ESP (the SPD in unmodified.setkey
requires it), which the counters printed at the end show. It also prints the class of its
sockets: secure UDP sockets, a plain TCP one.
"""

from __future__ import annotations

import socket
import sys
import threading


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 3
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(10)

    def serve() -> None:
        for _ in range(count):
            data, addr = server.recvfrom(2048)
            server.sendto(data.upper(), addr)

    thread = threading.Thread(target=serve)
    thread.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.2", 0))
    client.settimeout(10)
    for i in range(count):
        client.sendto(f"message {i}".encode(), server.getsockname())
        reply, _ = client.recvfrom(2048)
        print("reply:", reply.decode())
    thread.join()
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    print("udp socket class:", type(client).__name__)
    print("tcp socket class:", type(tcp).__name__)
    for s in (tcp, client, server):
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
