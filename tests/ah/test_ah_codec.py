"""secsock.core.ah: mutable vs immutable fields, sysctl knobs, lengths, ESN, GMAC, XCBC, API."""

from __future__ import annotations

import hmac
import struct
from ipaddress import IPv6Address

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secsock.core.ah import (
    AhContext,
    AhPeek,
    peek_untrusted,
    seal_ipv4,
    seal_ipv6,
    verify_ipv4_untrusted,
    verify_ipv6_untrusted,
    verify_untrusted,
)
from secsock.core.algorithms import auth_algorithm
from secsock.core.ip import IPv6Header, build_ipv6, internet_checksum, parse_ipv4_untrusted
from secsock.errors import AlgorithmError, IntegrityError, MalformedPacket
from tests.ah.ah_helpers import KEYS, SEQ_HI, context, xcbc_mac, zeroed_ipv4_input

ALL_ALGS = sorted(KEYS)
ROUTER_ALERT = b"\x94\x04\x00\x00"
RECORD_ROUTE = b"\x07\x07\x04" + bytes([10, 0, 0, 9]) + b"\x00"  # + EOL: 8 bytes
SPI = 0x1000


def _fix_checksum(packet: bytearray) -> bytes:
    hlen = (packet[0] & 0x0F) * 4
    packet[10:12] = b"\x00\x00"
    packet[10:12] = internet_checksum(bytes(packet[:hlen])).to_bytes(2, "big")
    return bytes(packet)


def _seal4(ctx: AhContext, **kw: object) -> bytes:
    args: dict[str, object] = {
        "spi": SPI, "seq": 5, "src": "10.0.0.1", "dst": "10.0.0.2", "next_header": 17,
        "payload": b"0123456789abcdef-payload", "ttl": 64, "tos": 0x28, "identification": 77,
    }
    args.update(kw)
    return seal_ipv4(ctx, **args)  # type: ignore[arg-type]


# --- flipping bits ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "align"), [("hmac-sha2-256", 4), ("hmac-sha2-256", 8),
                                             ("hmac-sha1", 4), ("aes-gmac", 8)])
def test_ah_codec_every_immutable_ipv4_bit_is_protected(name: str, align: int) -> None:
    ctx = context(name, align=align)
    options = ROUTER_ALERT + RECORD_ROUTE
    packet = _seal4(ctx, options=options)
    verify_untrusted(ctx, packet)
    hlen = 20 + len(options)
    ah_plen = hlen + 1
    mutable = {1, 6, 7, 8, 10, 11} | set(range(24, 32))  # TOS, flags/offset, TTL, csum, RR
    structural = {0, 2, 3, 9, ah_plen} | set(range(20, 22))  # version/IHL, length, proto, opts
    for byte in range(len(packet)):
        if byte in mutable:
            continue
        for bit in range(8):
            flipped = bytearray(packet)
            flipped[byte] ^= 1 << bit
            mutated = _fix_checksum(flipped)
            if byte in structural:
                with pytest.raises((IntegrityError, MalformedPacket)):
                    verify_untrusted(ctx, mutated)
            else:
                with pytest.raises(IntegrityError):
                    verify_untrusted(ctx, mutated)


def test_ah_codec_every_immutable_ipv6_bit_is_protected() -> None:
    ctx = context("hmac-sha2-512")
    packet = seal_ipv6(
        ctx, spi=SPI, seq=3, src="2001:db8::1", dst="2001:db8::2", next_header=6,
        payload=b"tcp segment bytes", traffic_class=0x12, flow_label=0x54321, hop_limit=5,
    )
    verify_untrusted(ctx, packet)
    for byte in range(len(packet)):
        for bit in range(8):
            flipped = bytearray(packet)
            flipped[byte] ^= 1 << bit
            mutated = bytes(flipped)
            if byte == 0 and bit >= 4:  # version
                with pytest.raises(MalformedPacket):
                    verify_untrusted(ctx, mutated)
            elif byte < 4 or byte == 7:  # traffic class, flow label, hop limit: mutable
                assert verify_untrusted(ctx, mutated).payload == b"tcp segment bytes"
            elif byte in (4, 5, 6, 41):  # payload length, next header, AH length
                with pytest.raises((MalformedPacket, IntegrityError)):
                    verify_untrusted(ctx, mutated)
            else:
                with pytest.raises(IntegrityError):
                    verify_untrusted(ctx, mutated)


