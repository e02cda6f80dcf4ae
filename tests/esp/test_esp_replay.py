"""The anti-replay window at its edges, with and without ESN, for several sizes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secsock.core.algorithms import encryption_algorithm
from secsock.core.esp import open_untrusted, peek_untrusted, seal
from secsock.core.replay import MAX_WINDOW, ReplayWindow
from secsock.errors import IntegrityError
from tests.esp.esp_helpers import make_context

SIZES = [32, 64, 1024, 4096]
M32 = 0xFFFFFFFF


def accept(w: ReplayWindow, seq_lo: int) -> int | None:
    """check + commit as the engine does after a good ICV; the 64-bit number or None."""
    seq = w.check(seq_lo)
    if seq is None:
        return None
    assert w.commit(seq)
    return seq


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("esn", [False, True])
def test_first_packet_and_duplicates(size: int, esn: bool) -> None:
    w = ReplayWindow(size, esn=esn)
    assert w.top == 0
    assert w.check(0) is None  # sequence number 0 is never sent
    assert accept(w, 1) == 1
    assert w.check(1) is None
    assert accept(w, 3) == 3
    assert accept(w, 2) == 2
    assert w.check(2) is None
    assert w.check(3) is None
    assert w.top == 3
    assert w.bitmap == 0b111


@pytest.mark.parametrize("size", SIZES)
def test_first_packet_may_be_anywhere(size: int) -> None:
    w = ReplayWindow(size, esn=False)
    assert accept(w, 1_000_000) == 1_000_000
    assert accept(w, 1_000_000 - size + 1) is not None  # last slot inside the window
    assert w.check(1_000_000 - size) is None  # just left of it


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("esn", [False, True])
def test_exactly_at_the_window_edge(size: int, esn: bool) -> None:
    top = 10 * size
    w = ReplayWindow(size, esn=esn)
    assert accept(w, top) == top
    edge = top - size + 1  # the oldest number the window still tracks
    assert w.check(edge) == edge
    # left of the window: too old; with ESN, RFC 4303 A2.1 reads it as the next 2^32 sub-space
    # (a new number whose ICV will then fail)
    assert w.check(edge - 1) == ((1 << 32) | (edge - 1) if esn else None)
    assert accept(w, edge) == edge
    assert w.check(edge) is None
    # one step to the right pushes the edge out
    assert accept(w, top + 1) == top + 1
    assert w.check(edge) == ((1 << 32) | edge if esn else None)
    assert w.check(edge + 1) == edge + 1


@pytest.mark.parametrize("size", SIZES)
def test_jump_beyond_the_window_clears_it(size: int) -> None:
    w = ReplayWindow(size, esn=False)
    for s in range(1, 40):
        assert accept(w, s) == s
    far = 39 + size + 5
    assert accept(w, far) == far
    assert w.bitmap == 1
    for s in range(far - size + 1, far):  # all of these were never received
        assert w.check(s) == s
    assert w.check(39) is None  # now left of the window
    # a jump of exactly the window size keeps nothing but the new top
    w2 = ReplayWindow(size, esn=False)
    accept(w2, 5)
    accept(w2, 5 + size)
    assert w2.bitmap == 1
    assert w2.check(5) is None


@pytest.mark.parametrize("size", SIZES)
def test_shift_keeps_marks_inside_the_window(size: int) -> None:
    w = ReplayWindow(size, esn=False)
    accept(w, 100)
    accept(w, 90)
    accept(w, 100 + size - 20)
    assert w.top == 80 + size
    assert w.check(100) is None
    assert w.check(90) is None
    assert w.check(95) == 95
    assert w.check(80) is None  # exactly one window behind the top


@pytest.mark.parametrize("size", SIZES)
def test_commit_rechecks_a_concurrent_duplicate(size: int) -> None:
    w = ReplayWindow(size, esn=False)
    accept(w, 50)
    a = w.check(40)
    b = w.check(40)
    assert a == b == 40
    assert w.commit(40)
    assert not w.commit(40)  # the second copy lost the race
    c, d = w.check(60), w.check(60)
    assert c == d == 60
    assert w.commit(60)
    assert not w.commit(60)
    assert not w.commit(0)
    assert not w.commit(60 - size)  # left of the window


@pytest.mark.parametrize("size", SIZES)
def test_esn_crosses_the_2_32_boundary(size: int) -> None:
    w = ReplayWindow(size, esn=True, top=2**32 - 3)
    assert w.check(2**32 - 3 & M32) is None  # top itself counts as received
    got = [accept(w, lo) for lo in (M32 - 1, M32, 0, 1, 2)]
    assert got == [2**32 - 2, 2**32 - 1, 2**32, 2**32 + 1, 2**32 + 2]
    assert w.top == 2**32 + 2
    # numbers just before the boundary are still inside the window: inferred with high bits 0
    assert w.check(M32 - 1) is None  # duplicate of 2^32 - 2
    assert w.check(M32 - 3) == 2**32 - 4
    # far below the bottom of the window, seq_lo is read as the next sub-space
    far = (2**32 + 2 - size - 10) & M32
    assert w.check(far) == (1 << 32) + far
    assert w.check(5) == 2**32 + 5
    assert w.check(0) is None


@pytest.mark.parametrize("size", SIZES)
def test_esn_inference_rfc4303_appendix_a(size: int) -> None:
    # Case A: the window lies within one sub-space (Tl >= W - 1)
    top = (7 << 32) | 100_000
    w = ReplayWindow(size, esn=True, top=top)
    bottom = 100_000 - size + 1
    assert w.infer(bottom) == (7 << 32) | bottom
    assert w.infer(bottom - 1) == (8 << 32) | (bottom - 1)  # below the bottom: next sub-space
    assert w.infer(200_000) == (7 << 32) | 200_000
    # Case B: the window straddles the boundary (Tl < W - 1)
    top = (7 << 32) | 5
    w = ReplayWindow(size, esn=True, top=top)
    b = (5 - size + 1) & M32
    assert w.infer(b) == (6 << 32) | b  # the previous sub-space
    assert w.infer(M32) == (6 << 32) | M32
    assert w.infer(4) == (7 << 32) | 4
    assert w.infer(b - 1) == (7 << 32) | (b - 1)
    assert w.check(M32) == (6 << 32) | M32
    assert w.check(b - 1) == (7 << 32) | (b - 1)  # ahead of top
    # at the very start there is no sub-space below 0
    assert ReplayWindow(size, esn=True).check(M32) is None


def test_esn_cannot_pass_2_64() -> None:
    w = ReplayWindow(64, esn=True, top=2**64 - 2)
    assert accept(w, M32) == 2**64 - 1
    assert w.check(0) is None  # would be 2^64: the counter must not cycle
    assert w.check(1) is None


def test_disabled_window_accepts_everything() -> None:
    w = ReplayWindow(0, esn=False)
    for s in (5, 5, 0, 3, 5):
        assert w.check(s) == s
        assert w.commit(s)
    assert w.size == 0


def test_constructor_limits() -> None:
    with pytest.raises(ValueError, match="ESN needs an anti-replay window"):
        ReplayWindow(0, esn=True)
    with pytest.raises(ValueError, match=f"0..{MAX_WINDOW} packets, got -1"):
        ReplayWindow(-1, esn=False)
    with pytest.raises(ValueError, match="got 65537"):
        ReplayWindow(MAX_WINDOW + 1, esn=False)
    with pytest.raises(ValueError, match="32-bit"):
        ReplayWindow(64, esn=False, top=2**32)
    with pytest.raises(ValueError, match="seq_lo"):
        ReplayWindow(64, esn=False).check(2**32)
    assert repr(ReplayWindow(64, esn=True, top=9)) == "ReplayWindow(size=64, esn=True, top=9)"


class ModelWindow:
    """A slow, obviously-correct model: the set of accepted numbers plus the top."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.seen: set[int] = set()
        self.top = 0

    def check(self, seq: int) -> bool:
        if seq == 0 or seq in self.seen:
            return False
        return seq > self.top or self.top - seq < self.size

    def commit(self, seq: int) -> None:
        self.seen.add(seq)
        self.top = max(self.top, seq)


