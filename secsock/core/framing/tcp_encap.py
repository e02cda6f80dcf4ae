"""ESP-in-TCP (RFC 8229, obsoleted by RFC 9329 with the same wire format). Sans-IO.

Stream layout::

    initiator -> responder, once: "IKETCP" (49 4B 45 54 43 50)
    then, both directions:        Length (16 bits, big-endian, counts itself) || body
        IKE body: 00 00 00 00 (non-ESP marker) || IKE message
        ESP body: ESP packet (nonzero SPI first)

:func:`frame` builds one frame; :class:`FrameDecoder` turns a byte stream back into frames, in
the shape of h11's ``receive_data``/``next_event``: ``feed()`` bytes as they arrive, then call
``next_frame()`` until it returns ``None``; call ``eof()`` when the peer closes.

Receive rules (those of Linux's ``espintcp``, the kernel side we interoperate with):

* Length < 2 cannot delimit anything: the stream is unrecoverable. ``next_frame()`` raises
  :class:`~secsock.errors.MalformedPacket`, :attr:`FrameDecoder.failed` becomes true and every
  later call raises again; close the connection.
* A body of exactly 0xFF (Length 3) is a NAT keepalive: skipped silently (Linux does too) and
  counted in :attr:`FrameDecoder.keepalives`.
* Any other body of 4 octets or fewer (Length <= 6) is dropped: ``next_frame()`` raises
  :class:`~secsock.errors.MalformedPacket` for that frame only; the stream stays in sync and the
  next call continues with the following frame. An ESP body shorter than 8 octets (SPI + seq)
  is dropped the same way.

The ``IKETCP`` prefix: RFC 8229 §4 (and RFC 9329 §4) say every stream MUST begin with it and that
only the initiator sends it, once. A responder decoder (``expect_prefix=True``) therefore
consumes it when present. By default it also accepts a stream without it, because the Linux
kernel never sees the prefix (the IKE daemon reads it before attaching the ``espintcp`` ULP), so
peers that set up TCP encapsulation by hand may skip it. The prefix is recognised by its six
octets; a prefix-less stream whose very first frame begins with exactly ``IKETCP`` (Length
0x494B and SPI 0x45544350) would be misread, so pass ``require_prefix=True`` for strict RFC
behaviour (a stream that does not begin with the prefix is then unrecoverable). The decoder on
the initiator side (``expect_prefix=False``) never looks for a prefix.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import Enum

from secsock.errors import MalformedPacket

__all__ = (
    "MAX_PAYLOAD",
    "PREFIX",
    "Frame",
    "FrameDecoder",
    "FrameKind",
    "build_prefix",
    "frame",
    "frame_ike",
)

PREFIX = b"IKETCP"
"""The stream prefix the initiator sends once, before any frame (RFC 8229 §4)."""
MAX_PAYLOAD = 0xFFFF - 2
"""The largest body a frame can carry: the 16-bit Length counts its own two octets."""

_NON_ESP_MARKER = b"\0\0\0\0"
_ESP_MIN_HEADER = 8  # SPI + sequence number
_KEEPALIVE = b"\xff"
_LENGTH = struct.Struct("!H")
# Compact the receive buffer once this many consumed octets sit at its front.
_COMPACT_AT = 1 << 16


class FrameKind(Enum):
    """What a frame on an ESP-in-TCP stream carries."""

    ESP = "esp"
    IKE = "ike"


def _body_error(body: bytes | bytearray | memoryview) -> str | None:
    """Why a frame body would be dropped by a receiver, or None if it is acceptable."""
    n = len(body)
    if n <= 4:
        return f"a frame body of {n} octets is too short for a non-ESP marker or an SPI"
    if body[:4] != _NON_ESP_MARKER and n < _ESP_MIN_HEADER:
        return f"an ESP frame needs at least {_ESP_MIN_HEADER} octets (SPI, seq), found {n}"
    return None


def build_prefix() -> bytes:
    """The ``IKETCP`` stream prefix, for the initiator to send first."""
    return PREFIX


def frame(packet: bytes) -> bytes:
    """One frame carrying ``packet`` (an ESP packet, or a non-ESP marker and an IKE message).

    Raises :class:`ValueError` if ``packet`` is longer than :data:`MAX_PAYLOAD` (65533) octets,
    or is something a receiver would drop: 4 octets or fewer, or an ESP packet (nonzero first
    word) shorter than 8 octets. A lone keepalive octet is not framed by secsock.
    """
    n = len(packet)
    if n > MAX_PAYLOAD:
        raise ValueError(
            f"ESP-in-TCP: expected a packet of at most {MAX_PAYLOAD} octets "
            f"(the 16-bit length counts itself), found {n}"
        )
    why = _body_error(packet)
    if why is not None:
        raise ValueError(f"ESP-in-TCP: {why}")
    return _LENGTH.pack(n + 2) + packet


def frame_ike(message: bytes) -> bytes:
    """One frame carrying an IKE message: Length, the non-ESP marker, then ``message``."""
    return frame(_NON_ESP_MARKER + message)


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """One decoded frame: ESP (the whole ESP packet, SPI first) or IKE (marker stripped)."""

    kind: FrameKind
    data: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, FrameKind):
            raise TypeError(f"expected a FrameKind, found {type(self.kind).__name__}")
        if self.kind is FrameKind.ESP and (
            len(self.data) < _ESP_MIN_HEADER or self.data[:4] == _NON_ESP_MARKER
        ):
            raise ValueError("an ESP frame needs at least 8 octets and a nonzero SPI")

    def __repr__(self) -> str:
        return f"Frame(kind={self.kind.name}, {len(self.data)} octets)"


class FrameDecoder:
    """Incremental ESP-in-TCP decoder: ``feed()`` stream bytes, then ``next_frame()``.

    ``expect_prefix`` is true on the responder (accepting) side, where the stream may begin with
    ``IKETCP``; ``require_prefix`` makes that prefix mandatory. Received bytes go into one
    ``bytearray`` read through an offset, compacted only when the consumed front grows large,
    so a long stream costs linear time.
    """

    __slots__ = (
        "_buf",
        "_eof",
        "_failed",
        "_off",
        "_prefix_pending",
        "_prefix_seen",
        "_require_prefix",
        "keepalives",
    )

    def __init__(self, *, expect_prefix: bool, require_prefix: bool = False) -> None:
        if require_prefix and not expect_prefix:
            raise ValueError("require_prefix=True needs expect_prefix=True")
        self._buf = bytearray()
        self._off = 0
        self._prefix_pending = expect_prefix
        self._require_prefix = require_prefix
        self._prefix_seen = False
        self._failed: str | None = None
        self._eof = False
        self.keepalives = 0
        """Keepalive frames (body 0xFF) skipped so far."""

    @property
    def failed(self) -> bool:
        """True once the stream can no longer be delimited; close the connection."""
        return self._failed is not None

    @property
    def prefix_seen(self) -> bool:
        """True if the stream began with ``IKETCP`` and it was consumed."""
        return self._prefix_seen

    @property
    def buffered(self) -> int:
        """Octets received but not yet returned as frames."""
        return len(self._buf) - self._off

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received stream bytes. Raises :class:`RuntimeError` after :meth:`eof`."""
        if self._eof:
            raise RuntimeError("FrameDecoder.feed() called after eof()")
        if self._failed is not None or not data:
            return
        buf = self._buf
        off = self._off
        if off:
            if off == len(buf):
                buf.clear()
                self._off = 0
            elif off >= _COMPACT_AT and off * 2 >= len(buf):
                del buf[:off]
                self._off = 0
        buf += data

    def _fail(self, reason: str) -> MalformedPacket:
        self._failed = reason
        return MalformedPacket(f"ESP-in-TCP stream: {reason}")

    def _consume_prefix(self) -> bool:
        """Settle whether the stream begins with the prefix; False while undecided."""
        buf, off = self._buf, self._off
        avail = min(len(buf) - off, len(PREFIX))
        if buf[off : off + avail] != PREFIX[:avail]:
            self._prefix_pending = False
            if self._require_prefix:
                raise self._fail("expected the 'IKETCP' stream prefix, found other octets")
            return True
        if avail < len(PREFIX):
            return False
        self._off = off + len(PREFIX)
        self._prefix_pending = False
        self._prefix_seen = True
        return True

    def next_frame(self) -> Frame | None:
        """The next complete frame, or ``None`` if more bytes are needed.

        Raises :class:`~secsock.errors.MalformedPacket` for a frame a receiver must drop (the
        stream continues: call again) or for a stream that cannot be delimited any more
        (:attr:`failed` is then true and every later call raises).
        """
        while True:
            if self._failed is not None:
                raise MalformedPacket(f"ESP-in-TCP stream: {self._failed}")
            if self._prefix_pending and not self._consume_prefix():
                return None
            buf, off = self._buf, self._off
            if len(buf) - off < 2:
                return None
            (length,) = _LENGTH.unpack_from(buf, off)
            if length < 2:
                raise self._fail(f"frame length {length} is less than 2 (it counts itself)")
            end = off + length
            if end > len(buf):
                return None
            with memoryview(buf) as view:
                body = bytes(view[off + 2 : end])
            self._off = end
            if body == _KEEPALIVE:
                self.keepalives += 1
                continue
            why = _body_error(body)
            if why is not None:
                raise MalformedPacket(f"ESP-in-TCP: dropped a frame: {why}")
            if body[:4] == _NON_ESP_MARKER:
                return Frame(kind=FrameKind.IKE, data=body[4:])
            return Frame(kind=FrameKind.ESP, data=body)

    def eof(self) -> None:
        """The peer closed its side. Raises MalformedPacket if a partial frame is pending.

        Complete frames already buffered stay available through :meth:`next_frame`. A stream
        that ends inside the prefix or inside a frame is truncated; :attr:`failed` becomes true.
        """
        self._eof = True
        if self._failed is not None:
            return
        buf = self._buf
        off = self._off
        total = len(buf)
        if self._prefix_pending and total > off:
            avail = total - off
            if avail < len(PREFIX) and buf[off:total] == PREFIX[:avail]:
                raise self._fail(f"stream ended inside the 'IKETCP' prefix ({avail} octets)")
            if buf[off : off + len(PREFIX)] == PREFIX:
                off += len(PREFIX)
        # Walk the complete frames (lengths only) to see whether the tail is partial.
        while total - off >= 2:
            (length,) = _LENGTH.unpack_from(buf, off)
            if length < 2:
                return  # next_frame() reports the corrupt length
            if off + length > total:
                break
            off += length
        if off < total:
            raise self._fail(f"stream ended inside a frame ({total - off} octets pending)")
