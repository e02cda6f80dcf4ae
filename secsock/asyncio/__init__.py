"""secsock for asyncio: secure datagram endpoints and secure streams (ESP over RFC 8229 TCP).

``create_datagram_endpoint()`` mirrors :meth:`asyncio.loop.create_datagram_endpoint`;
``open_connection()`` / ``start_server()`` mirror :func:`asyncio.open_connection` /
:func:`asyncio.start_server`. See docs/asyncio.md.
"""

from __future__ import annotations

from secsock.asyncio._info import IPsecInfo
from secsock.asyncio.datagram import DropInfo, SecureDatagramTransport, create_datagram_endpoint
from secsock.asyncio.streams import open_connection, start_server
from secsock.errors import IPsecStreamError

__all__ = (
    "DropInfo",
    "IPsecInfo",
    "IPsecStreamError",
    "SecureDatagramTransport",
    "create_datagram_endpoint",
    "open_connection",
    "start_server",
)
