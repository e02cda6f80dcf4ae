"""``get_extra_info("ipsec")`` / anyio's ``IPsecAttribute``: policies and SA identities, no keys."""

from __future__ import annotations

from collections.abc import Callable

from secsock._stats import IPsecStats
from secsock.sadb.model import SAIdentity

__all__ = ("IPsecInfo",)


class IPsecInfo:
    """IPsec facts about one secure endpoint or stream; a live view, never holding keys.

    ``policies`` are the socket policies in force now as ipsec_dump_policy(3) prints them
    (inbound first; a policy set later through ``transport.engine`` shows at once).
    ``outbound_sa`` is the SA that protected the last datagram or frame sent (None before the
    first), ``inbound_sa`` the SA of the last one accepted; ``statistics()`` is a snapshot of
    this endpoint's counters.
    """

    __slots__ = ("_inbound", "_outbound", "_policies", "_stats")

    def __init__(
        self,
        *,
        policies: Callable[[], tuple[str, ...]],
        outbound: Callable[[], SAIdentity | None],
        inbound: Callable[[], SAIdentity | None],
        stats: Callable[[], IPsecStats],
    ) -> None:
        self._policies = policies
        self._outbound = outbound
        self._inbound = inbound
        self._stats = stats

    @property
    def policies(self) -> tuple[str, ...]:
        return self._policies()

    @property
    def outbound_sa(self) -> SAIdentity | None:
        return self._outbound()

    @property
    def inbound_sa(self) -> SAIdentity | None:
        return self._inbound()

    @property
    def spi(self) -> int | None:
        """The SPI of :attr:`outbound_sa`, if any."""
        sa = self._outbound()
        return None if sa is None else sa.spi

    def statistics(self) -> IPsecStats:
        return self._stats()

    def __repr__(self) -> str:
        return (
            f"IPsecInfo(policies={self.policies!r}, outbound_sa={self.outbound_sa}, "
            f"inbound_sa={self.inbound_sa})"
        )
