"""The anti-replay window (RFC 4303 §3.4.3) with ESN high-bit inference (RFC 4303 Appendix A).

Usage per inbound packet, for one SA::

    seq = window.check(seq_lo)          # before the ICV: None -> drop as DropReason.REPLAY
    payload = esp.open_untrusted(ctx, packet, seq_hi=seq >> 32, esn=True)   # ICV verified
    if not window.commit(seq): ...      # after the ICV: a concurrent duplicate won -> drop

The window moves only in ``commit``, so unauthenticated packets can never shift it. The bitmap is
a Python int (bit ``i`` set = sequence number ``top - i`` was received); shifting an int of a
few thousand bits is a single C-level operation, cheaper in CPython than RFC 6479's block ring
(see docs/esp.md for the measurement).

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

    __slots__ = ("_bitmap", "_esn", "_mask", "_size", "_top")

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
        self._mask = (1 << size) - 1
        self._bitmap = 1 if top else 0

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
        return self._bitmap

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
        diff = top - seq
        if diff >= self._size or (self._bitmap >> diff) & 1:
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
            shift = seq - top
            if shift < self._size:
                self._bitmap = ((self._bitmap << shift) | 1) & self._mask
            else:
                self._bitmap = 1
            self._top = seq
            return True
        diff = top - seq
        if diff >= self._size:
            return False
        bit = 1 << diff
        if self._bitmap & bit:
            return False
        self._bitmap |= bit
        return True

    def __repr__(self) -> str:
        return f"ReplayWindow(size={self._size}, esn={self._esn}, top={self._top})"
