"""The sans-IO core of secsock's secure byte streams (RFC 8229 ESP-in-TCP).

Shared by :mod:`secsock.asyncio.streams` and :mod:`secsock.anyio`; it does no I/O and reads no
clock (``now`` is passed in), in the manner of h11's ``Connection``: ``send()`` turns
application bytes into whole frames, ``receive_data()`` turns wire bytes into authenticated
application bytes, returning (never raising) the :class:`~secsock.errors.IPsecStreamError`
that ends the stream when a frame fails.

What travels on the TCP connection (see docs/asyncio.md, "Wire format"):

* the initiator's optional stream prefix ``"IKETCP"`` (RFC 8229 §4), once;
* RFC 8229 frames: a 2-octet length that counts itself, then one transport-mode ESP packet;
* each ESP packet has next header 6 and carries one *inner TCP segment*: a 20-octet TCP header
  whose ports are this connection's, whose sequence number is the stream offset of its first
  byte (initial sequence number 0), whose ack is the number of bytes received so far, flags
  ACK|PSH (ACK|FIN for the end-of-stream segment), window 65535, and a checksum of 0 (or, with
  ``inner_checksum``, the RFC 793 checksum over the pseudo-header of the sender's addresses);
  then the chunk of application bytes.

The receiver accepts a segment only after ESP authenticated it and the anti-replay window took
it, and only if its inner sequence number is exactly the next stream offset: a missing,
duplicated, reordered or forged frame aborts the stream, and no byte of it is delivered. The end
of the stream is an authenticated FIN segment, so an attacker cannot truncate the stream at a
frame boundary unnoticed (compare TLS's close_notify).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from secsock.errors import DropReason, IPsecStreamError, MalformedPacket

__all__ = (
    "FLAG_ACK",
    "FLAG_FIN",
    "FLAG_PSH",
    "MAX_ESP_PACKET",
    "PREFIX",
    "Opened",
    "SecureStreamConnection",
    "StreamProtector",
    "build_segment",
    "parse_segment_untrusted",
)

#: RFC 8229 §4 stream prefix sent once by the initiator ("IKETCP").
PREFIX: Final = b"IKETCP"
#: The largest ESP packet one RFC 8229 frame can carry (the 16-bit length counts itself).
MAX_ESP_PACKET: Final = 65535 - 2
#: Next header value of the inner segment (TCP).
NEXT_HEADER_TCP: Final = 6

FLAG_FIN: Final = 0x01
FLAG_PSH: Final = 0x08
FLAG_ACK: Final = 0x10

_TCP: Final = struct.Struct("!HHIIBBHHH")
_SEQ_FLAGS: Final = struct.Struct("!4xI5xB")  # a TCP header's sequence number and flags
_LEN: Final = struct.Struct("!H")
TCP_HEADER_LEN: Final = _TCP.size
_DATA_OFFSET_5: Final = 5 << 4
_WINDOW: Final = 65535
_MOD32: Final = 1 << 32


class Opened(NamedTuple):
    """An authenticated ESP payload, as :meth:`StreamProtector.open` returns it (a tuple: it
    is built for every frame)."""

    #: the decrypted inner segment
    payload: bytes
    #: the ESP next header
    next_header: int
    #: the SA's SPI and the packet's (64-bit) sequence number
    spi: int
    seq: int


class StreamProtector(Protocol):
    """What a secure stream needs from the IPsec engine (selection, keys, replay, counters)."""

    @property
    def max_payload(self) -> int:
        """The largest inner segment whose ESP packet fits one RFC 8229 frame."""
        ...

    def seal(self, segments: Sequence[bytes], *, now: float) -> list[bytes]:
        """One ESP packet (next header 6) per segment, in order; raises local errors
        (NoSAError...) before returning anything."""
        ...

    def open(
        self, packet: bytes | bytearray | memoryview, *, now: float
    ) -> Opened | tuple[DropReason, str]:
        """Authenticate, replay-check and decrypt ``packet``; never raises on remote garbage.

        ``packet`` may be a view of the receive buffer: it is only read during the call.

        A drop is returned as (reason, message) and already counted; ``DUMMY`` (an
        authenticated next-header-59 packet) is skipped by the stream, every other reason
        aborts it.
        """
        ...

    def dropped(
        self, reason: DropReason, detail: str = "", *, spi: int | None = None,
        seq: int | None = None,
    ) -> None:
        """Count (and, with the debug sysctl on, log) a drop the stream itself decided
        (framing, order, inner segment); ``spi``/``seq`` name the frame's packet if known."""
        ...


