"""Interop with scapy's IPsec layer, an independent ESP implementation, in transport mode.

For every algorithm both support, over IPv4 and IPv6, with and without ESN: scapy's packets open
in secsock, and secsock's packets decrypt and verify in scapy.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from secsock.core.algorithms import auth_algorithm, encryption_algorithm
from secsock.core.esp import EspContext, open_untrusted, seal
from secsock.errors import IntegrityError
from tests.esp.esp_helpers import make_context

scapy_inet = pytest.importorskip("scapy.layers.inet")
scapy_inet6 = pytest.importorskip("scapy.layers.inet6")
scapy_ipsec = pytest.importorskip("scapy.layers.ipsec")
scapy_packet = pytest.importorskip("scapy.packet")

IP: Any = scapy_inet.IP
UDP: Any = scapy_inet.UDP
IPv6: Any = scapy_inet6.IPv6
ESP: Any = scapy_ipsec.ESP
SecurityAssociation: Any = scapy_ipsec.SecurityAssociation
Raw: Any = scapy_packet.Raw

ENC_NAMES = {
    "null": "NULL",
    "aes-cbc": "AES-CBC",
    "aes-ctr": "AES-CTR",
    "aes-gcm-16": "AES-GCM",
    "aes-gmac": "AES-NULL-GMAC",
    "chacha20-poly1305": "CHACHA20-POLY1305",
    "3des-cbc": "3DES",
}
AUTH_NAMES = {
    "hmac-md5": "HMAC-MD5-96",
    "hmac-sha1": "HMAC-SHA1-96",
    "hmac-sha2-256": "SHA2-256-128",
    "hmac-sha2-384": "SHA2-384-192",
    "hmac-sha2-512": "SHA2-512-256",
}

PAIRS: list[tuple[str, str | None]] = [
    ("aes-gcm-16", None),
    ("aes-gmac", None),
    ("chacha20-poly1305", None),
    *((enc, auth) for enc in ("aes-cbc", "aes-ctr", "3des-cbc", "null") for auth in AUTH_NAMES),
    ("aes-cbc", None),
    ("aes-ctr", None),
]

ADDRS = {4: ("192.0.2.1", "198.51.100.7"), 6: ("2001:db8::1", "2001:db8:ff::7")}


def _sa_pair(enc: str, auth: str | None, seed: int, esn: bool, seq: int) -> tuple[EspContext, Any]:
    ctx, enc_key, auth_key = make_context(
        encryption_algorithm(enc), None if auth is None else auth_algorithm(auth), seed=seed
    )
    sa = SecurityAssociation(
        ESP, spi=0x0A0B0C0D, seq_num=seq & 0xFFFFFFFF,
        crypt_algo=ENC_NAMES[enc], crypt_key=enc_key if enc != "null" else None,
        auth_algo=AUTH_NAMES[auth] if auth is not None else None, auth_key=auth_key,
        esn_en=esn, esn=seq >> 32,
    )
    return ctx, sa


def _inner(version: int, payload: bytes) -> tuple[Any, bytes]:
    """A built IP/UDP packet and the bytes of its UDP part (what ESP carries)."""
    src, dst = ADDRS[version]
    ip_cls = IP if version == 4 else IPv6
    pkt = ip_cls(bytes(ip_cls(src=src, dst=dst) / UDP(sport=4500, dport=7001) / Raw(payload)))
    return pkt, bytes(pkt[UDP])


CASES = [(e, a) for e, a in PAIRS]


@pytest.mark.parametrize(("enc", "auth"), CASES, ids=[f"{e}+{a}" for e, a in CASES])
@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("esn", [False, True])
def test_scapy_to_secsock(enc: str, auth: str | None, version: int, esn: bool) -> None:
    seq = (0x00000003 << 32 | 0x11) if esn else 0x11
    ctx, sa = _sa_pair(enc, auth, seed=version * 10 + esn, esn=esn, seq=seq)
    rnd = random.Random(version)
    for size in (0, 1, 5, 60, 1000):
        pkt, udp = _inner(version, rnd.randbytes(size))
        encrypted = sa.encrypt(pkt)
        assert encrypted.getlayer(ESP) is not None
        esp_bytes = bytes(encrypted[ESP])
        opened = open_untrusted(ctx, esp_bytes, seq_hi=seq >> 32, esn=esn)
        assert opened.next_header == 17
        assert opened.payload == udp
        if ctx.icv_len:
            tampered = bytearray(esp_bytes)
            tampered[len(tampered) // 2] ^= 0x04
            with pytest.raises(IntegrityError):
                open_untrusted(ctx, bytes(tampered), seq_hi=seq >> 32, esn=esn)


@pytest.mark.parametrize(("enc", "auth"), CASES, ids=[f"{e}+{a}" for e, a in CASES])
@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("esn", [False, True])
def test_secsock_to_scapy(enc: str, auth: str | None, version: int, esn: bool) -> None:
    seq = (0x00000003 << 32 | 0x11) if esn else 0x11
    ctx, sa = _sa_pair(enc, auth, seed=version * 10 + esn + 100, esn=esn, seq=seq)
    rnd = random.Random(version + 50)
    for size in (0, 1, 5, 60, 1000):
        payload = rnd.randbytes(size)
        _pkt, udp = _inner(version, payload)
        iv = rnd.randbytes(ctx.iv_len) if ctx.needs_random_iv else None
        sealed = seal(ctx, spi=0x0A0B0C0D, seq=seq, payload=udp, next_header=17, esn=esn, iv=iv)
        wire = _wrap(version, sealed)
        assert wire.getlayer(ESP) is not None
        decrypted = sa.decrypt(wire)
        assert bytes(decrypted[UDP]) == udp
        assert bytes(decrypted[UDP].payload) == payload
        if ctx.icv_len:
            tampered = bytearray(sealed)
            tampered[-ctx.icv_len - 1] ^= 0x01
            with pytest.raises(scapy_ipsec.IPSecIntegrityError):
                sa.decrypt(_wrap(version, bytes(tampered)))


def _wrap(version: int, esp: bytes) -> Any:
    """secsock's ESP bytes behind an IP header with protocol 50, parsed by scapy."""
    src, dst = ADDRS[version]
    if version == 4:
        return IP(bytes(IP(src=src, dst=dst, proto=50) / Raw(esp)))
    return IPv6(bytes(IPv6(src=src, dst=dst, nh=50) / Raw(esp)))