# --- mutable fields and the sysctl knobs ------------------------------------------------------


def test_ah_codec_ttl_checksum_and_record_route_are_mutable() -> None:
    ctx = context("hmac-sha2-256")
    packet = _seal4(ctx, options=ROUTER_ALERT + RECORD_ROUTE)
    routed = bytearray(packet)
    routed[8] = 1  # TTL
    routed[26] = 8  # the Record Route pointer (options start at 20, RR at 24)
    routed[27:31] = bytes([192, 0, 2, 99])  # the recorded hop
    assert verify_untrusted(ctx, _fix_checksum(routed)).payload == b"0123456789abcdef-payload"
    stale = bytearray(packet)
    stale[10] ^= 0xFF  # wrong checksum: refused by the IP layer, but not by the ICV
    with pytest.raises(MalformedPacket, match="checksum"):
        verify_ipv4_untrusted(ctx, bytes(stale))
    verify_ipv4_untrusted(ctx, bytes(stale), verify_checksum=False)


def test_ah_codec_immutable_option_is_covered() -> None:
    ctx = context("hmac-sha1")
    security = b"\x82\x04\x12\x34"
    packet = bytearray(_seal4(ctx, options=security))
    packet[23] ^= 0x01
    with pytest.raises(IntegrityError):
        verify_untrusted(ctx, _fix_checksum(packet))


def test_ah_codec_cleartos() -> None:
    ctx = context("hmac-sha2-256")
    retos = bytearray(_seal4(ctx, tos=0x28))
    retos[1] = 0xB9  # DSCP rewritten and ECN marked en route
    assert verify_untrusted(ctx, _fix_checksum(retos), cleartos=True)
    kept = bytearray(_seal4(ctx, tos=0x28, cleartos=False))
    assert verify_untrusted(ctx, bytes(kept), cleartos=False)
    with pytest.raises(IntegrityError):  # the peers disagree on the sysctl
        verify_untrusted(ctx, bytes(kept), cleartos=True)
    kept[1] = 0xB9
    with pytest.raises(IntegrityError):
        verify_untrusted(ctx, _fix_checksum(kept), cleartos=False)


def test_ah_codec_offsetmask() -> None:
    ctx = context("hmac-sha2-256")
    packet = bytearray(_seal4(ctx, df=False))
    packet[6] |= 0x40  # a router sets DF
    assert verify_untrusted(ctx, _fix_checksum(packet))  # default mask 0: flags not covered
    keep_df = bytearray(_seal4(ctx, df=False, offsetmask=0x4000))
    assert verify_untrusted(ctx, bytes(keep_df), offsetmask=0x4000)
    keep_df[6] |= 0x40
    with pytest.raises(IntegrityError):
        verify_untrusted(ctx, _fix_checksum(keep_df), offsetmask=0x4000)


def test_ah_codec_fragments_are_refused() -> None:
    ctx = context("hmac-sha1")
    for frag_off in (0x2000, 0x0001):  # MF, then a nonzero offset
        packet = bytearray(_seal4(ctx, df=False))
        packet[6:8] = frag_off.to_bytes(2, "big")
        with pytest.raises(MalformedPacket, match="fragment"):
            verify_untrusted(ctx, _fix_checksum(packet))


def test_ah_codec_source_route_uses_the_final_destination() -> None:
    """Outbound, the ICV uses the route's last hop as destination, as the receiver will see it."""
    ctx = context("hmac-sha2-256")
    final = bytes([10, 9, 9, 9])
    lsrr = b"\x83\x07\x04" + final + b"\x01"  # LSRR with one hop + NOP
    packet = _seal4(ctx, dst="10.0.0.2", options=lsrr)
    with pytest.raises(IntegrityError):  # as sent, to the first hop
        verify_untrusted(ctx, packet)
    arrived = bytearray(packet)
    arrived[16:20] = final  # the source route has been followed
    arrived[20 + 2] = 8  # pointer moved past the list
    arrived[20 + 3 : 20 + 7] = bytes([10, 0, 0, 2])  # recorded hop
    assert verify_untrusted(ctx, _fix_checksum(arrived))


