"""ESP seal/open behaviour for every algorithm: round trips, IVs, padding, ESN and errors."""

from __future__ import annotations

import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secsock.core.algorithms import (
    AUTH_ALGORITHMS,
    ENCRYPTION_ALGORITHMS,
    auth_algorithm,
    encryption_algorithm,
    new_integrity,
)
from secsock.core.esp import (
    NEXT_HEADER_NONE,
    EspContext,
    PadMode,
    open_untrusted,
    peek_untrusted,
    seal,
)
from secsock.errors import DropReason, IntegrityError, MalformedPacket
from tests.esp.esp_helpers import make_context, valid_combinations

COMBOS = valid_combinations()
COMBO_IDS = [f"{e}+{a}" for e, a in COMBOS]
SIZES = [0, 1, 2, 3, 13, 64, 255, 1400]


def _ctx(enc: str, auth: str | None, seed: int = 0) -> EspContext:
    return make_context(
        encryption_algorithm(enc), None if auth is None else auth_algorithm(auth), seed=seed
    )[0]


def _iv(ctx: EspContext, rnd: random.Random) -> bytes | None:
    return rnd.randbytes(ctx.iv_len) if ctx.needs_random_iv else None


def test_every_registered_pair_is_covered() -> None:
    encs = {e for e, _ in COMBOS}
    auths = {a for _, a in COMBOS}
    assert encs == set(ENCRYPTION_ALGORITHMS)
    assert auths == {None, *(a for a in AUTH_ALGORITHMS if a != "aes-gmac")}


@pytest.mark.parametrize(("enc", "auth"), COMBOS, ids=COMBO_IDS)
@pytest.mark.parametrize("esn", [False, True])
def test_round_trip_all_sizes(enc: str, auth: str | None, esn: bool) -> None:
    ctx = _ctx(enc, auth)
    rnd = random.Random(7)
    seq = (5 << 32) + 77 if esn else 77
    for size in SIZES:
        payload = rnd.randbytes(size)
        packet = seal(ctx, spi=0x1234, seq=seq, payload=payload, next_header=17, esn=esn,
                      iv=_iv(ctx, rnd))
        assert len(packet) == ctx.sealed_length(size)
        assert peek_untrusted(packet) == (0x1234, 77)
        encrypted = len(packet) - 8 - ctx.iv_len - ctx.icv_len
        assert encrypted % ctx.align == 0
        assert ctx.pad_length(size) < ctx.align
        opened = open_untrusted(ctx, packet, seq_hi=seq >> 32, esn=esn)
        assert opened.payload == payload
        assert opened.next_header == 17
        assert opened.pad_len == ctx.pad_length(size)


@pytest.mark.parametrize(("enc", "auth"), [c for c in COMBOS if c[1] not in (None, "null")
                                           or encryption_algorithm(c[0]).aead], ids=str)
def test_esn_high_bits_are_authenticated(enc: str, auth: str | None) -> None:
    ctx = _ctx(enc, auth)
    rnd = random.Random(1)
    seq = (0x12345678 << 32) | 9
    packet = seal(ctx, spi=1, seq=seq, payload=b"data", next_header=6, esn=True,
                  iv=_iv(ctx, rnd))
    assert open_untrusted(ctx, packet, seq_hi=0x12345678, esn=True).payload == b"data"
    with pytest.raises(IntegrityError, match=f"SPI 0x00000001 seq {(0x12345679 << 32) | 9}$"):
        open_untrusted(ctx, packet, seq_hi=0x12345679, esn=True)
    with pytest.raises(IntegrityError):
        open_untrusted(ctx, packet)  # without ESN the high bits are not in the ICV input
    # a non-ESN packet opens only as non-ESN: the ESN AAD/ICV input differs even for seq_hi 0
    plain = seal(ctx, spi=1, seq=9, payload=b"data", next_header=6, iv=_iv(ctx, rnd))
    assert open_untrusted(ctx, plain).payload == b"data"
    with pytest.raises(IntegrityError):
        open_untrusted(ctx, plain, seq_hi=0, esn=True)


