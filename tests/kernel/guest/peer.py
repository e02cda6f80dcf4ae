"""The kernel peer's agent: runs inside the User-Mode-Linux guest (stdlib only, ``python -S -I``).

Started by init.sh (the guest's PID 1). In order it

1. mounts the guest's own /proc, /sys and /run (the root file system is the host's "/"
   over hostfs, read-only; before this, /proc is the HOST's /proc), and /tmp once the modules
   are loaded (the rig's cache or the checkout may live under the host's /tmp),
2. loads the XFRM/ESP/AH/crypto modules with init_module(2) (the host has no kmod for this
   kernel; the dependency order comes from the package's modules.dep),
3. brings up ``lo`` and ``eth0`` with the IPv4 and IPv6 addresses given on the kernel command
   line,
4. serves a plaintext TCP control channel (one JSON request per connection, one JSON reply),
   protected from the tests' own XFRM policies by a per-socket bypass policy
   (IP_XFRM_POLICY / IPV6_XFRM_POLICY with action allow and no templates),
5. powers the guest off with reboot(2) on ``halt``, after an idle timeout, or on any error.

Commands (``{"cmd": NAME, ...}`` -> ``{"ok": true, ...}`` or ``{"ok": false, "error": TEXT}``):

``ping``            kernel release and the modules loaded / missing
``ip``              ``lines``: run ``ip -batch -`` on them (stops at the first failing line)
``udp_echo``        ``port``, ``family`` (4/6), ``encap`` (also open the UDP_ENCAP_ESPINUDP
                    socket on 4500), ``echo`` (reply ``ECHO:`` + data; else only record)
``udp_close``       ``port``, ``family``: stop an echo service
``received``        ``port``, ``family``, ``clear``: datagrams the service got (hex + peer)
``send``            ``sport``, ``dst``, ``dport``, ``data`` (hex), ``family``, ``count``: the
                    kernel originates datagrams (through its XFRM) from guest port ``sport``
``stats``           /proc/net/xfrm_stat, ``ip -s xfrm state``, ``ip -s xfrm policy``
``halt``            reply, then power off
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

ECHO_PREFIX = b"ECHO:"
NATT_PORT = 4500

# Needed by every test; the agent fails to start when one is missing.
REQUIRED_MODULES = (
    "xfrm_user", "esp4", "ah4", "ipv6", "esp6", "ah6",
    "authenc", "authencesn", "cbc", "ecb", "hmac", "ctr", "ghash-generic", "gcm",
    "sha512_generic", "jitterentropy_rng", "drbg", "seqiv", "echainiv",
)  # fmt: skip
# Loaded when the package ships them; "ping" reports which are missing.
OPTIONAL_MODULES = ("chacha_generic", "poly1305_generic", "chacha20poly1305", "xcbc", "ccm")

SOL_UDP = 17
UDP_ENCAP = 100
UDP_ENCAP_ESPINUDP = 2
IP_XFRM_POLICY = 17
IPV6_XFRM_POLICY = 35
XFRM_POLICY_IN = 0
XFRM_POLICY_OUT = 1
XFRM_POLICY_ALLOW = 0
XFRM_INF = 0xFFFF_FFFF_FFFF_FFFF
MS_RDONLY = 1
LINUX_REBOOT_CMD_POWER_OFF = 0x4321FEDC
SYS_INIT_MODULE = {"x86_64": 175, "i686": 128, "i386": 128}

# struct xfrm_userpolicy_info (168 bytes): selector (56), lifetime_cfg (64), lifetime_cur (32),
# priority, index, dir, action, flags, share (+4 pad).
_SELECTOR = struct.Struct("=16s16sHHHHHBBB3xiI")
_POLICY_INFO = struct.Struct("=56s8Q4QIIBBBB4x")

T0 = time.monotonic()
LIBC = ctypes.CDLL(None, use_errno=True)


def log(*parts: object) -> None:
    print(f"[guest {time.monotonic() - T0:7.2f}s]", *parts, flush=True)


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"expected {name} on the kernel command line, found nothing")
    return value


def mount(source: str, target: str, fstype: str) -> None:
    rc = LIBC.mount(source.encode(), target.encode(), fstype.encode(), 0, None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t {fstype} {source} {target}: {os.strerror(err)}")


def mount_guest_filesystems() -> None:
    # /proc first: until it is mounted, /proc is the host's /proc through hostfs.
    mount("proc", "/proc", "proc")
    with open("/proc/mounts") as f:
        if not any(line.split()[1:3] == ["/proc", "proc"] for line in f):
            raise RuntimeError("expected the guest's procfs on /proc, found none")
    mount("sysfs", "/sys", "sysfs")
    mount("tmpfs", "/run", "tmpfs")
    # No usermode helper: a request_module() would run the host's modprobe for a kernel it
    # does not know. An empty modprobe path makes the kernel fail such requests at once.
    with open("/proc/sys/kernel/modprobe", "w") as f:
        f.write("\n")


def load_modules(moddir: str) -> tuple[list[str], list[str]]:
    deps: dict[str, tuple[str, list[str]]] = {}
    with open(os.path.join(moddir, "modules.dep")) as f:
        for line in f:
            path, _, rest = line.partition(":")
            deps[os.path.basename(path).removesuffix(".ko")] = (path, rest.split())
    nr = SYS_INIT_MODULE.get(os.uname().machine)
    if nr is None:
        raise RuntimeError(f"expected an x86 guest, found {os.uname().machine}")
    loaded: list[str] = []

    def load(name: str) -> None:
        if name in loaded:
            return
        path, needs = deps[name]
        for dep in reversed(needs):  # modules.dep lists the deepest dependency last
            load(os.path.basename(dep).removesuffix(".ko"))
        with open(os.path.join(moddir, path), "rb") as f:
            image = f.read()
        rc = LIBC.syscall(nr, ctypes.c_char_p(image), ctypes.c_ulong(len(image)), b"")
        err = ctypes.get_errno()
        if rc != 0 and err != 17:  # EEXIST: already there
            raise OSError(err, f"init_module({name}): {os.strerror(err)}")
        loaded.append(name)

    missing: list[str] = []
    for name in REQUIRED_MODULES:
        if name not in deps:
            raise RuntimeError(f"expected module {name} in {moddir}, found no such module")
        load(name)
    for name in OPTIONAL_MODULES:
        if name in deps:
            load(name)
        else:
            missing.append(name)
    return loaded, missing


def ip_batch(lines: list[str]) -> dict[str, Any]:
    ip = shutil.which("ip")
    if ip is None:
        return {"ok": False, "error": "iproute2's ip is not on the host's root fs"}
    text = "".join(line.rstrip("\n") + "\n" for line in lines)
    r = subprocess.run(
        [ip, "-batch", "-"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    result: dict[str, Any] = {"ok": r.returncode == 0, "stdout": r.stdout, "stderr": r.stderr}
    if r.returncode != 0:
        result["error"] = f"ip -batch failed (rc={r.returncode}): {r.stderr.strip()}"
    return result


def run_ip(*args: str) -> str:
    ip = shutil.which("ip") or "ip"
    r = subprocess.run([ip, *args], capture_output=True, text=True, timeout=60, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def bypass_policy(family: int, direction: int) -> bytes:
    selector = _SELECTOR.pack(b"", b"", 0, 0, 0, 0, family, 0, 0, 0, 0, 0)
    return _POLICY_INFO.pack(
        selector,
        XFRM_INF, XFRM_INF, XFRM_INF, XFRM_INF, 0, 0, 0, 0,  # lifetime_cfg
        0, 0, 0, 0,  # lifetime_cur
        0, 0, direction, XFRM_POLICY_ALLOW, 0, 0,
    )  # fmt: skip


def set_bypass(sock: socket.socket) -> None:
    """A per-socket 'allow' policy both ways: no SPD entry applies to this socket's traffic."""
    if sock.family == socket.AF_INET6:
        level, opt = socket.IPPROTO_IPV6, IPV6_XFRM_POLICY
    else:
        level, opt = socket.IPPROTO_IP, IP_XFRM_POLICY
    for direction in (XFRM_POLICY_IN, XFRM_POLICY_OUT):
        sock.setsockopt(level, opt, bypass_policy(int(sock.family), direction))


