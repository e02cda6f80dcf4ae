"""SA lifetimes: soft and hard limits in seconds since add and in bytes. Pure.

A limit of 0 means "no limit", as in PF_KEY's ``sadb_lifetime`` (setkey ``-ls``/``-lh`` give
the add-time limits, ``-bs``/``-bh`` the byte limits). Reaching a *soft* limit makes a mature
SA dying (key management should rekey); reaching a *hard* limit kills it. Time is always passed
in (``now``, wall-clock seconds); nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from secsock.core._shown import shown

__all__ = ("ExpireReason", "Lifetime", "limit_reached")

_U64 = (1 << 64) - 1


class ExpireReason(StrEnum):
    """Why an SA expired (the ``reason`` of SoftExpire/HardExpire events)."""

    ADDTIME = "addtime"  # seconds since the SA was added (setkey -ls / -lh)
    BYTES = "bytes"  # bytes protected or accepted (setkey -bs / -bh)
    SEQUENCE = "sequence"  # the outbound sequence counter is exhausted (hard only)


@dataclass(frozen=True, slots=True, kw_only=True)
class Lifetime:
    """One set of limits (soft or hard). 0 = no limit; both are unsigned 64-bit in PF_KEY."""

    addtime: int = 0
    bytes: int = 0

    def __post_init__(self) -> None:
        for name in ("addtime", "bytes"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= _U64:
                raise ValueError(
                    f"lifetime {name} must be an integer in 0..2^64-1 (0 = no limit), "
                    f"found {shown(value)}"
                )

    @property
    def unlimited(self) -> bool:
        """True when neither limit is set."""
        return self.addtime == 0 and self.bytes == 0


def limit_reached(limit: Lifetime, *, age: float, nbytes: int) -> ExpireReason | None:
    """Which limit of ``limit`` an SA of ``age`` seconds that carried ``nbytes`` has reached.

    The add-time limit is checked first (so a simultaneous hit reports ``addtime``). A limit is
    reached when the value is *at or past* it (KAME's key_timehandler waits until it is strictly
    past; see docs/sadb.md).
    """
    if limit.addtime and age >= limit.addtime:
        return ExpireReason.ADDTIME
    if limit.bytes and nbytes >= limit.bytes:
        return ExpireReason.BYTES
    return None
