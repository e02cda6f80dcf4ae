"""The ipsec(4) system defaults: ``net.inet.ipsec.*`` and ``net.inet6.ipsec6.*``, in user space.

One process-wide table of integers with the KAME defaults, changed with :func:`set`,
:func:`load` (sysctl.conf syntax), :func:`override` (a scope) or :func:`reset`, and read with
:func:`get` / :func:`snapshot`. On first use (the first :func:`get`, :func:`set`, :func:`names`,
:func:`snapshot`, :func:`override`, :func:`load` or :func:`debug_enabled` call in the process)
the file named by the environment variable ``SECSOCK_SYSCTL`` is loaded, if set; a broken file
makes that call (and every later one, until it is fixed) raise :class:`SysctlError`.

Every value is validated; a bad value or a bad file line raises and changes nothing. Writers
take one lock and publish a new dict (copy-on-write), so :func:`get` is a plain dict lookup
without a lock and readers always see a consistent table. :func:`generation` changes on every
write, for callers that cache derived values.

``net.inet.ipsec.debug`` or ``net.inet6.ipsec6.debug`` nonzero switches the ``secsock`` logger
to DEBUG (back to NOTSET when both are 0); the library never prints.

See docs/sysctl.md for the table, the allowed values and where secsock deviates from KAME.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from secsock.errors import SecsockError

__all__ = (
    "ENV_VAR",
    "SysctlError",
    "UnknownSysctlError",
    "debug_enabled",
    "describe",
    "generation",
    "get",
    "load",
    "names",
    "override",
    "reset",
    "set",
    "snapshot",
)

ENV_VAR = "SECSOCK_SYSCTL"
"""The environment variable naming a sysctl.conf-style file loaded on first use."""

_LOG = logging.getLogger("secsock.sysctl")
_ROOT_LOGGER = "secsock"


class SysctlError(SecsockError, ValueError):
    """A sysctl value or file was rejected; nothing changed.

    ``name`` is the variable (if known), ``path`` and ``line`` locate a file error.
    """

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        path: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.name = name
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")


class UnknownSysctlError(SysctlError, LookupError):
    """No such sysctl variable; the message names close matches."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Var:
    leaf: str
    default: int
    lo: int
    hi: int
    allowed: str
    doc: str
    zero_ok: bool = True

    def accepts(self, value: int) -> bool:
        return self.lo <= value <= self.hi and (value != 0 or self.zero_ok)


_INT_MAX = 0x7FFFFFFF  # a C int, as in the kernel
_DEFLEV = "1 (use) or 2 (require); 3 (unique) is undefined as a default and rejected"

# Table order is the OID order of ipsec(4) (IPSECCTL_*), which is also `sysctl -a` order.
_V4_VARS: tuple[_Var, ...] = (
    _Var(
        leaf="def_policy",
        default=1,
        lo=0,
        hi=1,
        allowed="0 (discard) or 1 (none); FreeBSD rejects other values",
        doc="system default policy when no SP matches",
    ),
    _Var(
        leaf="esp_trans_deflev",
        default=1,
        lo=1,
        hi=2,
        allowed=_DEFLEV,
        doc="level used by a 'default' ESP transport request",
    ),
    _Var(
        leaf="esp_net_deflev",
        default=1,
        lo=1,
        hi=2,
        allowed=_DEFLEV,
        doc="level used by a 'default' ESP tunnel request",
    ),
    _Var(
        leaf="ah_trans_deflev",
        default=1,
        lo=1,
        hi=2,
        allowed=_DEFLEV,
        doc="level used by a 'default' AH transport request",
    ),
    _Var(
        leaf="ah_net_deflev",
        default=1,
        lo=1,
        hi=2,
        allowed=_DEFLEV,
        doc="level used by a 'default' AH tunnel request",
    ),
    _Var(
        leaf="ah_cleartos",
        default=1,
        lo=0,
        hi=1,
        allowed="0 (keep the TOS byte in the AH ICV) or 1 (zero it)",
        doc="zero the IPv4 TOS byte in the AH ICV input",
    ),
    _Var(
        leaf="ah_offsetmask",
        default=0,
        lo=0,
        hi=0xFFFF,
        allowed="0..0xffff (mask applied to ip_off in the AH ICV input)",
        doc="ip_off & mask is kept in the AH ICV input (0: zeroed, RFC 4302)",
    ),
    _Var(
        leaf="dfbit",
        default=0,
        lo=0,
        hi=2,
        allowed="0 (clear), 1 (set) or 2 (copy)",
        doc="DF bit of a tunnel's outer IPv4 header",
    ),
    _Var(
        leaf="ecn",
        default=0,
        lo=-1,
        hi=1,
        allowed="-1 (ignore), 0 (forbidden) or 1 (allowed)",
        doc="ECN handling of tunnels",
    ),
    _Var(
        leaf="debug",
        default=0,
        lo=0,
        hi=_INT_MAX,
        allowed=f"an integer 0..{_INT_MAX} (nonzero: DEBUG logging on the 'secsock' logger)",
        doc="debug logging",
    ),
    _Var(
        leaf="esp_randpad",
        default=-1,
        lo=-1,
        hi=0xFFFF,
        zero_ok=False,
        allowed="-1 (off) or a packet size 1..65535",
        doc="pad ESP packets shorter than this size randomly up to it",
    ),
)
_V6_LEAVES = (
    "def_policy",
    "esp_trans_deflev",
    "esp_net_deflev",
    "ah_trans_deflev",
    "ah_net_deflev",
    "ecn",
    "debug",
    "esp_randpad",
)
_V4_PREFIX = "net.inet.ipsec."
_V6_PREFIX = "net.inet6.ipsec6."
_DEBUG_V4 = _V4_PREFIX + "debug"
_DEBUG_V6 = _V6_PREFIX + "debug"


