"""Turning the ``policy=`` argument of the asyncio/anyio APIs into checked socket policies.

``policy`` takes what ``setsockopt(IP_IPSEC_POLICY)`` takes, one per direction: policy text
(run through :func:`~secsock.policy.libipsec.ipsec_set_policy`), a ``sadb_x_policy`` buffer, or
a :class:`~secsock.policy.model.Policy`; or a sequence of those. Every one then passes KAME's
per-socket acceptance check (:func:`~secsock.policy.kernel.check_socket_policy`), so the same
inputs are accepted and refused with the same errors as on a secure socket.
"""

from __future__ import annotations

import socket as _stdlib_socket
from collections.abc import Iterable
from typing import TypeAlias

from secsock.policy.kernel import check_socket_policy
from secsock.policy.libipsec import ipsec_set_policy
from secsock.policy.model import Direction, Policy

__all__ = ("PolicyArg", "PolicyItem", "socket_policies")

PolicyItem: TypeAlias = str | bytes | bytearray | memoryview | Policy
#: One policy, or one per direction.
PolicyArg: TypeAlias = PolicyItem | Iterable[PolicyItem]


def _one(item: PolicyItem, family: int) -> Policy:
    if isinstance(item, str):
        buf = ipsec_set_policy(item)
    elif isinstance(item, Policy):
        buf = item.encode()
    elif isinstance(item, bytes | bytearray | memoryview):
        buf = bytes(item)
    else:
        raise TypeError(
            f"expected policy text, a sadb_x_policy buffer or a Policy, found "
            f"{type(item).__name__}"
        )
    return check_socket_policy(buf, family)


def socket_policies(policy: PolicyArg | None, family: int) -> tuple[Policy, ...]:
    """The checked socket policies (at most one per direction) from a ``policy=`` argument.

    Raises PolicyError for bad text, OSError (EINVAL, EOPNOTSUPP...) for a buffer the kernel
    would refuse, ValueError for two policies of one direction.
    """
    if policy is None:
        return ()
    if isinstance(policy, str | bytes | bytearray | memoryview | Policy):
        items: list[PolicyItem] = [policy]
    else:
        items = list(policy)
    if family not in (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6):
        family = _stdlib_socket.AF_INET
    out: list[Policy] = []
    seen: set[Direction] = set()
    for item in items:
        p = _one(item, family)
        if p.direction in seen:
            raise ValueError(
                f"expected at most one policy per direction, found two for "
                f"'{p.direction.keyword}'"
            )
        seen.add(p.direction)
        out.append(p)
    return tuple(out)
