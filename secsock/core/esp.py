"""RFC 4303 ESP, sans-IO: ``seal()`` / ``peek_untrusted()`` / ``open_untrusted()``.

One :class:`EspContext` per SA holds the prepared cipher and integrity objects; the per-packet
functions take it plus the header values. The codec never draws randomness and never reads a
clock: a CBC IV or random padding is passed in by the caller, AEAD and CTR IVs are derived from
the 64-bit sequence number (unique per key, because a sequence number never repeats under a key).

Packet layout (transport mode, what ``seal`` returns and ``open_untrusted`` reads)::

    SPI(4) | Seq low 32 bits(4) | IV | ciphertext(payload | padding | pad len | next hdr) | ICV

Non-AEAD: encrypt, then ICV over ``SPI..ciphertext`` (+ the ESN high 32 bits, not sent);
the receiver verifies the ICV before decrypting. AEAD (RFC 4106/7634): AAD is ``SPI | Seq``
or, with ESN, ``SPI | Seq high | Seq low``; nonce ``salt | IV``. AES-GMAC (RFC 4543): the
payload is sent in clear and authenticated as AAD ``SPI | Seq[ESN] | IV | plaintext``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import IntEnum
from typing import Final, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from secsock.core.algorithms import (
    AuthAlgorithm,
    AuthKind,
    BytesLike,
    CipherMode,
    EncryptionAlgorithm,
    Integrity,
    _triple_des,
    check_combination,
    check_key,
    new_integrity,
)
from secsock.errors import AlgorithmError, DropReason, IntegrityError, MalformedPacket

__all__ = (
    "ESP_HEADER_LEN",
    "NEXT_HEADER_NONE",
    "EspContext",
    "EspPayload",
    "PadMode",
    "open_untrusted",
    "peek_untrusted",
    "seal",
)

#: SPI + sequence number.
ESP_HEADER_LEN: Final = 8
#: Next Header 59, "no next header": a dummy (TFC) packet the receiver discards (RFC 4303 §2.6).
NEXT_HEADER_NONE: Final = 59

_MAX32: Final = 0xFFFFFFFF
_MAX64: Final = 0xFFFFFFFFFFFFFFFF

_SPI_SEQ: Final = struct.Struct("!II")
_AAD_ESN: Final = struct.Struct("!III")
_U32: Final = struct.Struct("!I")
_U64: Final = struct.Struct("!Q")
_HDR_IV: Final = struct.Struct("!IIQ")  # SPI | seq low | 64-bit sequence number as the IV
_NONCE: Final = struct.Struct("!4sQ")  # salt | 64-bit sequence number
_CTR_ONE: Final = b"\x00\x00\x00\x01"
# Bound methods as module constants: one global lookup instead of a global plus an attribute.
_hdr_iv_pack: Final = _HDR_IV.pack
_nonce_pack: Final = _NONCE.pack
_aad_esn_pack: Final = _AAD_ESN.pack

#: 1, 2, 3, ... 255: the RFC 4303 §2.4 default padding.
_SEQ_PAD: Final = bytes(range(1, 256))
# Precomputed SEQ-padding trailers (padding | pad length | next header) for pads below 16.
_SEQ_TRAILERS: Final = tuple(
    tuple(_SEQ_PAD[:pad] + bytes((pad, nh)) for nh in range(256)) for pad in range(16)
)
# The same for 4-byte alignment, as dicts so that a negative next header misses too.
_SEQ_TRAILERS_4: Final = tuple(dict(enumerate(_SEQ_TRAILERS[pad])) for pad in range(4))
# Indexed by payload length & 3 instead of by pad length: saves the -(n + 2) arithmetic.
_TRAILERS_BY_LEN: Final = tuple(_SEQ_TRAILERS_4[-(n + 2) & 3] for n in range(4))
# What a correct SEQ-padded plaintext ends with before its next-header byte, by pad length.
_PAD_SUFFIX: Final = tuple(_SEQ_PAD[:pad] + bytes((pad,)) for pad in range(256))
_new_payload: Final = tuple.__new__


class PadMode(IntEnum):
    """ESP padding content; the values are KAME's SADB_X_EXT_P* SA flags."""

    SEQ = 0x0000  # 1, 2, 3, ... (RFC 4303 default, setkey -f seq-pad)
    RANDOM = 0x0100  # caller-supplied random bytes (setkey -f random-pad)
    ZERO = 0x0200  # zero bytes (setkey -f zero-pad)


