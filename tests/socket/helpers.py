"""Shared helpers for the socket tests: SAs without setkey, socket factories, plain peers."""

from __future__ import annotations

import ipaddress
import socket as stdlib_socket
import time
from typing import Any

from secsock._socket import SecureSocket
from secsock.engine import Address, EngineStore, Outbound
from secsock.sadb.model import SAMode, SAProtocol, SecurityAssociation
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore

GCM_KEY = bytes(range(1, 21))  # aes-gcm-16, 128-bit key + 4-byte salt
GCM_KEY2 = bytes(range(101, 121))
SHA256_KEY = bytes(range(32))


def ip(text: str) -> Address:
    return ipaddress.ip_address(text)


def add_esp(
    store: MemoryStore, spi: int, src: str, dst: str, *, key: bytes = GCM_KEY,
    enc: str = "aes-gcm-16", auth: str | None = None, auth_key: bytes = b"",
    reqid: int = 0, natt: tuple[int, int] | None = None, **kw: Any,
) -> SecurityAssociation:
    sa = SecurityAssociation(
        spi=spi, proto=SAProtocol.ESP, src=ip(src), dst=ip(dst), mode=SAMode.TRANSPORT,
        reqid=reqid, enc=enc, enc_key=key, auth=auth, auth_key=auth_key,
        natt_sport=None if natt is None else natt[0],
        natt_dport=None if natt is None else natt[1], **kw,
    )
    store.add(sa, now=time.time())
    return sa


def add_ah(store: MemoryStore, spi: int, src: str, dst: str, *, auth: str = "hmac-sha256",
           key: bytes = SHA256_KEY, **kw: Any) -> SecurityAssociation:
    sa = SecurityAssociation(spi=spi, proto=SAProtocol.AH, src=ip(src), dst=ip(dst),
                             mode=SAMode.TRANSPORT, auth=auth, auth_key=key, **kw)
    store.add(sa, now=time.time())
    return sa


class Sockets:
    """Creates secure and plain sockets and closes them all at teardown."""

    def __init__(self, store: MemoryStore, spd: SPD) -> None:
        self.store = store
        self.spd = spd
        self._all: list[stdlib_socket.socket] = []

    def secure(self, addr: str = "127.0.0.1", *, family: int | None = None,
               transport: str = "udp", bind: bool = True,
               store: EngineStore | None = None) -> SecureSocket:
        if family is None:
            family = stdlib_socket.AF_INET6 if ":" in addr else stdlib_socket.AF_INET
        s = SecureSocket(family, stdlib_socket.SOCK_DGRAM, transport=transport,  # type: ignore[arg-type]
                         sadb=self.store if store is None else store, spd=self.spd)
        self._all.append(s)
        if bind:
            s.bind((addr, 0))
        s.settimeout(5.0)  # a hung test fails instead of hanging
        return s

    def plain(self, addr: str = "127.0.0.1") -> stdlib_socket.socket:
        family = stdlib_socket.AF_INET6 if ":" in addr else stdlib_socket.AF_INET
        s = stdlib_socket.socket(family, stdlib_socket.SOCK_DGRAM)
        self._all.append(s)
        s.bind((addr, 0))
        s.settimeout(5.0)
        return s

    def close(self) -> None:
        for s in self._all:
            s.close()


def both_policies(sock: SecureSocket, requests: str) -> None:
    sock.set_ipsec_policy(f"in ipsec {requests}")
    sock.set_ipsec_policy(f"out ipsec {requests}")


class Tap:
    """A wire tap: records what a secure socket puts on the wire."""

    def __init__(self, sock: SecureSocket) -> None:
        self.sent: list[Outbound] = []
        sock.set_wire_tap(self.sent.append)

    @property
    def last(self) -> Outbound:
        return self.sent[-1]


def spdadd(spd: SPD, src: str, dst: str, policy: str, *, sport: int = 0, dport: int = 0,
           ul_proto: int = 17) -> None:
    """``spdadd src[sport] dst[dport] udp -P policy;`` without the setkey parser."""
    from secsock.policy.model import parse_policy
    from secsock.sadb.spd import SPDSelector

    selector = SPDSelector(src=ipaddress.ip_network(src), dst=ipaddress.ip_network(dst),
                           ul_proto=ul_proto, sport=sport, dport=dport)
    spd.add(selector, parse_policy(policy))
