"""AH interop with scapy's IPsec layer: byte-identical output, and each side verifies the other.

scapy pads IPv4 AH to 4 bytes (RFC 4302); secsock's align=8 packets (Linux's default) must
still verify in scapy, and scapy's 4-aligned packets in an align=8 secsock context.
scapy's AH supports ESN (``esn_en``/``esn``), so ESN is cross-checked too.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # scapy warns about optional crypto at import time
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.ipsec import AH, IPSecIntegrityError, SecurityAssociation

from secsock.core.ah import seal_ipv4, seal_ipv6, verify_ipv4_untrusted, verify_untrusted
from secsock.errors import IntegrityError
from tests.ah.ah_helpers import KEYS, SCAPY_NAMES, context

ALGS = sorted(SCAPY_NAMES)
ESN_CASES = [(False, 0), (True, 0), (True, 0x1234ABCD)]
SPI = 0x0000C0DE
PAYLOADS = [b"", b"x", b"ping over AH, 28 bytes long!", bytes(range(256)) * 3]


def _sa(name: str, esn: bool, seq_hi: int) -> Any:
    # scapy is untyped: its SecurityAssociation is handled as Any from here on.
    return SecurityAssociation(  # type: ignore[no-untyped-call]
        AH, spi=SPI, auth_algo=SCAPY_NAMES[name], auth_key=KEYS[name], esn_en=esn, esn=seq_hi
    )


def _ipv4_plain(data: bytes) -> IP:
    return (
        IP(src="192.0.2.1", dst="198.51.100.7", tos=0xB8, ttl=17, id=0x4242, flags="DF")
        / UDP(sport=4000, dport=7001)
        / data
    )


def _ipv6_plain(data: bytes) -> IPv6:
    return (
        IPv6(src="2001:db8::1", dst="2001:db8::2", tc=0x2E, fl=0xBEEF, hlim=9)
        / UDP(sport=4000, dport=7001)
        / data
    )


@pytest.mark.parametrize(("esn", "seq_hi"), ESN_CASES)
@pytest.mark.parametrize("name", ALGS)
def test_ah_scapy_ipv4_identical_bytes_and_both_verify(name: str, esn: bool, seq_hi: int) -> None:
    sa = _sa(name, esn, seq_hi)
    ctx4 = context(name, align=4)
    ctx8 = context(name, align=8)
    for i, data in enumerate(PAYLOADS):
        seq_lo = 1 + i * 1000
        plain = _ipv4_plain(data)
        raw_plain = bytes(plain)
        udp = raw_plain[20:]
        scapy_raw = bytes(sa.encrypt(plain, seq_num=seq_lo, esn_en=esn, esn=seq_hi))
        ours = seal_ipv4(
            ctx4, spi=SPI, seq=(seq_hi << 32) | seq_lo, esn=esn, src="192.0.2.1",
            dst="198.51.100.7", next_header=17, payload=udp, ttl=17, tos=0xB8,
            identification=0x4242, df=True,
        )
        assert ours == scapy_raw
        # scapy -> secsock, with either local alignment setting
        for ctx in (ctx4, ctx8):
            result = verify_untrusted(ctx, scapy_raw, esn=esn, seq_hi=seq_hi)
            assert (result.spi, result.seq_lo, result.next_header) == (SPI, seq_lo, 17)
            assert result.payload == udp
        # secsock align 8 -> scapy
        ours8 = seal_ipv4(
            ctx8, spi=SPI, seq=(seq_hi << 32) | seq_lo, esn=esn, src="192.0.2.1",
            dst="198.51.100.7", next_header=17, payload=udp, ttl=17, tos=0xB8,
        )
        assert (ours8[21] + 2) * 4 == ctx8.ah_len_ipv4
        assert ctx8.ah_len_ipv4 % 8 == 0
        decrypted = sa.decrypt(IP(ours8), esn_en=esn, esn=seq_hi)
        assert bytes(decrypted)[20:] == udp
        assert decrypted.proto == 17
        # and scapy really checks: a flipped payload bit is refused by both
        bad = bytearray(ours8)
        bad[-1] ^= 0x01
        with pytest.raises(IPSecIntegrityError):
            sa.decrypt(IP(bytes(bad)), esn_en=esn, esn=seq_hi)
        with pytest.raises(IntegrityError):
            verify_untrusted(ctx8, bytes(bad), esn=esn, seq_hi=seq_hi)


@pytest.mark.parametrize(("esn", "seq_hi"), ESN_CASES)
@pytest.mark.parametrize("name", ALGS)
def test_ah_scapy_ipv6_identical_bytes_and_both_verify(name: str, esn: bool, seq_hi: int) -> None:
    sa = _sa(name, esn, seq_hi)
    ctx = context(name)
    for i, data in enumerate(PAYLOADS):
        seq_lo = 7 + i
        plain = _ipv6_plain(data)
        udp = bytes(plain)[40:]
        scapy_raw = bytes(sa.encrypt(plain, seq_num=seq_lo, esn_en=esn, esn=seq_hi))
        ours = seal_ipv6(
            ctx, spi=SPI, seq=(seq_hi << 32) | seq_lo, esn=esn, src="2001:db8::1",
            dst="2001:db8::2", next_header=17, payload=udp, hop_limit=9, traffic_class=0x2E,
            flow_label=0xBEEF,
        )
        assert ours == scapy_raw
        assert (ours[41] + 2) * 4 == ctx.ah_len_ipv6
        assert ctx.ah_len_ipv6 % 8 == 0
        result = verify_untrusted(ctx, scapy_raw, esn=esn, seq_hi=seq_hi)
        assert (result.spi, result.seq_lo, result.payload) == (SPI, seq_lo, udp)
        decrypted = sa.decrypt(IPv6(ours), esn_en=esn, esn=seq_hi)
        assert bytes(decrypted)[40:] == udp
        assert decrypted.nh == 17


def test_ah_scapy_ipv4_options_and_mutable_fields_agree() -> None:
    """Router Alert is kept, Record Route zeroed: both sides must agree on the ICV input."""
    name = "hmac-sha2-256"
    sa = _sa(name, False, 0)
    options = b"\x94\x04\x00\x00" + b"\x07\x07\x04" + bytes([10, 0, 0, 9]) + b"\x00"
    plain = (
        IP(src="10.1.1.1", dst="10.2.2.2", tos=0x10, ttl=3, id=5, flags=0, options=options)
        / UDP(sport=1, dport=2)
        / b"opts"
    )
    raw_plain = bytes(plain)
    scapy_raw = bytes(sa.encrypt(plain, seq_num=99))
    ctx = context(name)
    ours = seal_ipv4(
        ctx, spi=SPI, seq=99, src="10.1.1.1", dst="10.2.2.2", next_header=17,
        payload=raw_plain[32:], ttl=3, tos=0x10, identification=5, df=False, options=options,
    )
    assert ours == scapy_raw
    # a router updates the Record Route option, the TTL and the checksum: still verifies in both
    routed = IP(scapy_raw)
    routed.ttl = 1
    routed.options[1].routers = ["10.9.9.9"]
    del routed.chksum
    routed_raw = bytes(routed)
    assert routed_raw != scapy_raw
    assert verify_untrusted(ctx, routed_raw).payload == raw_plain[32:]
    sa.decrypt(IP(routed_raw))


def test_ah_scapy_verify_with_header_from_parse() -> None:
    """The engine may parse first and pass header + rest: same result as the whole packet."""
    from secsock.core.ip import parse_ipv4_untrusted

    name = "hmac-sha1"
    raw = bytes(_sa(name, False, 0).encrypt(_ipv4_plain(b"abc"), seq_num=3))
    ctx = context(name)
    header, rest = parse_ipv4_untrusted(raw)
    assert verify_ipv4_untrusted(ctx, rest, header=header) == verify_untrusted(ctx, raw)
