"""How error messages show a value they reject, without ever showing a key.

A value rejected by validation may be a key passed in the wrong place (``spi=key``,
``enc=key``), so messages quote only what cannot be one: small numbers, None and short names.
Anything else is described by its type and size.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ("shown",)

_BIG: Final = 1 << 64
_HEX_LIKE: Final = re.compile(r"(?:0[xX])?[0-9a-fA-F]{16,}")


def shown(value: object) -> str:
    """``value`` as an error message may show it: repr for None, bools, floats, integers below
    2^64 and printable strings of at most 32 characters that are not 16 or more hex digits;
    otherwise only its type and size."""
    if value is None or isinstance(value, bool | float):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if -_BIG < value < _BIG else f"an integer of {value.bit_length()} bits"
    if isinstance(value, str):
        if len(value) <= 32 and value.isprintable() and not _HEX_LIKE.fullmatch(value):
            return repr(value)
        return f"a str of {len(value)} characters"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"{type(value).__name__} of {len(value)} bytes"
    return f"a {type(value).__name__}"
