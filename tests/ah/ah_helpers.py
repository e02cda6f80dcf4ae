"""Shared test data for the AH tests: algorithms, keys, and an independent ICV-input builder."""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secsock.core.ah import AhContext
from secsock.core.algorithms import auth_algorithm

#: setkey name -> scapy's AuthAlgo name, for the algorithms both implement.
SCAPY_NAMES: dict[str, str] = {
    "hmac-md5": "HMAC-MD5-96",
    "hmac-sha1": "HMAC-SHA1-96",
    "hmac-sha2-256": "SHA2-256-128",
    "hmac-sha2-384": "SHA2-384-192",
    "hmac-sha2-512": "SHA2-512-256",
}

#: every AH integrity algorithm secsock offers, with a key of the right size.
KEYS: dict[str, bytes] = {
    "hmac-md5": bytes(range(16)),
    "hmac-sha1": bytes(range(20)),
    "hmac-sha2-256": bytes(range(32)),
    "hmac-sha2-384": bytes(range(48)),
    "hmac-sha2-512": bytes(range(64)),
    "aes-xcbc-mac": bytes(range(16)),
    "aes-gmac": bytes(range(16)) + b"salt",
}


def context(name: str, align: int | None = None, key: bytes | None = None) -> AhContext:
    return AhContext.create(
        auth=auth_algorithm(name), auth_key=KEYS[name] if key is None else key, align=align
    )


def zeroed_ipv4_input(packet: bytes, *, icv_len: int, cleartos: bool = True) -> bytes:
    """The AH ICV input of an IPv4 AH packet without options, built by hand from RFC 4302.

    TOS (when cleartos), flags/offset, TTL and checksum zeroed; the ICV field zeroed; padding
    and payload as they are.
    """
    hlen = (packet[0] & 0x0F) * 4
    assert hlen == 20, "this helper handles option-less headers only"
    header = bytearray(packet[:20])
    if cleartos:
        header[1] = 0
    header[6:12] = bytes(6)  # flags+offset, TTL, protocol..., checksum
    header[9] = packet[9]  # protocol is immutable: put it back
    ah = bytearray(packet[20:])
    ah[12 : 12 + icv_len] = bytes(icv_len)
    return bytes(header) + bytes(ah)


def xcbc_mac(key: bytes, message: bytes) -> bytes:
    """AES-XCBC-MAC (RFC 3566 §4), written out independently of secsock for cross-checking."""
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    k1 = ecb.update(b"\x01" * 16)
    k2 = ecb.update(b"\x02" * 16)
    k3 = ecb.update(b"\x03" * 16)
    blocks = [message[i : i + 16] for i in range(0, len(message), 16)] or [b""]
    last = blocks.pop()
    if len(last) == 16:
        last = bytes(a ^ b for a, b in zip(last, k2, strict=True))
    else:
        padded = last + b"\x80" + bytes(15 - len(last))
        last = bytes(a ^ b for a, b in zip(padded, k3, strict=True))
    e = bytes(16)
    enc = Cipher(algorithms.AES(k1), modes.ECB()).encryptor()
    for block in [*blocks, last]:
        e = enc.update(bytes(a ^ b for a, b in zip(e, block, strict=True)))
    return e


SEQ_HI = struct.Struct("!I")