class EchoService:
    """A UDP socket in the guest that records what it receives and (optionally) echoes it."""

    def __init__(self, family: int, addr: str, port: int, echo: bool) -> None:
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((addr, port))
        self.echo = echo
        self.received: deque[tuple[str, int, bytes]] = deque(maxlen=4096)
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"echo-{port}")
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:  # closed (then stopped is set), or an ICMP error to ignore
                continue
            with self.lock:
                self.received.append((str(peer[0]), int(peer[1]), data))
            log(f"udp {self.sock.getsockname()[1]}: {len(data)} bytes from {peer[0]}:{peer[1]}")
            if self.echo:
                with contextlib.suppress(OSError):
                    self.sock.sendto(ECHO_PREFIX + data, peer)

    def close(self) -> None:
        self.stopped.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class Agent:
    def __init__(self, addr4: str, addr6: str, ctl_port: int, idle: float) -> None:
        self.addr4 = addr4
        self.addr6 = addr6
        self.ctl_port = ctl_port
        self.idle = idle
        self.loaded: list[str] = []
        self.missing: list[str] = []
        self.echo: dict[tuple[int, int], EchoService] = {}
        self.encap: dict[int, socket.socket] = {}
        self.halt = False
        self.commands: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "ping": self.cmd_ping,
            "ip": self.cmd_ip,
            "udp_echo": self.cmd_udp_echo,
            "udp_close": self.cmd_udp_close,
            "received": self.cmd_received,
            "send": self.cmd_send,
            "stats": self.cmd_stats,
            "halt": self.cmd_halt,
        }

    def family_addr(self, request: dict[str, Any]) -> tuple[int, str]:
        family = int(request.get("family", 4))
        if family == 4:
            return socket.AF_INET, self.addr4
        if family == 6:
            return socket.AF_INET6, self.addr6
        raise ValueError(f"expected family 4 or 6, found {family!r}")

    def cmd_ping(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "release": os.uname().release,
            "modules": self.loaded,
            "missing_modules": self.missing,
        }

    def cmd_ip(self, request: dict[str, Any]) -> dict[str, Any]:
        lines = request.get("lines")
        if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
            raise ValueError(f"expected 'lines' as a list of strings, found {lines!r}")
        log("ip -batch:", "; ".join(lines)[:2000])
        return ip_batch(lines)

    def open_encap(self, family: int, addr: str) -> None:
        if family in self.encap:
            return
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(SOL_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)
        s.bind((addr, NATT_PORT))
        self.encap[family] = s
        # Only non-ESP payloads (the 0x00000000 marker, IKE) reach this socket; drain them.
        threading.Thread(target=self._drain, args=(s,), daemon=True, name="encap").start()

    def _drain(self, s: socket.socket) -> None:
        while True:
            try:
                data, peer = s.recvfrom(65535)
            except OSError:
                return
            log(f"encap socket: non-ESP {len(data)} bytes from {peer[0]}:{peer[1]}")

    def cmd_udp_echo(self, request: dict[str, Any]) -> dict[str, Any]:
        family, addr = self.family_addr(request)
        port = int(request["port"])
        if request.get("encap", False):
            self.open_encap(family, addr)
        key = (int(family), port)
        service = self.echo.get(key)
        if service is None:
            self.echo[key] = EchoService(family, addr, port, bool(request.get("echo", True)))
        else:
            service.echo = bool(request.get("echo", True))
        return {"ok": True}

    def cmd_udp_close(self, request: dict[str, Any]) -> dict[str, Any]:
        family, _ = self.family_addr(request)
        service = self.echo.pop((int(family), int(request["port"])), None)
        if service is not None:
            service.close()
        return {"ok": True, "was_open": service is not None}

    def cmd_received(self, request: dict[str, Any]) -> dict[str, Any]:
        family, _ = self.family_addr(request)
        port = int(request["port"])
        service = self.echo.get((int(family), port))
        if service is None:
            raise ValueError(f"expected a udp_echo service on port {port}, found none")
        with service.lock:
            got = [{"src": a, "sport": p, "data": d.hex()} for a, p, d in service.received]
            if request.get("clear", False):
                service.received.clear()
        return {"ok": True, "datagrams": got}

    def cmd_send(self, request: dict[str, Any]) -> dict[str, Any]:
        family, addr = self.family_addr(request)
        sport = int(request["sport"])
        target = (str(request["dst"]), int(request["dport"]))
        data = bytes.fromhex(str(request["data"]))
        count = int(request.get("count", 1))
        service = self.echo.get((int(family), sport))
        if service is not None:
            for _ in range(count):
                service.sock.sendto(data, target)
        else:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.bind((addr, sport))
                for _ in range(count):
                    s.sendto(data, target)
        return {"ok": True}

    def cmd_stats(self, request: dict[str, Any]) -> dict[str, Any]:
        with open("/proc/net/xfrm_stat") as f:
            xfrm_stat = f.read()
        return {
            "ok": True,
            "xfrm_stat": xfrm_stat,
            "state": run_ip("-s", "xfrm", "state", "list", "nokeys"),
            "policy": run_ip("-s", "xfrm", "policy"),
        }

    def cmd_halt(self, request: dict[str, Any]) -> dict[str, Any]:
        self.halt = True
        return {"ok": True}

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > 4 << 20:
                raise ValueError("control request larger than 4 MiB")
        reply: dict[str, Any]
        try:
            request = json.loads(b"".join(chunks))
            if not isinstance(request, dict):
                raise TypeError(f"expected a JSON object, found {type(request).__name__}")
            name = request.get("cmd")
            command = self.commands.get(str(name))
            if command is None:
                raise ValueError(f"expected one of {sorted(self.commands)}, found {name!r}")
            reply = command(request)
        except Exception as e:  # noqa: BLE001 -- the host gets the error, the agent keeps serving
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        conn.sendall(json.dumps(reply).encode())

    def serve(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        set_bypass(listener)
        listener.bind((self.addr4, self.ctl_port))
        listener.listen(16)
        ready = {
            "release": os.uname().release,
            "setup_s": round(time.monotonic() - T0, 2),
            "missing_modules": self.missing,
        }
        log("KPEER-READY " + json.dumps(ready))
        last = time.monotonic()
        while not self.halt:
            readable, _, _ = select.select([listener], [], [], 5.0)
            if not readable:
                if time.monotonic() - last > self.idle:
                    log(f"no control request for {self.idle:.0f}s: powering off")
                    return
                continue
            conn, _ = listener.accept()
            last = time.monotonic()
            with conn:
                try:
                    self.handle(conn)
                except OSError as e:
                    log(f"control connection failed: {e}")
        log("halt requested")


def configure_network(addr4: str, addr6: str) -> None:
    result = ip_batch([
        "link set lo up",
        f"addr add {addr4} dev eth0",
        f"addr add {addr6} dev eth0 nodad",
        "link set eth0 up",
    ])  # fmt: skip
    if not result["ok"]:
        raise RuntimeError(result["error"])


def main() -> int:
    mount_guest_filesystems()
    log(f"KPEER-INIT kernel {os.uname().release}, python {sys.version.split()[0]}")
    addr4 = env("SECSOCK_KPEER_ADDR4")
    addr6 = env("SECSOCK_KPEER_ADDR6")
    agent = Agent(
        addr4.partition("/")[0],
        addr6.partition("/")[0],
        int(env("SECSOCK_KPEER_CTL")),
        float(os.environ.get("SECSOCK_KPEER_IDLE", "900")),
    )
    agent.loaded, agent.missing = load_modules(env("SECSOCK_KPEER_MODDIR"))
    # The guest's own /tmp only now: the module tree (the rig's cache) or this checkout may
    # live under the host's /tmp, which the tmpfs would hide.
    mount("tmpfs", "/tmp", "tmpfs")
    log("modules loaded:", " ".join(agent.loaded))
    if agent.missing:
        log("modules not shipped:", " ".join(agent.missing))
    configure_network(addr4, addr6)
    agent.serve()
    return 0


def power_off() -> None:
    sys.stdout.flush()
    os.sync()
    LIBC.reboot(LINUX_REBOOT_CMD_POWER_OFF)


if __name__ == "__main__":
    rc = 1
    try:
        rc = main()
    except BaseException as e:  # noqa: BLE001 -- report, then power off in finally
        log(f"KPEER-ERROR {type(e).__name__}: {e}")
    finally:
        log(f"KPEER-EXIT rc={rc}")
        power_off()
    sys.exit(rc)
