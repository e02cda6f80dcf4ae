"""The ipsec_strerror(3) table and the one constructor of PolicyError used by secsock.policy."""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from secsock import constants as c
from secsock.errors import PolicyError

__all__ = ("EAI_NONAME_TEXT", "EAI_SERVICE_TEXT", "EIPSEC_MESSAGES", "policy_error", "strerror")

#: FreeBSD/KAME texts (including KAME's "direciton" misspelling) for 0-25 and 27 ("Unknown
#: error"); ipsec-tools texts for its priority errors 27-29. 26 (EIPSEC_SYSTEM_ERROR) has no fixed
#: text: the error carries the system message (gai_strerror(3) for bad addresses).
EIPSEC_MESSAGES: Final = MappingProxyType(
    {
        c.EIPSEC_NO_ERROR: "Success",
        c.EIPSEC_NOT_SUPPORTED: "Not supported",
        c.EIPSEC_INVAL_ARGUMENT: "Invalid argument",
        c.EIPSEC_INVAL_SADBMSG: "Invalid sadb message",
        c.EIPSEC_INVAL_VERSION: "Invalid version",
        c.EIPSEC_INVAL_POLICY: "Invalid security policy",
        c.EIPSEC_INVAL_ADDRESS: "Invalid address specification",
        c.EIPSEC_INVAL_PROTO: "Invalid ipsec protocol",
        c.EIPSEC_INVAL_MODE: "Invalid ipsec mode",
        c.EIPSEC_INVAL_LEVEL: "Invalid ipsec level",
        c.EIPSEC_INVAL_SATYPE: "Invalid SA type",
        c.EIPSEC_INVAL_MSGTYPE: "Invalid message type",
        c.EIPSEC_INVAL_EXTTYPE: "Invalid extension type",
        c.EIPSEC_INVAL_ALGS: "Invalid algorithm type",
        c.EIPSEC_INVAL_KEYLEN: "Invalid key length",
        c.EIPSEC_INVAL_FAMILY: "Invalid address family",
        c.EIPSEC_INVAL_PREFIXLEN: "Invalid prefix length",
        c.EIPSEC_INVAL_DIR: "Invalid direciton",
        c.EIPSEC_INVAL_SPI: "SPI range violation",
        c.EIPSEC_NO_PROTO: "No protocol specified",
        c.EIPSEC_NO_ALGS: "No algorithm specified",
        c.EIPSEC_NO_BUFS: "No buffers available",
        c.EIPSEC_DO_GET_SUPP_LIST: "Must get supported algorithms list first",
        c.EIPSEC_PROTO_MISMATCH: "Protocol mismatch",
        c.EIPSEC_FAMILY_MISMATCH: "Family mismatch",
        c.EIPSEC_FEW_ARGUMENTS: "Too few arguments",
        c.EIPSEC_INVAL_PRIORITY_OFFSET: (
            "Priority offset not in valid range [-2147483647, 2147483648]"
        ),
        c.EIPSEC_INVAL_PRIORITY_BASE_OFFSET: (
            "Priority offset from base not in valid range [0, 1073741823] for negative "
            "offsets and [0, 1073741824] for positive offsets"
        ),
        c.EIPSEC_PRIORITY_NOT_COMPILED: "Policy priority not compiled in",
        c.EIPSEC_MAX: "Unknown error",
    }
)

#: gai_strerror(EAI_NONAME) and gai_strerror(EAI_SERVICE) as FreeBSD's libc words them.
EAI_NONAME_TEXT: Final = "hostname nor servname provided, or not known"
EAI_SERVICE_TEXT: Final = "servname not supported for ai_socktype"


def strerror(code: int) -> str:
    """The table text for ``code``; out-of-range codes read as EIPSEC_MAX, as in libipsec."""
    return EIPSEC_MESSAGES.get(code, EIPSEC_MESSAGES[c.EIPSEC_MAX])


def policy_error(
    code: int,
    *,
    note: str | None = None,
    message: str | None = None,
    token: str | None = None,
    column: int | None = None,
    text: str | None = None,
) -> PolicyError:
    """Build a PolicyError whose message is the strerror text of ``code`` (or ``message`` for
    EIPSEC_SYSTEM_ERROR); ``note`` says what was expected and what was found."""
    exc = PolicyError(
        message if message is not None else strerror(code),
        code=code,
        token=token,
        column=column,
        text=text,
    )
    if note is not None:
        exc.add_note(note)
    return exc
