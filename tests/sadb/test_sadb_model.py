"""SecurityAssociation validation, derived values, and keys never shown."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from secsock.errors import AlgorithmError
from secsock.sadb.lifetime import ExpireReason, Lifetime, limit_reached
from secsock.sadb.model import (
    LarvalSA,
    Padding,
    SAMode,
    SAProtocol,
    SecurityAssociation,
    as_ipproto,
    as_mode,
)
from tests.sadb.sadb_helpers import CBC_KEY, GCM_KEY, SHA1_KEY, SHA256_KEY, addr, ah_sa, esp_sa


def test_defaults_follow_the_documented_choices() -> None:
    sa = esp_sa()
    assert sa.replay == 8
    assert sa.replay_window == 64
    assert sa.mode is SAMode.TRANSPORT
    assert sa.padding is Padding.SEQ
    assert sa.esn is False
    assert sa.seq_max == 2**32 - 1
    assert sa.flags == 0
    assert sa.key == (addr("10.0.0.2"), 50, 0x1000)
    assert sa.satype_name == "esp"


def test_esn_flag_and_limit() -> None:
    sa = esp_sa(esn=True)
    assert sa.seq_max == 2**64 - 1
    assert sa.flags == 0x400


def test_alias_is_stored_canonical() -> None:
    sa = esp_sa(enc="rijndael-cbc", enc_key=CBC_KEY, auth="hmac-sha256", auth_key=SHA256_KEY)
    assert (sa.enc, sa.auth) == ("aes-cbc", "hmac-sha2-256")


def test_natt_makes_esp_udp() -> None:
    sa = esp_sa(natt_sport=4500, natt_dport=4501)
    assert sa.natt
    assert sa.satype_name == "esp-udp"


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"spi": 0}, "256..0xffffffff"),
        ({"spi": 255}, "reserved"),
        ({"spi": 2**32}, "256..0xffffffff"),
        ({"enc_key": bytes(19)}, "20, 28 or 36-byte key"),
        ({"enc": "aes-gcm-17"}, "unknown encryption algorithm"),
        ({"enc": None}, "needs an encryption algorithm"),
        ({"auth": "hmac-sha1", "auth_key": SHA1_KEY}, "combined-mode"),
        ({"enc": "null", "enc_key": b""}, "confidentiality or integrity"),
        ({"replay": 513}, "0..512"),
        ({"replay": -1}, "0..512"),
        ({"replay": 0, "esn": True}, "ESN needs a replay window"),
        ({"seq_start": 2**32}, r"0\.\.2\^32-1"),
        ({"seq_start": -1}, r"0\.\.2\^32-1"),
        ({"natt_sport": 4500}, "both NAT-T ports"),
        ({"natt_sport": 0, "natt_dport": 4500}, "1..65535"),
        ({"ah_align": 4}, "AH SAs only"),
        ({"reqid": 2**32}, "reqid"),
        ({"dst": addr("::1")}, "one address family"),
        ({"mode": 7}, "invalid SA field"),
    ],
)
def test_invalid_esp_sa_is_refused(kw: dict[str, Any], expected: str) -> None:
    with pytest.raises((ValueError, TypeError), match=expected):
        esp_sa(**kw)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"auth": None, "auth_key": b""}, "needs an authentication algorithm"),
        ({"auth": "null", "auth_key": b""}, "ICV"),
        ({"enc": "aes-cbc", "enc_key": CBC_KEY}, "no encryption algorithm"),
        ({"auth_key": bytes(19)}, "20-byte key"),
        ({"natt_sport": 1, "natt_dport": 2}, "ESP SAs only"),
        ({"ah_align": 2}, "None, 4 or 8"),
        ({"ah_align": 4, "src": addr("::1"), "dst": addr("::2")}, "64-bit aligned"),
        ({"padding": Padding.ZERO}, "ESP SAs only"),
    ],
)
def test_invalid_ah_sa_is_refused(kw: dict[str, Any], expected: str) -> None:
    with pytest.raises((ValueError, TypeError), match=expected):
        ah_sa(**kw)


def test_ah_alignment_values() -> None:
    assert ah_sa().ah_align is None
    assert ah_sa(ah_align=8).ah_align == 8
    assert ah_sa(src="::1", dst="::2", ah_align=8).ah_align == 8


def test_type_errors() -> None:
    with pytest.raises(TypeError, match="src must be an IPv4Address"):
        SecurityAssociation(
            spi=0x1000, proto=SAProtocol.ESP, src="10.0.0.1", dst=addr("10.0.0.2"),  # type: ignore[arg-type]
            enc="aes-gcm-16", enc_key=GCM_KEY,
        )
    with pytest.raises(TypeError, match="enc_key must be bytes"):
        esp_sa(enc_key="abc")


def test_keys_never_in_repr_str_or_errors() -> None:
    marker = b"\xde\xad\xbe\xef\x13\x37\xc0\xde"
    sa = esp_sa(enc="aes-cbc", enc_key=marker * 2, auth="hmac-sha1", auth_key=marker + bytes(12))
    for text in (repr(sa), str(sa), repr(sa.identity), str(sa.identity)):
        assert "deadbeef" not in text.lower()
        assert "\\xde" not in text
        assert "13 37" not in text
    with pytest.raises(AlgorithmError) as info:
        esp_sa(enc="aes-cbc", enc_key=marker)  # 8 bytes: wrong length
    assert "deadbeef" not in str(info.value).lower()
    assert "\\xde" not in str(info.value)


def test_larval_sa_identity() -> None:
    larval = LarvalSA(spi=0x3000, proto=SAProtocol.AH, src=addr("::1"), dst=addr("::2"), reqid=5)
    assert larval.key == (addr("::2"), 51, 0x3000)
    assert larval.identity.reqid == 5
    with pytest.raises(ValueError, match="256"):
        LarvalSA(spi=1, proto=SAProtocol.AH, src=addr("::1"), dst=addr("::2"))


def test_protocol_and_mode_normalisation() -> None:
    assert as_ipproto("esp") == 50
    assert as_ipproto("ah") == 51
    assert as_ipproto(SAProtocol.AH) == 51
    assert as_mode("tunnel") == 2
    assert as_mode(SAMode.ANY) == 0
    with pytest.raises(ValueError, match="50"):
        as_ipproto(6)
    with pytest.raises(ValueError, match="mode"):
        as_mode("sideways")
    assert SAProtocol.ESP.satype == 3
    assert SAProtocol.AH.satype == 2


def test_lifetime_limits() -> None:
    lt = Lifetime(addtime=10, bytes=100)
    assert limit_reached(lt, age=9.9, nbytes=99) is None
    assert limit_reached(lt, age=10, nbytes=0) is ExpireReason.ADDTIME
    assert limit_reached(lt, age=0, nbytes=100) is ExpireReason.BYTES
    assert limit_reached(Lifetime(), age=1e9, nbytes=10**12) is None
    assert Lifetime().unlimited
    assert not lt.unlimited
    with pytest.raises(ValueError, match="addtime"):
        Lifetime(addtime=-1)


def test_sa_equality_includes_keys() -> None:
    assert esp_sa() == esp_sa()
    assert esp_sa() != esp_sa(enc_key=bytes(20))
    assert esp_sa().enc_key == GCM_KEY


# A key passed where another value belongs must not be echoed by the error.
KEY = bytes.fromhex("c0ffee11c0ffee22c0ffee33c0ffee44c0ffee55")
KEY_TEXTS = ("c0ffee", "\\xc0\\xff\\xee", str(int.from_bytes(KEY, "big"))[:12])


def _assert_hidden(exc: BaseException) -> None:
    text = f"{exc} {exc!r} {exc.args!r}"
    for fragment in KEY_TEXTS:
        assert fragment not in text, text


@pytest.mark.parametrize(
    "field",
    ["spi", "proto", "mode", "reqid", "replay", "esn", "seq_start", "natt_sport", "padding",
     "enc", "auth"],
)
@pytest.mark.parametrize(
    "wrong",
    [KEY, KEY.hex(), "0x" + KEY.hex(), int.from_bytes(KEY, "big")],
    ids=["bytes", "hex", "0x-hex", "int"],
)
def test_a_misplaced_key_is_not_echoed(field: str, wrong: object) -> None:
    extra: dict[str, Any] = {field: wrong}
    if field == "natt_sport":
        extra["natt_dport"] = 4500
    if field == "auth":
        extra.update(enc="aes-cbc", enc_key=CBC_KEY)
    with pytest.raises((ValueError, TypeError)) as info:
        esp_sa(**extra)
    _assert_hidden(info.value)


@pytest.mark.parametrize("wrong", [KEY, "0x" + KEY.hex()], ids=["bytes", "0x-hex"])
def test_a_misplaced_key_is_not_echoed_by_lookups_and_contexts(wrong: Any) -> None:
    from secsock.core.ah import AhContext
    from secsock.core.algorithms import auth_algorithm, encryption_algorithm
    from secsock.sadb.store import MemoryStore

    store = MemoryStore()
    calls: list[Callable[[], object]] = [
        lambda: encryption_algorithm(wrong),
        lambda: auth_algorithm(wrong),
        lambda: ah_sa(ah_align=wrong),
        lambda: AhContext.create(auth=auth_algorithm("hmac-sha1"), auth_key=SHA1_KEY, align=wrong),
        lambda: LarvalSA(spi=0x1000, proto=wrong, src=addr("10.0.0.1"), dst=addr("10.0.0.2")),
        lambda: Lifetime(bytes=wrong),
        lambda: as_ipproto(wrong),
        lambda: as_mode(wrong),
        lambda: store.get("10.0.0.2", "esp", wrong),
        lambda: store.get(wrong, "esp", 0x1000),
        lambda: store.getspi("10.0.0.1", "10.0.0.2", "esp", now=0.0, hint=wrong),
    ]
    for call in calls:
        with pytest.raises((ValueError, TypeError)) as info:
            call()
        _assert_hidden(info.value)