# --- lengths and alignment --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "v4_align4", "v4_align8", "v6"),
    [
        ("hmac-md5", 24, 24, 24),
        ("hmac-sha1", 24, 24, 24),
        ("hmac-sha2-256", 28, 32, 32),
        ("hmac-sha2-384", 36, 40, 40),
        ("hmac-sha2-512", 44, 48, 48),
        ("aes-xcbc-mac", 24, 24, 24),
        ("aes-gmac", 36, 40, 40),
    ],
)
def test_ah_codec_lengths(name: str, v4_align4: int, v4_align8: int, v6: int) -> None:
    c4, c8, cn = context(name, align=4), context(name, align=8), context(name)
    assert (c4.ah_len_ipv4, c8.ah_len_ipv4, cn.ah_len_ipv4) == (v4_align4, v4_align8, v4_align4)
    assert c4.ah_len_ipv6 == c8.ah_len_ipv6 == v6
    p4, p8 = _seal4(c4, options=b""), _seal4(c8, options=b"")
    assert (p4[21] + 2) * 4 == v4_align4
    assert (p8[21] + 2) * 4 == v4_align8
    assert p8[20 + 12 + c8.icv_len : 20 + v4_align8] == bytes(v4_align8 - 12 - c8.icv_len)
    for ctx in (c4, c8):  # the receiver accepts either IPv4 alignment
        assert verify_untrusted(ctx, p4).payload == verify_untrusted(ctx, p8).payload
    p6 = seal_ipv6(cn, spi=1, seq=1, src="::1", dst="::2", next_header=17, payload=b"p")
    assert (p6[41] + 2) * 4 == v6


def test_ah_codec_wrong_lengths_are_malformed() -> None:
    ctx = context("hmac-sha2-256")
    # IPv6 needs 8-byte alignment: transplant a 28-byte (4-aligned) AH behind an IPv6 header.
    ah4 = _seal4(context("hmac-sha2-256", align=4))[20:]
    packet6 = build_ipv6(src="::1", dst="::2", next_header=51, payload_len=len(ah4)) + ah4
    with pytest.raises(MalformedPacket, match="28 bytes long, expected 32"):
        verify_untrusted(ctx, packet6)
    # An ICV length for another algorithm (a 24-byte AH for a 16-byte ICV) is refused.
    sha1 = _seal4(context("hmac-sha1"))
    with pytest.raises(MalformedPacket, match="expected 28 or 32"):
        verify_untrusted(ctx, sha1)
    # AH declaring more than the packet holds
    short = bytearray(_seal4(ctx))
    short[21] = 200
    with pytest.raises(MalformedPacket, match="only"):
        verify_untrusted(ctx, _fix_checksum(short))


def test_ah_codec_nonzero_padding_is_covered_as_sent() -> None:
    """RFC 4302 §3.3.3.2.1: the padding enters the ICV with the value the sender chose."""
    ctx = context("hmac-sha2-256", align=8)
    payload = b"payload"
    sealed = _seal4(ctx, payload=payload)
    ip_header = bytearray(sealed[:20])
    ah = bytearray(sealed[20:52])
    ah[28:32] = b"\xde\xad\xbe\xef"  # padding chosen by the sender
    key = KEYS["hmac-sha2-256"]
    icv_input = zeroed_ipv4_input(bytes(ip_header) + bytes(ah) + payload, icv_len=16)
    ah[12:28] = hmac.new(key, icv_input, "sha256").digest()[:16]
    assert verify_untrusted(ctx, bytes(ip_header) + bytes(ah) + payload).payload == payload


# --- hand-computed ICVs: ESN, XCBC, GMAC ------------------------------------------------------


@pytest.mark.parametrize("seq", [1, 0xFFFFFFFF, (1 << 32) | 2, (0xDEADBEEF << 32) | 0x01020304])
def test_ah_codec_esn_icv_by_hand(seq: int) -> None:
    ctx = context("hmac-sha2-256")
    payload = b"esn payload"
    packet = _seal4(ctx, seq=seq, esn=True, payload=payload)
    hi, lo = seq >> 32, seq & 0xFFFFFFFF
    assert struct.unpack_from("!I", packet, 28)[0] == lo  # only the low half is sent
    icv_input = zeroed_ipv4_input(packet, icv_len=16) + SEQ_HI.pack(hi)
    expected = hmac.new(KEYS["hmac-sha2-256"], icv_input, "sha256").digest()[:16]
    assert packet[32:48] == expected
    assert verify_untrusted(ctx, packet, esn=True, seq_hi=hi).seq_lo == lo
    with pytest.raises(IntegrityError):
        verify_untrusted(ctx, packet, esn=True, seq_hi=(hi + 1) & 0xFFFFFFFF)
    if hi:
        with pytest.raises(IntegrityError):
            verify_untrusted(ctx, packet)  # without ESN the high half is missing


