"""Hypothesis: whatever bytes arrive, the AH and IP readers raise only MalformedPacket or
IntegrityError -- for random buffers and for mutations of valid packets."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv6Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secsock.core.ah import (
    AhContext,
    peek_untrusted,
    seal_ipv4,
    seal_ipv6,
    verify_ipv4_untrusted,
    verify_ipv6_untrusted,
    verify_untrusted,
)
from secsock.core.ip import IPv6Header, parse_ipv4_untrusted
from secsock.errors import IntegrityError, MalformedPacket
from tests.ah.ah_helpers import context

CONTEXTS: dict[str, AhContext] = {
    "sha1": context("hmac-sha1"),
    "sha256-8": context("hmac-sha2-256", align=8),
    "gmac": context("aes-gmac"),
    "xcbc": context("aes-xcbc-mac"),
}
HEADER6 = IPv6Header(
    payload_length=0, next_header=51, src=IPv6Address("::1"), dst=IPv6Address("::2")
)


def _valid_packets(ctx: AhContext) -> list[bytes]:
    v4 = seal_ipv4(ctx, spi=0x101, seq=42, src="10.0.0.1", dst="10.0.0.2", next_header=17,
                   payload=b"hello world", options=b"\x94\x04\x00\x00\x07\x07\x04" + bytes(5))
    v6 = seal_ipv6(ctx, spi=0x101, seq=42, src="::1", dst="::2", next_header=17,
                   payload=b"hello world")
    return [v4, v6]


VALID = {name: _valid_packets(ctx) for name, ctx in CONTEXTS.items()}


def _exercise(ctx: AhContext, data: bytes, esn: bool) -> None:
    calls: list[Callable[[], object]] = [
        lambda: peek_untrusted(data),
        lambda: verify_untrusted(ctx, data, esn=esn, seq_hi=3),
        lambda: verify_ipv4_untrusted(ctx, data, verify_checksum=False),
        lambda: verify_ipv6_untrusted(ctx, data, esn=esn),
        lambda: verify_ipv6_untrusted(ctx, data, header=HEADER6),
        lambda: verify_untrusted(ctx, data, cleartos=False, offsetmask=0xFFFF),
    ]
    for call in calls:
        with contextlib.suppress(MalformedPacket, IntegrityError):
            call()


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(CONTEXTS)), data=st.binary(max_size=160), esn=st.booleans())
def test_ah_fuzz_random_bytes(name: str, data: bytes, esn: bool) -> None:
    _exercise(CONTEXTS[name], data, esn)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(CONTEXTS)),
    which=st.integers(0, 1),
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 200),
    esn=st.booleans(),
)
def test_ah_fuzz_mutated_valid_packets(
    name: str, which: int, edits: list[tuple[int, int]], cut: int, esn: bool
) -> None:
    packet = bytearray(VALID[name][which])
    for pos, value in edits:
        packet[pos % len(packet)] = value
    _exercise(CONTEXTS[name], bytes(packet[: max(cut, 1)]), esn)
    _exercise(CONTEXTS[name], bytes(packet), esn)


@settings(max_examples=300)
@given(options=st.binary(min_size=0, max_size=40).map(lambda b: b[: len(b) // 4 * 4]),
       tail=st.binary(max_size=40))
def test_ah_fuzz_ipv4_options_reach_the_option_walker(options: bytes, tail: bytes) -> None:
    """Well-formed IP headers with arbitrary options in front of AH: the walker must cope."""
    ctx = CONTEXTS["sha1"]
    good = VALID["sha1"][0]
    header, rest = parse_ipv4_untrusted(good)
    forged = replace(header, options=options, total_length=20 + len(options) + len(rest))
    for data in (rest, rest[:12] + tail):
        with contextlib.suppress(MalformedPacket, IntegrityError):
            verify_ipv4_untrusted(ctx, data, header=forged)
        with contextlib.suppress(MalformedPacket, IntegrityError):
            verify_untrusted(ctx, forged.to_bytes(fix_checksum=True) + data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(CONTEXTS)),
    which=st.integers(0, 1),
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=2),
    cut=st.integers(0, 200),
    kind=st.sampled_from([bytearray, memoryview]),
)
def test_ah_fuzz_buffer_types(
    name: str, which: int, edits: list[tuple[int, int]], cut: int,
    kind: Callable[[bytes], bytearray | memoryview],
) -> None:
    """A raw socket's recv_into buffer is a bytearray or memoryview: same answers as bytes."""
    ctx = CONTEXTS[name]
    packet = bytearray(VALID[name][which])
    assert verify_untrusted(ctx, kind(bytes(packet))).payload == b"hello world"
    for pos, value in edits:
        packet[pos % len(packet)] = value
    data = bytes(packet[: max(cut, 1)])
    calls: list[Callable[[bytes | bytearray | memoryview], object]] = [
        peek_untrusted,
        lambda d: verify_untrusted(ctx, d),
        lambda d: verify_ipv4_untrusted(ctx, d, verify_checksum=False),
        lambda d: verify_ipv6_untrusted(ctx, d, header=HEADER6),
    ]
    for call in calls:
        try:
            expected: object = call(data)
        except (MalformedPacket, IntegrityError) as exc:
            expected = type(exc)
        try:
            got: object = call(kind(data))
        except (MalformedPacket, IntegrityError) as exc:
            got = type(exc)
        assert got == expected
