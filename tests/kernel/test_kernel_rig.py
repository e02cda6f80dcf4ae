"""The rig proves itself without secsock: scapy's IPsec layer against the guest's XFRM.

If these fail, the kernel interop tests of secsock cannot be trusted either way; if these
pass and secsock's fail, the difference is secsock's.
"""

from __future__ import annotations

import socket

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP
from scapy.packet import Raw

from tests.kernel.kpeer_scapy import ScapySA
from tests.kernel.kpeer_util import wait_counter
from tests.kernel.rig import ECHO_PREFIX, NATT_PORT, KernelPeer, PeerCommandError
from tests.kernel.xfrm_lines import KernelSA, port_policies

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]

GCM_KEY_IN = bytes.fromhex("00112233445566778899aabbccddeeff01020304")  # host -> guest
GCM_KEY_OUT = bytes.fromhex("ffeeddccbbaa9988776655443322110005060708")  # guest -> host
SPI_IN = 0x1101
SPI_OUT = 0x2101


def _gcm(key: bytes) -> str:
    return f"aead rfc4106(gcm(aes)) 0x{key.hex()} 128"


def test_kernel_rig_control_channel(kpeer: KernelPeer) -> None:
    pong = kpeer.control({"cmd": "ping"})
    assert pong["release"] == kpeer.release
    assert "esp4" in pong["modules"]
    assert "xfrm_user" in pong["modules"]
    with pytest.raises(PeerCommandError, match="ip -batch failed"):
        kpeer.configure(["xfrm state add src 10.99.0.1 dst 10.99.0.2 proto esp spi bogus"])
    with pytest.raises(PeerCommandError, match="expected one of"):
        kpeer.control({"cmd": "no-such-command"})


def test_kernel_rig_control_survives_catch_all_policy(kpeer: KernelPeer) -> None:
    """A require-ESP policy for all traffic between the two hosts (no SA) leaves the
    control channel alone: its socket carries a per-socket bypass policy."""
    h, g = kpeer.host4, kpeer.guest4
    kpeer.configure(
        [
            f"xfrm policy add src {h}/32 dst {g}/32 dir in tmpl proto esp mode transport",
            f"xfrm policy add src {g}/32 dst {h}/32 dir out tmpl proto esp mode transport",
        ]
    )
    policies = kpeer.xfrm_policy()
    assert f"src {h}/32 dst {g}/32" in policies
    assert f"src {g}/32 dst {h}/32" in policies
    # Ordinary UDP from the host is dropped by that policy (no SA), proving it is active.
    kpeer.udp_echo(7100)
    before = kpeer.xfrm_stat()["XfrmInTmplMismatch"]
    with kpeer.netns(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"clear", (g, 7100))
    wait_counter(kpeer, "XfrmInTmplMismatch", before + 1)
    assert kpeer.received(7100) == []


def _natt_packet(data: bytes, src: str, dst: str) -> IP:
    return IP(bytes(IP(src=src, dst=dst) / UDP(sport=NATT_PORT, dport=NATT_PORT) / ESP(data)))