def _pseudo_sum(src: bytes, dst: bytes, length: int) -> int:
    """The RFC 793 / RFC 8200 pseudo-header as a big integer (IPv4 or IPv6 addresses)."""
    if len(src) == 4:
        return int.from_bytes(src + dst + bytes((0, NEXT_HEADER_TCP)) + _LEN.pack(length), "big")
    return int.from_bytes(
        src + dst + length.to_bytes(4, "big") + bytes((0, 0, 0, NEXT_HEADER_TCP)), "big"
    )


def _checksum(pseudo: int, header: bytes, payload: bytes | memoryview) -> int:
    # 2**16 == 1 (mod 0xFFFF): every even-length part's big integer is congruent to the sum of
    # its 16-bit words, so the parts' residues add up without concatenating anything.
    n = int.from_bytes(payload, "big")
    if len(payload) & 1:
        n <<= 8
    total = (pseudo + int.from_bytes(header, "big") + n) % 0xFFFF
    if total == 0:
        # A nonzero ones' complement sum is never 0; the pseudo-header is never all zero.
        total = 0xFFFF
    return ~total & 0xFFFF


def build_segment(
    *,
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes | memoryview,
    checksum: bool = True,
) -> bytes:
    """An inner TCP segment (header + payload).

    ``src``/``dst`` are packed addresses (4 or 16 octets) of this connection, as the sender sees
    them; ``seq`` and ``ack`` are taken modulo 2**32. With ``checksum`` the RFC 793 checksum over
    the pseudo-header is computed; without, the checksum field is 0 (see docs/asyncio.md: in
    pure Python the sum costs far more than AES-GCM on a 64 KiB frame).
    """
    seq %= _MOD32
    ack %= _MOD32
    if not checksum:
        return _TCP.pack(sport, dport, seq, ack, _DATA_OFFSET_5, flags, _WINDOW, 0, 0) + payload
    header = _TCP.pack(sport, dport, seq, ack, _DATA_OFFSET_5, flags, _WINDOW, 0, 0)
    csum = _checksum(_pseudo_sum(src, dst, TCP_HEADER_LEN + len(payload)), header, payload)
    return _TCP.pack(sport, dport, seq, ack, _DATA_OFFSET_5, flags, _WINDOW, csum, 0) + payload


@dataclass(frozen=True, slots=True)
class Segment:
    """A parsed inner TCP segment."""

    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    payload: memoryview


def parse_segment_untrusted(segment: bytes) -> Segment:
    """Parse an inner TCP segment; raises only :class:`~secsock.errors.MalformedPacket`.

    The checksum is not verified: ESP's ICV already authenticated every byte, and over a NAT
    (RFC 8229's main use) the addresses the sender summed are not the ones this end sees
    (RFC 3948 §3.1.2 lets a transport-mode receiver skip the check).
    """
    if len(segment) < TCP_HEADER_LEN:
        raise MalformedPacket(
            f"expected an inner TCP segment of at least {TCP_HEADER_LEN} bytes, "
            f"found {len(segment)}",
            DropReason.BAD_INNER,
        )
    sport, dport, seq, ack, off, flags, _win, _csum, _urg = _TCP.unpack_from(segment)
    hlen = (off >> 4) * 4
    if hlen < TCP_HEADER_LEN or hlen > len(segment):
        raise MalformedPacket(
            f"expected an inner TCP data offset of 20..{len(segment)} bytes, found {hlen}",
            DropReason.BAD_INNER,
        )
    return Segment(sport, dport, seq, ack, flags, memoryview(segment)[hlen:])


