"""SA fixtures for the asyncio/anyio tests: suites, keys and stores for direct and relayed peers.

Each test builds its own :class:`~secsock.sadb.store.MemoryStore` (``sadb=``), so tests never
share SA state; the process-wide store and counters are exercised on purpose where a test says
so. Suites name the setkey algorithms and the matching scapy ``SecurityAssociation`` arguments
(the independent implementation the interop tests decrypt with).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

from secsock.sadb.model import SAProtocol, SecurityAssociation
from secsock.sadb.store import MemoryStore

__all__ = ("SUITES", "Suite", "add_pair", "direct_store", "relay_stores")


@dataclass(frozen=True)
class Suite:
    name: str
    enc: str
    enc_key: bytes
    auth: str | None = None
    auth_key: bytes = b""
    scapy_crypt: str = ""
    scapy_auth: str | None = None

    def scapy_kwargs(self, spi: int) -> dict[str, Any]:
        """Arguments for scapy's ``SecurityAssociation(ESP, ...)`` with this suite's keys."""
        kw: dict[str, Any] = {"spi": spi, "crypt_algo": self.scapy_crypt, "crypt_key": self.enc_key}
        if self.scapy_auth is not None:
            kw["auth_algo"] = self.scapy_auth
            kw["auth_key"] = self.auth_key
        return kw


GCM = Suite("aes-gcm-16", "aes-gcm-16", bytes(range(1, 21)), scapy_crypt="AES-GCM")
CBC_SHA256 = Suite(
    "aes-cbc/hmac-sha2-256",
    "aes-cbc",
    bytes(range(40, 56)),
    "hmac-sha2-256",
    bytes(range(100, 132)),
    scapy_crypt="AES-CBC",
    scapy_auth="SHA2-256-128",
)
CHACHA = Suite(
    "chacha20-poly1305", "chacha20-poly1305", bytes(range(7, 43)),
    scapy_crypt="CHACHA20-POLY1305",
)
NULL_SHA1 = Suite(
    "null/hmac-sha1", "null", b"", "hmac-sha1", bytes(range(60, 80)),
    scapy_crypt="NULL", scapy_auth="HMAC-SHA1-96",
)
SUITES = (GCM, CBC_SHA256, CHACHA, NULL_SHA1)


def _sa(suite: Suite, spi: int, src: str, dst: str, **kw: Any) -> SecurityAssociation:
    return SecurityAssociation(
        spi=spi, proto=SAProtocol.ESP, src=ip_address(src), dst=ip_address(dst), enc=suite.enc,
        enc_key=suite.enc_key, auth=suite.auth, auth_key=suite.auth_key, **kw,
    )


def add_pair(
    store: MemoryStore, a: str, b: str, *, suite: Suite = GCM, spi_ab: int = 0x1001,
    spi_ba: int = 0x1002, **kw: Any,
) -> None:
    """Add the SAs a->b (spi_ab) and b->a (spi_ba) to ``store``."""
    now = time.time()
    store.add(_sa(suite, spi_ab, a, b, **kw), now=now)
    if a != b:
        store.add(_sa(suite, spi_ba, b, a, **kw), now=now)


def direct_store(a: str = "127.0.0.1", b: str = "127.0.0.2", *, suite: Suite = GCM,
                 **kw: Any) -> MemoryStore:
    """One store with both SAs, for two peers talking directly."""
    store = MemoryStore()
    add_pair(store, a, b, suite=suite, **kw)
    return store


def relay_stores(
    a: str, b: str, front: str, back: str, *, suite: Suite = GCM, spi_ab: int = 0x1001,
    spi_ba: int = 0x1002,
) -> tuple[MemoryStore, MemoryStore]:
    """Stores for peers behind a relay: A talks to ``front``, B sees traffic from ``back``.

    A's store: a->front (spi_ab) and front->a (spi_ba); B's store: back->b (spi_ab) and
    b->back (spi_ba): the same SAs, named by the addresses each side sees.
    """
    sa, sb = MemoryStore(), MemoryStore()
    add_pair(sa, a, front, suite=suite, spi_ab=spi_ab, spi_ba=spi_ba)
    add_pair(sb, back, b, suite=suite, spi_ab=spi_ab, spi_ba=spi_ba)
    return sa, sb
