"""The kernel tests' helpers, checked without a kernel (no root needed).

If a case renders a setkey script secsock rejects, or ``tamper()`` breaks a checksum, the
interop tests would fail for the wrong reason; these catch that on any machine.
"""

from __future__ import annotations

import struct
from ipaddress import ip_address

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from secsock._setkey import setkey
from secsock.sadb.model import SecurityAssociation
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore
from tests.kernel.guest.peer import bypass_policy
from tests.kernel.kpeer_cases import Case
from tests.kernel.kpeer_wire import AH, ESP, Frame, _parse, tamper
from tests.kernel.rig import _parse_xfrm_stat
from tests.kernel.test_kernel_interop import BOUNDARY_CASES, CASES
from tests.kernel.xfrm_lines import KernelSA, port_policies


@pytest.mark.parametrize("case", CASES + BOUNDARY_CASES, ids=str)
def test_kernel_helpers_case_script_is_accepted_by_setkey(case: Case) -> None:
    sadb = MemoryStore()
    setkey(case.setkey_script(), sadb=sadb, spd=SPD(), now=0.0)
    sas = {r.sa.spi: r.sa for r in sadb.dump()}
    assert set(sas) == {case.spi_in, case.spi_out}
    for spi, src, dst in ((case.spi_in, case.host, case.guest),
                          (case.spi_out, case.guest, case.host)):  # fmt: skip
        sa = sas[spi]
        assert isinstance(sa, SecurityAssociation)
        assert (sa.src, sa.dst) == (ip_address(src), ip_address(dst))
        assert sa.proto.setkey_name == case.proto
        assert sa.natt == case.natt
        assert sa.esn == case.esn
        assert sa.replay_window == case.replay_window
        assert sa.seq_start == (case.seq_start or 0)
    # Each direction has its own keys, and the kernel gets the same ones.
    assert case.keys("in") != case.keys("out")
    lines = case.kernel_lines()
    assert all(f"0x{k}" in lines[0] for k in case.keys("in"))
    assert all(f"0x{k}" in lines[1] for k in case.keys("out"))


def test_kernel_helpers_kernel_sa_line() -> None:
    line = KernelSA(
        src="10.99.0.1", dst="10.99.0.2", spi=0x1234, reqid=7, algo="aead x 0x00 128",
        encap=(4500, 4500), flags=("esn",), replay_window=128, seq=0xFFFFFFFE, seq_hi=0,
    ).add_line()  # fmt: skip
    assert line == (
        "xfrm state add src 10.99.0.1 dst 10.99.0.2 proto esp spi 0x1234 reqid 7 "
        "mode transport replay-window 128 replay-seq 0xfffffffe replay-seq-hi 0x0 flag esn "
        "aead x 0x00 128 encap espinudp 4500 4500 0.0.0.0"
    )
    with pytest.raises(ValueError, match="carries only ESP"):
        KernelSA(src="a", dst="b", spi=0x1000, proto="ah", encap=(4500, 4500))
    with pytest.raises(ValueError, match="SPI"):
        KernelSA(src="a", dst="b", spi=255)


def test_kernel_helpers_port_policies_bundle_and_ipv6() -> None:
    inbound, outbound = port_policies(
        host="fd99::1", guest="fd99::2", port=7000, reqid=3, protos=("esp", "ah")
    )
    assert inbound.startswith("xfrm policy add src fd99::1/128 dst fd99::2/128 proto udp ")
    assert "dport 7000 dir in" in inbound
    assert "sport 7000 dir out" in outbound
    assert inbound.index("proto esp reqid 3") < inbound.index("proto ah reqid 3")


def _frame(packet: object) -> Frame:
    frame = _parse(bytes(packet), outgoing=True)  # type: ignore[call-overload]
    assert frame is not None
    return frame


def test_kernel_helpers_frame_parsing() -> None:
    esp = struct.pack("!II", 0x1001, 7) + b"\x11" * 24
    natt = _frame(Ether() / IP(src="10.99.0.1", dst="10.99.0.2")
                  / UDP(sport=4500, dport=4500) / Raw(esp))  # fmt: skip
    assert (natt.version, natt.src, natt.dst, natt.ports) == (4, "10.99.0.1", "10.99.0.2",
                                                              (4500, 4500))  # fmt: skip
    assert natt.spi_seq == (0x1001, 7)
    ike = _frame(Ether() / IP() / UDP(sport=4500, dport=4500) / Raw(b"\0\0\0\0" + esp))
    assert ike.esp is None  # the non-ESP marker: IKE, not ESP
    raw = _frame(Ether() / IPv6(src="fd99::2", dst="fd99::1", nh=ESP) / Raw(esp))
    assert (raw.version, raw.proto, raw.spi_seq) == (6, ESP, (0x1001, 7))
    ah = struct.pack("!BBHII", 17, 4, 0, 0x2002, 9) + b"\x22" * 12
    assert _frame(Ether() / IP(proto=AH) / Raw(ah)).spi_seq == (0x2002, 9)


@pytest.mark.parametrize("version", [4, 6])
def test_kernel_helpers_tamper_keeps_udp_valid(version: int) -> None:
    ip = IP(src="10.99.0.1", dst="10.99.0.2") if version == 4 else IPv6(src="fd99::1",
                                                                        dst="fd99::2")  # fmt: skip
    packet = Ether() / ip / UDP(sport=4500, dport=4500) / Raw(b"\x00\x00\x10\x01" + b"\x33" * 40)
    frame = _frame(packet)
    raw, tampered_ip = tamper(frame)
    assert raw[14:] == tampered_ip
    assert tampered_ip[-1] == frame.ip[-1] ^ 0x01
    assert tampered_ip[:-1][: frame.header_len] == frame.ip[: frame.header_len]
    checksum = struct.unpack_from("!H", tampered_ip, frame.header_len + 6)[0]
    if version == 4:
        assert checksum == 0  # "no checksum", as the kernel itself sends
    else:
        reparsed = IPv6(tampered_ip)
        expected = reparsed[UDP].chksum
        del reparsed[UDP].chksum
        assert IPv6(bytes(reparsed))[UDP].chksum == expected == checksum


def test_kernel_helpers_parse_xfrm_stat() -> None:
    text = "XfrmInError              \t0\nXfrmInStateSeqError      \t12\nnot a counter line\n"
    assert _parse_xfrm_stat(text) == {"XfrmInError": 0, "XfrmInStateSeqError": 12}


def test_kernel_helpers_bypass_policy_layout() -> None:
    """struct xfrm_userpolicy_info as the kernel's uapi lays it out (x86-64: 168 bytes)."""
    buf = bypass_policy(2, 1)
    assert len(buf) == 168
    assert buf[40:42] == struct.pack("=H", 2)  # sel.family at offset 40
    assert struct.unpack_from("=8Q", buf, 56)[:4] == (2**64 - 1,) * 4  # no byte/packet limits
    assert (buf[160], buf[161]) == (1, 0)  # dir out, action allow
