"""Published ESP vectors reproduce byte for byte, open, and reject every flipped bit.

draft-mcgrew-gcm-test-01 (AES-GCM and AES-GMAC ESP, ESN cases included) and RFC 3602 §4
(AES-CBC ESP packets, published without an ICV).
"""

from __future__ import annotations

from typing import Any

import pytest

from secsock.core.algorithms import auth_algorithm, encryption_algorithm
from secsock.core.esp import EspContext, open_untrusted, peek_untrusted, seal
from secsock.errors import IntegrityError, MalformedPacket
from tests.esp.esp_helpers import load_vectors

MCGREW = load_vectors("esp_aes_gcm_gmac_mcgrew.json")
RFC3602_ESP = [v for v in load_vectors("esp_aes_cbc_rfc3602.json") if v["kind"] == "esp"]


def _mcgrew_case(vec: dict[str, Any]) -> tuple[EspContext, int, int, bytes, int, int, bytes, bool]:
    gmac = vec["algorithm"] == "AES-GMAC-ESP"
    enc = encryption_algorithm("aes-gmac" if gmac else "aes-gcm-16")
    key = bytes.fromhex(vec["key"] + vec["salt"])
    ctx = EspContext.create(enc=enc, enc_key=key, auth=None, auth_key=None)
    # ESP plaintext = payload | padding | pad length | next header; for GMAC it sits in the AAD
    # after SPI | seq | IV.
    if gmac:
        plain = bytes.fromhex(vec["aad"])[8 + (4 if vec["esn"] else 0) + 8 :]
    else:
        plain = bytes.fromhex(vec["plaintext"])
    pad_len, next_header = plain[-2], plain[-1]
    payload = plain[: len(plain) - 2 - pad_len]
    return (
        ctx, int(vec["spi"], 16), int(vec["seq"], 16), payload, next_header, pad_len,
        bytes.fromhex(vec["iv"]), bool(vec["esn"]),
    )


@pytest.mark.parametrize("vec", MCGREW, ids=[v["id"] for v in MCGREW])
def test_mcgrew_vector_seals_byte_for_byte(vec: dict[str, Any]) -> None:
    ctx, spi, seq, payload, nh, pad_len, iv, esn = _mcgrew_case(vec)
    packet = seal(ctx, spi=spi, seq=seq, payload=payload, next_header=nh, esn=esn, iv=iv)
    assert packet.hex() == vec["packet"]
    assert len(packet) == ctx.sealed_length(len(payload))
    assert ctx.pad_length(len(payload)) == pad_len


@pytest.mark.parametrize("vec", MCGREW, ids=[v["id"] for v in MCGREW])
def test_mcgrew_vector_opens(vec: dict[str, Any]) -> None:
    ctx, spi, seq, payload, nh, pad_len, _iv, esn = _mcgrew_case(vec)
    packet = bytes.fromhex(vec["packet"])
    assert peek_untrusted(packet) == (spi, seq & 0xFFFFFFFF)
    opened = open_untrusted(ctx, packet, seq_hi=seq >> 32, esn=esn)
    assert (opened.next_header, opened.payload, opened.pad_len) == (nh, payload, pad_len)


@pytest.mark.parametrize("vec", [v for v in MCGREW if v["esn"] and int(v["seq"], 16) >> 32],
                         ids=lambda v: v["id"])
def test_mcgrew_esn_vector_needs_the_right_high_bits(vec: dict[str, Any]) -> None:
    ctx, _spi, seq, _payload, _nh, _pad, _iv, _esn = _mcgrew_case(vec)
    packet = bytes.fromhex(vec["packet"])
    with pytest.raises(IntegrityError):
        open_untrusted(ctx, packet, seq_hi=(seq >> 32) ^ 1, esn=True)
    with pytest.raises(IntegrityError):
        open_untrusted(ctx, packet, esn=False)


@pytest.mark.parametrize("vec", MCGREW, ids=[v["id"] for v in MCGREW])
def test_mcgrew_vector_every_flipped_bit_fails(vec: dict[str, Any]) -> None:
    ctx, _spi, seq, _payload, _nh, _pad, _iv, esn = _mcgrew_case(vec)
    packet = bytearray.fromhex(vec["packet"])
    for bit in range(len(packet) * 8):
        packet[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(IntegrityError):
            open_untrusted(ctx, bytes(packet), seq_hi=seq >> 32, esn=esn)
        packet[bit // 8] ^= 1 << (bit % 8)


def _rfc3602_ctx(vec: dict[str, Any], auth: str) -> EspContext:
    sa = vec["sa"]
    integrity = auth_algorithm(auth)
    return EspContext.create(
        enc=encryption_algorithm(sa["enc"]), enc_key=bytes.fromhex(sa["enc_key"]),
        auth=integrity, auth_key=bytes(range(integrity.key_sizes[0])),
    )


@pytest.mark.parametrize("vec", RFC3602_ESP, ids=[v["id"] for v in RFC3602_ESP])
def test_rfc3602_packet_seals_and_opens(vec: dict[str, Any]) -> None:
    """The RFC 3602 packets carry no ICV: the SA there is aes-cbc with null integrity."""
    assert vec["sa"]["auth"] == "null"
    ctx = _rfc3602_ctx(vec, "null")
    inner = bytes.fromhex(vec["inner"])
    packet = seal(
        ctx, spi=int(vec["sa"]["spi"], 16), seq=vec["seq"], payload=inner,
        next_header=vec["next_header"], iv=bytes.fromhex(vec["iv"]),
    )
    assert packet.hex() == vec["esp"]
    opened = open_untrusted(ctx, packet)
    assert opened.payload == inner
    assert opened.next_header == vec["next_header"]
    assert opened.pad_len == vec["pad_length"]


@pytest.mark.parametrize("vec", RFC3602_ESP, ids=[v["id"] for v in RFC3602_ESP])
def test_rfc3602_ciphertext_under_hmac_and_every_flipped_bit(vec: dict[str, Any]) -> None:
    """With hmac-sha2-256 added, the encrypted part is still the RFC's; the ICV guards it all."""
    ctx = _rfc3602_ctx(vec, "hmac-sha2-256")
    inner = bytes.fromhex(vec["inner"])
    packet = seal(
        ctx, spi=int(vec["sa"]["spi"], 16), seq=vec["seq"], payload=inner,
        next_header=vec["next_header"], iv=bytes.fromhex(vec["iv"]),
    )
    assert packet[:-16].hex() == vec["esp"]
    assert open_untrusted(ctx, packet).payload == inner
    mutable = bytearray(packet)
    for bit in range(len(mutable) * 8):
        mutable[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(IntegrityError):
            open_untrusted(ctx, bytes(mutable))
        mutable[bit // 8] ^= 1 << (bit % 8)


@pytest.mark.parametrize("vec", RFC3602_ESP[:1], ids=lambda v: v["id"])
def test_rfc3602_truncations_are_malformed_or_fail_integrity(vec: dict[str, Any]) -> None:
    ctx = _rfc3602_ctx(vec, "hmac-sha2-256")
    packet = seal(
        ctx, spi=1, seq=1, payload=bytes.fromhex(vec["inner"]),
        next_header=vec["next_header"], iv=bytes.fromhex(vec["iv"]),
    )
    for cut in range(len(packet)):
        with pytest.raises((MalformedPacket, IntegrityError)):
            open_untrusted(ctx, packet[:cut])
