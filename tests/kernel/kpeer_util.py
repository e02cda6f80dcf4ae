"""Small helpers shared by the kernel tests."""

from __future__ import annotations

import time

from tests.kernel.rig import KernelPeer

__all__ = ("wait_counter",)


def wait_counter(peer: KernelPeer, name: str, at_least: int, *, timeout: float = 5.0) -> int:
    """Poll the guest's XFRM counter ``name`` until it reaches ``at_least``; return its value.

    Each poll is a control round trip (no sleeping). The packet that should move the counter
    was sent before the poll, over the same tap, so one poll nearly always suffices.
    """
    deadline = time.monotonic() + timeout
    while True:
        stats = peer.xfrm_stat()
        value = stats[name]
        if value >= at_least or time.monotonic() > deadline:
            if value < at_least:
                nonzero = {k: v for k, v in stats.items() if v}
                raise AssertionError(
                    f"expected {name} >= {at_least}, found {value}; nonzero counters: {nonzero}"
                )
            return value
