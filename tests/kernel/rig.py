"""The kernel peer rig: a real Linux kernel (Debian's User-Mode Linux 6.1) as an XFRM peer.

::

    network namespace secsock-kpeer-<pid>-<n> (created here, deleted at close)
      kp0 (tap) 10.99.0.1/24 fd99::1/64  <== UML eth0=tuntap,kp0 ==>  eth0 10.99.0.2/24 fd99::2/64
      the test's sockets (via KernelPeer.netns())                      Linux 6.1 XFRM + peer.py agent

:func:`install` fetches the kernel on first use (``apt-get download user-mode-linux`` +
``dpkg-deb -x`` into a cache directory, under a lock, so concurrent runs are safe).
:meth:`KernelPeer.start` creates the namespace and the tap, boots the guest with the host's
``/`` as its read-only root over hostfs, waits for the agent (tests/kernel/guest/peer.py) to
report ready, and returns a handle whose methods drive the agent over its TCP control channel.
:meth:`KernelPeer.close` powers the guest off, kills what is left of the UML process group by
pid, and deletes the namespace; it runs from the fixture's teardown and, as a last resort, at
interpreter exit.

Environment:
``SECSOCK_KPEER_CACHE``   cache directory (default /var/cache/secsock-kpeer as root, else
                          /tmp/secsock-kpeer)
``SECSOCK_KPEER_PYTHON``  the Python the guest runs peer.py with (default: the real binary
                          behind ``sys.executable``; it must run with ``-S -I`` from the host's
                          root file system)
``SECSOCK_KPEER_BOOT_TIMEOUT``  seconds to wait for the guest (default 90)
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.kernel.guest.peer import ECHO_PREFIX, NATT_PORT
from tests.kernel.netns import NetNS, NetNSError, find_ip, netns_unavailable_reason

__all__ = (
    "CONTROL_PORT",
    "ECHO_PREFIX",
    "GUEST_IP4",
    "GUEST_IP6",
    "HOST_IP4",
    "HOST_IP6",
    "NATT_PORT",
    "KernelPeer",
    "PeerCommandError",
    "Received",
    "RigError",
    "UMLInstall",
    "cache_dir",
    "guest_python",
    "in_ci",
    "install",
    "reap_stale_namespaces",
    "rig_unavailable_reason",
)

HOST_IP4 = "10.99.0.1"
GUEST_IP4 = "10.99.0.2"
PREFIX4 = 24
HOST_IP6 = "fd99::1"
GUEST_IP6 = "fd99::2"
PREFIX6 = 64
CONTROL_PORT = 7999
TAP = "kp0"
GUEST_DIR = Path(__file__).resolve().parent / "guest"
PACKAGE = "user-mode-linux"
_APT_QUIET = ["-q", "-o", "APT::Sandbox::User=root"]
_counter = itertools.count(1)


class RigError(RuntimeError):
    """The rig could not be installed, booted or driven; the message says what was found."""


class PeerCommandError(RigError):
    """The guest agent answered a control request with an error."""


def in_ci() -> bool:
    """True when env CI says this is a CI run (then a broken rig fails instead of skipping)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def cache_dir() -> Path:
    configured = os.environ.get("SECSOCK_KPEER_CACHE")
    if configured:
        return Path(configured)
    if os.geteuid() == 0 and os.access("/var/cache", os.W_OK):
        return Path("/var/cache/secsock-kpeer")
    return Path(tempfile.gettempdir()) / "secsock-kpeer"