def _build_table() -> dict[str, _Var]:
    table = {_V4_PREFIX + v.leaf: v for v in _V4_VARS}
    by_leaf = {v.leaf: v for v in _V4_VARS}
    for leaf in _V6_LEAVES:
        table[_V6_PREFIX + leaf] = by_leaf[leaf]
    return table


_TABLE: dict[str, _Var] = _build_table()
_NAMES: tuple[str, ...] = tuple(_TABLE)
_LEAVES: tuple[str, ...] = tuple(v.leaf for v in _V4_VARS)
_DEFAULTS: dict[str, int] = {name: var.default for name, var in _TABLE.items()}

# --- state: the published table is never mutated; writers replace it under _LOCK -------------
_LOCK = threading.Lock()
_values: dict[str, int] = dict(_DEFAULTS)
_generation = 0
_loaded = False  # has the SECSOCK_SYSCTL file been applied (or skipped)?


def _validate(name: str, value: object) -> int:
    """The integer ``value`` for ``name``, or SysctlError (unknown name, bad type or range)."""
    var = _TABLE.get(name)
    if var is None:
        raise _unknown(name)
    number = _to_int(name, value)
    if not var.accepts(number):
        raise SysctlError(f"{name}: expected {var.allowed}, found {_shown(number)}", name=name)
    return number


_NUMBER = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|[0-9]+)")
# Every limit is a C int: a number of more than 20 digits is out of range whatever it is, and
# CPython's int() and str() refuse decimal conversions of more than 4300 digits.
_HUGE = 10**20


def _shown(number: int) -> str:
    return str(number) if -_HUGE < number < _HUGE else "a number of more than 20 digits"


def _to_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SysctlError(
            f"{name}: expected an integer or a numeric string, found {type(value).__name__}",
            name=name,
        )
    if isinstance(value, int):
        return value
    text = value.strip()
    if not _NUMBER.fullmatch(text):
        raise SysctlError(
            f"{name}: expected a decimal or 0x-hexadecimal integer, found {value!r}", name=name
        )
    if "x" in text.lower():
        return int(text, 0)
    negative = text.startswith("-")
    digits = text.lstrip("+-").lstrip("0") or "0"
    if len(digits) > 20:
        return -_HUGE if negative else _HUGE
    return -int(digits) if negative else int(digits)


def _unknown(name: object) -> UnknownSysctlError:
    if not isinstance(name, str):
        return UnknownSysctlError(
            f"expected a sysctl name (a str), found {type(name).__name__}", name=None
        )
    # Match on the leaf (the part after the last dot), then offer it in each tree that has it,
    # the tree the caller named first.
    leaf = name.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, _LEAVES, n=3, cutoff=0.7)
    same_tree = name.rpartition(".")[0] + "."
    matches = [full for full in _NAMES if full.rsplit(".", 1)[-1] in close]
    matches.sort(
        key=lambda full: (not full.startswith(same_tree), close.index(full.rsplit(".", 1)[-1]))
    )
    del matches[4:]
    hint = f"; did you mean {' or '.join(matches)}?" if matches else ""
    return UnknownSysctlError(f"unknown sysctl {name!r}{hint}", name=name)


def _debug_on(values: Mapping[str, int]) -> bool:
    return values[_DEBUG_V4] != 0 or values[_DEBUG_V6] != 0


def _publish(new: dict[str, int]) -> None:
    """Install ``new`` as the table (caller holds _LOCK); bump generation; switch logging."""
    global _values, _generation
    old = _values
    _values = new
    _generation += 1
    was, now = _debug_on(old), _debug_on(new)
    if was != now:
        logging.getLogger(_ROOT_LOGGER).setLevel(logging.DEBUG if now else logging.NOTSET)
    if now:
        for name in _NAMES:
            if old[name] != new[name]:
                _LOG.debug("sysctl %s: %d -> %d", name, old[name], new[name])


