"""The SADB and the SPD: security associations, their store, events, and the policy table.

``default_sadb()`` and ``default_spd()`` are the process-wide stores that ``secsock.setkey``
fills by default; ``MemoryStore()`` and ``SPD()`` create separate ones (tests, isolation).
See docs/sadb.md.
"""

from __future__ import annotations

from secsock.sadb.events import Acquire, EventHub, HardExpire, SADBEvent, SoftExpire
from secsock.sadb.lifetime import ExpireReason, Lifetime
from secsock.sadb.model import (
    LarvalSA,
    Padding,
    SAIdentity,
    SAMode,
    SAProtocol,
    SAState,
    SecurityAssociation,
)
from secsock.sadb.spd import SPD, SPDEntry, SPDSelector, default_spd
from secsock.sadb.store import (
    MemoryStore,
    SAAdmin,
    SAEntry,
    SARecord,
    SAStatus,
    SAStore,
    default_sadb,
)

__all__ = (
    "SPD",
    "Acquire",
    "EventHub",
    "ExpireReason",
    "HardExpire",
    "LarvalSA",
    "Lifetime",
    "MemoryStore",
    "Padding",
    "SAAdmin",
    "SADBEvent",
    "SAEntry",
    "SAIdentity",
    "SAMode",
    "SAProtocol",
    "SARecord",
    "SAState",
    "SAStatus",
    "SAStore",
    "SPDEntry",
    "SPDSelector",
    "SecurityAssociation",
    "SoftExpire",
    "default_sadb",
    "default_spd",
)
