"""Typed wrappers around scapy's IPsec layer (scapy's own functions are untyped)."""

from __future__ import annotations

from typing import Any

from scapy.layers.inet import UDP
from scapy.layers.ipsec import AH, ESP, SecurityAssociation

from tests.kernel.rig import NATT_PORT

__all__ = ("ScapySA",)


class ScapySA:
    """One direction of a transport-mode SA as scapy sees it (an oracle, not secsock)."""

    def __init__(
        self,
        *,
        spi: int,
        proto: str = "esp",
        crypt_algo: str | None = None,
        crypt_key: bytes | None = None,
        auth_algo: str | None = None,
        auth_key: bytes | None = None,
        natt: bool = False,
        seq: int = 1,
    ) -> None:
        layer = ESP if proto == "esp" else AH
        natt_header = UDP(sport=NATT_PORT, dport=NATT_PORT) if natt else None
        self._sa: Any = SecurityAssociation(  # type: ignore[no-untyped-call]
            layer,
            spi=spi,
            seq_num=seq,
            crypt_algo=crypt_algo,
            crypt_key=crypt_key,
            auth_algo=auth_algo,
            auth_key=auth_key,
            nat_t_header=natt_header,
        )

    def encrypt(self, packet: Any) -> Any:
        return self._sa.encrypt(packet)

    def decrypt(self, packet: Any) -> Any:
        return self._sa.decrypt(packet)
