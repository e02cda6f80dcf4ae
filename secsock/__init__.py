"""secsock: the BSD/KAME per-socket IPsec API in user space."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ("__version__",)
