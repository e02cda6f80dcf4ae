"""secsock against the Linux kernel's XFRM stack (issue 4 §7, "Kernel interop").

Each case sets up one SA pair at both ends -- ``ip xfrm`` in the guest, a setkey(8) script
in secsock -- and a secsock socket with per-socket ``require`` policies in the rig's
namespace. Then:

* ``exchange``: secsock sends to an ordinary UDP echo socket in the guest and gets the
  kernel's protected reply; the kernel originates a datagram to secsock; the frames on the
  wire carry the expected protocol, SPI and sequence numbers.
* ``kernel rejects``: secsock's own packet replayed, and a tampered copy, are dropped by the
  kernel, which counts them (XfrmInStateSeqError, XfrmInStateProtoError).
* ``secsock rejects``: the kernel's packet replayed, and a tampered copy, are dropped by
  secsock, which counts them (in_replay, in_authfail); the application never sees them.

Plus ESN across the 2^32 boundary (both ends preset just below it) and the runnable example.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from secsock._setkey import setkey
from secsock._socket import SecureSocket
from secsock._stats import stats as secsock_stats
from secsock.constants import IP_IPSEC_POLICY, IPV6_IPSEC_POLICY
from secsock.policy.libipsec import ipsec_set_policy
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore
from tests.kernel.kpeer_cases import Case
from tests.kernel.kpeer_util import wait_counter
from tests.kernel.kpeer_wire import AH, ESP, UDP, Capture, Frame, LocalInjector, tamper
from tests.kernel.rig import ECHO_PREFIX, NATT_PORT, KernelPeer

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]

CASES = [
    Case(name="udp4-aes-gcm-16", algorithm="aes-gcm-16", transport="udp", index=1),
    Case(name="udp4-aes-cbc-sha256", algorithm="aes-cbc+hmac-sha2-256", transport="udp", index=2),
    Case(name="raw4-esp-aes-gcm-16", algorithm="aes-gcm-16", transport="raw", index=3),
    Case(name="raw4-esp-aes-cbc-sha256", algorithm="aes-cbc+hmac-sha2-256", transport="raw",
         index=4),
    # Linux pads AH over IPv4 to 8 bytes unless "flag align4"; secsock says so per SA.
    Case(name="raw4-ah-align8", algorithm="ah-hmac-sha2-256", transport="raw", index=5,
         setkey_options="-f align8"),
    Case(name="raw4-ah-align4", algorithm="ah-hmac-sha2-256", transport="raw", index=6,
         kernel_flags=("align4",), setkey_options="-f align4"),
    Case(name="udp6-aes-gcm-16", algorithm="aes-gcm-16", transport="udp", family=6, index=7),
    Case(name="raw6-esp-aes-cbc-sha256", algorithm="aes-cbc+hmac-sha2-256", transport="raw",
         family=6, index=8),
    Case(name="raw6-ah", algorithm="ah-hmac-sha2-256", transport="raw", family=6, index=9),
    Case(name="udp4-esn-w128-aes-gcm-16", algorithm="aes-gcm-16", transport="udp", index=10,
         esn=True, replay_window=128),
    Case(name="raw4-esn-w256-aes-cbc-sha256", algorithm="aes-cbc+hmac-sha2-256",
         transport="raw", index=11, esn=True, replay_window=256),
    Case(name="udp4-chacha20-poly1305", algorithm="chacha20-poly1305", transport="udp",
         index=12),
    Case(name="raw6-esn-w64-chacha20-poly1305", algorithm="chacha20-poly1305",
         transport="raw", family=6, index=13, esn=True, replay_window=64),
]  # fmt: skip

BOUNDARY = 0xFFFFFFFE  # the last sequence number used: next are 2^32-1, 2^32, 2^32+1, ...
BOUNDARY_CASES = [
    Case(name="esn-boundary-udp4-aes-gcm-16", algorithm="aes-gcm-16", transport="udp",
         index=20, esn=True, replay_window=64, seq_start=BOUNDARY),
    Case(name="esn-boundary-raw4-aes-cbc-sha256", algorithm="aes-cbc+hmac-sha2-256",
         transport="raw", index=21, esn=True, replay_window=64, seq_start=BOUNDARY),
]  # fmt: skip


@dataclass(slots=True)
class Setup:
    """Both ends configured for one case, with secsock's socket bound in the namespace."""

    case: Case
    peer: KernelPeer
    sock: SecureSocket
    capture: Capture

    @property
    def guest_addr(self) -> tuple[str, int]:
        return (self.case.guest, self.case.guest_port)

    def is_ipsec(self, frame: Frame, spi: int) -> bool:
        """True for the case's IPsec frame with this SPI (ESP, ESP-in-UDP or AH)."""
        c = self.case
        if frame.version != c.family:
            return False
        if c.natt and (frame.proto != UDP or frame.ports != (NATT_PORT, NATT_PORT)):
            return False
        if not c.natt and frame.proto != (AH if c.proto == "ah" else ESP):
            return False
        found = frame.spi_seq
        return found is not None and found[0] == spi

    def sent_by_secsock(self) -> Frame:
        return self.capture.next(lambda f: self.is_ipsec(f, self.case.spi_in), outgoing=True)

    def sent_by_kernel(self) -> Frame:
        return self.capture.next(lambda f: self.is_ipsec(f, self.case.spi_out), outgoing=False)


