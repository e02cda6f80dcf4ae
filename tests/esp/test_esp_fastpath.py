"""The AEAD fast paths of seal/open_untrusted: exact bytes, argument errors, ESN, bytes-likes.

The fast paths (AES-GCM-16 and ChaCha20-Poly1305 with a sequence-derived IV, SEQ padding and no
pad_to) are built independently here from RFC 4106/7634 and RFC 4303 with the bare
``cryptography`` primitives, so a fast-path shortcut that changes the wire shows up.
"""

from __future__ import annotations

import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from secsock.core.algorithms import encryption_algorithm
from secsock.core.esp import EspContext, EspPayload, open_untrusted, seal
from secsock.errors import IntegrityError, MalformedPacket

AEADS = ["aes-gcm-16", "chacha20-poly1305"]


def _pair(name: str, seed: int = 5) -> tuple[EspContext, AESGCM | ChaCha20Poly1305, bytes]:
    enc = encryption_algorithm(name)
    key = random.Random(seed).randbytes(enc.key_sizes[0])
    ctx = EspContext.create(enc=enc, enc_key=key, auth=None, auth_key=None)
    aead = AESGCM(key[:-4]) if name == "aes-gcm-16" else ChaCha20Poly1305(key[:-4])
    return ctx, aead, key[-4:]


def _reference(
    aead: AESGCM | ChaCha20Poly1305, salt: bytes, spi: int, seq: int, payload: bytes, nh: int,
    *, esn: bool,
) -> bytes:
    """RFC 4303 + RFC 4106/7634 by hand: 4-byte alignment, 1, 2, 3 padding, IV = 64-bit seq."""
    pad = -(len(payload) + 2) % 4
    plaintext = payload + bytes(range(1, pad + 1)) + bytes((pad, nh))
    iv = struct.pack("!Q", seq)
    if esn:
        aad = struct.pack("!III", spi, seq >> 32, seq & 0xFFFFFFFF)
    else:
        aad = struct.pack("!II", spi, seq)
    header = struct.pack("!II", spi, seq & 0xFFFFFFFF)
    return header + iv + aead.encrypt(salt + iv, plaintext, aad)


@pytest.mark.parametrize("name", AEADS)
@pytest.mark.parametrize("esn", [False, True])
def test_seal_is_byte_exact_for_every_trailer_length(name: str, esn: bool) -> None:
    ctx, aead, salt = _pair(name)
    rnd = random.Random(1)
    for size in [*range(9), 63, 64, 65, 66, 1399, 1400]:
        payload = rnd.randbytes(size)
        seq = rnd.randrange(1, 2**64 if esn else 2**32)
        nh = rnd.randrange(256)
        packet = seal(ctx, spi=0xABCDEF01, seq=seq, payload=payload, next_header=nh, esn=esn)
        assert type(packet) is bytes
        assert packet == _reference(aead, salt, 0xABCDEF01, seq, payload, nh, esn=esn)
        # a bytearray payload takes the same path and gives the same bytes
        again = seal(ctx, spi=0xABCDEF01, seq=seq, payload=bytearray(payload), next_header=nh,
                     esn=esn)
        assert type(again) is bytes
        assert again == packet


@pytest.mark.parametrize("name", AEADS)
def test_seal_extreme_numbers(name: str) -> None:
    ctx, aead, salt = _pair(name)
    for spi, seq, esn in [(0, 0, False), (2**32 - 1, 2**32 - 1, False), (1, 2**64 - 1, True),
                          (2**32 - 1, 2**32, True), (7, 0, True)]:
        packet = seal(ctx, spi=spi, seq=seq, payload=b"abc", next_header=0, esn=esn)
        assert packet == _reference(aead, salt, spi, seq, b"abc", 0, esn=esn)
        opened = open_untrusted(ctx, packet, seq_hi=seq >> 32, esn=esn)
        assert opened == EspPayload(0, b"abc", 3)


