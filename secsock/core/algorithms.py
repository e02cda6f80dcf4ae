"""The algorithm registry: setkey(8) names -> sizes, SADB numbers, and the integrity transforms.

One registry for ESP encryption (``setkey -E``) and one for integrity (``setkey -A``, used by
ESP and AH). Names are spelled as setkey spells them (FreeBSD/KAME; ``rijndael-cbc`` and
``hmac-sha256`` are accepted aliases). Key sizes are in bytes and include the salt/nonce that
RFC 4106/4543/7634/3686 append to the key (``key || salt``, as setkey and ``ip xfrm`` take it).

The cryptography itself is done by the ``cryptography`` package; this module only adds the
glue (AES-XCBC-MAC-96 on top of AES, truncated HMACs, GMAC). Pure: no sockets, clocks or RNG.
"""

from __future__ import annotations

import hmac as _hmac
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final, Protocol, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _chmac
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secsock.core._shown import shown
from secsock.errors import AlgorithmError

__all__ = (
    "AUTH_ALGORITHMS",
    "ENCRYPTION_ALGORITHMS",
    "HAVE_3DES",
    "AuthAlgorithm",
    "AuthKind",
    "BytesLike",
    "CipherMode",
    "EncryptionAlgorithm",
    "Gmac",
    "Integrity",
    "auth_algorithm",
    "check_combination",
    "check_key",
    "encryption_algorithm",
    "gmac_tag",
    "new_gmac",
    "new_integrity",
)


class CipherMode(StrEnum):
    """How an ESP encryption transform works (selects the codec path)."""

    NULL = "null"  # RFC 2410
    CBC = "cbc"  # RFC 3602 (AES), RFC 2451 (3DES)
    CTR = "ctr"  # RFC 3686
    GCM = "gcm"  # RFC 4106 (AEAD)
    GMAC = "gmac"  # RFC 4543 ENCR_NULL_AUTH_AES_GMAC (integrity only, AEAD-shaped)
    CHACHA20_POLY1305 = "chacha20-poly1305"  # RFC 7634 (AEAD)


class AuthKind(StrEnum):
    """How an integrity transform works."""

    NULL = "null"
    HMAC = "hmac"
    XCBC = "xcbc"
    GMAC = "gmac"


def _check_common(
    name: str, aliases: tuple[str, ...], key_sizes: tuple[int, ...], salt_len: int
) -> None:
    if not name or name != name.strip() or name.lower() != name:
        raise AlgorithmError(f"algorithm name must be a lower-case setkey token, got {name!r}")
    if name in aliases:
        raise AlgorithmError(f"{name}: an alias repeats the name")
    if not key_sizes or any(k < 0 for k in key_sizes) or list(key_sizes) != sorted(key_sizes):
        raise AlgorithmError(f"{name}: key sizes must be non-negative and ascending, got {key_sizes}")
    if salt_len < 0 or any(k and k <= salt_len for k in key_sizes):
        raise AlgorithmError(f"{name}: salt of {salt_len} bytes does not fit the key sizes")


