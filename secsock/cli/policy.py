"""``secsock policy``: the ipsec_set_policy(3) language from the command line.

    secsock policy parse "out ipsec esp/transport//require" [--layout bsd|linux]
        prints the sadb_x_policy buffer as hex, then its ipsec_dump_policy(3) text
    secsock policy dump 030012000200020000000000000000000800320001020000 [--layout ...]
        prints the text of a buffer given in hex (spaces and colons allowed)

Interface names in ``%scope`` are resolved with if_nametoindex(3). Errors go to stderr with a
caret under the offending column, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

from secsock.errors import PolicyError
from secsock.policy.libipsec import ipsec_dump_policy, ipsec_set_policy

__all__ = ("add_parser", "run_dump", "run_parse")

_LAYOUTS = ("bsd", "linux")


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``policy parse`` and ``policy dump``."""
    parser = subparsers.add_parser(
        "policy",
        help="parse or dump ipsec_set_policy(3) policies",
        description="Turn ipsec_set_policy(3) text into the sadb_x_policy buffer that "
        "setsockopt(IP_IPSEC_POLICY) takes, and back.",
    )
    parser.set_defaults(func=_usage(parser))
    sub = parser.add_subparsers(dest="policy_command", metavar="ACTION")

    parse = sub.add_parser(
        "parse",
        help="text -> buffer (hex) and its canonical text",
        description="Parse a policy like ipsec_set_policy(3); print the buffer in hex and "
        "what ipsec_dump_policy(3) prints for it.",
    )
    parse.add_argument("text", help='policy text, e.g. "out ipsec esp/transport//require"')
    _common(parse)
    parse.set_defaults(func=run_parse)

    dump = sub.add_parser(
        "dump",
        help="buffer (hex) -> text",
        description="Print the text of a sadb_x_policy buffer like ipsec_dump_policy(3).",
    )
    dump.add_argument("hex", help="the buffer in hex (whitespace and ':' are ignored)")
    _common(dump)
    dump.set_defaults(func=run_dump)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--layout",
        choices=_LAYOUTS,
        default="bsd",
        help="binary layout: bsd (KAME/FreeBSD, default) or linux",
    )
    parser.add_argument(
        "--delimiter",
        default=" ",
        help="text printed between requests in the dump (default: a space)",
    )


def _usage(parser: argparse.ArgumentParser) -> Any:
    def run(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return run


def _report(exc: PolicyError, what: str) -> None:
    """Print the error, the text line with a caret under the column, and the notes."""
    lines = [f"secsock policy {what}: {exc}"]
    if exc.text is not None and exc.column is not None:
        idx = min(exc.column - 1, len(exc.text))
        start = exc.text.rfind("\n", 0, idx) + 1
        end = exc.text.find("\n", idx)
        line = exc.text[start : end if end >= 0 else len(exc.text)]
        pad = "".join("\t" if ch == "\t" else " " for ch in exc.text[start:idx])
        lines += [f"  {line}", f"  {pad}^"]
    lines += [f"  {note}" for note in getattr(exc, "__notes__", ())]
    print("\n".join(lines), file=sys.stderr)


def _ifindex(name: str) -> int:
    return socket.if_nametoindex(name)


def run_parse(args: argparse.Namespace) -> int:
    """``secsock policy parse TEXT``: 0 on success, 1 when the text is rejected."""
    try:
        buf = ipsec_set_policy(args.text, args.layout, ifindex=_ifindex)
        text = ipsec_dump_policy(buf, args.delimiter, args.layout)
    except PolicyError as exc:
        _report(exc, "parse")
        return 1
    print(buf.hex())
    print(text)
    return 0


def run_dump(args: argparse.Namespace) -> int:
    """``secsock policy dump HEX``: 0 on success, 1 when the buffer is rejected."""
    digits = "".join(args.hex.split()).replace(":", "")
    if digits[:2].lower() == "0x":
        digits = digits[2:]
    try:
        buf = bytes.fromhex(digits)
    except ValueError:
        print(
            f"secsock policy dump: expected the buffer as hexadecimal digits, found {args.hex!r}",
            file=sys.stderr,
        )
        return 1
    try:
        text = ipsec_dump_policy(buf, args.delimiter, args.layout)
    except PolicyError as exc:
        _report(exc, "dump")
        return 1
    print(text)
    return 0
