"""Shared builders for the SADB/SPD/setkey tests."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

from secsock.sadb.model import IPAddress, SAMode, SAProtocol, SecurityAssociation

GCM_KEY = bytes(range(20))  # aes-gcm-16: 16-byte key + 4-byte salt
SHA1_KEY = bytes(range(100, 120))
CBC_KEY = bytes(range(50, 66))
SHA256_KEY = bytes(range(200, 232))


def addr(text: str) -> IPAddress:
    return ip_address(text)


def esp_sa(spi: int = 0x1000, src: str = "10.0.0.1", dst: str = "10.0.0.2", **kw: Any) -> SecurityAssociation:
    """An ESP AES-GCM-16 SA; keyword arguments override any field."""
    fields: dict[str, Any] = {
        "spi": spi,
        "proto": SAProtocol.ESP,
        "src": addr(src),
        "dst": addr(dst),
        "mode": SAMode.TRANSPORT,
        "enc": "aes-gcm-16",
        "enc_key": GCM_KEY,
    }
    fields.update(kw)
    return SecurityAssociation(**fields)


def ah_sa(spi: int = 0x2000, src: str = "10.0.0.1", dst: str = "10.0.0.2", **kw: Any) -> SecurityAssociation:
    fields: dict[str, Any] = {
        "spi": spi,
        "proto": SAProtocol.AH,
        "src": addr(src),
        "dst": addr(dst),
        "mode": SAMode.TRANSPORT,
        "auth": "hmac-sha1",
        "auth_key": SHA1_KEY,
    }
    fields.update(kw)
    return SecurityAssociation(**fields)


class Rng:
    """A deterministic random source for getspi: returns the given 8-byte blocks in turn."""

    def __init__(self, *values: int) -> None:
        self.values = list(values)
        self.calls = 0

    def __call__(self, n: int) -> bytes:
        assert n == 8
        self.calls += 1
        return self.values.pop(0).to_bytes(8, "big")