def _parse_file(path: str | os.PathLike[str], base: Mapping[str, int]) -> dict[str, int]:
    """Apply the file's assignments to a copy of ``base``; SysctlError names file and line."""
    where = os.fspath(path)
    try:
        text = Path(where).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SysctlError(f"cannot read sysctl file: {reason}", path=where) from exc
    result = dict(base)
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SysctlError(
                f"expected 'name = value', found {raw.strip()!r}", path=where, line=lineno
            )
        value = value.strip()
        if not value:
            raise SysctlError(f"{name}: expected a value after '='", path=where, line=lineno)
        try:
            result[name] = _validate(name, value)
        except SysctlError as exc:
            raise type(exc)(exc.message, name=name, path=where, line=lineno) from None
    return result


def _ensure_loaded() -> None:
    """Apply the SECSOCK_SYSCTL file once; raise (and stay unloaded) if it is broken."""
    global _loaded
    with _LOCK:
        if _loaded:
            return
        path = os.environ.get(ENV_VAR)
        if path:
            new = _parse_file(path, _values)
            _publish(new)
            _LOG.debug("sysctl: loaded %s from $%s", path, ENV_VAR)
        _loaded = True


# --- public API -------------------------------------------------------------------------------


def get(name: str) -> int:
    """The current value of ``name`` (e.g. ``"net.inet.ipsec.def_policy"``).

    Cheap enough for the per-datagram path: one dict lookup, no lock.
    Raises :class:`UnknownSysctlError` for an unknown name.
    """
    if not _loaded:
        _ensure_loaded()
    try:
        return _values[name]
    except KeyError:
        raise _unknown(name) from None


def set(name: str, value: int | str) -> None:
    """Set ``name`` to ``value`` (an int or a numeric string such as ``"0x4000"`` or ``"-1"``).

    Raises :class:`SysctlError` listing the allowed values (nothing changes), or
    :class:`UnknownSysctlError`.
    """
    if not _loaded:
        _ensure_loaded()
    number = _validate(name, value)
    with _LOCK:
        new = dict(_values)
        new[name] = number
        _publish(new)


def names() -> list[str]:
    """Every variable name, IPv4 tree then IPv6 tree, each in ipsec(4) OID order."""
    if not _loaded:
        _ensure_loaded()
    return list(_NAMES)


def snapshot() -> Mapping[str, int]:
    """A consistent, read-only view of all values at one instant."""
    if not _loaded:
        _ensure_loaded()
    return MappingProxyType(_values)


def describe(name: str) -> str:
    """A one-line description of ``name`` and its allowed values (no first-use load)."""
    var = _TABLE.get(name)
    if var is None:
        raise _unknown(name)
    return f"{var.doc}; allowed: {var.allowed}; default {var.default}"


def generation() -> int:
    """A counter that changes on every write (set, load, override, reset)."""
    return _generation


def debug_enabled() -> bool:
    """True if ``net.inet.ipsec.debug`` or ``net.inet6.ipsec6.debug`` is nonzero."""
    if not _loaded:
        _ensure_loaded()
    return _debug_on(_values)


def load(path: str | os.PathLike[str]) -> None:
    """Apply a sysctl.conf-style file: ``name = value`` or ``name=value`` lines.

    ``#`` starts a comment (whole line or after the value); blank lines are skipped; a name may
    appear more than once (the last wins). The whole file is validated before anything changes:
    an unreadable file, a line without ``=``, an unknown name or a bad value raises
    :class:`SysctlError` naming the file and line, and leaves every value as it was.
    """
    if not _loaded:
        _ensure_loaded()
    with _LOCK:
        new = _parse_file(path, _values)
        _publish(new)


def reset() -> None:
    """Every variable back to its KAME default (for tests). The SECSOCK_SYSCTL file is not reread."""
    global _loaded
    with _LOCK:
        _loaded = True
        _publish(dict(_DEFAULTS))


@contextlib.contextmanager
def override(
    values: Mapping[str, int | str] | None = None, /, **kwargs: int | str
) -> Iterator[None]:
    """Set some variables for the duration of a ``with`` block, then restore them.

    Use ``override({"net.inet.ipsec.def_policy": 0})`` or
    ``override(**{"net.inet.ipsec.def_policy": 0})``. All values are validated first (nothing
    changes on error); on exit, normal or by exception, each overridden variable gets back the
    value it had on entry. The table is process-wide, so the override is visible to every thread.
    """
    if not _loaded:
        _ensure_loaded()
    wanted: dict[str, int | str] = dict(values) if values is not None else {}
    wanted.update(kwargs)
    validated = {name: _validate(name, value) for name, value in wanted.items()}
    with _LOCK:
        saved = {name: _values[name] for name in validated}
        new = dict(_values)
        new.update(validated)
        _publish(new)
    try:
        yield
    finally:
        with _LOCK:
            new = dict(_values)
            new.update(saved)
            _publish(new)


def _reset_for_tests() -> None:
    """Back to the pristine import state: defaults, SECSOCK_SYSCTL not yet read."""
    global _loaded
    with _LOCK:
        _publish(dict(_DEFAULTS))
        _loaded = False
