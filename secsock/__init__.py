"""secsock: the BSD/KAME per-socket IPsec API in user space.

The public names, in the shape of the C API they emulate::

    import secsock

    secsock.setkey("add 127.0.0.1 127.0.0.1 esp 0x1000 -m transport -E aes-gcm-16 0x...;")
    s = secsock.socket(secsock.AF_INET, secsock.SOCK_DGRAM)
    s.setsockopt(secsock.IPPROTO_IP, secsock.IP_IPSEC_POLICY,
                 secsock.ipsec_set_policy("out ipsec esp/transport//require"))

``secsock.socket`` is the secure socket class (implemented in the private module
``secsock._socket``); ``secsock.stats()`` and ``secsock.setkey()`` are functions. The asyncio and
anyio adapters are the subpackages ``secsock.asyncio`` and ``secsock.anyio``.
"""

from __future__ import annotations

from socket import (
    IPPROTO_IP,
    IPPROTO_IPV6,
    IPPROTO_UDP,
    SOCK_DGRAM,
    SOCK_STREAM,
)

from secsock import constants as _constants
from secsock import sysctl
from secsock._patch import install, installed, patch, uninstall
from secsock._setkey import setkey
from secsock._socket import SecureSocket, socket
from secsock._stats import IPsecStats, stats
from secsock._transport import set_ike_handler
from secsock.constants import *
from secsock.errors import (
    AlgorithmError,
    DropReason,
    IPsecStreamError,
    NoSAError,
    PolicyError,
    SADBError,
    SecsockError,
    SequenceOverflowError,
    SetkeyError,
)
from secsock.policy.kernel import check_socket_policy
from secsock.policy.libipsec import (
    ipsec_dump_policy,
    ipsec_get_policylen,
    ipsec_set_policy,
    ipsec_strerror,
)
from secsock.policy.model import (
    Action,
    Direction,
    Level,
    Mode,
    Policy,
    Protocol,
    Request,
    parse_policy,
)
from secsock.sadb import (
    SPD,
    Acquire,
    HardExpire,
    Lifetime,
    MemoryStore,
    SAMode,
    SAProtocol,
    SAState,
    SAStore,
    SecurityAssociation,
    SoftExpire,
    default_sadb,
    default_spd,
)
from secsock.sysctl import SysctlError, UnknownSysctlError

__version__ = "0.1.0"

__all__ = [
    "IPPROTO_IP",
    "IPPROTO_IPV6",
    "IPPROTO_UDP",
    "SOCK_DGRAM",
    "SOCK_STREAM",
    "SPD",
    "Acquire",
    "Action",
    "AlgorithmError",
    "Direction",
    "DropReason",
    "HardExpire",
    "IPsecStats",
    "IPsecStreamError",
    "Level",
    "Lifetime",
    "MemoryStore",
    "Mode",
    "NoSAError",
    "Policy",
    "PolicyError",
    "Protocol",
    "Request",
    "SADBError",
    "SAMode",
    "SAProtocol",
    "SAState",
    "SAStore",
    "SecsockError",
    "SecureSocket",
    "SecurityAssociation",
    "SequenceOverflowError",
    "SetkeyError",
    "SoftExpire",
    "SysctlError",
    "UnknownSysctlError",
    "__version__",
    "check_socket_policy",
    "default_sadb",
    "default_spd",
    "install",
    "installed",
    "ipsec_dump_policy",
    "ipsec_get_policylen",
    "ipsec_set_policy",
    "ipsec_strerror",
    "parse_policy",
    "patch",
    "set_ike_handler",
    "setkey",
    "socket",
    "stats",
    "sysctl",
    "uninstall",
]
__all__ += _constants.__all__
