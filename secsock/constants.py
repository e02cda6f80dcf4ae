"""Wire numbers and C-API constants of the BSD/KAME IPsec API.

The values follow FreeBSD/KAME ``<netipsec/ipsec.h>``, ``<net/pfkeyv2.h>`` and libipsec's
``ipsec_strerror.h``; where ipsec-tools extends them (``IPSEC_DIR_FWD``, the policy priority
constants and the priority error codes 27-29) the ipsec-tools numbers are used, because
secsock accepts the ipsec-tools grammar. See docs/policy.md.

``IP_IPSEC_POLICY`` / ``IPV6_IPSEC_POLICY`` carry the running platform's own option numbers, so a
secsock socket intercepts exactly the option the kernel would have taken (on Linux 21 is
``IP_MINTTL``, which is not ours). ``AF_INET6`` is likewise the platform's value; the wire
layouts in :mod:`secsock.policy.wire` use their own fixed values (28 for "bsd", 10 for "linux").
"""

from __future__ import annotations

import sys
from typing import Final

__all__ = (
    "AF_INET",
    "AF_INET6",
    "EIPSEC_DO_GET_SUPP_LIST",
    "EIPSEC_FAMILY_MISMATCH",
    "EIPSEC_FEW_ARGUMENTS",
    "EIPSEC_INVAL_ADDRESS",
    "EIPSEC_INVAL_ALGS",
    "EIPSEC_INVAL_ARGUMENT",
    "EIPSEC_INVAL_DIR",
    "EIPSEC_INVAL_EXTTYPE",
    "EIPSEC_INVAL_FAMILY",
    "EIPSEC_INVAL_KEYLEN",
    "EIPSEC_INVAL_LEVEL",
    "EIPSEC_INVAL_MODE",
    "EIPSEC_INVAL_MSGTYPE",
    "EIPSEC_INVAL_POLICY",
    "EIPSEC_INVAL_PREFIXLEN",
    "EIPSEC_INVAL_PRIORITY_BASE_OFFSET",
    "EIPSEC_INVAL_PRIORITY_OFFSET",
    "EIPSEC_INVAL_PROTO",
    "EIPSEC_INVAL_SADBMSG",
    "EIPSEC_INVAL_SATYPE",
    "EIPSEC_INVAL_SPI",
    "EIPSEC_INVAL_VERSION",
    "EIPSEC_MAX",
    "EIPSEC_NOT_SUPPORTED",
    "EIPSEC_NO_ALGS",
    "EIPSEC_NO_BUFS",
    "EIPSEC_NO_ERROR",
    "EIPSEC_NO_PROTO",
    "EIPSEC_PRIORITY_NOT_COMPILED",
    "EIPSEC_PROTO_MISMATCH",
    "EIPSEC_SYSTEM_ERROR",
    "IPPROTO_AH",
    "IPPROTO_ESP",
    "IPPROTO_IPCOMP",
    "IPSEC_DIR_ANY",
    "IPSEC_DIR_FWD",
    "IPSEC_DIR_INBOUND",
    "IPSEC_DIR_INVALID",
    "IPSEC_DIR_MAX",
    "IPSEC_DIR_OUTBOUND",
    "IPSEC_LEVEL_DEFAULT",
    "IPSEC_LEVEL_REQUIRE",
    "IPSEC_LEVEL_UNIQUE",
    "IPSEC_LEVEL_USE",
    "IPSEC_MANUAL_REQID_MAX",
    "IPSEC_MODE_ANY",
    "IPSEC_MODE_TRANSPORT",
    "IPSEC_MODE_TUNNEL",
    "IPSEC_POLICY_BYPASS",
    "IPSEC_POLICY_DISCARD",
    "IPSEC_POLICY_ENTRUST",
    "IPSEC_POLICY_IPSEC",
    "IPSEC_POLICY_NONE",
    "IPSEC_PORT_ANY",
    "IPSEC_PROTO_ANY",
    "IPSEC_REPLAYWSIZE",
    "IPSEC_ULPROTO_ANY",
    "IPV6_IPSEC_POLICY",
    "IP_IPSEC_POLICY",
    "PRIORITY_DEFAULT",
    "PRIORITY_HIGH",
    "PRIORITY_LOW",
    "PRIORITY_OFFSET_NEGATIVE_MAX",
    "PRIORITY_OFFSET_POSITIVE_MAX",
    "SADB_X_EXT_POLICY",
)


def _platform_sockopts(platform: str) -> tuple[int, int]:
    """(IP_IPSEC_POLICY, IPV6_IPSEC_POLICY) as the platform's headers define them."""
    if platform.startswith("linux"):
        return 16, 34  # <linux/in.h>, <linux/in6.h>
    if platform.startswith("netbsd"):
        return 22, 28
    # FreeBSD, DragonFly, macOS and every other KAME-derived stack; also the fallback.
    return 21, 28


def _platform_af_inet6(platform: str) -> int:
    if platform.startswith("linux"):
        return 10
    if platform.startswith("darwin"):
        return 30
    if platform.startswith(("netbsd", "openbsd")):
        return 24
    if platform.startswith("win"):
        return 23
    return 28  # FreeBSD, DragonFly