def test_aead_esn_aad_is_spi_seqhi_seqlo() -> None:
    enc = encryption_algorithm("aes-gcm-16")
    ctx, key, _ = make_context(enc, None)
    seq = (3 << 32) | 4
    packet = seal(ctx, spi=0xAABBCCDD, seq=seq, payload=b"x", next_header=17, esn=True)
    iv = packet[8:16]
    assert iv == struct.pack("!Q", seq)  # the IV is the 64-bit sequence number
    aad = struct.pack("!III", 0xAABBCCDD, 3, 4)
    # payload 1 byte + 2 trailer bytes = 3 -> 1 pad byte: x | 01 | 01 | 11
    expected = AESGCM(key[:-4]).encrypt(key[-4:] + iv, b"x\x01\x01\x11", aad)
    assert packet[16:] == expected


@pytest.mark.parametrize("name", ["aes-gcm-8", "aes-gcm-12"])
def test_short_gcm_icv_is_the_truncated_full_tag(name: str) -> None:
    enc = encryption_algorithm(name)
    ctx, key, _ = make_context(enc, None, enc_key_len=28)
    payload = bytes(range(50))
    packet = seal(ctx, spi=7, seq=99, payload=payload, next_header=17)
    iv = packet[8:16]
    full = AESGCM(key[:-4]).encrypt(key[-4:] + iv, payload + b"\x00\x11",  # 52 bytes: no pad
                                    packet[:8])
    assert packet[16:] == full[:-16] + full[-16:][: enc.icv_len]
    assert open_untrusted(ctx, packet).payload == payload
    bad = bytearray(packet)
    bad[-1] ^= 0x80
    with pytest.raises(IntegrityError):
        open_untrusted(ctx, bytes(bad))


@pytest.mark.parametrize("enc", ["aes-gcm-16", "chacha20-poly1305", "aes-gmac", "aes-ctr"])
def test_sequence_derived_iv(enc: str) -> None:
    auth = None if encryption_algorithm(enc).aead else "hmac-sha2-256"
    ctx = _ctx(enc, auth)
    a = seal(ctx, spi=1, seq=1, payload=b"abc", next_header=17)
    b = seal(ctx, spi=1, seq=2, payload=b"abc", next_header=17)
    assert a[8:16] == (1).to_bytes(8, "big")
    assert b[8:16] == (2).to_bytes(8, "big")
    assert not ctx.needs_random_iv
    explicit = seal(ctx, spi=1, seq=2, payload=b"abc", next_header=17, iv=b"\xee" * 8)
    assert explicit[8:16] == b"\xee" * 8
    assert open_untrusted(ctx, explicit).payload == b"abc"
    with pytest.raises(ValueError, match="8-byte IV, got 7"):
        seal(ctx, spi=1, seq=2, payload=b"abc", next_header=17, iv=b"\xee" * 7)


@pytest.mark.parametrize("enc", ["aes-cbc", "3des-cbc"])
def test_cbc_needs_a_caller_iv(enc: str) -> None:
    ctx = _ctx(enc, "hmac-sha1")
    assert ctx.needs_random_iv
    with pytest.raises(ValueError, match="caller-supplied random"):
        seal(ctx, spi=1, seq=1, payload=b"abc", next_header=17)
    with pytest.raises(ValueError, match="IV, got 4 bytes"):
        seal(ctx, spi=1, seq=1, payload=b"abc", next_header=17, iv=b"1234")


def test_null_encryption_takes_no_iv_and_sends_in_clear() -> None:
    ctx = _ctx("null", "hmac-sha2-256")
    packet = seal(ctx, spi=5, seq=6, payload=b"clear tex", next_header=17)
    assert packet[8:20] == b"clear tex\x01\x01\x11"
    with pytest.raises(ValueError, match="no IV"):
        seal(ctx, spi=5, seq=6, payload=b"x", next_header=17, iv=b"12345678")