_PAD_SEQ: Final = PadMode.SEQ  # a module constant: enum attribute access is slow in 3.11


class EspPayload(NamedTuple):
    """What ``open_untrusted`` returns: the decrypted upper-layer payload and its trailer.

    A NamedTuple (immutable, cheap to build per packet). ``payload`` includes any TFC padding
    the sender placed after the upper-layer datagram; ``next_header`` 59 marks a dummy packet.
    """

    next_header: int
    payload: bytes
    pad_len: int


# codec paths
_K_AEAD: Final = 0  # AESGCM (16-byte tag) / ChaCha20Poly1305 objects
_K_GCM_SHORT: Final = 1  # AES-GCM with an 8/12-byte ICV
_K_GMAC: Final = 2
_K_CBC: Final = 3
_K_CTR: Final = 4
_K_NULL: Final = 5


class EspContext:
    """The prepared per-SA ESP state: algorithms, cipher objects and sizes. Built once per SA.

    Keys are held only inside the ``cryptography`` objects and are never shown; ``repr`` names
    the algorithms only. Immutable after construction and safe to share between threads.
    """

    __slots__ = (
        "_aead",
        "_align",
        "_auth",
        "_block",
        "_cipher",
        "_decrypt",
        "_enc",
        "_encrypt",
        "_icv_len",
        "_integrity",
        "_iv_len",
        "_kind",
        "_min_len",
        "_salt",
    )

    _enc: EncryptionAlgorithm
    _auth: AuthAlgorithm | None
    _kind: int
    _min_len: int
    _iv_len: int
    _icv_len: int
    _align: int
    _block: int
    _salt: bytes
    _aead: AESGCM | ChaCha20Poly1305 | None
    # _aead's bound encrypt/decrypt when _kind is _K_AEAD (the fast paths), else None
    _encrypt: Callable[[bytes, BytesLike, bytes], bytes] | None
    _decrypt: Callable[[bytes, BytesLike, BytesLike], bytes] | None
    _cipher: BlockCipherAlgorithm | None
    _integrity: Integrity | None

    def __init__(self) -> None:
        raise TypeError("use EspContext.create(enc=..., enc_key=..., auth=..., auth_key=...)")

    @classmethod
    def create(
        cls,
        *,
        enc: EncryptionAlgorithm,
        enc_key: bytes,
        auth: AuthAlgorithm | None,
        auth_key: bytes | None,
    ) -> EspContext:
        """Validate the pair and the key lengths and prepare the cipher objects.

        Raises AlgorithmError for a wrong key length or a forbidden combination
        (see :func:`secsock.core.algorithms.check_combination`).
        """
        check_combination(enc, auth)
        check_key(enc, enc_key)
        self = object.__new__(cls)
        self._enc = enc
        self._auth = auth
        self._iv_len = enc.iv_len
        self._align = enc.align
        self._block = enc.block_size
        self._aead = None
        self._cipher = None
        self._integrity = None
        self._salt = b""
        key = bytes(enc_key)
        if enc.salt_len:
            key, self._salt = key[: -enc.salt_len], key[-enc.salt_len :]
        mode = enc.mode
        if mode is CipherMode.GCM:
            if enc.icv_len == 16:
                self._kind = _K_AEAD
                self._aead = AESGCM(key)
            else:
                self._kind = _K_GCM_SHORT
                self._cipher = algorithms.AES(key)
        elif mode is CipherMode.CHACHA20_POLY1305:
            self._kind = _K_AEAD
            self._aead = ChaCha20Poly1305(key)
        elif mode is CipherMode.GMAC:
            self._kind = _K_GMAC
            self._aead = AESGCM(key)
        elif mode is CipherMode.CBC:
            self._kind = _K_CBC
            self._cipher = algorithms.AES(key) if enc.block_size == 16 else _triple_des(key)
        elif mode is CipherMode.CTR:
            self._kind = _K_CTR
            self._cipher = algorithms.AES(key)
        else:
            self._kind = _K_NULL
        icv_len = enc.icv_len
        if auth is not None:
            if auth_key is None:
                auth_key = b""
            integrity = new_integrity(auth, auth_key)
            if auth.kind is not AuthKind.NULL:
                self._integrity = integrity
            icv_len = integrity.icv_len
        elif auth_key:
            raise AlgorithmError(
                f"expected no integrity key without an integrity algorithm, got {len(auth_key)} "
                "bytes"
            )
        self._icv_len = icv_len
        self._min_len = ESP_HEADER_LEN + enc.iv_len + icv_len + 2
        fast = self._aead if self._kind == _K_AEAD else None
        self._encrypt = fast.encrypt if fast is not None else None
        self._decrypt = fast.decrypt if fast is not None else None
        return self

    @property
    def enc(self) -> EncryptionAlgorithm:
        """The encryption (or combined-mode) algorithm."""
        return self._enc

    @property
    def auth(self) -> AuthAlgorithm | None:
        """The separate integrity algorithm, or None (AEAD, or confidentiality only)."""
        return self._auth

    @property
    def iv_len(self) -> int:
        """Bytes of IV on the wire after the sequence number."""
        return self._iv_len

    @property
    def icv_len(self) -> int:
        """Bytes of ICV at the end of the packet (AEAD tag or truncated MAC; 0 if none)."""
        return self._icv_len

    @property
    def align(self) -> int:
        """Alignment of ``payload | padding | pad length | next header``: max(block, 4)."""
        return self._align

    @property
    def needs_random_iv(self) -> bool:
        """True for CBC: ``seal`` needs a fresh unpredictable IV from the caller's RNG."""
        return self._kind == _K_CBC

    def pad_length(self, payload_len: int, pad_to: int = 0) -> int:
        """How many padding bytes ``seal`` uses for a payload of ``payload_len`` bytes.

        The minimum to reach the alignment, or with ``pad_to`` enough to make the ESP plaintext
        (payload, padding, pad length, next header) at least ``pad_to`` bytes long, as far as
        the 255-byte limit of the Pad Length field allows while keeping the alignment.
        """
        if payload_len < 0 or pad_to < 0:
            raise ValueError(
                f"expected non-negative lengths, got payload_len={payload_len}, pad_to={pad_to}"
            )
        return _pad_len(payload_len, self._align, pad_to)

    def sealed_length(self, payload_len: int, pad_to: int = 0) -> int:
        """The length of the packet ``seal`` returns for a payload of ``payload_len`` bytes."""
        pad = self.pad_length(payload_len, pad_to)
        return ESP_HEADER_LEN + self._iv_len + payload_len + pad + 2 + self._icv_len

    def __repr__(self) -> str:
        auth = self._auth.name if self._auth is not None else None
        return f"EspContext(enc={self._enc.name!r}, auth={auth!r})"


