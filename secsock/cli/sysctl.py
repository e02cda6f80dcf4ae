"""``secsock sysctl``: read and set the ipsec(4) system defaults, like sysctl(8).

    secsock sysctl -a                      every variable, "name: value"
    secsock sysctl net.inet.ipsec          a subtree
    secsock sysctl net.inet.ipsec.debug    one variable
    secsock sysctl name=value              set, printing "name: old -> new"
    secsock sysctl -f FILE                 apply a sysctl.conf-style file first

Settings last as long as the process: ``secsock sysctl`` is short-lived, so a value set here only
affects what the same command does. Persistent defaults come from the file named by
``$SECSOCK_SYSCTL`` (read by every secsock process on first use) or from a ``--sysctl FILE``
option of the long-running commands. Errors go to stderr and make the exit status 1; like
sysctl(8), the remaining arguments are still processed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from secsock import sysctl

__all__ = ("add_parser", "run")


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register the ``sysctl`` subcommand."""
    parser = subparsers.add_parser(
        "sysctl",
        help="read or set the ipsec(4) system defaults (net.inet.ipsec.*, net.inet6.ipsec6.*)",
        description=(
            "Read or set the ipsec(4) system defaults. Values set here last only for this "
            "process; persistent settings come from the file named by $SECSOCK_SYSCTL."
        ),
    )
    parser.add_argument("-a", dest="all", action="store_true", help="print every variable")
    parser.add_argument("-n", dest="values_only", action="store_true", help="print values only")
    parser.add_argument(
        "-f",
        dest="files",
        metavar="FILE",
        action="append",
        default=[],
        help="apply a sysctl.conf-style file (name = value lines) before the other arguments",
    )
    parser.add_argument("names", nargs="*", metavar="name[=value]", help="variables to read or set")
    parser.set_defaults(func=run)


def _print(name: str, value: int, values_only: bool) -> None:
    print(value if values_only else f"{name}: {value}")


def run(args: argparse.Namespace) -> int:
    """Carry out ``secsock sysctl``; 0 on success, 1 if any argument failed."""
    status = 0
    values_only: bool = args.values_only
    if not (args.all or args.files or args.names):
        print(
            "secsock sysctl: nothing to do; give -a, -f FILE or name[=value] ...",
            file=sys.stderr,
        )
        return 1
    for path in args.files:
        try:
            sysctl.load(path)
        except sysctl.SysctlError as exc:
            print(f"secsock sysctl: {exc}", file=sys.stderr)
            status = 1
    for arg in args.names:
        name, sep, value = arg.partition("=")
        name = name.strip()
        try:
            if sep:
                old = sysctl.get(name)
                sysctl.set(name, value)
                new = sysctl.get(name)
                print(new if values_only else f"{name}: {old} -> {new}")
            else:
                subtree = [n for n in sysctl.names() if n.startswith(name.rstrip(".") + ".")]
                if subtree:
                    for n in subtree:
                        _print(n, sysctl.get(n), values_only)
                else:
                    _print(name, sysctl.get(name), values_only)
        except sysctl.SysctlError as exc:
            print(f"secsock sysctl: {exc}", file=sys.stderr)
            status = 1
    if args.all:
        try:
            current = sysctl.snapshot()
        except sysctl.SysctlError as exc:
            print(f"secsock sysctl: {exc}", file=sys.stderr)
            return 1
        for n in sysctl.names():
            _print(n, current[n], values_only)
    return status
