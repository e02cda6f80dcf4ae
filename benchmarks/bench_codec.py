"""ESP codec throughput: seal+open per second next to bare ``cryptography`` in the same run.

Run: ``.venv/bin/python benchmarks/bench_codec.py [--seconds 0.03] [--rounds 21]
[--only aes-gcm-16]``. For each algorithm and payload size it prints the ESP seal+open rate,
the rate of the bare primitives the codec wraps, and their ratio. The issue's target:
aes-gcm-16 at >= 0.5x the bare AESGCM rate at 64 and 1400 bytes.

How it measures, so that machine noise hits both sides alike:

* ESP and bare are timed in alternating rounds in one process (ESP, bare, bare, ESP, ...), each
  round about ``--seconds`` long, after one warm-up round each.
* The printed rates are the medians of the rounds; the ratio is the median of the per-pair
  ratios (each ESP round against the bare round next to it); ``spread`` is the range of the
  middle half of those per-pair ratios.
* The bare side is never handicapped: the same AEAD object, a fixed nonce and AAD, and a
  plaintext of exactly the payload size (ESP also encrypts its 2-5 trailer bytes); for CBC+HMAC
  it is CBC encrypt, HMAC, HMAC verify and CBC decrypt of the padded payload.
* The ESP side is the public API as a caller uses it: ``seal(ctx, spi=..., seq=...,
  payload=..., next_header=...)`` with a new sequence number per packet, then
  ``open_untrusted(ctx, packet)``, which verifies, decrypts and strips the trailer.
"""

from __future__ import annotations

import argparse
import hmac
import os
import statistics
import struct
import time
from collections.abc import Callable
from typing import NamedTuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as chmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from secsock.core.algorithms import auth_algorithm, encryption_algorithm
from secsock.core.esp import EspContext, EspPayload, open_untrusted, seal
from secsock.core.replay import ReplayWindow

Bench = Callable[[int], object]


class Result(NamedTuple):
    """Median rates (calls per second) and the median and middle-half range of the ratios."""

    esp: float
    bare: float
    ratio: float
    low: float
    high: float


def _calibrate(fn: Bench, seconds: float) -> int:
    """How many calls of ``fn`` take about ``seconds``."""
    n = 64
    while True:
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        dt = time.perf_counter() - t0
        if dt > seconds / 4:
            return max(1, int(n * seconds / dt))
        n *= 2


def _once(fn: Bench, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t0)


def rate(fn: Bench, seconds: float, rounds: int = 5) -> float:
    """Median calls per second of ``fn(i)`` over ``rounds`` rounds of about ``seconds`` each."""
    n = _calibrate(fn, seconds)
    return statistics.median(_once(fn, n) for _ in range(rounds))


def compare(esp: Bench, bare: Bench, seconds: float, rounds: int) -> Result:
    """Time ``esp`` and ``bare`` in alternating rounds (ABBA order); medians and ratios."""
    n_esp, n_bare = _calibrate(esp, seconds), _calibrate(bare, seconds)
    _once(esp, n_esp)
    _once(bare, n_bare)
    esp_rates: list[float] = []
    bare_rates: list[float] = []
    for r in range(rounds):
        if r % 2:
            b = _once(bare, n_bare)
            e = _once(esp, n_esp)
        else:
            e = _once(esp, n_esp)
            b = _once(bare, n_bare)
        esp_rates.append(e)
        bare_rates.append(b)
    ratios = sorted(e / b for e, b in zip(esp_rates, bare_rates, strict=True))
    quarter = len(ratios) // 4
    return Result(
        statistics.median(esp_rates),
        statistics.median(bare_rates),
        statistics.median(ratios),
        ratios[quarter],
        ratios[-1 - quarter],
    )


def aead_pair(name: str, size: int) -> tuple[Bench, Bench]:
    """The ESP and the bare benchmark functions for one AEAD and payload size."""
    enc = encryption_algorithm(name)
    key = os.urandom(enc.key_sizes[0])
    ctx = EspContext.create(enc=enc, enc_key=key, auth=None, auth_key=None)
    payload = os.urandom(size)

    def esp(i: int) -> None:
        packet = seal(ctx, spi=0x1000, seq=i + 1, payload=payload, next_header=17)
        open_untrusted(ctx, packet)

    # the same primitive and key; salt stripped as the ESP context does
    aead = AESGCM(key[:-4]) if name.startswith("aes-gcm") else ChaCha20Poly1305(key[:-4])
    nonce, aad = os.urandom(12), os.urandom(8)
    plain = os.urandom(size)

    def bare(i: int) -> None:
        aead.decrypt(nonce, aead.encrypt(nonce, plain, aad), aad)

    return esp, bare


