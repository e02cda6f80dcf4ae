"""The secsock error tree and drop reasons: the one module every layer imports.

Local misuse raises (bad policy text, a send with no SA); remote garbage never raises out of
the engine, it becomes a drop with a :class:`DropReason` and a counter. Messages name SPIs,
sequence numbers, reasons, tokens and columns -- never keys, ICVs or payload.
"""

from __future__ import annotations

import errno as _errno
from enum import StrEnum

__all__ = (
    "AlgorithmError",
    "DropReason",
    "IPsecStreamError",
    "IntegrityError",
    "MalformedPacket",
    "NoSAError",
    "PolicyError",
    "SADBError",
    "SecsockError",
    "SequenceOverflowError",
    "SetkeyError",
)


class SecsockError(Exception):
    """Base class of every error secsock raises on purpose."""


class PolicyError(SecsockError, ValueError):
    """A policy string or buffer was rejected (ipsec_set_policy(3) / ipsec_dump_policy(3)).

    ``code`` is the EIPSEC_* number, ``token`` the offending token (if any) and ``column``
    its 1-based column in ``text`` (if the error came from text).
    """

    def __init__(
        self,
        message: str,
        *,
        code: int,
        token: str | None = None,
        column: int | None = None,
        text: str | None = None,
    ) -> None:
        self.code = code
        self.token = token
        self.column = column
        self.text = text
        where = ""
        if token is not None:
            where += f" at {token!r}"
        if column is not None:
            where += f" (column {column})"
        super().__init__(f"{message}{where}")
        self.message = message


class SetkeyError(SecsockError, ValueError):
    """A setkey(8) script was rejected; nothing in the stores changed."""

    def __init__(
        self,
        message: str,
        *,
        line: int,
        column: int,
        token: str | None = None,
    ) -> None:
        self.line = line
        self.column = column
        self.token = token
        self.message = message
        at = f" at [{token}]" if token is not None else ""
        super().__init__(f"line {line}, column {column}: {message}{at}")


class AlgorithmError(SecsockError, ValueError):
    """An unknown algorithm, a wrong key length or a forbidden combination."""


class SADBError(SecsockError, OSError):
    """An SADB/SPD operation failed with the errno the kernel would give (EEXIST, ENOENT, ...)."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(err, message)


class NoSAError(SecsockError, OSError):
    """An outbound datagram needs an SA (level require/unique) and none exists.

    Raised as ENOENT, as KAME's key_checkrequest() reports it. Nothing was sent.
    """

    def __init__(self, message: str, err: int = _errno.ENOENT) -> None:
        super().__init__(err, message)


class SequenceOverflowError(SecsockError, OSError):
    """The SA's outbound sequence counter is exhausted; the SA is now dead and nothing was sent."""

    def __init__(self, message: str) -> None:
        super().__init__(_errno.EOVERFLOW, message)


class MalformedPacket(SecsockError):
    """Core-internal: network bytes that do not parse. The engine maps it to a drop."""

    def __init__(self, message: str, reason: DropReason | None = None) -> None:
        super().__init__(message)
        self.reason = reason if reason is not None else DropReason.MALFORMED


class IntegrityError(SecsockError):
    """Core-internal: an ICV did not verify. The engine maps it to DropReason.AUTH_FAILED."""


class DropReason(StrEnum):
    """Why an inbound packet was dropped; each has a counter."""

    MALFORMED = "malformed"
    NO_SA = "no-sa"
    REPLAY = "replay"
    AUTH_FAILED = "auth-failed"
    BAD_PADDING = "bad-padding"
    BAD_INNER = "bad-inner"
    POLICY = "policy"
    DUMMY = "dummy"
    SA_DEAD = "sa-dead"
    SEQ_OVERFLOW = "seq-overflow"


class IPsecStreamError(SecsockError, ConnectionError):
    """A secure stream (ESP in RFC 8229 TCP framing) was aborted because of what arrived.

    ``reason`` says why (a forged frame is ``AUTH_FAILED``, a duplicated or out-of-order one
    ``REPLAY``, a truncated or unparsable one ``MALFORMED``, ...). No byte of the offending
    frame was delivered. The errno is ECONNABORTED.
    """

    def __init__(self, reason: DropReason, message: str) -> None:
        super().__init__(_errno.ECONNABORTED, f"{reason}: {message}")
        self.reason = reason