def _packed(host: str) -> bytes:
    return ipaddress.ip_address(host.split("%", 1)[0]).packed


class SecureStreamConnection:
    """Both directions of one secure stream: wire bytes in and out, no I/O.

    ``local``/``peer`` are the TCP connection's addresses as this end sees them. The initiator
    (``initiator=True``) sends the "IKETCP" prefix first when ``send_prefix``; the responder
    accepts a stream with or without it, or insists on it with ``require_prefix``.
    ``inner_checksum`` fills in the inner TCP checksum (off by default, see docs/asyncio.md).

    Remote errors never raise: :meth:`receive_data` returns the authentic bytes that precede a
    bad frame together with the :class:`~secsock.errors.IPsecStreamError` that ended the
    stream; every later call returns that error again. Local errors (no SA, policy) raise from
    :meth:`send` before any state changes.
    """

    def __init__(
        self,
        protector: StreamProtector,
        *,
        local: tuple[str, int],
        peer: tuple[str, int],
        initiator: bool,
        send_prefix: bool = True,
        require_prefix: bool = False,
        inner_checksum: bool = False,
    ) -> None:
        self._protector = protector
        self._src = _packed(local[0])
        self._dst = _packed(peer[0])
        if len(self._src) != len(self._dst):
            raise ValueError(f"expected addresses of one family, found {local[0]!r} and {peer[0]!r}")
        self._sport = local[1]
        self._dport = peer[1]
        self._checksum = inner_checksum
        self._prefix_pending = initiator and send_prefix
        # Inbound framing (the rules of secsock.core.framing.tcp_encap.FrameDecoder, done here
        # on views of the received bytes so that a frame is not copied before it is opened):
        # the responder may see the "IKETCP" prefix first; _pending holds the start of a frame
        # (or of the prefix) that the bytes received so far do not complete.
        self._prefix_undecided = not initiator
        self._require_prefix = require_prefix and not initiator
        self.prefix_seen = False
        self._pending = bytearray()
        self._chunk = min(protector.max_payload, MAX_ESP_PACKET) - TCP_HEADER_LEN
        if self._chunk < 1:
            raise ValueError(f"expected room for payload in a frame, found {protector.max_payload}")
        self._sent = 0  # stream offset of the next byte we send
        self._received = 0  # stream offset of the next byte we accept
        self._error: IPsecStreamError | None = None
        self._fin_sent = False
        self._fin_received = False
        self.frames_sent = 0
        self.frames_received = 0

    # -- outbound ----------------------------------------------------------------------------

    @property
    def bytes_sent(self) -> int:
        """Application bytes sealed so far (the stream offset of the next byte sent)."""
        return self._sent

    @property
    def bytes_received(self) -> int:
        """Authentic application bytes returned so far."""
        return self._received

    @property
    def max_chunk(self) -> int:
        """Application bytes per frame; larger writes are split."""
        return self._chunk

    def _segment(self, payload: bytes | memoryview, seq: int, flags: int) -> bytes:
        return build_segment(
            src=self._src,
            dst=self._dst,
            sport=self._sport,
            dport=self._dport,
            seq=seq,
            ack=self._received,
            flags=flags,
            payload=payload,
            checksum=self._checksum,
        )

    def send_pieces(self, data: bytes | bytearray | memoryview, *, now: float) -> list[bytes]:
        """The wire bytes for ``data`` as a list of buffers whose concatenation is whole frames
        (after the prefix, on the first send): pass them to the transport in *one* call
        (``writelines``, or ``write`` of their join), so that no frame is ever half sent.

        A chunk larger than :attr:`max_chunk` is split into the fewest frames that hold it, of
        equal size (a 64 KiB write: two of 32 KiB). Raises the engine's local errors (e.g.
        :class:`~secsock.errors.NoSAError`) before any state changes. Empty ``data`` gives [].
        """
        if self._fin_sent:
            raise BrokenPipeError("cannot send after the end of the stream was sent")
        view = memoryview(data)
        if type(data) is not bytes and (
            view.itemsize != 1 or view.ndim != 1 or not view.c_contiguous
        ):
            view = memoryview(view.tobytes())
        n = len(view)
        if not n:
            return []
        k = -(-n // self._chunk)
        size, longer = divmod(n, k)  # the first `longer` segments get one byte more
        offset = self._sent
        segments: list[bytes] = []
        if self._checksum:
            segment = self._segment
            start = 0
            for i in range(k):
                end = start + size + (i < longer)
                segments.append(segment(view[start:end], offset + start, FLAG_ACK | FLAG_PSH))
                start = end
        else:
            pack = _TCP.pack
            sport = self._sport
            dport = self._dport
            ack = self._received % _MOD32
            start = 0
            for i in range(k):
                end = start + size + (i < longer)
                segments.append(
                    pack(sport, dport, (offset + start) % _MOD32, ack, _DATA_OFFSET_5,
                         FLAG_ACK | FLAG_PSH, _WINDOW, 0, 0)
                    + view[start:end]
                )
                start = end
        packets = self._protector.seal(segments, now=now)
        pieces: list[bytes] = [PREFIX] if self._prefix_pending else []
        length = _LEN.pack
        for packet in packets:
            if len(packet) > MAX_ESP_PACKET:
                raise ValueError(
                    f"expected ESP packets of at most {MAX_ESP_PACKET} bytes, found {len(packet)}"
                )
            pieces.append(length(len(packet) + 2))
            pieces.append(packet)
        self._prefix_pending = False
        self._sent = offset + n
        self.frames_sent += k
        return pieces

    def send(self, data: bytes | bytearray | memoryview, *, now: float) -> list[bytes]:
        """The wire bytes for ``data``: one element per whole frame (the prefix rides on the
        first), each to be written to the transport in one call, in order.

        Raises the engine's local errors (e.g. :class:`~secsock.errors.NoSAError`) before any
        state changes, so a failed send leaves nothing half-sent. Empty ``data`` gives [].
        """
        pieces = self.send_pieces(data, now=now)
        first = 1 if pieces and pieces[0] is PREFIX else 0
        frames = [pieces[i] + pieces[i + 1] for i in range(first, len(pieces), 2)]
        if first:
            frames[0] = PREFIX + frames[0]
        return frames

    def send_eof(self, *, now: float) -> bytes:
        """The authenticated end-of-stream segment (inner FIN); b"" if already sent."""
        if self._fin_sent:
            return b""
        (packet,) = self._protector.seal(
            [self._segment(b"", self._sent, FLAG_ACK | FLAG_FIN)], now=now
        )
        wire = _LEN.pack(len(packet) + 2) + packet
        self._fin_sent = True
        self.frames_sent += 1
        if self._prefix_pending:
            self._prefix_pending = False
            return PREFIX + wire
        return wire

    @property
    def eof_sent(self) -> bool:
        """True once :meth:`send_eof` produced the FIN segment."""
        return self._fin_sent

    # -- inbound -----------------------------------------------------------------------------

    @property
    def error(self) -> IPsecStreamError | None:
        """The error that broke the stream, if any."""
        return self._error

    @property
    def eof_received(self) -> bool:
        """True once the peer's authenticated end-of-stream segment arrived."""
        return self._fin_received

    def fail(
        self, reason: DropReason, message: str, *, counted: bool = False,
        spi: int | None = None, seq: int | None = None,
    ) -> IPsecStreamError:
        """Break the stream (first error wins), count the drop unless ``counted`` (the
        protector counted it already), return it."""
        if self._error is None:
            if not counted:
                self._protector.dropped(reason, message, spi=spi, seq=seq)
            self._error = IPsecStreamError(reason, message)
        return self._error

    def receive_data(
        self, data: bytes | bytearray | memoryview, *, now: float
    ) -> tuple[list[bytes | memoryview], IPsecStreamError | None]:
        """Feed wire bytes; return the application bytes they completed and any stream error.

        The bytes returned (one read-only view per frame, on a buffer nobody else holds) are
        authentic and in order even when an error is returned with them (they came from frames
        before the bad one); nothing of the bad frame is returned. ``data`` is only read during
        the call.
        """
        if self._error is not None:
            return [], self._error
        out: list[bytes | memoryview] = []
        view = memoryview(data)
        if type(data) is not bytes and (
            view.itemsize != 1 or view.ndim != 1 or not view.c_contiguous
        ):
            view = memoryview(view.tobytes())
        n = len(view)
        pos = 0
        if self._pending or self._prefix_undecided:
            done = self._complete(view, out, now)
            if done is None:
                return out, self._error
            pos = done
        # Every frame that lies whole in ``data`` is opened from a view of it, uncopied.
        frame = self._frame
        while n - pos >= 2:
            end = pos + ((view[pos] << 8) | view[pos + 1])
            if end > n:
                break
            if end < pos + 2:
                return out, self._bad_length(end - pos)
            if frame(view[pos + 2 : end], out, now):
                return out, self._error
            pos = end
        if pos < n:
            self._pending += view[pos:]
        return out, None

    def _complete(self, view: memoryview, out: list[bytes | memoryview], now: float) -> int | None:
        """Settle the prefix and finish the pending frame(s) from the head of ``view``; return
        how many bytes of ``view`` that took (all of them when it was not enough), or None if
        the stream broke."""
        pend = self._pending
        n = len(view)
        pos = 0
        if self._prefix_undecided:
            take = min(len(PREFIX) - len(pend), n)
            pend += view[:take]
            pos = take
            if pend != PREFIX[: len(pend)]:
                self._prefix_undecided = False
                if self._require_prefix:
                    self.fail(
                        DropReason.MALFORMED,
                        "ESP-in-TCP stream: expected the 'IKETCP' stream prefix, found other "
                        "octets",
                    )
                    return None
                # no prefix: what was taken is the start of the first frame
            elif len(pend) == len(PREFIX):
                self._prefix_undecided = False
                self.prefix_seen = True
                pend.clear()
                return pos
            else:
                return n
        while pend:
            if len(pend) >= 2:
                length = (pend[0] << 8) | pend[1]
                if length < 2:
                    self._bad_length(length)
                    return None
                if len(pend) >= length:
                    if len(pend) == length:  # the usual case: hand the buffer itself over
                        packet = pend
                        pend = self._pending = bytearray()
                    else:
                        packet = pend[:length]
                        del pend[:length]
                    if self._frame(memoryview(packet)[2:], out, now):
                        return None
                    continue
                need = length - len(pend)
            else:
                need = 2 - len(pend)
            if pos == n:
                return n
            take = min(need, n - pos)
            pend += view[pos : pos + take]
            pos += take
        return pos

    def _bad_length(self, length: int) -> IPsecStreamError:
        return self.fail(
            DropReason.MALFORMED,
            f"ESP-in-TCP stream: frame length {length} is less than 2 (it counts itself)",
        )

    def _odd_frame(self, body: memoryview) -> bool:
        """A frame body that is no ESP packet: a keepalive (skipped) or a stream error."""
        n = len(body)
        if n == 1 and body[0] == 0xFF:
            return False  # an RFC 8229 / RFC 3948 NAT keepalive
        if n <= 4:
            why = f"a frame body of {n} octets is too short for a non-ESP marker or an SPI"
        elif not (body[0] or body[1] or body[2] or body[3]):
            why = "an IKE message (non-ESP marker) arrived on a stream that carries no IKE"
        else:
            why = f"an ESP frame needs at least 8 octets (SPI, seq), found {n}"
        self.fail(DropReason.MALFORMED, f"ESP-in-TCP: {why}")
        return True

    def _frame(self, body: memoryview, out: list[bytes | memoryview], now: float) -> bool:
        """Open one frame body and append its bytes to ``out``; True if it broke the stream."""
        if len(body) < 8 or not (body[0] or body[1] or body[2] or body[3]):
            return self._odd_frame(body)
        if self._fin_received:
            self.fail(DropReason.MALFORMED, "a frame arrived after the end of the stream")
            return True
        result = self._protector.open(body, now=now)
        if type(result) is not Opened:
            if result[0] is DropReason.DUMMY:
                return False  # an authenticated dummy packet (RFC 4303 §2.6): discard
            self.fail(*result, counted=True)
            return True
        segment = result[0]
        size = len(segment)
        # The usual segment: next header 6, a 20-octet TCP header (data offset 5).
        if result[1] != NEXT_HEADER_TCP or size < TCP_HEADER_LEN or segment[12] != _DATA_OFFSET_5:
            return self._odd_segment(result, out)
        seq, flags = _SEQ_FLAGS.unpack_from(segment)
        received = self._received
        if seq != received % _MOD32:
            return self._out_of_order(result, seq)
        self.frames_received += 1
        if size > TCP_HEADER_LEN:
            out.append(memoryview(segment)[TCP_HEADER_LEN:])
            self._received = received + size - TCP_HEADER_LEN
        if flags & FLAG_FIN:
            self._fin_received = True
        return False

    def _odd_segment(self, result: Opened, out: list[bytes | memoryview]) -> bool:
        """An authenticated payload that is not the usual segment: another next header, a
        malformed inner header, or TCP options (a longer header, accepted)."""
        segment, next_header, _spi, _seq = result
        if next_header != NEXT_HEADER_TCP:
            self.fail(
                DropReason.BAD_INNER,
                f"expected next header {NEXT_HEADER_TCP} (TCP), found {next_header} "
                f"{_where(result)}",
                spi=result.spi, seq=result.seq,
            )
            return True
        try:
            parsed = parse_segment_untrusted(segment)
        except MalformedPacket as exc:
            self.fail(DropReason.BAD_INNER, f"{exc} {_where(result)}", spi=result.spi,
                      seq=result.seq)
            return True
        if parsed.seq != self._received % _MOD32:
            return self._out_of_order(result, parsed.seq)
        self.frames_received += 1
        n = len(parsed.payload)
        if n:
            out.append(parsed.payload)
            self._received += n
        if parsed.flags & FLAG_FIN:
            self._fin_received = True
        return False

    def _out_of_order(self, result: Opened, seq: int) -> bool:
        expected = self._received % _MOD32
        ahead = (seq - expected) % _MOD32 < (1 << 31)
        what = "bytes missing before it" if ahead else "bytes already received"
        self.fail(
            DropReason.REPLAY,
            f"out-of-order frame ({what}): expected stream offset {expected}, found {seq} "
            f"{_where(result)}",
            spi=result.spi, seq=result.seq,
        )
        return True

    def receive_eof(self) -> IPsecStreamError | None:
        """The TCP connection ended: fine after the peer's FIN segment, else truncation."""
        if self._error is not None:
            return self._error
        pending = len(self._pending)
        if pending and self._prefix_undecided:
            return self.fail(
                DropReason.MALFORMED,
                f"truncated: ESP-in-TCP stream: stream ended inside the 'IKETCP' prefix "
                f"({pending} octets)",
            )
        if pending:
            return self.fail(
                DropReason.MALFORMED,
                f"truncated: ESP-in-TCP stream: stream ended inside a frame ({pending} octets "
                f"pending)",
            )
        if not self._fin_received:
            return self.fail(
                DropReason.MALFORMED,
                "truncated stream: the connection ended without an authenticated end-of-stream",
            )
        return None


def _where(opened: Opened) -> str:
    return f"(spi 0x{opened.spi:08x} seq {opened.seq})"
