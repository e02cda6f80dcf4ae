"""The algorithm registry: names, sizes, key checks, combinations and integrity transforms."""

from __future__ import annotations

import hmac
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from secsock.core.algorithms import (
    AUTH_ALGORITHMS,
    ENCRYPTION_ALGORITHMS,
    HAVE_3DES,
    AuthKind,
    CipherMode,
    EncryptionAlgorithm,
    Gmac,
    auth_algorithm,
    check_combination,
    check_key,
    encryption_algorithm,
    gmac_tag,
    new_gmac,
    new_integrity,
)
from secsock.core.esp import EspContext
from secsock.errors import AlgorithmError
from tests.esp.esp_helpers import load_vectors

# --- registry contents -------------------------------------------------------------------------

# (name, sadb_id, key sizes, iv_len, icv_len, align) from IPSEC-REFERENCE §2.4, §5.6, §6.
ENC_FACTS = [
    ("null", 11, (0,), 0, 0, 4),
    ("aes-cbc", 12, (16, 24, 32), 16, 0, 16),
    ("aes-ctr", 13, (20, 28, 36), 8, 0, 4),
    ("aes-gcm-8", 18, (20, 28, 36), 8, 8, 4),
    ("aes-gcm-12", 19, (20, 28, 36), 8, 12, 4),
    ("aes-gcm-16", 20, (20, 28, 36), 8, 16, 4),
    ("aes-gmac", 23, (20, 28, 36), 8, 16, 4),
    ("chacha20-poly1305", None, (36,), 8, 16, 4),
    ("3des-cbc", 3, (24,), 8, 0, 8),
]

AUTH_FACTS = [
    ("null", 251, (0,), 0),
    ("hmac-md5", 2, (16,), 12),
    ("hmac-sha1", 3, (20,), 12),
    ("hmac-sha2-256", 5, (32,), 16),
    ("hmac-sha2-384", 6, (48,), 24),
    ("hmac-sha2-512", 7, (64,), 32),
    ("aes-xcbc-mac", 9, (16,), 12),
    ("aes-gmac", 11, (20, 28, 36), 16),
]


@pytest.mark.parametrize(("name", "sadb", "keys", "iv", "icv", "align"), ENC_FACTS)
def test_encryption_table(
    name: str, sadb: int | None, keys: tuple[int, ...], iv: int, icv: int, align: int
) -> None:
    alg = encryption_algorithm(name)
    assert (alg.name, alg.sadb_id, alg.key_sizes, alg.iv_len, alg.icv_len, alg.align) == (
        name, sadb, keys, iv, icv, align,
    )
    assert alg.aead == (icv > 0)
    assert ENCRYPTION_ALGORITHMS[name] is alg


@pytest.mark.parametrize(("name", "sadb", "keys", "icv"), AUTH_FACTS)
def test_auth_table(name: str, sadb: int, keys: tuple[int, ...], icv: int) -> None:
    alg = auth_algorithm(name)
    assert (alg.name, alg.sadb_id, alg.key_sizes, alg.icv_len) == (name, sadb, keys, icv)
    assert AUTH_ALGORITHMS[name] is alg


@pytest.mark.parametrize(
    ("alias", "name"),
    [("rijndael-cbc", "aes-cbc"), ("simple", "null")],
)
def test_encryption_aliases(alias: str, name: str) -> None:
    assert encryption_algorithm(alias) is encryption_algorithm(name)
    assert alias not in ENCRYPTION_ALGORITHMS  # the mapping holds canonical names only


@pytest.mark.parametrize(
    ("alias", "name"),
    [("hmac-sha256", "hmac-sha2-256"), ("hmac-sha384", "hmac-sha2-384"),
     ("hmac-sha512", "hmac-sha2-512")],
)
def test_auth_aliases(alias: str, name: str) -> None:
    assert auth_algorithm(alias) is auth_algorithm(name)


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(AlgorithmError, match=r"unknown encryption algorithm 'aes-gcm-17'.*aes-gcm-16"):
        encryption_algorithm("aes-gcm-17")
    with pytest.raises(AlgorithmError, match=r"unknown authentication algorithm 'md5'.*hmac-md5"):
        auth_algorithm("md5")
    with pytest.raises(AlgorithmError):
        encryption_algorithm(None)  # type: ignore[arg-type]


def test_3des_is_registered_when_cryptography_has_it() -> None:
    assert HAVE_3DES  # cryptography 50 keeps TripleDES in hazmat.decrepit
    assert encryption_algorithm("3des-cbc").block_size == 8


def test_gmac_sadb_number_follows_the_key_size() -> None:
    gmac = auth_algorithm("aes-gmac")
    assert [gmac.sadb_id_for(n) for n in (20, 28, 36)] == [11, 12, 13]
    with pytest.raises(AlgorithmError, match="got 16 bytes"):
        gmac.sadb_id_for(16)
    assert auth_algorithm("hmac-sha1").sadb_id_for(20) == 3


