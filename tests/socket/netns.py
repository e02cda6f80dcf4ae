"""A private network namespace for one test: ``ip netns add`` + setns on the current thread.

Sockets created while the thread is inside stay in the namespace after it leaves. The
namespace has only ``lo`` (brought up); it is always deleted at exit. Root only: callers skip
with :func:`netns_unavailable`'s reason otherwise.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
_counter = itertools.count()


def netns_unavailable() -> str | None:
    """Why a network namespace cannot be created here, or None if it can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux-only"
    if os.geteuid() != 0:
        return "creating a network namespace needs root"
    if shutil.which("ip") is None:
        return "iproute2's ip command is not installed"
    return None


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def netns() -> Iterator[str]:
    """Create a namespace, move the calling thread into it, yield its name; undo everything."""
    name = f"secsock-sock-{os.getpid()}-{next(_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True,
                       capture_output=True)
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield name
            finally:
                _setns(original)
        finally:
            os.close(original)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