# --- socket options (level IPPROTO_IP / IPPROTO_IPV6) ----------------------------------------
IP_IPSEC_POLICY: Final[int] = _platform_sockopts(sys.platform)[0]
IPV6_IPSEC_POLICY: Final[int] = _platform_sockopts(sys.platform)[1]

# --- address families (the running platform's numbers) ----------------------------------------
AF_INET: Final = 2
AF_INET6: Final[int] = _platform_af_inet6(sys.platform)

# --- IP protocol numbers ----------------------------------------------------------------------
IPPROTO_ESP: Final = 50
IPPROTO_AH: Final = 51
IPPROTO_IPCOMP: Final = 108

# --- PF_KEY -----------------------------------------------------------------------------------
SADB_X_EXT_POLICY: Final = 18

# --- IPSEC_DIR_* (FWD, MAX and INVALID use the numbering that includes FWD, as ipsec-tools and
# Linux do; FreeBSD has no FWD and numbers MAX 3, INVALID 4) -------------------------------------
IPSEC_DIR_ANY: Final = 0
IPSEC_DIR_INBOUND: Final = 1
IPSEC_DIR_OUTBOUND: Final = 2
IPSEC_DIR_FWD: Final = 3
IPSEC_DIR_MAX: Final = 4
IPSEC_DIR_INVALID: Final = 5

# --- IPSEC_POLICY_* (policy types / actions) --------------------------------------------------
IPSEC_POLICY_DISCARD: Final = 0
IPSEC_POLICY_NONE: Final = 1
IPSEC_POLICY_IPSEC: Final = 2
IPSEC_POLICY_ENTRUST: Final = 3
IPSEC_POLICY_BYPASS: Final = 4

# --- IPSEC_LEVEL_* ----------------------------------------------------------------------------
IPSEC_LEVEL_DEFAULT: Final = 0
IPSEC_LEVEL_USE: Final = 1
IPSEC_LEVEL_REQUIRE: Final = 2
IPSEC_LEVEL_UNIQUE: Final = 3

# --- IPSEC_MODE_* -----------------------------------------------------------------------------
IPSEC_MODE_ANY: Final = 0
IPSEC_MODE_TRANSPORT: Final = 1
IPSEC_MODE_TUNNEL: Final = 2

# --- misc -------------------------------------------------------------------------------------
IPSEC_MANUAL_REQID_MAX: Final = 0x3FFF
IPSEC_ULPROTO_ANY: Final = 255
IPSEC_PORT_ANY: Final = 0
IPSEC_PROTO_ANY: Final = 255
IPSEC_REPLAYWSIZE: Final = 32

# --- ipsec-tools policy priorities (libpfkey.h); a lower value is matched first ---------------
PRIORITY_LOW: Final = 0xC0000000
PRIORITY_DEFAULT: Final = 0x80000000
PRIORITY_HIGH: Final = 0x40000000
PRIORITY_OFFSET_POSITIVE_MAX: Final = 0x3FFFFFFF
PRIORITY_OFFSET_NEGATIVE_MAX: Final = 0x40000000

# --- EIPSEC_* (libipsec ipsec_strerror.h). 0-26 are identical in FreeBSD/KAME and ipsec-tools;
# 27-30 follow ipsec-tools (FreeBSD's EIPSEC_MAX is 27 and it has no priority errors). ---------
EIPSEC_NO_ERROR: Final = 0
EIPSEC_NOT_SUPPORTED: Final = 1
EIPSEC_INVAL_ARGUMENT: Final = 2
EIPSEC_INVAL_SADBMSG: Final = 3
EIPSEC_INVAL_VERSION: Final = 4
EIPSEC_INVAL_POLICY: Final = 5
EIPSEC_INVAL_ADDRESS: Final = 6
EIPSEC_INVAL_PROTO: Final = 7
EIPSEC_INVAL_MODE: Final = 8
EIPSEC_INVAL_LEVEL: Final = 9
EIPSEC_INVAL_SATYPE: Final = 10
EIPSEC_INVAL_MSGTYPE: Final = 11
EIPSEC_INVAL_EXTTYPE: Final = 12
EIPSEC_INVAL_ALGS: Final = 13
EIPSEC_INVAL_KEYLEN: Final = 14
EIPSEC_INVAL_FAMILY: Final = 15
EIPSEC_INVAL_PREFIXLEN: Final = 16
EIPSEC_INVAL_DIR: Final = 17
EIPSEC_INVAL_SPI: Final = 18
EIPSEC_NO_PROTO: Final = 19
EIPSEC_NO_ALGS: Final = 20
EIPSEC_NO_BUFS: Final = 21
EIPSEC_DO_GET_SUPP_LIST: Final = 22
EIPSEC_PROTO_MISMATCH: Final = 23
EIPSEC_FAMILY_MISMATCH: Final = 24
EIPSEC_FEW_ARGUMENTS: Final = 25
EIPSEC_SYSTEM_ERROR: Final = 26
EIPSEC_INVAL_PRIORITY_OFFSET: Final = 27
EIPSEC_INVAL_PRIORITY_BASE_OFFSET: Final = 28
EIPSEC_PRIORITY_NOT_COMPILED: Final = 29
EIPSEC_MAX: Final = 30
