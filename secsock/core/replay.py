"""The anti-replay window (RFC 4303 §3.4.3) with ESN high-bit inference (RFC 4303 Appendix A).

Usage per inbound packet, for one SA::

    seq = window.check(seq_lo)          # before the ICV: None -> drop as DropReason.REPLAY
    payload = esp.open_untrusted(ctx, packet, seq_hi=seq >> 32, esn=True)   # ICV verified
    if not window.commit(seq): ...      # after the ICV: a concurrent duplicate won -> drop

The window moves only in ``commit``, so unauthenticated packets can never shift it. The received
marks live in a Python int anchored at a base sequence number (bit ``seq - base``), so a new
packet only sets one bit; the int is re-anchored (shifted right) once it grows past twice the
window. In CPython this beats both a shifted bitmap and RFC 6479's block ring, and its cost does
not grow with the window (docs/esp.md has the measurements).

Not thread-safe by itself: the SA store serialises ``check``/``commit`` per SA.
"""

from __future__ import annotations

from typing import Final

__all__ = ("MAX_WINDOW", "ReplayWindow")

_MAX32: Final = 0xFFFFFFFF
_MAX64: Final = 0xFFFFFFFFFFFFFFFF

#: Largest window accepted, in packets (Linux allows 4096 with ESN; KAME 255 bytes = 2040).
MAX_WINDOW: Final = 1 << 16


class ReplayWindow:
    """Per-SA anti-replay state: ``size`` packets wide (0 disables the check).

    ``esn``: the SA uses 64-bit Extended Sequence Numbers; ``check`` infers the high half.
    ``top``: the highest authenticated sequence number so far (0 = none yet), to start an SA at
    a preset point; ``top`` itself counts as received, the numbers below it as not received.
    """

    __slots__ = ("_base", "_bits", "_esn", "_size", "_top", "_trim")

    def __init__(self, size: int, *, esn: bool, top: int = 0) -> None:
        if not 0 <= size <= MAX_WINDOW:
            raise ValueError(f"replay window must be 0..{MAX_WINDOW} packets, got {size}")
        limit = _MAX64 if esn else _MAX32
        if not 0 <= top <= limit:
            bits = 64 if esn else 32
            raise ValueError(f"top must be a {bits}-bit unsigned sequence number, got {top}")
        if esn and size == 0:
            raise ValueError(
                "ESN needs an anti-replay window (RFC 4303 Appendix A infers the high bits from "
                "it); expected size > 0, got 0"
            )
        self._size = size
        self._esn = esn
        self._top = top
        # invariant: base <= top - size + 1, so every number inside the window has a bit
        self._base = top - size + 1
        self._bits = 1 << (size - 1) if top and size else 0
        self._trim = 2 * size + 64

    @property
    def size(self) -> int:
        """Window width in packets (0 = replay check disabled)."""
        return self._size

    @property
    def esn(self) -> bool:
        """Whether the SA uses Extended Sequence Numbers."""
        return self._esn

    @property
    def top(self) -> int:
        """The highest authenticated (committed) sequence number, 0 if none yet."""
        return self._top

    @property
    def bitmap(self) -> int:
        """Received marks: bit ``i`` set means ``top - i`` was committed (for dumps and tests)."""
        out = 0
        top, base, bits = self._top, self._base, self._bits
        for i in range(min(self._size, top)):
            if (bits >> (top - i - base)) & 1:
                out |= 1 << i
        return out

    def infer(self, seq_lo: int) -> int | None:
        """The 64-bit sequence number for ``seq_lo`` (RFC 4303 A2.1), None if it cannot exist.

        Without ESN this is ``seq_lo`` itself.
        """
        if not 0 <= seq_lo <= _MAX32:
            raise ValueError(f"seq_lo must be a 32-bit unsigned number, got {seq_lo}")
        if not self._esn:
            return seq_lo
        top = self._top
        th = top >> 32
        tl = top & _MAX32
        w = self._size
        bottom = (tl - w + 1) & _MAX32
        if tl >= w - 1:  # the window lies inside one 2^32 sub-space
            hi = th + 1 if seq_lo < bottom else th
        else:  # the window straddles a sub-space boundary
            hi = th - 1 if seq_lo >= bottom else th
        if hi < 0 or hi > _MAX32:
            return None
        return (hi << 32) | seq_lo

    def check(self, seq_lo: int) -> int | None:
        """Before the ICV: the full sequence number if the packet may be new, else None.

        None means a replay, a number left of the window, or 0 (never sent). With ESN the
        returned value's high 32 bits are what the ICV/AAD must include (``seq >> 32``).
        """
        seq = self.infer(seq_lo)
        if seq is None:
            return None
        if self._size == 0:
            return seq
        if seq == 0:
            return None
        top = self._top
        if seq > top:
            return seq
        if top - seq >= self._size or (self._bits >> (seq - self._base)) & 1:
            return None
        return seq

    def commit(self, seq: int) -> bool:
        """After the ICV verified: record ``seq`` (from ``check``) and move the window.

        Re-checks, since another packet with the same number may have been committed between
        ``check`` and ``commit``; returns False (drop as a replay) in that case.
        """
        if self._size == 0:
            self._top = max(self._top, seq)
            return True
        if seq <= 0 or seq > (_MAX64 if self._esn else _MAX32):
            return False
        top = self._top
        if seq > top:
            self._top = seq
            offset = seq - self._base
            if offset >= self._trim:  # re-anchor: keep only the window's worth of marks
                base = seq - self._size + 1
                shift = base - self._base
                self._bits = self._bits >> shift if shift < self._bits.bit_length() else 0
                self._base = base
                offset = seq - base
            self._bits |= 1 << offset
            return True
        if top - seq >= self._size:
            return False
        bit = 1 << (seq - self._base)
        if self._bits & bit:
            return False
        self._bits |= bit
        return True

    def __repr__(self) -> str:
        return f"ReplayWindow(size={self._size}, esn={self._esn}, top={self._top})"