def _skip_unsupported(peer: KernelPeer, case: Case) -> None:
    module = case.algo.module
    if module is not None and not peer.has_module(module):
        pytest.skip(f"the guest kernel {peer.release} has no {module} module")


@contextmanager
def _setup(peer: KernelPeer, case: Case) -> Iterator[Setup]:
    """Configure both ends; the test body runs with this thread in the rig's namespace."""
    _skip_unsupported(peer, case)
    peer.configure(case.kernel_lines())
    peer.udp_echo(case.guest_port, family=case.family, encap=case.natt)
    sadb, spd = MemoryStore(), SPD()
    setkey(case.setkey_script(), sadb=sadb, spd=spd)
    if case.family == 4:
        family, level, option = socket.AF_INET, socket.IPPROTO_IP, IP_IPSEC_POLICY
    else:
        family, level, option = socket.AF_INET6, socket.IPPROTO_IPV6, IPV6_IPSEC_POLICY
    try:
        with (
            peer.netns(),
            SecureSocket(
                family, socket.SOCK_DGRAM, transport=case.transport, sadb=sadb, spd=spd
            ) as sock,
            Capture() as capture,
        ):
            sock.setsockopt(level, option, ipsec_set_policy(case.policy("out")))
            sock.setsockopt(level, option, ipsec_set_policy(case.policy("in")))
            sock.bind((case.host, case.host_port))
            sock.settimeout(5.0)
            yield Setup(case=case, peer=peer, sock=sock, capture=capture)
    finally:
        if peer.alive:
            peer.udp_close(case.guest_port, family=case.family)


def _ah_length(frame: Frame) -> int:
    """The AH header's length in bytes (RFC 4302: payload length field + 2, in 32-bit words)."""
    return (frame.payload[1] + 2) * 4


def _bump_seq(frame: Frame, ip: bytes, delta: int) -> bytes:
    """``ip`` with the IPsec sequence number (low 32 bits) moved by ``delta``.

    A fresh sequence number gets a tampered packet past the replay check, so the receiver's
    integrity check is what rejects it (the sequence number is under the ICV).
    """
    h = frame.header_len
    offset = h + 8 + 4 if frame.proto == UDP else (h + 8 if frame.proto == AH else h + 4)
    (seq,) = struct.unpack_from("!I", ip, offset)
    return ip[:offset] + struct.pack("!I", (seq + delta) & 0xFFFFFFFF) + ip[offset + 4 :]


