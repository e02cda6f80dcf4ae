"""Hypothesis: untrusted bytes raise only MalformedPacket/IntegrityError; seal->open round trips."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secsock.core.algorithms import auth_algorithm, encryption_algorithm
from secsock.core.esp import EspContext, PadMode, open_untrusted, peek_untrusted, seal
from secsock.errors import IntegrityError, MalformedPacket
from tests.esp.esp_helpers import make_context, valid_combinations

COMBOS = valid_combinations()


@cache
def _ctx(index: int) -> EspContext:
    enc, auth = COMBOS[index]
    return make_context(
        encryption_algorithm(enc), None if auth is None else auth_algorithm(auth), seed=index
    )[0]


combo_index = st.integers(min_value=0, max_value=len(COMBOS) - 1)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64))
def test_peek_untrusted_random_bytes(data: bytes) -> None:
    try:
        spi, seq = peek_untrusted(data)
    except MalformedPacket:
        assert len(data) < 8
    else:
        assert spi == int.from_bytes(data[:4], "big")
        assert seq == int.from_bytes(data[4:8], "big")


@settings(max_examples=500, deadline=None)
@given(
    index=combo_index,
    data=st.binary(max_size=200),
    seq_hi=st.integers(min_value=0, max_value=2**32 - 1),
    esn=st.booleans(),
    check_padding=st.booleans(),
)
def test_open_untrusted_random_bytes(
    index: int, data: bytes, seq_hi: int, esn: bool, check_padding: bool
) -> None:
    ctx = _ctx(index)
    try:
        opened = open_untrusted(ctx, data, seq_hi=seq_hi, esn=esn, check_padding=check_padding)
    except (MalformedPacket, IntegrityError):
        return
    # Only packets without an ICV can be accepted at random.
    assert ctx.icv_len == 0
    assert 0 <= opened.next_header <= 255
    assert len(opened.payload) + opened.pad_len + 2 <= len(data)


@settings(max_examples=300, deadline=None)
@given(
    index=combo_index,
    payload=st.binary(max_size=300),
    seq=st.integers(min_value=0, max_value=2**64 - 1),
    esn=st.booleans(),
    next_header=st.integers(min_value=0, max_value=255),
    pad_to=st.integers(min_value=0, max_value=600),
    padding=st.sampled_from(PadMode),
    iv_seed=st.binary(min_size=16, max_size=16),
    flip=st.integers(min_value=0),
)
def test_round_trip_and_tamper(
    index: int, payload: bytes, seq: int, esn: bool, next_header: int, pad_to: int,
    padding: PadMode, iv_seed: bytes, flip: int,
) -> None:
    ctx = _ctx(index)
    if not esn:
        seq &= 0xFFFFFFFF
    iv = iv_seed[: ctx.iv_len] if ctx.needs_random_iv else None
    packet = seal(
        ctx, spi=0xC0FFEE, seq=seq, payload=payload, next_header=next_header, esn=esn, iv=iv,
        padding=padding, random_pad=bytes(range(255, 0, -1)), pad_to=pad_to,
    )
    assert len(packet) == ctx.sealed_length(len(payload), pad_to)
    opened = open_untrusted(
        ctx, packet, seq_hi=seq >> 32, esn=esn, check_padding=padding is PadMode.SEQ
    )
    assert opened.payload == payload
    assert opened.next_header == next_header
    assert opened.pad_len == ctx.pad_length(len(payload), pad_to)
    if ctx.icv_len:
        bit = flip % (len(packet) * 8)
        tampered = bytearray(packet)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(IntegrityError):
            open_untrusted(ctx, bytes(tampered), seq_hi=seq >> 32, esn=esn)