@dataclass(frozen=True, slots=True, kw_only=True)
class EncryptionAlgorithm:
    """An ESP encryption (or combined-mode) transform, as ``setkey -E name key`` names it.

    ``key_sizes`` are the accepted key lengths in bytes *including* ``salt_len`` trailing salt or
    nonce bytes. ``block_size`` is the cipher's block (1 for stream/counter modes); ``align`` is
    what ESP pads ``payload || padding || pad length || next header`` to: max(block, 4).
    ``icv_len`` is the AEAD tag length (0 for non-AEAD ciphers, whose ICV comes from the
    separate integrity algorithm). ``sadb_id`` is the BSD/KAME ``SADB_*EALG_*`` number,
    ``linux_sadb_id`` the Linux PF_KEY number (None where that kernel has none or it is not
    confirmed), ``ikev2_id`` the IANA IKEv2 Transform Type 1 ID.
    """

    name: str
    aliases: tuple[str, ...] = ()
    mode: CipherMode
    sadb_id: int | None
    linux_sadb_id: int | None
    ikev2_id: int | None
    key_sizes: tuple[int, ...]
    salt_len: int = 0
    iv_len: int
    block_size: int
    icv_len: int = 0
    aead: bool = False
    integrity_only: bool = False
    rfc: str = ""

    def __post_init__(self) -> None:
        _check_common(self.name, self.aliases, self.key_sizes, self.salt_len)
        if self.iv_len < 0 or self.block_size < 1 or self.icv_len < 0:
            raise AlgorithmError(
                f"{self.name}: expected iv_len >= 0, block_size >= 1, icv_len >= 0, got "
                f"{self.iv_len}, {self.block_size}, {self.icv_len}"
            )
        if self.aead != (self.icv_len > 0):
            raise AlgorithmError(f"{self.name}: an AEAD has an ICV and only an AEAD has one")
        if self.integrity_only and not self.aead:
            raise AlgorithmError(f"{self.name}: integrity_only is a property of combined modes")

    @property
    def align(self) -> int:
        """Padding alignment of the ESP plaintext: max(block size, 4) (RFC 4303 §2.4)."""
        return max(self.block_size, 4)

    @property
    def names(self) -> tuple[str, ...]:
        """The name followed by its aliases."""
        return (self.name, *self.aliases)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthAlgorithm:
    """An integrity transform for ESP and AH, as ``setkey -A name key`` names it.

    ``icv_len`` is the truncated ICV in bytes (RFC 4868: half the hash for SHA-2; 12 for the
    -96 algorithms). For ``aes-gmac`` the key is ``key || 4-byte salt`` and the transform needs
    an 8-byte IV per packet (``iv_len``); the SADB number depends on the AES key size
    (FreeBSD/NetBSD SADB_X_AALG_AES128/192/256GMAC = 11/12/13), see :meth:`sadb_id_for`.
    """

    name: str
    aliases: tuple[str, ...] = ()
    kind: AuthKind
    sadb_id: int | None
    linux_sadb_id: int | None
    ikev2_id: int | None
    key_sizes: tuple[int, ...]
    salt_len: int = 0
    icv_len: int
    iv_len: int = 0
    hash_name: str | None = None
    rfc: str = ""

    def __post_init__(self) -> None:
        _check_common(self.name, self.aliases, self.key_sizes, self.salt_len)
        if self.icv_len < 0 or self.iv_len < 0:
            raise AlgorithmError(
                f"{self.name}: expected icv_len, iv_len >= 0, got {self.icv_len}, {self.iv_len}"
            )
        if (self.kind is AuthKind.HMAC) != (self.hash_name is not None):
            raise AlgorithmError(f"{self.name}: exactly the HMAC algorithms name a hash")
        if (self.kind is AuthKind.NULL) != (self.icv_len == 0):
            raise AlgorithmError(f"{self.name}: only the null algorithm has no ICV")

    @property
    def names(self) -> tuple[str, ...]:
        """The name followed by its aliases."""
        return (self.name, *self.aliases)

    def sadb_id_for(self, key_len: int) -> int | None:
        """The BSD/KAME SADB number for a key of ``key_len`` bytes (GMAC: 11/12/13 by AES size)."""
        if self.kind is AuthKind.GMAC and self.sadb_id is not None:
            index = {20: 0, 28: 1, 36: 2}.get(key_len)
            if index is None:
                check_key(self, b"\0" * key_len)  # raises the usual message
            return self.sadb_id + (index or 0)
        return self.sadb_id


# --- 3DES availability (legacy interop only) ---------------------------------------------------

try:  # cryptography >= 43 moved TripleDES to the "decrepit" package
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES as _TripleDES
except ImportError:  # pragma: no cover - depends on the installed cryptography
    try:
        _TripleDES = algorithms.TripleDES  # type: ignore[attr-defined,misc,unused-ignore]
    except AttributeError:
        _TripleDES = None  # type: ignore[assignment,misc,unused-ignore]

#: True when the installed ``cryptography`` still provides TripleDES (``3des-cbc`` registered).
HAVE_3DES: Final[bool] = _TripleDES is not None


def _triple_des(key: bytes) -> BlockCipherAlgorithm:
    """A TripleDES cipher algorithm object (only called when HAVE_3DES)."""
    assert _TripleDES is not None
    cipher: BlockCipherAlgorithm = _TripleDES(key)
    return cipher


# --- the tables --------------------------------------------------------------------------------

_AES_KEYS: Final = (16, 24, 32)
_AES_SALTED: Final = (20, 28, 36)