def _pad_len(n: int, align: int, pad_to: int) -> int:
    pad = -(n + 2) % align
    if pad_to > n + 2 + pad:
        want = pad_to - n - 2
        want += -(n + 2 + want) % align
        most = 255 - (n + 2 + 255) % align
        pad = min(want, most)
    return pad


def seal(
    ctx: EspContext,
    *,
    spi: int,
    seq: int,
    payload: BytesLike,
    next_header: int,
    esn: bool = False,
    iv: bytes | None = None,
    padding: PadMode = PadMode.SEQ,
    random_pad: bytes | None = None,
    pad_to: int = 0,
) -> bytes:
    """Build one ESP packet: ``SPI | seq low | IV | ciphertext | ICV``.

    ``seq`` is the full sequence number (64-bit with ``esn``, else < 2^32); with ``esn`` its
    high 32 bits enter the AAD (AEAD) or the ICV input (non-AEAD) but are not sent. ``iv`` is
    required for CBC (random, from the caller's RNG); for AEAD and CTR it defaults to the 64-bit
    sequence number (big-endian) and may be given explicitly to reproduce published vectors.
    ``padding`` selects the pad bytes; with PadMode.RANDOM ``random_pad`` must hold at least
    ``ctx.pad_length(len(payload), pad_to)`` bytes. ``pad_to`` asks for extra (TFC) padding,
    see :meth:`EspContext.pad_length`.

    Raises ValueError on caller errors (out-of-range numbers, a missing or wrong-sized IV).
    """
    # Fast path: AEAD with a sequence-derived IV and default padding (the engine's usual call).
    # Anything unusual, including every argument error, takes the general path below.
    encrypt = ctx._encrypt
    if encrypt is not None and iv is None and padding is _PAD_SEQ and not pad_to:
        try:
            if esn:
                header = _hdr_iv_pack(spi, seq & _MAX32, seq)
                aad = _aad_esn_pack(spi, seq >> 32, seq & _MAX32)
            else:
                # "!IIQ": a seq outside 0..2^32-1 fails the 32-bit field (struct.error)
                header = _hdr_iv_pack(spi, seq, seq)
                aad = header[:8]
            # a memoryview payload raises TypeError here and takes the general path
            trailer = _TRAILERS_BY_LEN[len(payload) & 3][next_header]
            plaintext = payload + trailer  # type: ignore[operator]
        except (struct.error, KeyError, TypeError):
            pass
        else:
            return header + encrypt(_nonce_pack(ctx._salt, seq), plaintext, aad)
    return _seal_general(
        ctx, spi, seq, payload, next_header, esn, iv, padding, random_pad, pad_to
    )