def test_kernel_rig_scapy_esp_in_udp_gcm(kpeer: KernelPeer) -> None:
    h, g, port = kpeer.host4, kpeer.guest4, 7101
    kpeer.configure(
        [
            KernelSA(src=h, dst=g, spi=SPI_IN, reqid=1, algo=_gcm(GCM_KEY_IN),
                     encap=(NATT_PORT, NATT_PORT)).add_line(),
            KernelSA(src=g, dst=h, spi=SPI_OUT, reqid=1, algo=_gcm(GCM_KEY_OUT),
                     encap=(NATT_PORT, NATT_PORT)).add_line(),
            *port_policies(host=h, guest=g, port=port, reqid=1),
        ]
    )  # fmt: skip
    kpeer.udp_echo(port, encap=True)
    tx = ScapySA(spi=SPI_IN, crypt_algo="AES-GCM", crypt_key=GCM_KEY_IN, natt=True)
    rx = ScapySA(spi=SPI_OUT, crypt_algo="AES-GCM", crypt_key=GCM_KEY_OUT, natt=True)
    with kpeer.netns():
        carrier = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with carrier:
        carrier.bind((h, NATT_PORT))
        carrier.settimeout(5.0)
        sent = b""
        for i in range(1, 4):
            payload = f"scapy-{i}".encode()
            enc = tx.encrypt(IP(src=h, dst=g) / UDP(sport=40001, dport=port) / Raw(payload))
            sent = bytes(enc[ESP])
            carrier.sendto(sent, (g, NATT_PORT))
            data, peer = carrier.recvfrom(65535)
            assert peer == (g, NATT_PORT)
            reply = _natt_packet(data, g, h)
            assert reply[ESP].spi == SPI_OUT
            assert reply[ESP].seq == i
            clear = rx.decrypt(reply)
            assert clear[UDP].sport == port
            assert clear[UDP].dport == 40001
            assert bytes(clear[UDP].payload) == ECHO_PREFIX + payload

        # Replay of the last packet: the kernel drops it and counts a sequence error.
        before = kpeer.xfrm_stat()
        carrier.sendto(sent, (g, NATT_PORT))
        seq_errors = wait_counter(kpeer, "XfrmInStateSeqError", before["XfrmInStateSeqError"] + 1)
        assert seq_errors == before["XfrmInStateSeqError"] + 1

        # One flipped ICV bit: integrity failure.
        enc = tx.encrypt(IP(src=h, dst=g) / UDP(sport=40001, dport=port) / Raw(b"tampered"))
        forged = bytearray(bytes(enc[ESP]))
        forged[-1] ^= 0x01
        carrier.sendto(bytes(forged), (g, NATT_PORT))
        proto_errors = wait_counter(
            kpeer, "XfrmInStateProtoError", before["XfrmInStateProtoError"] + 1
        )
        assert proto_errors == before["XfrmInStateProtoError"] + 1

        # The kernel originates a datagram through its out policy and SA.
        kpeer.send(sport=port, dport=40001, data=b"from-kernel")
        data, _ = carrier.recvfrom(65535)
        packet = _natt_packet(data, g, h)
        assert packet[ESP].seq == 4
        assert bytes(rx.decrypt(packet)[UDP].payload) == b"from-kernel"
    got = [d.data for d in kpeer.received(port)]
    assert got == [b"scapy-1", b"scapy-2", b"scapy-3"]


def test_kernel_rig_scapy_raw_esp_ipv6(kpeer: KernelPeer) -> None:
    h, g, port = kpeer.host6, kpeer.guest6, 7102
    kpeer.configure(
        [
            KernelSA(src=h, dst=g, spi=SPI_IN + 1, reqid=2, algo=_gcm(GCM_KEY_IN)).add_line(),
            KernelSA(src=g, dst=h, spi=SPI_OUT + 1, reqid=2, algo=_gcm(GCM_KEY_OUT)).add_line(),
            *port_policies(host=h, guest=g, port=port, reqid=2),
        ]
    )
    kpeer.udp_echo(port, family=6)
    tx = ScapySA(spi=SPI_IN + 1, crypt_algo="AES-GCM", crypt_key=GCM_KEY_IN)
    rx = ScapySA(spi=SPI_OUT + 1, crypt_algo="AES-GCM", crypt_key=GCM_KEY_OUT)
    with kpeer.netns():
        raw = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ESP)
    with raw:
        raw.settimeout(5.0)
        enc = tx.encrypt(IPv6(src=h, dst=g) / UDP(sport=40002, dport=port) / Raw(b"v6"))
        raw.sendto(bytes(enc[ESP]), (g, 0))
        data, peer = raw.recvfrom(65535)  # IPv6 raw sockets deliver the payload only
        assert peer[0] == g
        clear = rx.decrypt(IPv6(bytes(IPv6(src=g, dst=h, nh=50) / ESP(data))))
        assert clear[UDP].sport == port
        assert bytes(clear[UDP].payload) == ECHO_PREFIX + b"v6"