_ENCRYPTION: list[EncryptionAlgorithm] = [
    EncryptionAlgorithm(
        name="null", aliases=("simple",), mode=CipherMode.NULL,
        sadb_id=11, linux_sadb_id=11, ikev2_id=11,
        key_sizes=(0,), iv_len=0, block_size=1, rfc="RFC 2410",
    ),
    EncryptionAlgorithm(
        name="aes-cbc", aliases=("rijndael-cbc",), mode=CipherMode.CBC,
        sadb_id=12, linux_sadb_id=12, ikev2_id=12,
        key_sizes=_AES_KEYS, iv_len=16, block_size=16, rfc="RFC 3602",
    ),
    EncryptionAlgorithm(
        name="aes-ctr", mode=CipherMode.CTR,
        sadb_id=13, linux_sadb_id=13, ikev2_id=13,
        key_sizes=_AES_SALTED, salt_len=4, iv_len=8, block_size=1, rfc="RFC 3686",
    ),
    EncryptionAlgorithm(
        name="aes-gcm-8", mode=CipherMode.GCM,
        sadb_id=18, linux_sadb_id=18, ikev2_id=18,
        key_sizes=_AES_SALTED, salt_len=4, iv_len=8, block_size=1, icv_len=8, aead=True,
        rfc="RFC 4106",
    ),
    EncryptionAlgorithm(
        name="aes-gcm-12", mode=CipherMode.GCM,
        sadb_id=19, linux_sadb_id=19, ikev2_id=19,
        key_sizes=_AES_SALTED, salt_len=4, iv_len=8, block_size=1, icv_len=12, aead=True,
        rfc="RFC 4106",
    ),
    EncryptionAlgorithm(
        name="aes-gcm-16", mode=CipherMode.GCM,
        sadb_id=20, linux_sadb_id=20, ikev2_id=20,
        key_sizes=_AES_SALTED, salt_len=4, iv_len=8, block_size=1, icv_len=16, aead=True,
        rfc="RFC 4106",
    ),
    EncryptionAlgorithm(
        name="aes-gmac", mode=CipherMode.GMAC,
        sadb_id=23, linux_sadb_id=23, ikev2_id=21,
        key_sizes=_AES_SALTED, salt_len=4, iv_len=8, block_size=1, icv_len=16, aead=True,
        integrity_only=True, rfc="RFC 4543",
    ),
    EncryptionAlgorithm(
        # FreeBSD's SADB number is not confirmed (IPSEC-REFERENCE §8); Linux PF_KEY has none.
        name="chacha20-poly1305", mode=CipherMode.CHACHA20_POLY1305,
        sadb_id=None, linux_sadb_id=None, ikev2_id=28,
        key_sizes=(36,), salt_len=4, iv_len=8, block_size=1, icv_len=16, aead=True,
        rfc="RFC 7634",
    ),
]
if HAVE_3DES:
    _ENCRYPTION.append(
        EncryptionAlgorithm(
            name="3des-cbc", mode=CipherMode.CBC,
            sadb_id=3, linux_sadb_id=3, ikev2_id=3,
            key_sizes=(24,), iv_len=8, block_size=8, rfc="RFC 2451",
        )
    )

_AUTH: Final[list[AuthAlgorithm]] = [
    AuthAlgorithm(
        name="null", kind=AuthKind.NULL, sadb_id=251, linux_sadb_id=251, ikev2_id=None,
        key_sizes=(0,), icv_len=0, rfc="(debugging)",
    ),
    AuthAlgorithm(
        name="hmac-md5", kind=AuthKind.HMAC, sadb_id=2, linux_sadb_id=2, ikev2_id=1,
        key_sizes=(16,), icv_len=12, hash_name="md5", rfc="RFC 2403",
    ),
    AuthAlgorithm(
        name="hmac-sha1", kind=AuthKind.HMAC, sadb_id=3, linux_sadb_id=3, ikev2_id=2,
        key_sizes=(20,), icv_len=12, hash_name="sha1", rfc="RFC 2404",
    ),
    AuthAlgorithm(
        name="hmac-sha2-256", aliases=("hmac-sha256",), kind=AuthKind.HMAC,
        sadb_id=5, linux_sadb_id=5, ikev2_id=12,
        key_sizes=(32,), icv_len=16, hash_name="sha256", rfc="RFC 4868",
    ),
    AuthAlgorithm(
        name="hmac-sha2-384", aliases=("hmac-sha384",), kind=AuthKind.HMAC,
        sadb_id=6, linux_sadb_id=6, ikev2_id=13,
        key_sizes=(48,), icv_len=24, hash_name="sha384", rfc="RFC 4868",
    ),
    AuthAlgorithm(
        name="hmac-sha2-512", aliases=("hmac-sha512",), kind=AuthKind.HMAC,
        sadb_id=7, linux_sadb_id=7, ikev2_id=14,
        key_sizes=(64,), icv_len=32, hash_name="sha512", rfc="RFC 4868",
    ),
    AuthAlgorithm(
        name="aes-xcbc-mac", kind=AuthKind.XCBC, sadb_id=9, linux_sadb_id=9, ikev2_id=5,
        key_sizes=(16,), icv_len=12, rfc="RFC 3566",
    ),
    AuthAlgorithm(
        # sadb_id is the AES-128 number; sadb_id_for() gives 12/13 for 192/256-bit keys.
        # IKEv2 IDs are 9/10/11 by key size likewise.
        name="aes-gmac", kind=AuthKind.GMAC, sadb_id=11, linux_sadb_id=None, ikev2_id=9,
        key_sizes=_AES_SALTED, salt_len=4, icv_len=16, iv_len=8, rfc="RFC 4543",
    ),
]