def rig_unavailable_reason() -> str | None:
    """Why the rig cannot run on this machine at all: not Linux, not root, no /dev/net/tun,
    not x86-64, or (when iproute2 is installed) ``ip netns`` not working.

    A missing iproute2 is not a reason: :meth:`KernelPeer.start` installs it.
    """
    if not sys.platform.startswith("linux"):
        return f"the kernel peer needs Linux; this is {sys.platform}"
    if os.geteuid() != 0:
        return f"the kernel peer needs root (network namespace, tap); euid is {os.geteuid()}"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun does not exist (the guest's network is a tap device)"
    if os.uname().machine != "x86_64":
        return f"Debian's user-mode-linux package is amd64-only; this is {os.uname().machine}"
    if find_ip() is not None:
        return netns_unavailable_reason()
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class UMLInstall:
    """An unpacked user-mode-linux package: the kernel binary and its module tree."""

    linux: Path
    moddir: Path

    @property
    def release(self) -> str:
        return self.moddir.name

    def __post_init__(self) -> None:
        if not os.access(self.linux, os.X_OK):
            raise RigError(f"expected an executable UML kernel at {self.linux}, found none")
        if not (self.moddir / "modules.dep").is_file():
            raise RigError(f"expected modules.dep in {self.moddir}, found none")


def _run(cmd: list[str], *, cwd: Path | None = None, timeout: float = 600) -> None:
    try:
        r = subprocess.run(
            cmd,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RigError(f"`{' '.join(cmd)}` could not run: {e}") from e
    if r.returncode != 0:
        raise RigError(
            f"`{' '.join(cmd)}` failed (rc={r.returncode}): "
            f"{(r.stderr or r.stdout).strip()[-2000:]}"
        )


_apt_updated = False


def _apt_update() -> None:
    global _apt_updated
    if not _apt_updated:
        _run(["apt-get", *_APT_QUIET, "update"])
        _apt_updated = True


def _find_install(root: Path) -> UMLInstall | None:
    linux = root / "usr/bin/linux.uml"
    moddirs = sorted((root / "usr/lib/uml/modules").glob("*/modules.dep"))
    if not linux.is_file() or not moddirs:
        return None
    return UMLInstall(linux=linux, moddir=moddirs[-1].parent)


def ensure_iproute2() -> str:
    """The path of ``ip``; installs Debian's iproute2 with apt-get when it is missing."""
    ip = find_ip()
    if ip is not None:
        return ip
    if shutil.which("apt-get") is None:
        raise RigError("iproute2's `ip` is missing and there is no apt-get to install it")
    try:
        _run(["apt-get", *_APT_QUIET, "install", "-y", "--no-install-recommends", "iproute2"])
    except RigError:
        _apt_update()
        _run(["apt-get", *_APT_QUIET, "install", "-y", "--no-install-recommends", "iproute2"])
    ip = find_ip()
    if ip is None:
        raise RigError("apt-get installed iproute2 but `ip` is still not on PATH")
    return ip


def install(cache: Path | None = None) -> UMLInstall:
    """Return the cached UML kernel, fetching and unpacking it first when it is missing.

    Idempotent and safe when several processes race: the work happens under an exclusive
    flock on ``<cache>/.lock`` and the unpacked tree appears with one rename.
    """
    root = cache if cache is not None else cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _find_install(root / "uml")
        if found is not None:
            return found
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise RigError(f"expected {tool} to fetch {PACKAGE}, found none on PATH")
        download = root / "download"
        shutil.rmtree(download, ignore_errors=True)
        download.mkdir()
        try:
            _run(["apt-get", *_APT_QUIET, "download", PACKAGE], cwd=download)
        except RigError:
            _apt_update()  # a fresh machine has no package lists yet
            _run(["apt-get", *_APT_QUIET, "download", PACKAGE], cwd=download)
        debs = sorted(download.glob(f"{PACKAGE}_*.deb"))
        if not debs:
            raise RigError(f"apt-get download {PACKAGE} left no .deb in {download}")
        partial = root / f"uml.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        _run(["dpkg-deb", "-x", str(debs[-1]), str(partial)])
        if _find_install(partial) is None:
            raise RigError(f"{debs[-1].name} has no usr/bin/linux.uml and module tree")
        shutil.rmtree(root / "uml", ignore_errors=True)
        partial.rename(root / "uml")
        shutil.rmtree(download, ignore_errors=True)
        found = _find_install(root / "uml")
        if found is None:
            raise RigError(f"unpacked {PACKAGE} into {root / 'uml'} but cannot find it there")
        return found


def _reaper_prefix() -> list[str]:
    """Wrappers that end the guest with this process, even when it is SIGKILLed.

    ``setpriv --pdeathsig KILL`` kills the next process when we die; ``unshare --pid --fork
    --kill-child`` runs UML as PID 1 of its own PID namespace, so when UML dies the kernel
    kills every helper process UML forked (they would otherwise linger, one of them spinning).
    Both are util-linux (Essential in Debian); each is used only if present.
    """
    prefix: list[str] = []
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        prefix += [setpriv, "--pdeathsig", "KILL"]
    unshare = shutil.which("unshare")
    if unshare is not None:
        prefix += [unshare, "--pid", "--fork", "--kill-child=SIGKILL"]
    return prefix


def reap_stale_namespaces(ip: str) -> list[str]:
    """Delete rig namespaces left by runs that died (SIGKILL); returns their names.

    Only names this module makes (``secsock-kpeer-<pid>-<n>``) whose <pid> is no longer a
    running process are touched; the processes still inside such a namespace are the dead
    run's guest and are ended by pid first.
    """
    listing = subprocess.run([ip, "netns", "list"], capture_output=True, text=True, check=False)
    reaped: list[str] = []
    for line in listing.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) != 4 or parts[:2] != ["secsock", "kpeer"] or not parts[2].isdigit():
            continue
        if int(parts[2]) == os.getpid() or os.path.exists(f"/proc/{parts[2]}"):
            continue
        try:
            stale = NetNS.adopt(name, ip=ip)
        except NetNSError:
            continue
        for pid in stale.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        stale.delete()
        reaped.append(name)
    return reaped


_GUEST_IMPORTS = "import ctypes, json, select, shutil, socket, struct, subprocess, threading"


def guest_python() -> str:
    """The Python binary the guest runs the agent with.

    The guest sees the host's root file system, so any host Python works if it runs from its
    own path with only the standard library (``-S -I``; ctypes included). Preference:
    ``SECSOCK_KPEER_PYTHON``, the real binary behind ``sys.executable`` (for a venv: the
    interpreter it was made from, e.g. pyenv's), /usr/bin/python3.
    """
    configured = os.environ.get("SECSOCK_KPEER_PYTHON")
    candidates = (
        [configured]
        if configured
        else [os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3"]
    )
    tried: list[str] = []
    for candidate in candidates:
        if not os.access(candidate, os.X_OK):
            tried.append(f"{candidate} (missing)")
            continue
        r = subprocess.run(
            [candidate, "-S", "-I", "-B", "-c", _GUEST_IMPORTS],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode == 0:
            return candidate
        tried.append(f"{candidate} (rc={r.returncode}: {r.stderr.strip()[-200:]})")
    raise RigError(
        "expected a Python that runs the guest agent with -S -I; tried " + "; ".join(tried)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    """A datagram the guest's UDP service received (after the kernel's XFRM input)."""

    src: str
    sport: int
    data: bytes


def _parse_xfrm_stat(text: str) -> dict[str, int]:
    stats: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            stats[parts[0]] = int(parts[1])
    return stats


class KernelPeer:
    """A booted guest kernel and the handle the tests drive it with."""

    host4 = HOST_IP4
    guest4 = GUEST_IP4
    host6 = HOST_IP6
    guest6 = GUEST_IP6
    control_port = CONTROL_PORT

    def __init__(self, *, name: str, uml: UMLInstall, log_path: Path) -> None:
        self.name = name
        self.uml = uml
        self.log_path = log_path
        self.ns = NetNS(name)
        self.release = uml.release
        self.missing_modules: tuple[str, ...] = ()
        self._proc: subprocess.Popen[bytes] | None = None
        self._console: deque[str] = deque(maxlen=400)
        self._console_thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._rundir: Path | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"KernelPeer({self.name!r}, {self.release}, {state})"

    # -- life cycle -------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        cache: Path | None = None,
        boot_timeout: float | None = None,
        idle_timeout: float = 900.0,
    ) -> KernelPeer:
        """Install if needed, boot, wait until the agent answers; RigError on any failure."""
        reason = rig_unavailable_reason()
        if reason is not None:
            raise RigError(reason)
        ip = ensure_iproute2()
        reason = netns_unavailable_reason()  # now that `ip` exists: does `ip netns` work?
        if reason is not None:
            raise RigError(reason)
        reap_stale_namespaces(ip)
        if not os.access("/bin/sh", os.X_OK):
            raise RigError("expected /bin/sh on the host (the guest's init runs it)")
        uml = install(cache)
        python = guest_python()
        root = cache if cache is not None else cache_dir()
        logs = root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for old in sorted(logs.glob("*.log"), key=lambda p: p.stat().st_mtime)[:-20]:
            old.unlink(missing_ok=True)
        name = f"secsock-kpeer-{os.getpid()}-{next(_counter)}"
        peer = cls(name=name, uml=uml, log_path=logs / f"{name}.log")
        timeout = boot_timeout
        if timeout is None:
            timeout = float(os.environ.get("SECSOCK_KPEER_BOOT_TIMEOUT", "90"))
        atexit.register(peer.close)
        try:
            peer._boot(python=python, timeout=timeout, idle_timeout=idle_timeout)
        except BaseException:
            peer.close()
            raise
        return peer

    def _boot(self, *, python: str, timeout: float, idle_timeout: float) -> None:
        try:
            self.ns.create()
            self.ns.run_ip(["tuntap", "add", "dev", TAP, "mode", "tap"])
            self.ns.run_ip(["addr", "add", f"{HOST_IP4}/{PREFIX4}", "dev", TAP])
            self.ns.run_ip(["-6", "addr", "add", f"{HOST_IP6}/{PREFIX6}", "dev", TAP, "nodad"])
            self.ns.run_ip(["link", "set", TAP, "up"])
        except NetNSError as e:
            raise RigError(f"could not set up namespace {self.name}: {e}") from e
        self._rundir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        cmd = [self.ns.ip, "netns", "exec", self.name, *_reaper_prefix()]
        cmd += [
            str(self.uml.linux),
            "mem=256M",
            f"umid={self.name}",
            f"uml_dir={self._rundir}",
            "root=/dev/root",
            "rootfstype=hostfs",
            "rootflags=/",
            "ro",
            f"init={GUEST_DIR / 'init.sh'}",
            f"eth0=tuntap,{TAP}",
            "con=null",
            "con0=null,fd:1",
            "ssl=null",
            # Words with "=" the kernel does not know become init's environment.
            f"SECSOCK_KPEER_DIR={GUEST_DIR}",
            f"SECSOCK_KPEER_PYTHON={python}",
            f"SECSOCK_KPEER_MODDIR={self.uml.moddir}",
            f"SECSOCK_KPEER_ADDR4={GUEST_IP4}/{PREFIX4}",
            f"SECSOCK_KPEER_ADDR6={GUEST_IP6}/{PREFIX6}",
            f"SECSOCK_KPEER_CTL={CONTROL_PORT}",
            f"SECSOCK_KPEER_IDLE={int(idle_timeout)}",
        ]
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed by pgid at close
            env={**os.environ, "TMPDIR": str(self._rundir)},
        )
        self._console_thread = threading.Thread(
            target=self._read_console, name=f"{self.name}-console", daemon=True
        )
        self._console_thread.start()
        if not self._ready.wait(timeout):
            raise RigError(
                f"the guest did not report ready within {timeout:.0f}s; console:\n"
                + self.console_tail()
            )
        ready = [line for line in self._console if "KPEER-READY" in line]
        if not ready:
            raise RigError("the guest failed to start; console:\n" + self.console_tail())
        info = json.loads(ready[-1].split("KPEER-READY", 1)[1])
        self.release = str(info["release"])
        self.missing_modules = tuple(str(m) for m in info["missing_modules"])
        pong = self.control({"cmd": "ping"})
        if pong.get("release") != self.release:
            raise RigError(f"expected the agent to answer ping, found {pong!r}")

    def _read_console(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        with open(self.log_path, "w", encoding="utf-8", errors="replace") as log:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                log.write(line + "\n")
                log.flush()
                self._console.append(line)
                if any(m in line for m in ("KPEER-READY", "KPEER-ERROR", "Kernel panic")):
                    self._ready.set()
        self._ready.set()  # the process ended: stop waiting

    def console_tail(self, lines: int = 40) -> str:
        """The last lines of the guest console (also kept in ``log_path``)."""
        return "\n".join(list(self._console)[-lines:])

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        """Halt the guest, kill what is left of it by pid, delete the namespace. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        proc = self._proc
        try:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(Exception):
                    self.control({"cmd": "halt"}, timeout=3.0)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)  # the group we started
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        finally:
            # Anything still in our namespace is a UML helper we started: end each by pid.
            for pid in self.ns.pids():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            self.ns.delete()
            if self._console_thread is not None:
                self._console_thread.join(timeout=5)
            if self._rundir is not None:
                shutil.rmtree(self._rundir, ignore_errors=True)

    # -- the namespace ------------------------------------------------------------------------

    @contextlib.contextmanager
    def netns(self) -> Iterator[None]:
        """Move the calling thread into the rig's namespace (sockets made inside stay there)."""
        with self.ns.enter():
            yield

    # -- the control channel ------------------------------------------------------------------

    def control(self, request: dict[str, Any], *, timeout: float = 30.0) -> dict[str, Any]:
        """Send one JSON request to the agent; its reply, or PeerCommandError."""
        payload = json.dumps(request).encode()
        with self.ns.enter():
            conn = socket.create_connection((GUEST_IP4, CONTROL_PORT), timeout=timeout)
        with conn:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            chunks: list[bytes] = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        try:
            reply = json.loads(b"".join(chunks))
        except ValueError as e:
            raise RigError(f"expected a JSON reply to {request.get('cmd')!r}: {e}") from e
        if not isinstance(reply, dict):
            raise RigError(f"expected a JSON object from the agent, found {reply!r}")
        if not reply.get("ok"):
            raise PeerCommandError(f"{request.get('cmd')}: {reply.get('error')}")
        return reply

    def configure(self, lines: Iterable[str]) -> str:
        """Run ``ip -batch -`` in the guest (e.g. ``xfrm state add ...``); returns its stdout."""
        reply = self.control({"cmd": "ip", "lines": list(lines)})
        return str(reply.get("stdout", ""))

    def flush(self) -> None:
        """Remove every SA and every SPD entry in the guest."""
        self.configure(["xfrm state flush", "xfrm policy flush"])

    def udp_echo(
        self, port: int, *, family: int = 4, encap: bool = False, echo: bool = True
    ) -> None:
        """Serve UDP ``port`` in the guest: record each datagram, reply ``ECHO:`` + data.

        ``encap=True`` also opens the guest's ESP-in-UDP socket (UDP_ENCAP_ESPINUDP on 4500),
        without which the kernel answers ESP-in-UDP with port unreachable.
        """
        self.control(
            {"cmd": "udp_echo", "port": port, "family": family, "encap": encap, "echo": echo}
        )

    def udp_close(self, port: int, *, family: int = 4) -> None:
        self.control({"cmd": "udp_close", "port": port, "family": family})

    def received(self, port: int, *, family: int = 4, clear: bool = False) -> list[Received]:
        """What the guest's service on ``port`` received so far (oldest first)."""
        reply = self.control({"cmd": "received", "port": port, "family": family, "clear": clear})
        return [
            Received(src=str(d["src"]), sport=int(d["sport"]), data=bytes.fromhex(d["data"]))
            for d in reply["datagrams"]
        ]

    def send(
        self,
        *,
        sport: int,
        dport: int,
        data: bytes,
        family: int = 4,
        dst: str | None = None,
        count: int = 1,
    ) -> None:
        """Have the guest kernel send ``data`` from its port ``sport`` (through its XFRM)."""
        target = dst if dst is not None else (HOST_IP4 if family == 4 else HOST_IP6)
        self.control(
            {
                "cmd": "send",
                "sport": sport,
                "dport": dport,
                "dst": target,
                "data": data.hex(),
                "family": family,
                "count": count,
            }
        )

    def stats(self) -> dict[str, str]:
        """/proc/net/xfrm_stat, ``ip -s xfrm state`` and ``ip -s xfrm policy`` of the guest."""
        reply = self.control({"cmd": "stats"})
        return {k: str(reply[k]) for k in ("xfrm_stat", "state", "policy")}

    def xfrm_stat(self) -> dict[str, int]:
        """The guest's XFRM MIB counters (XfrmInStateSeqError, XfrmInStateProtoError, ...)."""
        return _parse_xfrm_stat(self.stats()["xfrm_stat"])

    def xfrm_state(self) -> str:
        return self.stats()["state"]

    def xfrm_policy(self) -> str:
        return self.stats()["policy"]

    def has_module(self, name: str) -> bool:
        """False for an optional module (e.g. chacha20poly1305) the package does not ship."""
        return name not in self.missing_modules