def _seal_general(
    ctx: EspContext,
    spi: int,
    seq: int,
    payload: BytesLike,
    next_header: int,
    esn: bool,
    iv: bytes | None,
    padding: PadMode,
    random_pad: bytes | None,
    pad_to: int,
) -> bytes:
    if not 0 <= spi <= _MAX32:
        raise ValueError(f"SPI must be a 32-bit unsigned number, got {spi}")
    if esn:
        if not 0 <= seq <= _MAX64:
            raise ValueError(f"ESN sequence number must be a 64-bit unsigned number, got {seq}")
    elif not 0 <= seq <= _MAX32:
        raise ValueError(
            f"sequence number must be a 32-bit unsigned number without ESN, got {seq}"
        )
    if type(payload) is not bytes:
        payload = bytes(payload)
    n = len(payload)
    if pad_to:
        if pad_to < 0:
            raise ValueError(f"pad_to must be >= 0, got {pad_to}")
        pad = _pad_len(n, ctx._align, pad_to)
    else:
        pad = -(n + 2) % ctx._align
    if padding == PadMode.SEQ and pad < 16:
        try:
            trailer = _SEQ_TRAILERS[pad][next_header]
        except (IndexError, TypeError):
            raise ValueError(f"next header must be 0..255, got {next_header!r}") from None
        if next_header < 0:
            raise ValueError(f"next header must be 0..255, got {next_header!r}")
    else:
        if not 0 <= next_header <= 255:
            raise ValueError(f"next header must be 0..255, got {next_header!r}")
        trailer = _pad_bytes(padding, pad, random_pad) + bytes((pad, next_header))
    header = _SPI_SEQ.pack(spi, seq & _MAX32)
    kind = ctx._kind
    iv_len = ctx._iv_len

    if kind <= _K_GMAC or kind == _K_CTR:  # sequence-derived IV
        if iv is None:
            iv = _U64.pack(seq)
        elif len(iv) != iv_len:
            raise ValueError(f"{ctx._enc.name} takes an {iv_len}-byte IV, got {len(iv)} bytes")
    elif kind == _K_CBC:
        if iv is None:
            raise ValueError(
                f"{ctx._enc.name} needs a caller-supplied random {iv_len}-byte IV "
                "(pass iv=rng(ctx.iv_len))"
            )
        if len(iv) != iv_len:
            raise ValueError(f"{ctx._enc.name} takes a {iv_len}-byte IV, got {len(iv)} bytes")
    else:
        if iv:
            raise ValueError(f"null encryption takes no IV, got {len(iv)} bytes")
        iv = b""

    if kind == _K_AEAD:
        aad = _AAD_ESN.pack(spi, seq >> 32, seq & _MAX32) if esn else header
        aead = ctx._aead
        assert aead is not None
        return header + iv + aead.encrypt(ctx._salt + iv, payload + trailer, aad)
    if kind == _K_GMAC:
        aad = _AAD_ESN.pack(spi, seq >> 32, seq & _MAX32) if esn else header
        aead = ctx._aead
        assert aead is not None
        body = header + iv + payload + trailer
        return body + aead.encrypt(ctx._salt + iv, b"", aad + body[8:])
    if kind == _K_GCM_SHORT:
        aad = _AAD_ESN.pack(spi, seq >> 32, seq & _MAX32) if esn else header
        assert ctx._cipher is not None
        gcm = Cipher(ctx._cipher, modes.GCM(ctx._salt + iv)).encryptor()
        gcm.authenticate_additional_data(aad)
        ct = gcm.update(payload + trailer)
        gcm.finalize()
        return header + iv + ct + gcm.tag[: ctx._icv_len]

    assert kind in (_K_CBC, _K_CTR, _K_NULL)
    plaintext = payload + trailer
    if kind == _K_NULL:
        body = header + plaintext
    else:
        assert ctx._cipher is not None
        if kind == _K_CBC:
            encryptor = Cipher(ctx._cipher, modes.CBC(iv)).encryptor()
        else:
            encryptor = Cipher(ctx._cipher, modes.CTR(ctx._salt + iv + _CTR_ONE)).encryptor()
        body = header + iv + encryptor.update(plaintext)
    integrity = ctx._integrity
    if integrity is None:
        return body
    if esn:
        return body + integrity.compute(body, _U32.pack(seq >> 32))
    return body + integrity.compute(body)