_Alg = TypeVar("_Alg", EncryptionAlgorithm, AuthAlgorithm)


def _index(table: list[_Alg], what: str) -> dict[str, _Alg]:
    """Every name and alias of ``table`` -> its algorithm; a name may appear once."""
    out: dict[str, _Alg] = {}
    for alg in table:
        for n in alg.names:
            if n in out:
                raise AlgorithmError(f"duplicate {what} algorithm name {n!r}")
            out[n] = alg
    return out


_ENC_BY_NAME: Final = _index(_ENCRYPTION, "encryption")
_AUTH_BY_NAME: Final = _index(_AUTH, "authentication")

#: Canonical setkey name -> ESP encryption algorithm (aliases are accepted by the lookups).
ENCRYPTION_ALGORITHMS: Final[Mapping[str, EncryptionAlgorithm]] = MappingProxyType(
    {a.name: a for a in _ENCRYPTION}
)
#: Canonical setkey name -> integrity algorithm (aliases are accepted by the lookups).
AUTH_ALGORITHMS: Final[Mapping[str, AuthAlgorithm]] = MappingProxyType({a.name: a for a in _AUTH})


def encryption_algorithm(name: str) -> EncryptionAlgorithm:
    """Look up an ESP encryption algorithm by setkey name or alias (``aes-gcm-16``)."""
    try:
        return _ENC_BY_NAME[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(_ENC_BY_NAME))
        raise AlgorithmError(
            f"unknown encryption algorithm {shown(name)}; expected one of: {known}"
        ) from None


def auth_algorithm(name: str) -> AuthAlgorithm:
    """Look up an integrity algorithm by setkey name or alias (``hmac-sha2-256``)."""
    try:
        return _AUTH_BY_NAME[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(_AUTH_BY_NAME))
        raise AlgorithmError(
            f"unknown authentication algorithm {shown(name)}; expected one of: {known}"
        ) from None


def _sizes_text(sizes: tuple[int, ...]) -> str:
    words = [str(s) for s in sizes]
    if len(words) == 1:
        return words[0]
    return f"{', '.join(words[:-1])} or {words[-1]}"


def check_key(alg: EncryptionAlgorithm | AuthAlgorithm, key: bytes) -> None:
    """Raise AlgorithmError unless ``key`` has a length ``alg`` accepts. Never shows the key."""
    n = len(key)
    if n in alg.key_sizes:
        return
    if alg.key_sizes == (0,):
        raise AlgorithmError(f"{alg.name} takes no key, got {n} bytes")
    what = ""
    if alg.salt_len:
        ctr = isinstance(alg, EncryptionAlgorithm) and alg.mode is CipherMode.CTR
        part = "nonce" if ctr else "salt"
        what = f" (key and {alg.salt_len}-byte {part})"
    article = "an" if alg.key_sizes[0] in (8, 11, 18) else "a"
    raise AlgorithmError(
        f"{alg.name} takes {article} {_sizes_text(alg.key_sizes)}-byte key{what}, got {n} bytes"
    )