@pytest.mark.parametrize("size", SIZES)
@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.integers(min_value=-50, max_value=5000), max_size=60))
def test_window_agrees_with_a_set_model(size: int, steps: list[int]) -> None:
    w = ReplayWindow(size, esn=False)
    model = ModelWindow(size)
    base = 10_000
    for step in steps:
        seq = max(0, base + step)
        got = w.check(seq)
        assert (got is not None) == model.check(seq), (seq, w.top)
        if got is not None:
            assert w.commit(got)
            model.commit(seq)
        base = max(base, w.top)


@settings(max_examples=200, deadline=None)
@given(start=st.integers(min_value=1, max_value=2**40), deltas=st.lists(
    st.integers(min_value=-60, max_value=60), min_size=1, max_size=40))
def test_esn_inference_recovers_numbers_near_the_top(start: int, deltas: list[int]) -> None:
    w = ReplayWindow(64, esn=True, top=start)
    for d in deltas:
        seq = w.top + d
        if not 0 < seq < 2**64 or w.top - seq >= 64:
            continue
        assert w.infer(seq & M32) == seq
        got = w.check(seq & M32)
        if got is not None:
            assert got == seq
            w.commit(got)


def test_replayed_esp_packet_is_rejected_end_to_end() -> None:
    ctx = make_context(encryption_algorithm("aes-gcm-16"), None)[0]
    w = ReplayWindow(64, esn=True, top=2**32 - 2)
    packets = [seal(ctx, spi=9, seq=s, payload=b"p%d" % s, next_header=17, esn=True)
               for s in range(2**32 - 1, 2**32 + 3)]
    rnd = random.Random(4)
    order = [*packets, packets[1], packets[0]]
    rnd.shuffle(order)
    delivered = []
    for p in order:
        _spi, seq_lo = peek_untrusted(p)
        seq = w.check(seq_lo)
        if seq is None:
            continue
        opened = open_untrusted(ctx, p, seq_hi=seq >> 32, esn=True)
        if w.commit(seq):
            delivered.append(opened.payload)
    assert sorted(delivered) == sorted(b"p%d" % s for s in range(2**32 - 1, 2**32 + 3))
    # a forged packet with a new sequence number fails the ICV and does not move the window
    top = w.top
    forged = bytearray(packets[-1])
    forged[4:8] = (10).to_bytes(4, "big")
    seq = w.check(10)
    assert seq == 2**32 + 10
    with pytest.raises(IntegrityError):
        open_untrusted(ctx, bytes(forged), seq_hi=seq >> 32, esn=True)
    assert w.top == top
