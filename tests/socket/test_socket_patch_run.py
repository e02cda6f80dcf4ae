"""`secsock run`: everything the program does until the process ends stays governed.

The program's main module returning is not the end of the program: its non-daemon threads are
joined by the interpreter afterwards, its atexit handlers run after that, and daemon threads
run until the very end. Each of them may still open UDP sockets.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPI = 0x4201
KEY = "0x0102030405060708090a0b0c0d0e0f1011121314"

# A worker thread that sends only once the main module has returned and the CLI is winding
# up. The profile hook (main thread only) releases it at the first event after socket.socket
# changed back (the CLI uninstalled), or when the interpreter starts joining threads
# (threading._shutdown) -- whichever comes first. No timing is involved.
LATE_WORKER = """\
import socket, sys, threading

port = int(sys.argv[1])
patched = socket.socket
go = threading.Event()


def worker():
    go.wait()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        s.sendto(b"SECRET from a late worker thread", ("127.0.0.2", port))
        print("worker sent with", type(s).__name__, flush=True)
    except OSError as exc:
        print("worker refused:", type(exc).__name__, flush=True)


def hook(frame, event, arg):
    if socket.socket is not patched or (event == "call"
                                        and frame.f_code.co_name == "_shutdown"):
        sys.setprofile(None)
        go.set()


threading.Thread(target=worker).start()
sys.setprofile(hook)
print("main returns", flush=True)
"""

# An atexit handler that sends: it runs after the main module returned and the threads ended.
AT_EXIT = """\
import atexit, socket, sys

port = int(sys.argv[1])


def goodbye():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.sendto(b"SECRET goodbye at exit", ("127.0.0.2", port))
    print("goodbye sent with", type(s).__name__, flush=True)


atexit.register(goodbye)
"""


@pytest.fixture
def sniffer() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.2", 0))
    s.settimeout(10)  # a safety bound only: the program has exited before the read
    try:
        yield s
    finally:
        s.close()


def _run(tmp_path: Path, program: str, port: int) -> subprocess.CompletedProcess[str]:
    setkey = tmp_path / "late.setkey"
    setkey.write_text(
        f"add 127.0.0.1 127.0.0.2 esp {SPI:#x} -m transport -E aes-gcm-16 {KEY};\n"
        "spdadd 127.0.0.1 127.0.0.2 udp -P out ipsec esp/transport//require;\n"
    )
    prog = tmp_path / "prog.py"
    prog.write_text(program)
    return subprocess.run(
        [sys.executable, "-m", "secsock.cli", "run", "--setkey", str(setkey), "--stats", "--",
         str(prog), str(port)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )


def _assert_esp(data: bytes) -> None:
    assert b"SECRET" not in data
    assert data[:4] == SPI.to_bytes(4, "big")


@pytest.mark.parametrize("program", [LATE_WORKER, AT_EXIT], ids=["late-thread", "atexit"])
def test_run_governs_the_program_until_the_process_ends(
    tmp_path: Path, sniffer: socket.socket, program: str
) -> None:
    done = _run(tmp_path, program, sniffer.getsockname()[1])
    assert done.returncode == 0, done.stderr
    assert "sent with SecureSocket" in done.stdout, (done.stdout, done.stderr)
    _assert_esp(sniffer.recv(2000))
    # --stats is printed last: the late datagram is counted
    assert "\t1 outbound datagrams protected and sent (out_success)" in done.stderr