def floor_pair(size: int) -> tuple[Bench, Bench]:
    """The least Python that does aes-gcm-16 ESP's work, against the same bare AESGCM.

    Positional calls, no argument checks, no ESN or other modes: a header pack, the trailer,
    the nonce, one concatenation each way, the padding check and the EspPayload. It builds
    the same bytes as ``seal`` and returns what ``open_untrusted`` returns (checked here).
    It is the floor the public API can approach, not an API.
    """
    enc = encryption_algorithm("aes-gcm-16")
    key = os.urandom(enc.key_sizes[0])
    aead, salt = AESGCM(key[:-4]), key[-4:]
    encrypt, decrypt = aead.encrypt, aead.decrypt
    header_pack, nonce_pack = struct.Struct("!IIQ").pack, struct.Struct("!4sQ").pack
    trailers = tuple(
        bytes(range(1, -(n + 2) % 4 + 1)) + bytes((-(n + 2) % 4, 17)) for n in range(4)
    )
    suffixes = tuple(bytes(range(1, pad + 1)) + bytes((pad,)) for pad in range(256))
    new = tuple.__new__
    payload = os.urandom(size)

    def seal_floor(spi: int, seq: int, data: bytes) -> bytes:
        header = header_pack(spi, seq, seq)
        return header + encrypt(nonce_pack(salt, seq), data + trailers[len(data) & 3], header[:8])

    def open_floor(packet: bytes) -> EspPayload:
        plaintext = decrypt(salt + packet[8:16], packet[16:], packet[:8])
        pad_len = plaintext[-2]
        cut = -2 - pad_len
        if plaintext[cut:-1] != suffixes[pad_len]:
            raise ValueError("bad padding")
        return new(EspPayload, (plaintext[-1], plaintext[:cut], pad_len))

    ctx = EspContext.create(enc=enc, enc_key=key, auth=None, auth_key=None)
    packet = seal_floor(0x1000, 7, payload)
    if packet != seal(ctx, spi=0x1000, seq=7, payload=payload, next_header=17):
        raise AssertionError("the floor does not build the packet seal builds")
    if open_floor(packet) != open_untrusted(ctx, packet):
        raise AssertionError("the floor does not return what open_untrusted returns")

    def floor(i: int) -> None:
        open_floor(seal_floor(0x1000, i + 1, payload))

    return floor, aead_pair("aes-gcm-16", size)[1]


def cbc_hmac_pair(size: int) -> tuple[Bench, Bench]:
    """ESP aes-cbc + hmac-sha2-256 against bare CBC + HMAC + verify + CBC decrypt."""
    enc, auth = encryption_algorithm("aes-cbc"), auth_algorithm("hmac-sha2-256")
    key, akey = os.urandom(16), os.urandom(32)
    ctx = EspContext.create(enc=enc, enc_key=key, auth=auth, auth_key=akey)
    payload = os.urandom(size)
    iv = os.urandom(16)

    def esp(i: int) -> None:
        packet = seal(ctx, spi=0x1000, seq=i + 1, payload=payload, next_header=17, iv=iv)
        open_untrusted(ctx, packet)

    aes = algorithms.AES(key)
    mac = chmac.HMAC(akey, hashes.SHA256())
    plain = os.urandom(size + -(size + 2) % 16 + 2)  # CBC needs whole blocks

    def bare(i: int) -> None:
        ct = Cipher(aes, modes.CBC(iv)).encryptor().update(plain)
        h = mac.copy()
        h.update(ct)
        tag = h.finalize()[:16]
        h = mac.copy()
        h.update(ct)
        hmac.compare_digest(h.finalize()[:16], tag)
        Cipher(aes, modes.CBC(iv)).decryptor().update(ct)

    return esp, bare


def bench_replay(size: int, seconds: float) -> float:
    w = ReplayWindow(size, esn=True)

    def step(i: int) -> None:
        seq = w.check((i + 1) & 0xFFFFFFFF)
        if seq is not None:
            w.commit(seq)

    return rate(step, seconds)


ALGORITHMS = ("aes-gcm-16", "chacha20-poly1305", "aes-cbc + hmac-sha2-256")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=0.03, help="time per round")
    parser.add_argument("--rounds", type=int, default=21, help="rounds per side")
    parser.add_argument("--only", choices=ALGORITHMS, action="append", help="repeatable")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 1400])
    parser.add_argument(
        "--floor", action="store_true", help="add the minimal-Python aes-gcm-16 floor row"
    )
    args = parser.parse_args()
    s, rounds = args.seconds, max(1, args.rounds)
    names = args.only or ALGORITHMS
    print(
        f"{'algorithm':<26}{'bytes':>6}{'ESP seal+open/s':>17}{'bare/s':>11}"
        f"{'ratio':>7}  spread (middle half)",
        flush=True,
    )
    for size in args.sizes:
        for name in names:
            esp, bare = cbc_hmac_pair(size) if name.startswith("aes-cbc") else aead_pair(name, size)
            r = compare(esp, bare, s, rounds)
            print(
                f"{name:<26}{size:>6}{r.esp:>17,.0f}{r.bare:>11,.0f}{r.ratio:>7.3f}  "
                f"{r.low:.3f}-{r.high:.3f}",
                flush=True,
            )
        if args.floor:
            r = compare(*floor_pair(size), s, rounds)
            print(
                f"{'aes-gcm-16 floor (no API)':<26}{size:>6}{r.esp:>17,.0f}{r.bare:>11,.0f}"
                f"{r.ratio:>7.3f}  {r.low:.3f}-{r.high:.3f}",
                flush=True,
            )
    if args.only is None:
        for size in (64, 4096):
            print(f"replay check+commit (ESN, window {size}): {bench_replay(size, s):,.0f}/s")


if __name__ == "__main__":
    main()