def test_invalid_algorithm_definitions_are_refused() -> None:
    with pytest.raises(AlgorithmError, match="AEAD"):
        EncryptionAlgorithm(
            name="bogus", mode=CipherMode.GCM, sadb_id=None, linux_sadb_id=None, ikev2_id=None,
            key_sizes=(16,), iv_len=8, block_size=1, icv_len=16, aead=False,
        )
    with pytest.raises(AlgorithmError, match="lower-case"):
        EncryptionAlgorithm(
            name="AES", mode=CipherMode.CBC, sadb_id=None, linux_sadb_id=None, ikev2_id=None,
            key_sizes=(16,), iv_len=16, block_size=16,
        )


# --- key checks --------------------------------------------------------------------------------

def test_check_key_message_names_sizes_and_salt() -> None:
    with pytest.raises(AlgorithmError) as info:
        check_key(encryption_algorithm("aes-gcm-16"), b"\x5a" * 16)
    assert str(info.value) == (
        "aes-gcm-16 takes a 20, 28 or 36-byte key (key and 4-byte salt), got 16 bytes"
    )
    with pytest.raises(AlgorithmError, match=r"^aes-ctr takes a 20, 28 or 36-byte key \(key and 4-byte nonce\), got 32 bytes$"):
        check_key(encryption_algorithm("aes-ctr"), bytes(32))
    with pytest.raises(AlgorithmError, match=r"^chacha20-poly1305 takes a 36-byte key \(key and 4-byte salt\), got 32 bytes$"):
        check_key(encryption_algorithm("chacha20-poly1305"), bytes(32))
    with pytest.raises(AlgorithmError, match=r"^hmac-sha2-256 takes a 32-byte key, got 20 bytes$"):
        check_key(auth_algorithm("hmac-sha2-256"), bytes(20))
    with pytest.raises(AlgorithmError, match=r"^null takes no key, got 3 bytes$"):
        check_key(encryption_algorithm("null"), b"abc")


@pytest.mark.parametrize("alg", [*ENCRYPTION_ALGORITHMS.values(), *AUTH_ALGORITHMS.values()])
def test_check_key_accepts_exactly_the_listed_sizes(alg: Any) -> None:
    for n in range(70):
        key = bytes([0xA7]) * n
        if n in alg.key_sizes:
            check_key(alg, key)
        else:
            with pytest.raises(AlgorithmError) as info:
                check_key(alg, key)
            text = str(info.value)
            assert f"got {n} bytes" in text
            assert "a7a7" not in text.lower()
            assert "\\xa7" not in text


# --- combinations ------------------------------------------------------------------------------

def test_null_encryption_needs_real_integrity() -> None:
    null = encryption_algorithm("null")
    with pytest.raises(AlgorithmError, match=r"RFC 4303 section 3\.2.*got no integrity"):
        check_combination(null, None)
    with pytest.raises(AlgorithmError, match="got null integrity"):
        check_combination(null, auth_algorithm("null"))
    check_combination(null, auth_algorithm("hmac-sha2-256"))


@pytest.mark.parametrize("enc", ["aes-gcm-16", "aes-gcm-8", "aes-gmac", "chacha20-poly1305"])
@pytest.mark.parametrize("auth", ["null", "hmac-sha1", "hmac-sha2-256"])
def test_aead_refuses_separate_integrity(enc: str, auth: str) -> None:
    with pytest.raises(AlgorithmError, match=f"expected no integrity algorithm, got {auth}"):
        check_combination(encryption_algorithm(enc), auth_algorithm(auth))
    check_combination(encryption_algorithm(enc), None)


def test_gmac_integrity_is_for_ah_only() -> None:
    with pytest.raises(AlgorithmError, match="for AH"):
        check_combination(encryption_algorithm("aes-cbc"), auth_algorithm("aes-gmac"))


def test_confidentiality_only_is_allowed() -> None:
    check_combination(encryption_algorithm("aes-cbc"), None)
    check_combination(encryption_algorithm("aes-cbc"), auth_algorithm("null"))


def test_context_create_validates_keys_and_pairs() -> None:
    with pytest.raises(AlgorithmError, match="got 16 bytes"):
        EspContext.create(
            enc=encryption_algorithm("aes-gcm-16"), enc_key=bytes(16), auth=None, auth_key=None
        )
    with pytest.raises(AlgorithmError, match="hmac-sha2-256 takes a 32-byte key"):
        EspContext.create(
            enc=encryption_algorithm("aes-cbc"), enc_key=bytes(16),
            auth=auth_algorithm("hmac-sha2-256"), auth_key=bytes(16),
        )
    with pytest.raises(AlgorithmError, match="RFC 4303"):
        EspContext.create(enc=encryption_algorithm("null"), enc_key=b"", auth=None, auth_key=None)
    with pytest.raises(TypeError):
        EspContext()


def test_context_repr_shows_names_not_keys() -> None:
    key = bytes(range(0x40, 0x40 + 32))
    ctx = EspContext.create(
        enc=encryption_algorithm("aes-cbc"), enc_key=key,
        auth=auth_algorithm("hmac-sha2-256"), auth_key=key,
    )
    text = repr(ctx) + str(ctx)
    assert text.startswith("EspContext(enc='aes-cbc', auth='hmac-sha2-256')")
    assert key.hex() not in text
    assert repr(key) not in text
    assert "@ABC" not in text
    integ = new_integrity(auth_algorithm("hmac-sha2-256"), key)
    assert repr(integ) == "<Integrity hmac-sha2-256>"


