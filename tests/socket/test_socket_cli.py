"""secsock demo / stats / run, secsock.patch(), and the examples, as a user runs them."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from secsock._patch import install, installed, patch, uninstall
from secsock._socket import SecureSocket
from secsock._stats import COUNTER_NAMES
from secsock.cli.__main__ import main
from secsock.engine import Carrier
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore
from tests.socket.helpers import Sockets, Tap, add_esp, spdadd

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


# --- demo -------------------------------------------------------------------------------------


def test_demo_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "result: ok" in out
    assert "in ipsec esp/transport//require  |  out ipsec esp/transport//require" in out
    assert "E: aes-gcm-16 (key hidden)" in out
    assert "0x<key>;" in out
    assert "ESP: SPI 0x00001001, seq 1" in out
    assert "  0000  00 00 10 01 00 00 00 01" in out  # SPI and sequence number on the wire
    assert "-> dropped (auth-failed)" in out
    assert "-> dropped (replay)" in out
    assert "drops: replay=1 auth-failed=1 policy=1" in out


# --- stats ------------------------------------------------------------------------------------


def test_stats_json_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(COUNTER_NAMES) <= set(doc)
    assert "drops" in doc
    assert isinstance(doc["sadb"], list)


def test_stats_in_a_fresh_process_after_setkey_and_demo(tmp_path: Path) -> None:
    script = tmp_path / "sa.setkey"
    script.write_text("add 127.0.0.1 127.0.0.1 esp 0x7000 -m transport -E aes-gcm-16 "
                      "0x00112233445566778899aabbccddeeff01020304;\n")
    fresh = _run("-m", "secsock.cli", "stats")
    assert fresh.returncode == 0, fresh.stderr
    assert "\t0 outbound datagrams protected and sent (out_success)" in fresh.stdout
    done = _run("-m", "secsock.cli", "stats", "--setkey", str(script), "--demo")
    assert done.returncode == 0, done.stderr
    assert "\t4 outbound datagrams protected and sent (out_success)" in done.stdout
    assert "SADB (3 SAs, keys not shown):" in done.stdout
    assert "esp spi=0x00007000 127.0.0.1->127.0.0.1" in done.stdout
    assert "00112233445566778899aabbccddeeff" not in done.stdout
    bad = _run("-m", "secsock.cli", "stats", "--setkey", str(tmp_path / "missing"))
    assert bad.returncode == 1
    assert "secsock stats:" in bad.stderr


# --- run --------------------------------------------------------------------------------------


def test_run_an_unmodified_program_under_ipsec() -> None:
    done = _run("-m", "secsock.cli", "run", "--setkey", "examples/unmodified.setkey", "--stats",
                "--", "examples/unmodified_program.py", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:3] == [f"reply: MESSAGE {i}" for i in range(3)]
    assert "udp socket class: SecureSocket" in done.stdout
    assert "tcp socket class: socket" in done.stdout
    assert "\t6 outbound datagrams protected and sent (out_success)" in done.stderr
    assert "\t6 inbound datagrams delivered after IPsec processing (in_success)" in done.stderr
    assert "\t0 inbound clear datagrams allowed by policy (in_clear)" in done.stderr


def test_the_same_program_without_secsock_is_clear() -> None:
    done = _run("examples/unmodified_program.py", "1")
    assert done.returncode == 0, done.stderr
    assert "udp socket class: socket" in done.stdout


def test_run_module_form_and_exit_status(tmp_path: Path) -> None:
    (tmp_path / "exits.py").write_text("import socket, sys\n"
                                       "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                                       "print(type(s).__name__, sys.argv[1:])\n"
                                       "sys.exit(7)\n")
    done = subprocess.run([sys.executable, "-m", "secsock.cli", "run", "--", "-m", "exits", "x"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 7, done.stderr
    assert done.stdout.strip() == "SecureSocket ['x']"


def test_run_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--", str(tmp_path / "nope.py")]) == 2
    assert "no such program" in capsys.readouterr().err
    bad = tmp_path / "bad.setkey"
    bad.write_text("add 1.2.3.4;\n")
    prog = tmp_path / "p.py"
    prog.write_text("print('never')\n")
    assert main(["run", "--setkey", str(bad), "--", str(prog)]) == 1
    captured = capsys.readouterr()
    assert "line 1" in captured.err
    assert "never" not in captured.out
    assert main(["run"]) == 2
    assert not installed()


# --- patch ------------------------------------------------------------------------------------


def test_patch_replaces_udp_sockets_only(store: MemoryStore, spd: SPD) -> None:
    original = socket.socket
    with patch(sadb=store, spd=spd):
        assert installed()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        tcp = socket.socket()
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            assert isinstance(udp, SecureSocket)
            assert isinstance(udp6, SecureSocket)
            assert type(tcp) is original
            assert type(unix) is original
            assert isinstance(udp, socket.socket)
            assert isinstance(tcp, socket.socket)
            assert issubclass(SecureSocket, socket.socket)
            assert udp.engine.sadb is store
            wrapped = socket.socket(fileno=udp.dup().detach())
            assert isinstance(wrapped, SecureSocket)
            wrapped.close()
        finally:
            for s in (udp, udp6, tcp, unix):
                s.close()
    assert socket.socket is original
    assert not installed()


def test_install_uninstall_and_nested_patch(store: MemoryStore) -> None:
    original = socket.socket
    try:
        install(sadb=store)
        install(sadb=store)  # idempotent
        with patch():
            assert installed()
        assert installed()  # the outer install survives the inner patch
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        assert isinstance(s, SecureSocket)
        assert s.engine.sadb is store  # and so do its options
        s.close()
    finally:
        uninstall()
        uninstall()
    assert socket.socket is original


def test_asyncio_under_patch_speaks_esp(socks: Sockets, store: MemoryStore, spd: SPD) -> None:
    """asyncio looks socket.socket up at call time: its endpoints become secure sockets."""
    add_esp(store, 0x1000, "127.0.0.1", "127.0.0.1")
    spdadd(spd, "127.0.0.1", "127.0.0.1", "out ipsec esp/transport//require")
    spdadd(spd, "127.0.0.1", "127.0.0.1", "in ipsec esp/transport//require")

    class Echo(asyncio.DatagramProtocol):
        def __init__(self) -> None:
            self.got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if not self.got.done():
                self.got.set_result(data)

    async def exchange() -> tuple[bytes, list[Carrier]]:
        loop = asyncio.get_running_loop()
        rt, rp = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        st, _sp = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        sender = st.get_extra_info("socket")
        raw_sender = sender._sock  # asyncio's TransportSocket wraps our socket
        assert isinstance(raw_sender, SecureSocket)
        tap = Tap(raw_sender)
        st.sendto(b"via asyncio", rt.get_extra_info("sockname"))
        data = await asyncio.wait_for(rp.got, 10)
        rt.close()
        st.close()
        return data, [o.carrier for o in tap.sent]

    with patch(sadb=store, spd=spd):
        data, carriers = asyncio.run(exchange())
    assert data == b"via asyncio"
    assert carriers == [Carrier.UDP]


# --- examples ---------------------------------------------------------------------------------


def test_echo_server_and_client_examples() -> None:
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "udp_echo_server.py"), "--count", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline().split()
        assert first[:2] == ["listening", "on"], first
        port = first[3]
        client = _run(str(EXAMPLES / "udp_echo_client.py"), "--port", port, "ping", "pong")
        assert client.returncode == 0, client.stderr
        assert client.stdout.splitlines() == [
            "reply: ping", "reply: pong", "counters: in_success=2 out_success=2"]
        out, err = server.communicate(timeout=30)
        assert server.returncode == 0, err
        assert "counters: in_success=2 out_success=2 dropped=0" in out
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
