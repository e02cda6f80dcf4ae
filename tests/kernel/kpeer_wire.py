"""The wire between the host namespace and the guest: capture frames, replay and tamper them.

:class:`Capture` is an AF_PACKET socket on the rig's tap (create it inside
``peer.netns()``). It sees every frame in both directions exactly as it crossed the wire --
independent of secsock's internals. A captured frame can be

* sent again towards the guest (:meth:`Capture.inject`): a replay, or a tampered copy, of what
  secsock sent, for the guest kernel to reject;
* delivered again to the host's own stack (:class:`LocalInjector`, a raw IP_HDRINCL socket
  sending to the host's own address): a replay, or tampered copy, of what the kernel sent,
  for secsock to reject.

:func:`tamper` flips one bit in the last byte of the IP packet (the ICV for ESP; covered by the
ICV for AH) and fixes the outer UDP checksum for ESP-in-UDP, so the packet fails IPsec
integrity rather than a UDP checksum.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Self

__all__ = ("ESP", "UDP", "Capture", "Frame", "LocalInjector", "tamper")

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4
ESP = 50
AH = 51
UDP = 17
ETH_HEADER = 14


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """One Ethernet frame seen on the tap, with its IP header decoded (no extension headers)."""

    raw: bytes
    outgoing: bool
    version: int
    proto: int
    src: str
    dst: str
    header_len: int
    total_len: int

    @property
    def ip(self) -> bytes:
        """The IP packet (without the Ethernet header or any trailing padding)."""
        return self.raw[ETH_HEADER : ETH_HEADER + self.total_len]

    @property
    def payload(self) -> bytes:
        """The IP payload (UDP header + data, ESP, AH)."""
        return self.ip[self.header_len :]

    @property
    def ports(self) -> tuple[int, int] | None:
        if self.proto != UDP or len(self.payload) < 8:
            return None
        sport, dport = struct.unpack_from("!HH", self.payload)
        return sport, dport

    @property
    def esp(self) -> bytes | None:
        """The ESP packet (SPI first): raw ESP, or ESP-in-UDP without the non-ESP marker."""
        if self.proto == ESP:
            return self.payload
        if self.proto == UDP:
            body = self.payload[8:]
            if len(body) >= 8 and body[:4] != b"\0\0\0\0":
                return body
        return None

    @property
    def spi_seq(self) -> tuple[int, int] | None:
        """(SPI, low 32 bits of the sequence number) of ESP or AH, else None."""
        if self.proto == AH and len(self.payload) >= 12:
            spi, seq = struct.unpack_from("!II", self.payload, 4)
            return spi, seq
        esp = self.esp
        if esp is None:
            return None
        spi, seq = struct.unpack_from("!II", esp)
        return spi, seq


def _parse(raw: bytes, outgoing: bool) -> Frame | None:
    if len(raw) < ETH_HEADER + 20:
        return None
    ethertype = struct.unpack_from("!H", raw, 12)[0]
    ip = raw[ETH_HEADER:]
    if ethertype == ETH_P_IP and ip[0] >> 4 == 4:
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from("!H", ip, 2)[0]
        return Frame(
            raw=raw, outgoing=outgoing, version=4, proto=ip[9],
            src=str(ip_address(ip[12:16])), dst=str(ip_address(ip[16:20])),
            header_len=ihl, total_len=total,
        )  # fmt: skip
    if ethertype == ETH_P_IPV6 and len(ip) >= 40 and ip[0] >> 4 == 6:
        plen = struct.unpack_from("!H", ip, 4)[0]
        return Frame(
            raw=raw, outgoing=outgoing, version=6, proto=ip[6],
            src=str(ip_address(ip[8:24])), dst=str(ip_address(ip[24:40])),
            header_len=40, total_len=40 + plen,
        )  # fmt: skip
    return None


class Capture:
    """An AF_PACKET socket on the tap; make it inside ``peer.netns()``."""

    def __init__(self, ifname: str = "kp0") -> None:
        self.ifname = ifname
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, ETH_P_ALL))

    def next(
        self,
        match: Callable[[Frame], bool],
        *,
        outgoing: bool | None = None,
        timeout: float = 5.0,
    ) -> Frame:
        """The next frame for which ``match`` is true (and the direction fits), or TimeoutError.

        ``outgoing=True``: frames the host sent to the guest; False: frames from the guest.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching frame on {self.ifname} within {timeout}s")
            self.sock.settimeout(remaining)
            try:
                raw, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            is_out = addr[2] == PACKET_OUTGOING
            if outgoing is not None and is_out != outgoing:
                continue
            frame = _parse(raw, is_out)
            if frame is not None and match(frame):
                return frame

    def inject(self, raw: bytes) -> None:
        """Send a whole Ethernet frame out of the tap (to the guest), byte for byte."""
        self.sock.send(raw)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalInjector:
    """Raw IP_HDRINCL sockets that deliver a complete IP packet to the host's own stack.

    Make it inside ``peer.netns()``; the packet keeps its source address (the guest's), so
    secsock sees exactly what the kernel sent -- again, or altered.
    """

    def __init__(self) -> None:
        self.v4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.v6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def deliver(self, frame: Frame, ip: bytes | None = None) -> None:
        """Deliver ``ip`` (default: the frame's own IP packet) to ``frame.dst`` locally."""
        packet = frame.ip if ip is None else ip
        if frame.version == 4:
            self.v4.sendto(packet, (frame.dst, 0))
        else:
            self.v6.sendto(packet, (frame.dst, 0))

    def close(self) -> None:
        self.v4.close()
        self.v6.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _fix_udp_checksum(frame: Frame, ip: bytearray) -> None:
    h = frame.header_len
    udp_len = frame.total_len - h
    ip[h + 6 : h + 8] = b"\0\0"
    if frame.version == 4:
        return  # 0 = no checksum, allowed over IPv4 (and what the kernel itself sends)
    pseudo = bytes(ip[8:40]) + struct.pack("!IxxxB", udp_len, UDP)
    value = _checksum(pseudo + bytes(ip[h:]))
    ip[h + 6 : h + 8] = struct.pack("!H", value or 0xFFFF)


def tamper(frame: Frame) -> tuple[bytes, bytes]:
    """(Ethernet frame, IP packet) with one bit of the packet's last byte flipped.

    For ESP that byte is the ICV; for AH it is payload under the ICV. ESP-in-UDP gets a valid
    outer UDP checksum again, so the receiver's IPsec (not UDP) must reject it.
    """
    ip = bytearray(frame.ip)
    ip[-1] ^= 0x01
    if frame.proto == UDP:
        _fix_udp_checksum(frame, ip)
    raw = frame.raw[:ETH_HEADER] + bytes(ip) + frame.raw[ETH_HEADER + frame.total_len :]
    return raw, bytes(ip)