# --- integrity transforms ----------------------------------------------------------------------

INTEGRITY_VECTORS = load_vectors("integrity_rfc3566_rfc4868.json")


@pytest.mark.parametrize("vec", INTEGRITY_VECTORS, ids=[v["id"] for v in INTEGRITY_VECTORS])
def test_published_integrity_vectors(vec: dict[str, Any]) -> None:
    alg = auth_algorithm(vec["alg"])
    key = bytes.fromhex(vec["key"])
    data = bytes(vec["data_zero_bytes"]) if "data_zero_bytes" in vec else bytes.fromhex(vec["data"])
    mac = bytes.fromhex(vec["mac"])
    integ = new_integrity(alg, key)
    icv = mac[: alg.icv_len]
    assert integ.icv_len == alg.icv_len
    assert integ.compute(data) == icv
    assert integ.verify(icv, data)
    # the same ICV over the data split into parts at every position
    for cut in range(0, len(data) + 1, max(1, len(data) // 7)):
        assert integ.compute(data[:cut], memoryview(data)[cut:]) == icv
    assert not integ.verify(bytes([icv[0] ^ 1]) + icv[1:], data)
    assert not integ.verify(icv[:-1], data)
    assert not integ.verify(icv, data + b"\0")


HMAC_ALGS = [a for a in AUTH_ALGORITHMS.values() if a.kind is AuthKind.HMAC]


@pytest.mark.parametrize("alg", HMAC_ALGS, ids=[a.name for a in HMAC_ALGS])
@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300), seed=st.binary(min_size=64, max_size=64))
def test_hmac_matches_the_stdlib(alg: Any, data: bytes, seed: bytes) -> None:
    key = seed[: alg.key_sizes[0]]
    integ = new_integrity(alg, key)
    expected = hmac.new(key, data, alg.hash_name).digest()[: alg.icv_len]
    assert integ.compute(data) == expected
    assert integ.verify(expected, data)


def test_null_integrity() -> None:
    integ = new_integrity(auth_algorithm("null"), b"")
    assert integ.icv_len == 0
    assert integ.compute(b"abc") == b""
    assert integ.verify(b"", b"abc")
    assert not integ.verify(b"\0", b"abc")


GMAC_VECTOR = next(v for v in load_vectors("esp_aes_gcm_gmac_mcgrew.json") if v["algorithm"] == "AES-GMAC-ESP")


def test_gmac_tag_reproduces_the_published_esp_gmac_vector() -> None:
    key = bytes.fromhex(GMAC_VECTOR["key"])
    salt = bytes.fromhex(GMAC_VECTOR["salt"])
    iv = bytes.fromhex(GMAC_VECTOR["iv"])
    aad = bytes.fromhex(GMAC_VECTOR["aad"])
    tag = bytes.fromhex(GMAC_VECTOR["ctext_tag"])
    assert gmac_tag(key, salt, iv, aad) == tag
    gmac = new_gmac(key + salt)
    assert isinstance(gmac, Gmac)
    assert (gmac.icv_len, gmac.iv_len) == (16, 8)
    assert gmac.tag(iv, aad[:11], aad[11:]) == tag
    assert gmac.verify(tag, iv, aad)
    assert gmac.verify(tag, memoryview(iv), memoryview(aad))
    assert not gmac.verify(tag, iv, aad[:-1])
    assert not gmac.verify(tag[:-1], iv, aad)
    assert not gmac.verify(tag, iv[:-1], aad)
    assert not gmac.verify(bytes(16), iv, aad)


def test_gmac_rejects_bad_sizes() -> None:
    with pytest.raises(AlgorithmError, match="gmac_tag takes"):
        gmac_tag(bytes(16), bytes(3), bytes(8), b"")
    with pytest.raises(AlgorithmError, match="aes-gmac takes a 20, 28 or 36-byte key"):
        new_gmac(bytes(16))
    with pytest.raises(ValueError, match="8-byte IV"):
        new_gmac(bytes(20)).tag(bytes(12), b"")
    with pytest.raises(AlgorithmError, match="new_gmac"):
        new_integrity(auth_algorithm("aes-gmac"), bytes(20))


@settings(max_examples=50, deadline=None)
@given(aad=st.binary(max_size=200), iv=st.binary(min_size=8, max_size=8))
def test_gmac_is_a_gcm_tag_over_aad_only(aad: bytes, iv: bytes) -> None:
    key, salt = bytes(range(16)), b"salt"
    tag = AESGCM(key).encrypt(salt + iv, b"", aad)  # GCM with empty plaintext = GMAC
    assert gmac_tag(key, salt, iv, aad) == tag


def test_integrity_key_without_algorithm_is_refused() -> None:
    with pytest.raises(AlgorithmError, match=r"expected no integrity key .* got 32 bytes"):
        EspContext.create(
            enc=encryption_algorithm("aes-cbc"), enc_key=bytes(16), auth=None, auth_key=bytes(32)
        )
