"""SADB events for key management: Acquire, SoftExpire, HardExpire, and the hub that delivers them.

These are the PF_KEY messages a key-management daemon registers for (SADB_ACQUIRE,
SADB_EXPIRE), as frozen dataclasses. They carry identities only, never keys.

An :class:`EventHub` delivers each event twice: synchronously to every subscribed callback
(``subscribe(cb)`` returns the unsubscribe function), and into a bounded queue that
``events()`` / ``next_event()`` drain. When the queue is full the *new* event is not queued
(as a full PF_KEY socket buffer drops the message) and ``overflowed`` counts it; callbacks
still see it. Pure: no clocks, no I/O.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from secsock.sadb.lifetime import ExpireReason
from secsock.sadb.model import IPAddress, SAIdentity, SAMode, SAProtocol

__all__ = (
    "DEFAULT_QUEUE_SIZE",
    "Acquire",
    "EventCallback",
    "EventHub",
    "HardExpire",
    "SADBEvent",
    "SoftExpire",
    "raised_by_subscriber",
)

DEFAULT_QUEUE_SIZE = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Acquire:
    """SADB_ACQUIRE: an outbound packet needed an SA that does not exist.

    Attributes:
        src, dst: the addresses the SA must have.
        proto: ESP or AH.
        mode: the request's mode.
        reqid: the request's reqid (0 = any).
        seq: the acquire sequence number (``sadb_msg_seq``); key management echoes it.
        time: ``now`` when the acquire was raised (wall-clock seconds).
    """

    src: IPAddress
    dst: IPAddress
    proto: SAProtocol
    mode: SAMode
    reqid: int
    seq: int
    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SoftExpire:
    """SADB_EXPIRE (soft): the SA reached a soft limit and is now dying; rekey.

    Attributes:
        sa: the SA's identity (no keys).
        reason: which limit (``addtime`` or ``bytes``).
        bytes: bytes the SA had carried.
        age: seconds since the SA was added.
    """

    sa: SAIdentity
    reason: ExpireReason
    bytes: int
    age: float


@dataclass(frozen=True, slots=True, kw_only=True)
class HardExpire:
    """SADB_EXPIRE (hard): the SA reached a hard limit (or its sequence counter ran out) and
    was removed from the SADB. (KAME sends no hard EXPIRE; Linux does, and so do we.)

    Attributes:
        sa: the SA's identity (no keys).
        reason: ``addtime``, ``bytes`` or ``sequence``.
        bytes: bytes the SA had carried.
        age: seconds since the SA was added (0.0 when no clock was at hand: ``sequence``).
    """

    sa: SAIdentity
    reason: ExpireReason
    bytes: int
    age: float


SADBEvent = Acquire | SoftExpire | HardExpire
EventCallback = Callable[[SADBEvent], object]


class EventHub:
    """Callbacks plus a bounded queue of SADB events. Thread-safe."""

    __slots__ = ("_callbacks", "_lock", "_maxlen", "_overflowed", "_queue")

    def __init__(self, *, maxlen: int = DEFAULT_QUEUE_SIZE) -> None:
        if type(maxlen) is not int or maxlen < 1:
            raise ValueError(f"event queue size must be a positive integer, found {maxlen!r}")
        self._maxlen = maxlen
        self._queue: deque[SADBEvent] = deque()
        self._lock = threading.Lock()
        self._callbacks: tuple[EventCallback, ...] = ()
        self._overflowed = 0

    @property
    def maxlen(self) -> int:
        return self._maxlen

    @property
    def overflowed(self) -> int:
        """How many events were not queued because the queue was full."""
        return self._overflowed

    @property
    def pending(self) -> int:
        """How many events wait in the queue."""
        return len(self._queue)

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event)`` for every future event; returns the unsubscribe function.

        Callbacks run in the thread that caused the event, after the store's locks are
        released. They should not raise: if one does, the others still run and the first
        exception then propagates to the caller of the store operation (whose effect stands),
        marked so that :func:`raised_by_subscriber` recognises it. The data path (the engine)
        logs such exceptions instead of passing them on to applications.
        """
        if not callable(callback):
            raise TypeError(f"expected a callable, found {type(callback).__name__}")
        token = _Subscription(callback)
        with self._lock:
            self._callbacks = (*self._callbacks, token)

        def unsubscribe() -> None:
            with self._lock:
                self._callbacks = tuple(c for c in self._callbacks if c is not token)

        return unsubscribe

    def publish(self, events: Iterable[SADBEvent]) -> None:
        """Queue each event and hand it to every callback (in subscription order)."""
        batch = list(events)
        if not batch:
            return
        with self._lock:
            for ev in batch:
                if len(self._queue) >= self._maxlen:
                    self._overflowed += 1
                else:
                    self._queue.append(ev)
            callbacks = self._callbacks
        first_error: BaseException | None = None
        for ev in batch:
            for cb in callbacks:
                try:
                    cb(ev)
                except Exception as exc:  # noqa: BLE001 - every callback runs; the first error re-raises
                    if first_error is None:
                        first_error = exc
        if first_error is not None:
            _mark(first_error)
            raise first_error

    def events(self) -> list[SADBEvent]:
        """Drain the queue: every pending event, oldest first."""
        with self._lock:
            out = list(self._queue)
            self._queue.clear()
        return out

    def next_event(self) -> SADBEvent | None:
        """The oldest pending event (removed from the queue), or None."""
        with self._lock:
            return self._queue.popleft() if self._queue else None


_MARK = "_secsock_sadb_subscriber_error"


def _mark(exc: BaseException) -> None:
    if not raised_by_subscriber(exc):
        setattr(exc, _MARK, True)
        exc.add_note("(raised by an SADB event subscriber; the store operation that published "
                     "the event completed)")


def raised_by_subscriber(exc: BaseException) -> bool:
    """True when ``exc`` is an event callback's exception re-raised by
    :meth:`EventHub.publish`: the store operation that published the event completed (its
    return value is lost), as opposed to an error of the store itself."""
    return getattr(exc, _MARK, False) is True


class _Subscription:
    """A distinct wrapper per subscribe() call, so one function subscribed twice unsubscribes
    one at a time."""

    __slots__ = ("_cb",)

    def __init__(self, cb: EventCallback) -> None:
        self._cb = cb

    def __call__(self, event: SADBEvent) -> object:
        return self._cb(event)
