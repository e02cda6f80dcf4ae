"""The interop cases: one SA pair, described once, rendered for both ends.

A :class:`Case` names an algorithm, a transport, a family and the SA options; it renders the
guest kernel's ``ip xfrm`` lines (:meth:`Case.kernel_lines`) and secsock's setkey(8) script
(:meth:`Case.setkey_script`) for the same two SAs -- ``in`` is host (secsock) -> guest
(kernel), ``out`` is guest -> host. Keys are derived from the case name, so every case has its
own keys and a run is reproducible.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from tests.kernel.rig import GUEST_IP4, GUEST_IP6, HOST_IP4, HOST_IP6, NATT_PORT
from tests.kernel.xfrm_lines import KernelSA, port_policies

__all__ = ("ALGORITHMS", "Algorithm", "Case")


@dataclass(frozen=True, slots=True, kw_only=True)
class Algorithm:
    """The same transform in both dialects; ``{k0}``/``{k1}`` are hex keys of ``key_lens``."""

    kernel: str
    setkey: str
    key_lens: tuple[int, ...]
    proto: Literal["esp", "ah"] = "esp"
    module: str | None = None  # a guest module the kernel needs (optional ones only)


ALGORITHMS: dict[str, Algorithm] = {
    "aes-gcm-16": Algorithm(
        kernel="aead rfc4106(gcm(aes)) 0x{k0} 128",
        setkey="-E aes-gcm-16 0x{k0}",
        key_lens=(20,),  # 128-bit key + 4-byte salt
    ),
    "aes-cbc+hmac-sha2-256": Algorithm(
        kernel="enc cbc(aes) 0x{k0} auth-trunc hmac(sha256) 0x{k1} 128",
        setkey="-E aes-cbc 0x{k0} -A hmac-sha2-256 0x{k1}",
        key_lens=(16, 32),
    ),
    "chacha20-poly1305": Algorithm(
        kernel="aead rfc7539esp(chacha20,poly1305) 0x{k0} 128",
        setkey="-E chacha20-poly1305 0x{k0}",
        key_lens=(36,),  # 256-bit key + 4-byte salt (RFC 7634)
        module="chacha20poly1305",
    ),
    "ah-hmac-sha2-256": Algorithm(
        kernel="auth-trunc hmac(sha256) 0x{k0} 128",
        setkey="-A hmac-sha2-256 0x{k0}",
        key_lens=(32,),
        proto="ah",
    ),
}


def _keys(seed: str, lens: tuple[int, ...]) -> list[str]:
    keys = []
    for i, n in enumerate(lens):
        material = b""
        block = 0
        while len(material) < n:
            material += hashlib.sha256(f"{seed}/{i}/{block}".encode()).digest()
            block += 1
        keys.append(material[:n].hex())
    return keys


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One interop configuration (an SA pair and how its packets travel)."""

    name: str
    algorithm: str
    transport: Literal["udp", "raw"]
    family: Literal[4, 6] = 4
    index: int = 0  # makes SPIs and ports unique per case
    esn: bool = False
    replay_window: int = 32  # packets; secsock's -r is this / 8 (bytes of bitmap)
    kernel_flags: tuple[str, ...] = ()  # ip xfrm "flag" words (besides esn), e.g. align4
    setkey_options: str = ""  # extra setkey extensions, e.g. "-f align8"
    seq_start: int | None = None  # last sequence number used, preset at both ends

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"expected one of {sorted(ALGORITHMS)}, found {self.algorithm!r}")
        if self.transport == "udp" and self.proto != "esp":
            raise ValueError("ESP-in-UDP carries ESP only (RFC 3948); AH needs transport raw")
        if self.replay_window % 8:
            raise ValueError(f"expected a window in multiples of 8, found {self.replay_window}")

    def __str__(self) -> str:
        return self.name

    @property
    def algo(self) -> Algorithm:
        return ALGORITHMS[self.algorithm]

    @property
    def proto(self) -> Literal["esp", "ah"]:
        return self.algo.proto

    @property
    def natt(self) -> bool:
        """ESP-in-UDP between the NAT-T ports (the only UDP form the kernel speaks)."""
        return self.transport == "udp"

    @property
    def host(self) -> str:
        return HOST_IP4 if self.family == 4 else HOST_IP6

    @property
    def guest(self) -> str:
        return GUEST_IP4 if self.family == 4 else GUEST_IP6

    @property
    def spi_in(self) -> int:
        return 0x10000 + self.index

    @property
    def spi_out(self) -> int:
        return 0x20000 + self.index

    @property
    def reqid(self) -> int:
        return 100 + self.index

    @property
    def guest_port(self) -> int:
        return 7200 + self.index

    @property
    def host_port(self) -> int:
        return 41000 + self.index

    def keys(self, direction: Literal["in", "out"]) -> list[str]:
        return _keys(f"{self.name}/{direction}", self.algo.key_lens)

    def _fill(self, template: str, direction: Literal["in", "out"]) -> str:
        return template.format(**{f"k{i}": k for i, k in enumerate(self.keys(direction))})

    def policy(self, direction: Literal["in", "out"]) -> str:
        """The per-socket policy text for secsock's socket."""
        return f"{direction} ipsec {self.proto}/transport//require"

    def _directions(self) -> list[tuple[Literal["in", "out"], str, str, int]]:
        """(direction, src, dst, SPI): ``in`` is host -> guest, ``out`` guest -> host."""
        return [
            ("in", self.host, self.guest, self.spi_in),
            ("out", self.guest, self.host, self.spi_out),
        ]

    def kernel_lines(self) -> list[str]:
        flags = (*self.kernel_flags, *(("esn",) if self.esn else ()))
        encap = (NATT_PORT, NATT_PORT) if self.natt else None
        lines = []
        for direction, src, dst, spi in self._directions():
            preset: dict[str, int] = {}
            if self.seq_start is not None:
                lo, hi = self.seq_start & 0xFFFFFFFF, self.seq_start >> 32
                if direction == "in":  # the kernel receives: its window top
                    preset = {"seq": lo, "seq_hi": hi} if self.esn else {"seq": lo}
                else:  # the kernel sends: the last sequence number it used
                    preset = {"oseq": lo, "oseq_hi": hi} if self.esn else {"oseq": lo}
            sa = KernelSA(
                src=src, dst=dst, spi=spi, proto=self.proto, reqid=self.reqid,
                algo=self._fill(self.algo.kernel, direction), encap=encap, flags=flags,
                replay_window=self.replay_window, **preset,
            )  # fmt: skip
            lines.append(sa.add_line())
        lines += port_policies(
            host=self.host, guest=self.guest, port=self.guest_port, reqid=self.reqid,
            protos=(self.proto,),
        )  # fmt: skip
        return lines

    def setkey_script(self) -> str:
        proto = "esp-udp" if self.natt else self.proto
        options = [f"-m transport -r {self.replay_window // 8}"]
        if self.esn:
            options.append("-f esn")
        if self.seq_start is not None:
            options.append(f"-S {self.seq_start:#x}")
        if self.setkey_options:
            options.append(self.setkey_options)
        port = f"[{NATT_PORT}]" if self.natt else ""
        lines = []
        for direction, src, dst, spi in self._directions():
            algo = self._fill(self.algo.setkey, direction)
            lines.append(
                f"add {src}{port} {dst}{port} {proto} {spi:#x} {' '.join(options)} {algo};"
            )
        return "\n".join(lines) + "\n"
