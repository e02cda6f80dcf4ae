"""Carrier framing for ESP, sans-IO.

* :mod:`secsock.core.framing.udp_encap`: ESP-in-UDP (RFC 3948): classify a UDP/4500 datagram
  as ESP, IKE (non-ESP marker) or NAT keepalive.
* :mod:`secsock.core.framing.tcp_encap`: ESP-in-TCP (RFC 8229 / RFC 9329): the ``IKETCP``
  stream prefix, 16-bit length-prefixed frames and an incremental decoder.

See docs/framing.md for the choices made.
"""

from __future__ import annotations

__all__: tuple[str, ...] = ()