def check_combination(enc: EncryptionAlgorithm, auth: AuthAlgorithm | None) -> None:
    """Refuse ESP transform pairs that RFC 4303 or KAME/FreeBSD refuse.

    * ``null`` encryption with no or ``null`` integrity: ESP must give confidentiality or
      integrity (RFC 4303 §3.2).
    * a combined mode (AEAD, including ``aes-gmac``) with any separate integrity algorithm, even
      ``null`` (FreeBSD's esp_init refuses AEAD with an auth algorithm as well).
    * ``aes-gmac`` as ESP integrity: ESP uses ``-E aes-gmac`` (ENCR_NULL_AUTH_AES_GMAC); the
      integrity-transform form is for AH.

    A non-null cipher without integrity (confidentiality only) is allowed, as RFC 4303 §3.2 and
    KAME allow it; RFC 8221 recommends against it.
    """
    if enc.aead:
        if auth is not None:
            raise AlgorithmError(
                f"{enc.name} is a combined-mode algorithm with its own {enc.icv_len}-byte ICV; "
                f"expected no integrity algorithm, got {auth.name}"
            )
        return
    if auth is not None and auth.kind is AuthKind.GMAC:
        raise AlgorithmError(
            f"{auth.name} integrity is for AH; for ESP use encryption algorithm aes-gmac "
            f"(RFC 4543 ENCR_NULL_AUTH_AES_GMAC), got it with {enc.name}"
        )
    if enc.mode is CipherMode.NULL and (auth is None or auth.kind is AuthKind.NULL):
        got = "no integrity algorithm" if auth is None else "null integrity"
        raise AlgorithmError(
            "ESP must provide confidentiality or integrity (RFC 4303 section 3.2): null "
            f"encryption needs a non-null integrity algorithm, got {got}"
        )


# --- integrity transforms ----------------------------------------------------------------------

#: What the integrity transforms and the codec accept as input.
BytesLike = bytes | bytearray | memoryview


class Integrity(Protocol):
    """A keyed integrity transform, prepared once per SA.

    ``compute`` returns the truncated ICV over the concatenation of ``parts``; ``verify``
    recomputes it and compares in constant time (``hmac.compare_digest``).
    """

    @property
    def icv_len(self) -> int: ...

    def compute(self, *parts: BytesLike) -> bytes: ...

    def verify(self, icv: BytesLike, *parts: BytesLike) -> bool: ...


class _NullIntegrity:
    """``null`` integrity: an empty ICV (debugging only; never alone with null encryption)."""

    __slots__ = ()

    @property
    def icv_len(self) -> int:
        return 0

    def compute(self, *parts: BytesLike) -> bytes:
        return b""

    def verify(self, icv: BytesLike, *parts: BytesLike) -> bool:
        return len(icv) == 0

    def __repr__(self) -> str:
        return "<Integrity null>"


_HASHES: Final[Mapping[str, type[hashes.HashAlgorithm]]] = MappingProxyType(
    {
        "md5": hashes.MD5,
        "sha1": hashes.SHA1,
        "sha256": hashes.SHA256,
        "sha384": hashes.SHA384,
        "sha512": hashes.SHA512,
    }
)


class _HmacIntegrity:
    """HMAC-<hash> truncated to ``icv_len`` bytes; the keyed state is prepared once and copied."""

    __slots__ = ("_base", "_icv_len", "_name")

    def __init__(self, alg: AuthAlgorithm, key: bytes) -> None:
        assert alg.hash_name is not None
        self._name = alg.name
        self._icv_len = alg.icv_len
        self._base = _chmac.HMAC(bytes(key), _HASHES[alg.hash_name]())

    @property
    def icv_len(self) -> int:
        return self._icv_len

    def compute(self, *parts: BytesLike) -> bytes:
        h = self._base.copy()
        for p in parts:
            h.update(p)
        return h.finalize()[: self._icv_len]

    def verify(self, icv: BytesLike, *parts: BytesLike) -> bool:
        h = self._base.copy()
        for p in parts:
            h.update(p)
        return _hmac.compare_digest(h.finalize()[: self._icv_len], icv)

    def __repr__(self) -> str:
        return f"<Integrity {self._name}>"


_ZERO16: Final = bytes(16)