def test_ah_codec_esn_ipv6_by_hand() -> None:
    ctx = context("hmac-sha1")
    seq = (7 << 32) | 9
    packet = seal_ipv6(ctx, spi=SPI, seq=seq, esn=True, src="::1", dst="::2", next_header=17,
                       payload=b"x", hop_limit=3, traffic_class=1, flow_label=2)
    zeroed = bytearray(packet)
    zeroed[0:4] = b"\x60\x00\x00\x00"
    zeroed[7] = 0
    zeroed[52:64] = bytes(12)
    expected = hmac.new(KEYS["hmac-sha1"], bytes(zeroed) + SEQ_HI.pack(7), "sha1").digest()[:12]
    assert packet[52:64] == expected
    assert verify_untrusted(ctx, packet, esn=True, seq_hi=7).payload == b"x"


def test_ah_codec_xcbc_icv_by_hand() -> None:
    # First check the independent XCBC against RFC 3566 §4.6 test cases 1-3.
    key = bytes(range(16))
    assert xcbc_mac(key, b"").hex() == "75f0251d528ac01c4573dfd584d79f29"
    assert xcbc_mac(key, bytes(range(3))).hex() == "5b376580ae2f19afe7219ceef172756f"
    assert xcbc_mac(key, bytes(range(16))).hex() == "d2a246fa349b68a79998a4394ff7a263"
    ctx = context("aes-xcbc-mac")
    for seq, esn in ((1, False), ((3 << 32) | 4, True)):
        packet = _seal4(ctx, seq=seq, esn=esn)
        tail = SEQ_HI.pack(seq >> 32) if esn else b""
        icv_input = zeroed_ipv4_input(packet, icv_len=12) + tail
        assert packet[32:44] == xcbc_mac(KEYS["aes-xcbc-mac"], icv_input)[:12]
        assert verify_untrusted(ctx, packet, esn=esn, seq_hi=seq >> 32)


@pytest.mark.parametrize("key_len", [20, 28, 36])
def test_ah_codec_gmac_by_hand(key_len: int) -> None:
    key = bytes(range(key_len))
    ctx = context("aes-gmac", key=key)
    assert ctx.icv_len == 24
    aes = AESGCM(key[:-4])
    ivs = set()
    for seq, esn in ((1, False), (2, False), ((5 << 32) | 1, True)):
        packet = _seal4(ctx, seq=seq, esn=esn)
        iv = packet[32:40]
        assert iv == seq.to_bytes(8, "big")  # IV = the 64-bit sequence number
        ivs.add(iv)
        aad = zeroed_ipv4_input(packet, icv_len=24) + (SEQ_HI.pack(seq >> 32) if esn else b"")
        tag = aes.encrypt(key[-4:] + iv, b"", aad)
        assert packet[40:56] == tag
        assert verify_untrusted(ctx, packet, esn=esn, seq_hi=seq >> 32)
        bad = bytearray(packet)
        bad[33] ^= 0x80  # a different IV
        with pytest.raises(IntegrityError):
            verify_untrusted(ctx, bytes(bad), esn=esn, seq_hi=seq >> 32)
    assert len(ivs) == 3
    p6 = seal_ipv6(ctx, spi=1, seq=9, src="::1", dst="::2", next_header=17, payload=b"six")
    assert (p6[41] + 2) * 4 == 40
    assert verify_untrusted(ctx, p6).payload == b"six"


# --- receive API ------------------------------------------------------------------------------


def test_ah_codec_peek() -> None:
    ctx = context("hmac-sha2-256")
    packet = _seal4(ctx, seq=0xABCDEF, esn=False)
    assert peek_untrusted(packet[20:]) == AhPeek(spi=SPI, seq_lo=0xABCDEF, next_header=17)
    assert peek_untrusted(memoryview(packet)[20:]).spi == SPI
    with pytest.raises(MalformedPacket, match="at least 12"):
        peek_untrusted(packet[20:31])
    with pytest.raises(MalformedPacket, match="only 27 left"):
        peek_untrusted(packet[20:47])
    with pytest.raises(MalformedPacket, match="below 12"):
        peek_untrusted(b"\x11\x00" + packet[22:])