def test_argument_ranges() -> None:
    ctx = _ctx("aes-gcm-16", None)
    with pytest.raises(ValueError, match="SPI"):
        seal(ctx, spi=1 << 32, seq=1, payload=b"", next_header=17)
    with pytest.raises(ValueError, match="32-bit"):
        seal(ctx, spi=1, seq=1 << 32, payload=b"", next_header=17)
    with pytest.raises(ValueError, match="64-bit"):
        seal(ctx, spi=1, seq=1 << 64, payload=b"", next_header=17, esn=True)
    for nh in (-1, 256):
        with pytest.raises(ValueError, match="next header"):
            seal(ctx, spi=1, seq=1, payload=b"", next_header=nh)
        with pytest.raises(ValueError, match="next header"):
            seal(ctx, spi=1, seq=1, payload=b"", next_header=nh, padding=PadMode.ZERO)
    with pytest.raises(ValueError, match="pad_to"):
        seal(ctx, spi=1, seq=1, payload=b"", next_header=17, pad_to=-1)
    with pytest.raises(ValueError, match="seq_hi"):
        open_untrusted(ctx, seal(ctx, spi=1, seq=1, payload=b"", next_header=17),
                       seq_hi=1 << 32, esn=True)
    # bytes-like payloads are accepted
    p = seal(ctx, spi=1, seq=1, payload=memoryview(b"abc"), next_header=17)
    assert open_untrusted(ctx, bytearray(p)).payload == b"abc"


# --- padding -----------------------------------------------------------------------------------

def test_padding_modes_on_the_wire() -> None:
    ctx = _ctx("null", "hmac-sha2-256")  # null encryption: the padding is visible
    seq_packet = seal(ctx, spi=1, seq=1, payload=b"a", next_header=17)
    assert seq_packet[8:12] == b"a\x01\x01\x11"
    zero = seal(ctx, spi=1, seq=1, payload=b"abcde", next_header=17, padding=PadMode.ZERO)
    assert zero[8:16] == b"abcde\x00\x01\x11"
    rnd = seal(ctx, spi=1, seq=1, payload=b"abcdefg", next_header=17, padding=PadMode.RANDOM,
               random_pad=b"\xa5\xb6\xc7\xd8")
    assert rnd[8:20] == b"abcdefg\xa5\xb6\xc7\x03\x11"
    with pytest.raises(ValueError, match="at least 3 random_pad bytes, got 2 bytes"):
        seal(ctx, spi=1, seq=1, payload=b"abcdefg", next_header=17, padding=PadMode.RANDOM,
             random_pad=b"\x01\x02")
    with pytest.raises(ValueError, match="got none"):
        seal(ctx, spi=1, seq=1, payload=b"ab", next_header=17, padding=PadMode.RANDOM)


@pytest.mark.parametrize("mode", [PadMode.ZERO, PadMode.RANDOM])
def test_check_padding_rejects_non_sequence_padding(mode: PadMode) -> None:
    ctx = _ctx("aes-cbc", "hmac-sha2-256")
    packet = seal(ctx, spi=1, seq=1, payload=b"0123456789", next_header=17, iv=bytes(16),
                  padding=mode, random_pad=b"\xff" * 16)
    with pytest.raises(MalformedPacket) as info:
        open_untrusted(ctx, packet)
    assert info.value.reason is DropReason.BAD_PADDING
    opened = open_untrusted(ctx, packet, check_padding=False)
    assert opened.payload == b"0123456789"
    assert opened.pad_len == 4


def test_pad_length_larger_than_the_payload_is_bad_padding() -> None:
    enc, auth = encryption_algorithm("null"), auth_algorithm("hmac-sha2-256")
    key = bytes(32)
    ctx = EspContext.create(enc=enc, enc_key=b"", auth=auth, auth_key=key)
    body = struct.pack("!II", 1, 1) + b"\x01\x02" + bytes((200, 17))
    packet = body + new_integrity(auth, key).compute(body)
    with pytest.raises(MalformedPacket) as info:
        open_untrusted(ctx, packet)
    assert info.value.reason is DropReason.BAD_PADDING


