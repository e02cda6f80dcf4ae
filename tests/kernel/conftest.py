"""Fixtures for the kernel interop tests: one booted guest kernel per pytest session.

``kernel_peer`` (session) boots the rig on first use and tears it down at the end of the
session, also after a failure or Ctrl-C (pytest runs session finalizers; the rig also registers
an atexit fallback). ``kpeer`` (function) is the same peer with the guest's SAD and SPD flushed
before and after the test, so tests do not see each other's SAs.

When the machine cannot run the rig (not Linux, not root, no /dev/net/tun, no ``ip netns``)
or the rig cannot be installed or booted, the tests skip with the reason -- except in CI
(env ``CI=true``), where they fail, so CI always proves interop. ``SECSOCK_KERNEL_TESTS=0``
skips them on purpose, also in CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NoReturn

import pytest

from tests.kernel.rig import KernelPeer, RigError, in_ci, rig_unavailable_reason


def _unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"kernel peer rig unavailable in CI (CI=true): {reason}", pytrace=False)
    pytest.skip(f"kernel peer rig unavailable: {reason}")


@pytest.fixture(scope="session")
def kernel_peer() -> Iterator[KernelPeer]:
    if os.environ.get("SECSOCK_KERNEL_TESTS", "").strip() == "0":
        pytest.skip("kernel peer tests switched off with SECSOCK_KERNEL_TESTS=0")
    reason = rig_unavailable_reason()
    if reason is not None:
        _unavailable(reason)
    try:
        peer = KernelPeer.start()
    except RigError as e:
        _unavailable(str(e))
    try:
        yield peer
    finally:
        peer.close()


@pytest.fixture
def kpeer(kernel_peer: KernelPeer) -> Iterator[KernelPeer]:
    if not kernel_peer.alive:
        pytest.fail(
            "the guest kernel died earlier in this session; console:\n" + kernel_peer.console_tail()
        )
    kernel_peer.flush()
    yield kernel_peer
    if kernel_peer.alive:
        kernel_peer.flush()
