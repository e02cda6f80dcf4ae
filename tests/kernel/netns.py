"""Network namespaces for tests: create, enter on the current thread, delete.

A namespace is made with ``ip netns add NAME`` (so it has a name under /run/netns and
``ip -n NAME`` works on it) and always deleted by :meth:`NetNS.delete`. :meth:`NetNS.enter` moves
the *calling thread* into the namespace with setns(2) and moves it back on exit; sockets created
inside stay in the namespace for their whole life, so a test can create its sockets inside
``with ns.enter():`` and use them afterwards from anywhere. Python 3.11 has no ``os.setns``, so
this calls libc through ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Self

__all__ = ("CLONE_NEWNET", "NetNS", "NetNSError", "find_ip", "netns_unavailable_reason")

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = Path("/run/netns")


class NetNSError(RuntimeError):
    """A namespace could not be created, entered or configured."""


def find_ip() -> str | None:
    """The path of iproute2's ``ip``, or None when it is not installed."""
    found = shutil.which("ip")
    if found is not None:
        return found
    for candidate in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def netns_unavailable_reason() -> str | None:
    """Why this process cannot create network namespaces, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux; this is {sys.platform}"
    if os.geteuid() != 0:
        return f"network namespaces need root; euid is {os.geteuid()}"
    ip = find_ip()
    if ip is None:
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    probe = subprocess.run([ip, "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns list` failed (rc={probe.returncode}): {probe.stderr.strip()}"
    return None


_libc: ctypes.CDLL | None = None


def _setns(fd: int, nstype: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(fd={fd}, {nstype:#x}) failed: {os.strerror(err)}")


class NetNS:
    """A named network namespace owned by this process (created here, deleted here)."""

    def __init__(self, name: str, *, ip: str | None = None) -> None:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"expected a plain namespace name, found {name!r}")
        found = ip if ip is not None else find_ip()
        if found is None:
            raise NetNSError("iproute2's `ip` is not installed (apt-get install iproute2)")
        self.name = name
        self.ip = found
        self.path = NETNS_RUN_DIR / name
        self._created = False

    def __repr__(self) -> str:
        return f"NetNS({self.name!r}, created={self._created})"

    @classmethod
    def adopt(cls, name: str, *, ip: str | None = None) -> Self:
        """A handle on an existing namespace (e.g. one a killed run left), to clean it up."""
        ns = cls(name, ip=ip)
        if not ns.path.exists():
            raise NetNSError(f"expected namespace {name!r} under {NETNS_RUN_DIR}, found none")
        ns._created = True
        return ns

    def create(self) -> Self:
        """``ip netns add NAME`` and bring ``lo`` up; raises NetNSError when it fails."""
        result = subprocess.run(
            [self.ip, "netns", "add", self.name], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise NetNSError(
                f"`ip netns add {self.name}` failed (rc={result.returncode}): "
                f"{result.stderr.strip()}"
            )
        self._created = True
        self.run_ip(["link", "set", "lo", "up"])
        return self

    def run_ip(self, args: Sequence[str]) -> str:
        """Run ``ip -n NAME ARGS...`` and return its stdout; NetNSError on failure."""
        cmd = [self.ip, "-n", self.name, *args]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise NetNSError(
                f"`{' '.join(cmd)}` failed (rc={result.returncode}): {result.stderr.strip()}"
            )
        return result.stdout

    def pids(self) -> list[int]:
        """The processes whose network namespace is this one (``ip netns pids NAME``)."""
        if not self._created:
            return []
        result = subprocess.run(
            [self.ip, "netns", "pids", self.name], capture_output=True, text=True, check=False
        )
        return [int(word) for word in result.stdout.split() if word.isdigit()]

    @contextmanager
    def enter(self) -> Iterator[None]:
        """Move the calling thread into the namespace; restore the previous one on exit.

        Nesting works (the namespace current at entry is the one restored). Only the calling
        thread moves; sockets created inside keep this namespace after the block ends.
        """
        if not self._created:
            raise NetNSError(f"namespace {self.name!r} was not created (or already deleted)")
        previous = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target, CLONE_NEWNET)
            finally:
                os.close(target)
            try:
                yield
            finally:
                _setns(previous, CLONE_NEWNET)
        finally:
            os.close(previous)

    def delete(self) -> None:
        """``ip netns del NAME``; idempotent, never raises (used in teardown paths)."""
        if not self._created:
            return
        subprocess.run(
            [self.ip, "netns", "del", self.name], capture_output=True, text=True, check=False
        )
        self._created = False

    def __enter__(self) -> Self:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.delete()