def _tampered(frame: Frame) -> tuple[bytes, bytes]:
    """(frame, IP packet): a fresh sequence number and one flipped bit; checksums fixed."""
    bumped_ip = _bump_seq(frame, frame.ip, 7)
    bumped = Frame(
        raw=frame.raw[:14] + bumped_ip + frame.raw[14 + frame.total_len :],
        outgoing=frame.outgoing, version=frame.version, proto=frame.proto, src=frame.src,
        dst=frame.dst, header_len=frame.header_len, total_len=frame.total_len,
    )  # fmt: skip
    return tamper(bumped)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_kernel_interop_exchange(kpeer: KernelPeer, case: Case) -> None:
    kernel_before = kpeer.xfrm_stat()
    with _setup(kpeer, case) as st:
        start = 0 if case.seq_start is None else case.seq_start
        for i in range(1, 4):
            payload = f"{case.name} #{i}".encode()
            st.sock.sendto(payload, st.guest_addr)
            ours = st.sent_by_secsock()
            assert ours.spi_seq == (case.spi_in, (start + i) & 0xFFFFFFFF)
            theirs = st.sent_by_kernel()
            assert theirs.spi_seq == (case.spi_out, (start + i) & 0xFFFFFFFF)
            data, addr = st.sock.recvfrom(65535)
            assert data == ECHO_PREFIX + payload
            assert addr[:2] == st.guest_addr
            if case.proto == "ah" and case.family == 4:
                want = 28 if "align4" in case.kernel_flags else 32
                assert _ah_length(ours) == want
                assert _ah_length(theirs) == want
            elif case.proto == "ah":
                assert _ah_length(ours) == _ah_length(theirs) == 32

        # The kernel originates a datagram to secsock (not an echo).
        kpeer.send(sport=case.guest_port, dport=case.host_port, data=b"from the kernel",
                   family=case.family)  # fmt: skip
        assert st.sent_by_kernel().spi_seq == (case.spi_out, (start + 4) & 0xFFFFFFFF)
        data, addr = st.sock.recvfrom(65535)
        assert (data, addr[:2]) == (b"from the kernel", st.guest_addr)

        got = kpeer.received(case.guest_port, family=case.family)
        assert [d.data for d in got] == [f"{case.name} #{i}".encode() for i in range(1, 4)]
        assert {(d.src, d.sport) for d in got} == {(case.host, case.host_port)}
        stats = st.sock.ipsec_stats()
        assert (stats.out_success, stats.in_success) == (3, 4)
        assert stats.in_authfail == stats.in_replay == stats.in_polvio == 0
    grown = {k: v - kernel_before[k] for k, v in kpeer.xfrm_stat().items() if v != kernel_before[k]}
    assert grown == {}, f"the kernel counted errors: {grown}"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_kernel_interop_kernel_rejects_secsock_replay_and_tamper(
    kpeer: KernelPeer, case: Case
) -> None:
    with _setup(kpeer, case) as st:
        st.sock.sendto(b"original", st.guest_addr)
        ours = st.sent_by_secsock()
        assert st.sock.recvfrom(65535)[0] == ECHO_PREFIX + b"original"
        before = kpeer.xfrm_stat()

        st.capture.inject(ours.raw)  # the same packet again
        seq_errors = wait_counter(kpeer, "XfrmInStateSeqError", before["XfrmInStateSeqError"] + 1)
        assert seq_errors == before["XfrmInStateSeqError"] + 1

        forged_frame, _ = _tampered(ours)
        st.capture.inject(forged_frame)
        name = "XfrmInStateProtoError"
        assert wait_counter(kpeer, name, before[name] + 1) == before[name] + 1

        # Neither reached the guest's socket; the SA still works afterwards.
        st.sock.sendto(b"after", st.guest_addr)
        assert st.sock.recvfrom(65535)[0] == ECHO_PREFIX + b"after"
        got = [d.data for d in kpeer.received(case.guest_port, family=case.family)]
        assert got == [b"original", b"after"]
    state = kpeer.xfrm_state()
    assert f"spi 0x{case.spi_in:08x}" in state