def _pad_bytes(padding: PadMode, pad: int, random_pad: bytes | None) -> bytes:
    if padding == PadMode.SEQ:
        return _SEQ_PAD[:pad]
    if padding == PadMode.ZERO:
        return bytes(pad)
    if padding == PadMode.RANDOM:
        if random_pad is None or len(random_pad) < pad:
            have = "none" if random_pad is None else f"{len(random_pad)} bytes"
            raise ValueError(f"PadMode.RANDOM needs at least {pad} random_pad bytes, got {have}")
        return bytes(random_pad[:pad])
    raise ValueError(f"expected a PadMode, got {padding!r}")


def peek_untrusted(packet: BytesLike) -> tuple[int, int]:
    """The (SPI, low 32 bits of the sequence number) of an ESP packet, before any crypto."""
    if len(packet) < ESP_HEADER_LEN:
        raise MalformedPacket(
            f"ESP packet needs at least {ESP_HEADER_LEN} bytes (SPI, sequence number), "
            f"got {len(packet)}"
        )
    spi, seq_lo = _SPI_SEQ.unpack_from(packet)
    return spi, seq_lo


def _auth_failed(packet: BytesLike, seq_hi: int) -> IntegrityError:
    spi, seq_lo = _SPI_SEQ.unpack_from(packet)
    return IntegrityError(
        f"ESP ICV check failed for SPI 0x{spi:08x} seq {(seq_hi << 32) | seq_lo}"
    )