@pytest.mark.parametrize(("enc", "auth"), [("aes-gcm-16", None), ("aes-cbc", "hmac-sha1"),
                                           ("null", "hmac-sha2-256"), ("aes-ctr", "aes-xcbc-mac")])
def test_pad_to_adds_tfc_padding_within_the_255_byte_limit(enc: str, auth: str | None) -> None:
    ctx = _ctx(enc, auth)
    rnd = random.Random(3)
    for size, pad_to in [(10, 100), (0, 300), (100, 50), (1, 258), (1000, 1400)]:
        pad = ctx.pad_length(size, pad_to)
        assert pad <= 255
        assert (size + pad + 2) % ctx.align == 0
        minimum = ctx.pad_length(size)
        if pad_to > size + 2 + minimum:
            # as close to pad_to as the alignment and the 255 limit allow
            assert size + pad + 2 >= min(pad_to, size + 2 + 255 - ctx.align + 1)
        else:
            assert pad == minimum
        packet = seal(ctx, spi=1, seq=1, payload=bytes(size), next_header=17, pad_to=pad_to,
                      iv=_iv(ctx, rnd))
        assert len(packet) == ctx.sealed_length(size, pad_to)
        opened = open_untrusted(ctx, packet)
        assert (opened.payload, opened.pad_len) == (bytes(size), pad)


def test_dummy_packet_next_header_59_is_returned() -> None:
    ctx = _ctx("chacha20-poly1305", None)
    packet = seal(ctx, spi=1, seq=1, payload=b"", next_header=NEXT_HEADER_NONE, pad_to=64)
    opened = open_untrusted(ctx, packet)
    assert opened.next_header == 59
    assert opened.payload == b""


# --- malformed input ---------------------------------------------------------------------------

def test_peek_needs_eight_bytes() -> None:
    for n in range(8):
        with pytest.raises(MalformedPacket, match=f"got {n}"):
            peek_untrusted(bytes(n))
    assert peek_untrusted(b"\x00\x00\x01\x00\xff\xff\xff\xff") == (256, 0xFFFFFFFF)


@pytest.mark.parametrize(("enc", "auth"), COMBOS, ids=COMBO_IDS)
def test_short_packets_are_malformed(enc: str, auth: str | None) -> None:
    ctx = _ctx(enc, auth)
    minimum = 8 + ctx.iv_len + ctx.icv_len + 2
    for n in range(minimum):
        with pytest.raises(MalformedPacket, match="shorter than"):
            open_untrusted(ctx, bytes(n))


def test_cbc_ciphertext_must_be_whole_blocks() -> None:
    ctx = _ctx("aes-cbc", None)
    packet = seal(ctx, spi=1, seq=1, payload=b"x" * 20, next_header=17, iv=bytes(16))
    with pytest.raises(MalformedPacket, match="multiple of the 16-byte block"):
        open_untrusted(ctx, packet[:-1])


@pytest.mark.parametrize("enc", ["aes-gcm-16", "chacha20-poly1305"])
@pytest.mark.parametrize("esn", [False, True])
def test_fast_and_general_paths_agree(enc: str, esn: bool) -> None:
    """seal/open have an AEAD fast path; explicit arguments take the general one."""
    ctx = _ctx(enc, None)
    rnd = random.Random(11)
    for size in (0, 1, 2, 3, 4, 61, 1400):
        payload = rnd.randbytes(size)
        seq = rnd.randrange(1, 2**64 if esn else 2**32)
        fast = seal(ctx, spi=77, seq=seq, payload=payload, next_header=6, esn=esn)
        general = seal(ctx, spi=77, seq=seq, payload=memoryview(payload), next_header=6,
                       esn=esn, iv=seq.to_bytes(8, "big"))
        assert fast == general
        a = open_untrusted(ctx, fast, seq_hi=seq >> 32, esn=esn)
        b = open_untrusted(ctx, memoryview(fast), seq_hi=seq >> 32, esn=esn,
                           check_padding=False)
        assert a == b
        assert a.payload == payload
        assert type(a.payload) is bytes
        assert type(a.next_header) is int