def test_ah_codec_ipv6_header_given_separately() -> None:
    """The raw IPv6 socket path: only AH onwards, addresses from recvfrom / the local side."""
    ctx = context("hmac-sha2-256")
    packet = seal_ipv6(ctx, spi=SPI, seq=4, src="2001:db8::a", dst="2001:db8::b",
                       next_header=17, payload=b"raw six", hop_limit=1)
    header = IPv6Header(payload_length=0, next_header=0, hop_limit=0,
                        src=IPv6Address("2001:db8::a"), dst=IPv6Address("2001:db8::b"))
    result = verify_ipv6_untrusted(ctx, packet[40:], header=header)
    assert result.payload == b"raw six"
    assert result.seq_lo == 4
    assert isinstance(result.ip_header, IPv6Header)
    assert result.ip_header.payload_length == len(packet) - 40
    wrong = IPv6Header(payload_length=0, next_header=0, src=IPv6Address("2001:db8::c"),
                       dst=IPv6Address("2001:db8::b"))
    with pytest.raises(IntegrityError):
        verify_ipv6_untrusted(ctx, packet[40:], header=wrong)


def test_ah_codec_not_ah_and_extension_headers() -> None:
    ctx = context("hmac-sha1")
    packet = bytearray(_seal4(ctx))
    packet[9] = 50
    with pytest.raises(MalformedPacket, match="protocol 51"):
        verify_untrusted(ctx, _fix_checksum(packet))
    six = bytearray(seal_ipv6(ctx, spi=1, seq=1, src="::1", dst="::2", next_header=17,
                              payload=b"p"))
    six[6] = 0  # a hop-by-hop header would come first
    with pytest.raises(MalformedPacket, match="extension headers"):
        verify_untrusted(ctx, bytes(six))
    with pytest.raises(MalformedPacket, match="version 4 or 6"):
        verify_untrusted(ctx, b"\x50" + bytes(40))
    with pytest.raises(MalformedPacket):
        verify_untrusted(ctx, b"")


def test_ah_codec_ipv4_header_given_separately_recomputes_lengths() -> None:
    ctx = context("hmac-sha1")
    packet = _seal4(ctx)
    header, rest = parse_ipv4_untrusted(packet)
    result = verify_ipv4_untrusted(ctx, rest, header=header)
    assert result.ip_header == header
    with pytest.raises(IntegrityError):  # the AH moved: the length the ICV covered changes
        verify_ipv4_untrusted(ctx, rest + b"x", header=header)


def test_ah_codec_result_and_context_reprs_hide_secrets() -> None:
    key = b"K" * 32
    ctx = AhContext.create(auth=auth_algorithm("hmac-sha2-256"), auth_key=key)
    assert "KKKK" not in repr(ctx)
    assert "hmac-sha2-256" in repr(ctx)
    result = verify_untrusted(ctx, _seal4(ctx, payload=b"SECRET-PAYLOAD"))
    assert "SECRET" not in repr(result)
    assert "spi=4096" in repr(result)


def test_ah_codec_create_and_seal_validation() -> None:
    with pytest.raises(ValueError, match="alignment"):
        context("hmac-sha1", align=16)
    with pytest.raises(AlgorithmError, match="20-byte key"):
        context("hmac-sha1", key=bytes(16))
    with pytest.raises(AlgorithmError, match="ICV"):
        AhContext.create(auth=auth_algorithm("null"), auth_key=b"")
    ctx = context("hmac-sha1")
    with pytest.raises(ValueError, match="spi"):
        _seal4(ctx, spi=0)
    with pytest.raises(ValueError, match="seq"):
        _seal4(ctx, seq=1 << 32)
    assert _seal4(ctx, seq=(1 << 64) - 1, esn=True)
    with pytest.raises(ValueError, match="seq"):
        _seal4(ctx, seq=1 << 64, esn=True)
    with pytest.raises(ValueError, match="options"):
        _seal4(ctx, options=b"\x07\x09\x04\x00")  # option longer than the options area
    with pytest.raises(ValueError, match="total_length"):
        _seal4(ctx, payload=bytes(65536 - 20 - 24 + 1))
    with pytest.raises(ValueError, match="payload_length"):
        seal_ipv6(ctx, spi=1, seq=1, src="::1", dst="::2", next_header=17,
                  payload=bytes(65536 - 24))
    packet = _seal4(ctx)
    with pytest.raises(ValueError, match="seq_hi"):
        verify_untrusted(ctx, packet, esn=True, seq_hi=1 << 32)