def open_untrusted(
    ctx: EspContext,
    packet: BytesLike,
    *,
    seq_hi: int = 0,
    esn: bool = False,
    check_padding: bool = True,
) -> EspPayload:
    """Verify and decrypt one ESP packet (as ``seal`` builds it).

    ``seq_hi`` is the inferred high half of the 64-bit sequence number (from
    :meth:`secsock.core.replay.ReplayWindow.check`), used only with ``esn``. The ICV is checked
    before decryption (non-AEAD) and in constant time. With ``check_padding`` the padding must
    be RFC 4303's 1, 2, 3, ... (SA with PadMode.SEQ); a mismatch is
    ``MalformedPacket(reason=DropReason.BAD_PADDING)``.

    For any packet bytes this raises only MalformedPacket or IntegrityError.
    """
    n = len(packet)
    decrypt = ctx._decrypt
    if decrypt is not None and n >= ctx._min_len:
        # Fast path: the AEADs with a 16-byte tag (AES-GCM-16, ChaCha20-Poly1305); the general
        # path below handles every other transform and short packets. Any bytes-like packet
        # works here: its slices are only read by the AEAD.
        if esn:
            if not 0 <= seq_hi <= _MAX32:
                raise ValueError(f"seq_hi must be a 32-bit unsigned number, got {seq_hi}")
            spi, seq_lo = _SPI_SEQ.unpack_from(packet)
            aad: BytesLike = _aad_esn_pack(spi, seq_hi, seq_lo)
        else:
            aad = packet[:8]
        try:
            plaintext = decrypt(ctx._salt + packet[8:16], packet[16:], aad)
        except InvalidTag:
            raise _auth_failed(packet, seq_hi if esn else 0) from None
        pad_len = plaintext[-2]
        cut = -2 - pad_len
        # The suffix comparison also fails when pad_len overruns the plaintext (short slice).
        if check_padding:
            if plaintext[cut:-1] != _PAD_SUFFIX[pad_len]:
                raise _bad_padding(plaintext, pad_len)
        elif pad_len + 2 > len(plaintext):
            raise _bad_padding(plaintext, pad_len)
        return _new_payload(EspPayload, (plaintext[-1], plaintext[:cut], pad_len))
    if type(packet) is not bytes:
        packet = bytes(packet)
    iv_len = ctx._iv_len
    icv_len = ctx._icv_len
    start = 8 + iv_len
    end = n - icv_len
    if end - start < 2:
        raise MalformedPacket(
            f"ESP packet of {n} bytes is shorter than the {start + icv_len + 2}-byte minimum "
            f"for {ctx._enc.name}"
        )
    kind = ctx._kind
    if esn and not 0 <= seq_hi <= _MAX32:
        raise ValueError(f"seq_hi must be a 32-bit unsigned number, got {seq_hi}")

    # _K_AEAD never gets here: the fast path above takes every packet long enough for it.
    if kind == _K_GMAC:
        aad = packet[:4] + _U32.pack(seq_hi) + packet[4:end] if esn else packet[:end]
        aead = ctx._aead
        assert aead is not None
        try:
            aead.decrypt(ctx._salt + packet[8:16], packet[end:], aad)
        except InvalidTag:
            raise _auth_failed(packet, seq_hi if esn else 0) from None
        plaintext = packet[16:end]
    elif kind == _K_GCM_SHORT:
        aad = packet[:4] + _U32.pack(seq_hi) + packet[4:8] if esn else packet[:8]
        assert ctx._cipher is not None
        # cryptography's GCM decryptor checks a truncated tag (min_tag_length) in finalize().
        gcm = Cipher(
            ctx._cipher, modes.GCM(ctx._salt + packet[8:16], packet[end:], min_tag_length=icv_len)
        ).decryptor()
        gcm.authenticate_additional_data(aad)
        plaintext = gcm.update(packet[16:end])
        try:
            gcm.finalize()
        except InvalidTag:
            raise _auth_failed(packet, seq_hi if esn else 0) from None
    else:
        integrity = ctx._integrity
        if integrity is not None:
            view = memoryview(packet)
            if esn:
                ok = integrity.verify(view[end:], view[:end], _U32.pack(seq_hi))
            else:
                ok = integrity.verify(view[end:], view[:end])
            if not ok:
                raise _auth_failed(packet, seq_hi if esn else 0)
        if kind == _K_NULL:
            plaintext = packet[8:end]
        else:
            assert ctx._cipher is not None
            if kind == _K_CBC:
                if (end - start) % ctx._block:
                    raise MalformedPacket(
                        f"ESP {ctx._enc.name} ciphertext of {end - start} bytes is not a "
                        f"multiple of the {ctx._block}-byte block"
                    )
                decryptor = Cipher(ctx._cipher, modes.CBC(packet[8:start])).decryptor()
            else:
                ctr_block = ctx._salt + packet[8:start] + _CTR_ONE
                decryptor = Cipher(ctx._cipher, modes.CTR(ctr_block)).decryptor()
            plaintext = decryptor.update(packet[start:end])

    pad_len = plaintext[-2]
    cut = -2 - pad_len
    if check_padding:
        if plaintext[cut:-1] != _PAD_SUFFIX[pad_len]:
            raise _bad_padding(plaintext, pad_len)
    elif pad_len + 2 > len(plaintext):
        raise _bad_padding(plaintext, pad_len)
    return _new_payload(EspPayload, (plaintext[-1], plaintext[:cut], pad_len))


def _bad_padding(plaintext: bytes, pad_len: int) -> MalformedPacket:
    if pad_len + 2 > len(plaintext):
        return MalformedPacket(
            f"ESP pad length {pad_len} exceeds the {len(plaintext) - 2}-byte decrypted payload",
            DropReason.BAD_PADDING,
        )
    return MalformedPacket(
        "ESP padding is not the 1, 2, 3, ... sequence (RFC 4303 section 2.4)",
        DropReason.BAD_PADDING,
    )
