"""``ip xfrm`` command lines for the guest kernel, built from a few typed values.

The guest runs them with ``ip -batch -`` (see :meth:`tests.kernel.rig.KernelPeer.configure`),
so there is no shell: algorithm names need no quoting.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ("KernelSA", "port_policies")


@dataclass(frozen=True, slots=True, kw_only=True)
class KernelSA:
    """One transport-mode SA as ``ip xfrm state add`` takes it.

    ``algo`` is the algorithm part verbatim, e.g. ``aead rfc4106(gcm(aes)) 0x... 128`` or
    ``enc cbc(aes) 0x... auth-trunc hmac(sha256) 0x... 128``. ``encap`` gives the NAT-T ports
    (``encap espinudp SPORT DPORT 0.0.0.0``). ``flags`` are ``ip xfrm`` flag words (``esn``,
    ``align4``). The ``seq``/``oseq`` presets start the SA near a sequence number (with ESN the
    ``*_hi`` words are the upper 32 bits).
    """

    src: str
    dst: str
    spi: int
    algo: str = ""
    proto: str = "esp"
    reqid: int = 0
    replay_window: int = 32
    encap: tuple[int, int] | None = None
    flags: tuple[str, ...] = ()
    seq: int | None = None
    oseq: int | None = None
    seq_hi: int | None = None
    oseq_hi: int | None = None

    def __post_init__(self) -> None:
        if self.proto not in {"esp", "ah"}:
            raise ValueError(f"expected proto esp or ah, found {self.proto!r}")
        if not 256 <= self.spi <= 0xFFFFFFFF:
            raise ValueError(f"expected an SPI in 256..2^32-1, found {self.spi:#x}")
        if self.encap is not None and self.proto != "esp":
            raise ValueError("ESP-in-UDP encapsulation carries only ESP")

    def add_line(self) -> str:
        words = [
            f"xfrm state add src {self.src} dst {self.dst} proto {self.proto}",
            f"spi {self.spi:#x} reqid {self.reqid} mode transport",
            f"replay-window {self.replay_window}",
        ]
        for name, value in (
            ("replay-seq", self.seq),
            ("replay-oseq", self.oseq),
            ("replay-seq-hi", self.seq_hi),
            ("replay-oseq-hi", self.oseq_hi),
        ):
            if value is not None:
                words.append(f"{name} {value:#x}")
        if self.flags:
            words.append("flag " + " ".join(self.flags))
        words.append(self.algo)
        if self.encap is not None:
            words.append(f"encap espinudp {self.encap[0]} {self.encap[1]} 0.0.0.0")
        return " ".join(w for w in words if w)


def port_policies(
    *, host: str, guest: str, port: int, reqid: int = 0, protos: tuple[str, ...] = ("esp",)
) -> list[str]:
    """The guest's SPD entries that protect UDP to/from guest ``port`` (transport mode).

    ``dir in``: host -> guest:port must arrive protected; ``dir out``: guest:port -> host is
    protected. With several ``protos`` (e.g. ``("esp", "ah")``) the templates form a bundle,
    innermost first, as ``ip xfrm`` expects.
    """
    plen = 128 if ":" in host else 32
    tmpl_in = " ".join(
        f"tmpl src {host} dst {guest} proto {p} reqid {reqid} mode transport" for p in protos
    )
    tmpl_out = " ".join(
        f"tmpl src {guest} dst {host} proto {p} reqid {reqid} mode transport" for p in protos
    )
    policy_in = (
        f"xfrm policy add src {host}/{plen} dst {guest}/{plen} proto udp dport {port} "
        f"dir in {tmpl_in}"
    )
    policy_out = (
        f"xfrm policy add src {guest}/{plen} dst {host}/{plen} proto udp sport {port} "
        f"dir out {tmpl_out}"
    )
    return [policy_in, policy_out]