@pytest.mark.parametrize("name", AEADS)
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seq": -1}, "32-bit"),
        ({"seq": 2**32}, "32-bit"),
        ({"seq": -1, "esn": True}, "64-bit"),
        ({"seq": 2**64, "esn": True}, "64-bit"),
        ({"spi": -1}, "SPI"),
        ({"spi": 2**32}, "SPI"),
        ({"spi": 2**32, "esn": True}, "SPI"),
        ({"next_header": -1}, "next header"),
        ({"next_header": 256}, "next header"),
        ({"next_header": None}, "next header"),
        ({"next_header": "17"}, "next header"),
    ],
)
def test_seal_argument_errors_are_value_errors(
    name: str, kwargs: dict[str, object], match: str
) -> None:
    ctx, _, _ = _pair(name)
    args: dict[str, object] = {"spi": 1, "seq": 1, "payload": b"xyz", "next_header": 17}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        seal(ctx, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", AEADS)
@pytest.mark.parametrize("esn", [False, True])
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_open_accepts_bytes_likes(name: str, esn: bool, kind: type) -> None:
    ctx, _, _ = _pair(name)
    seq = (3 << 32) + 9 if esn else 9
    packet = seal(ctx, spi=0x300, seq=seq, payload=b"payload", next_header=6, esn=esn)
    opened = open_untrusted(ctx, kind(packet), seq_hi=seq >> 32, esn=esn)
    assert opened == EspPayload(6, b"payload", 3)
    assert type(opened) is EspPayload
    assert type(opened.payload) is bytes


@pytest.mark.parametrize("name", AEADS)
def test_open_esn_wrong_high_half_is_an_integrity_error_naming_it(name: str) -> None:
    ctx, _, _ = _pair(name)
    packet = seal(ctx, spi=0x300, seq=(3 << 32) + 9, payload=b"p", next_header=6, esn=True)
    with pytest.raises(IntegrityError, match=rf"SPI 0x00000300 seq {(4 << 32) + 9}$"):
        open_untrusted(ctx, packet, seq_hi=4, esn=True)
    with pytest.raises(IntegrityError, match=r"seq 9$"):
        open_untrusted(ctx, packet)  # the same packet read without ESN


@pytest.mark.parametrize("name", AEADS)
@pytest.mark.parametrize("esn", [False, True])
def test_open_short_packets_are_malformed_before_seq_hi_is_checked(name: str, esn: bool) -> None:
    ctx, _, _ = _pair(name)
    for n in range(8 + 8 + 16 + 2):
        with pytest.raises(MalformedPacket, match="shorter than"):
            open_untrusted(ctx, bytes(n), seq_hi=2**32 if esn else 0, esn=esn)
    packet = seal(ctx, spi=1, seq=1, payload=b"", next_header=17)
    with pytest.raises(ValueError, match="seq_hi"):
        open_untrusted(ctx, packet, seq_hi=2**32, esn=True)
    with pytest.raises(ValueError, match="seq_hi"):
        open_untrusted(ctx, packet, seq_hi=-1, esn=True)


@pytest.mark.parametrize("name", AEADS)
def test_open_rejects_bad_trailers_that_authenticate(name: str) -> None:
    """Trailers a keyed peer could send: pad length past the plaintext, wrong pad bytes."""
    ctx, aead, salt = _pair(name)
    header = struct.pack("!IIQ", 9, 1, 1)
    for plaintext, check in [(b"\x05\x11", True), (b"\x05\x11", False), (b"ab\x03\x11", False),
                             (b"ab\x02\x02\x11", True), (b"a\x00\x03\x11", True)]:
        packet = header + aead.encrypt(salt + header[8:], plaintext, header[:8])
        with pytest.raises(MalformedPacket, match="pad"):
            open_untrusted(ctx, packet, check_padding=check)
    # the same bytes are fine when padding is not checked and the length fits
    packet = header + aead.encrypt(salt + header[8:], b"a\x00\x03\x02\x11", header[:8])
    assert open_untrusted(ctx, packet, check_padding=False) == EspPayload(17, b"a", 2)