@pytest.mark.parametrize("case", CASES, ids=str)
def test_kernel_interop_secsock_rejects_kernel_replay_and_tamper(
    kpeer: KernelPeer, case: Case
) -> None:
    with _setup(kpeer, case) as st, LocalInjector() as injector:
        kpeer.send(sport=case.guest_port, dport=case.host_port, data=b"one",
                   family=case.family)  # fmt: skip
        theirs = st.sent_by_kernel()
        assert st.sock.recvfrom(65535)[0] == b"one"
        before = secsock_stats()

        injector.deliver(theirs)  # the kernel's packet, again
        _, forged_ip = _tampered(theirs)
        injector.deliver(theirs, forged_ip)

        # A good packet after the bad ones: when it arrives, they have been processed.
        kpeer.send(sport=case.guest_port, dport=case.host_port, data=b"two",
                   family=case.family)  # fmt: skip
        assert st.sock.recvfrom(65535)[0] == b"two"
        grown = secsock_stats() - before
    # Counted process-wide: a drop before decryption cannot be pinned to one socket (the
    # inner UDP header that names it is still encrypted), so the shared endpoint counts it.
    assert (grown.in_replay, grown.in_authfail, grown.in_success) == (1, 1, 1)
    assert grown.in_nosa == grown.in_inval == grown.in_polvio == 0


@pytest.mark.parametrize("case", BOUNDARY_CASES, ids=str)
def test_kernel_interop_esn_crosses_2_32(kpeer: KernelPeer, case: Case) -> None:
    """Both ends start just below 2^32; four round trips carry 2^32-1, 2^32, 2^32+1, 2^32+2.

    On the wire only the low 32 bits travel (0xffffffff, 0, 1, 2); both ICV checks need the
    inferred high bits, so an exchange that works proves both ends crossed the boundary.
    """
    with _setup(kpeer, case) as st:
        ours: list[Frame] = []
        theirs: list[Frame] = []
        for i in range(1, 5):
            seq = BOUNDARY + i
            payload = f"seq {seq:#x}".encode()
            st.sock.sendto(payload, st.guest_addr)
            ours.append(st.sent_by_secsock())
            theirs.append(st.sent_by_kernel())
            assert ours[-1].spi_seq == (case.spi_in, seq & 0xFFFFFFFF)
            assert theirs[-1].spi_seq == (case.spi_out, seq & 0xFFFFFFFF)
            assert st.sock.recvfrom(65535)[0] == ECHO_PREFIX + payload
        stats = st.sock.ipsec_stats()
        assert (stats.in_success, stats.out_success) == (4, 4)
        before_replay = secsock_stats()

        # Packets from below the boundary (seq 2^32-1), replayed after it, are recognised as
        # old by both ends -- not mistaken for 2^33-1.
        before = kpeer.xfrm_stat()["XfrmInStateSeqError"]
        st.capture.inject(ours[0].raw)
        assert wait_counter(kpeer, "XfrmInStateSeqError", before + 1) == before + 1
        with LocalInjector() as injector:
            injector.deliver(theirs[0])
            kpeer.send(sport=case.guest_port, dport=case.host_port, data=b"sync",
                       family=case.family)  # fmt: skip
            assert st.sock.recvfrom(65535)[0] == b"sync"
        grown = secsock_stats() - before_replay
        assert (grown.in_replay, grown.in_success) == (1, 1)
    state = kpeer.xfrm_state()
    # ip -s xfrm state shows the ESN context: both SAs are now in the 2^32 epoch.
    assert "seq-hi 0x1" in state
    assert "oseq-hi 0x1" in state


def test_kernel_interop_example_runs(kernel_peer: KernelPeer) -> None:
    """examples/kernel_peer.py boots its own rig and exchanges a datagram each way."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "kernel_peer.py")],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "secsock -> kernel -> secsock: b'ECHO:hello from secsock'" in out
    assert "kernel -> secsock: b'hello from the kernel'" in out
    assert "proto esp spi 0x00001000" in out  # the kernel's own `ip -s xfrm state`