class _XcbcIntegrity:
    """AES-XCBC-MAC-96 (RFC 3566) on AES from ``cryptography``.

    K1, K2, K3 = AES-K(0x01..), AES-K(0x02..), AES-K(0x03..). The MAC is the last block of
    AES-CBC under K1 with a zero IV over the message whose last block is XORed with K2 (when
    it is complete) or padded with 0x80 00.. and XORed with K3 (when it is short or empty).
    """

    __slots__ = ("_k1", "_k2", "_k3")

    def __init__(self, key: bytes) -> None:
        # Single-block AES for the RFC 3566 subkey derivation, not for data.
        ecb = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()  # noqa: S305
        derived = ecb.update(b"\x01" * 16 + b"\x02" * 16 + b"\x03" * 16) + ecb.finalize()
        self._k1 = algorithms.AES(derived[:16])
        self._k2 = int.from_bytes(derived[16:32], "big")
        self._k3 = int.from_bytes(derived[32:48], "big")

    @property
    def icv_len(self) -> int:
        return 12

    def mac(self, *parts: BytesLike) -> bytes:
        """The full 16-byte AES-XCBC-MAC (RFC 3566 §4); ``compute`` truncates it to 12."""
        data = b"".join(parts)
        n = len(data)
        if n and n % 16 == 0:
            head = memoryview(data)[: n - 16]
            last = int.from_bytes(data[n - 16 :], "big") ^ self._k2
        else:
            cut = n - n % 16
            head = memoryview(data)[:cut]
            tail = data[cut:] + b"\x80" + bytes(15 - (n - cut))
            last = int.from_bytes(tail, "big") ^ self._k3
        enc = Cipher(self._k1, modes.CBC(_ZERO16)).encryptor()
        enc.update(head)
        return enc.update(last.to_bytes(16, "big"))

    def compute(self, *parts: BytesLike) -> bytes:
        return self.mac(*parts)[:12]

    def verify(self, icv: BytesLike, *parts: BytesLike) -> bool:
        return _hmac.compare_digest(self.mac(*parts)[:12], icv)

    def __repr__(self) -> str:
        return "<Integrity aes-xcbc-mac>"


class Gmac:
    """AES-GMAC (RFC 4543): a GCM tag over AAD only, nonce = 4-byte salt || 8-byte IV.

    Built once per SA from ``key || salt``. ``tag(iv, *parts)`` returns the 16-byte tag over
    the concatenated parts; the caller lays out the AAD (ESP: SPI, seq, IV, payload, trailer;
    AH: the ICV-input with the IV in place). ``verify`` compares in constant time.
    """

    __slots__ = ("_aead", "_salt")

    icv_len: Final = 16
    iv_len: Final = 8

    def __init__(self, key: bytes) -> None:
        check_key(AUTH_ALGORITHMS["aes-gmac"], key)
        self._aead = AESGCM(bytes(key[:-4]))
        self._salt = bytes(key[-4:])

    def tag(self, iv: BytesLike, *parts: BytesLike) -> bytes:
        if len(iv) != 8:
            raise ValueError(f"AES-GMAC takes an 8-byte IV, got {len(iv)} bytes")
        aad = parts[0] if len(parts) == 1 else b"".join(parts)
        return self._aead.encrypt(self._salt + iv, b"", aad)

    def verify(self, icv: BytesLike, iv: BytesLike, *parts: BytesLike) -> bool:
        if len(iv) != 8:
            return False
        aad = parts[0] if len(parts) == 1 else b"".join(parts)
        try:
            self._aead.decrypt(self._salt + iv, icv, aad)
        except InvalidTag:
            return False
        return True

    def __repr__(self) -> str:
        return "<Gmac aes-gmac>"


def new_gmac(key: bytes) -> Gmac:
    """A prepared AES-GMAC transform for ``key || 4-byte salt`` (20, 28 or 36 bytes)."""
    return Gmac(key)


def gmac_tag(key: bytes, salt: bytes, iv: bytes, aad: bytes) -> bytes:
    """One-shot AES-GMAC: the 16-byte GCM tag over ``aad`` with nonce ``salt || iv``.

    ``key`` is the bare AES key (16/24/32 bytes), ``salt`` 4 bytes, ``iv`` 8 bytes. For the
    per-packet path build a :class:`Gmac` once per SA instead.
    """
    if len(key) not in _AES_KEYS or len(salt) != 4 or len(iv) != 8:
        raise AlgorithmError(
            "gmac_tag takes a 16, 24 or 32-byte key, a 4-byte salt and an 8-byte IV, got "
            f"{len(key)}, {len(salt)} and {len(iv)} bytes"
        )
    return AESGCM(bytes(key)).encrypt(bytes(salt) + bytes(iv), b"", aad)


def new_integrity(alg: AuthAlgorithm, key: bytes) -> Integrity:
    """Prepare the integrity transform of ``alg`` under ``key`` (validated by check_key).

    ``aes-gmac`` needs a per-packet IV and so is not an :class:`Integrity`; use
    :func:`new_gmac` for it.
    """
    check_key(alg, key)
    if alg.kind is AuthKind.HMAC:
        return _HmacIntegrity(alg, key)
    if alg.kind is AuthKind.XCBC:
        return _XcbcIntegrity(key)
    if alg.kind is AuthKind.NULL:
        return _NullIntegrity()
    raise AlgorithmError(f"{alg.name} needs a per-packet IV; build it with new_gmac(key)")

