"""``secsock setkey``: run or check a setkey(8) script.

    secsock setkey -f FILE          run FILE against a fresh in-process SADB and SPD and print
                                    what its get/dump/spddump commands print
    secsock setkey -c               the same, reading the script from stdin
    secsock setkey -n -f FILE       check the script only (syntax, algorithms, keys, policies)
    secsock setkey ... -D [-P]      also print the SAD (-D) or SPD (-DP) dump at the end
    secsock setkey ... --show-keys  print keys in dumps (hidden by default)

The stores live as long as this process, so this command is for checking scripts and seeing
what they produce; a program loads its SAs with ``secsock.setkey()`` or ``secsock run
--setkey FILE``. Errors print ``line N, column C: ...`` on stderr and the exit status is 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from secsock._setkey import check_script, setkey
from secsock._setkey_render import render_sa_dump, render_spd_dump
from secsock.errors import SetkeyError
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore

__all__ = ("add_parser", "run")


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register the ``setkey`` subcommand."""
    parser = subparsers.add_parser(
        "setkey",
        help="run or check a setkey(8) script (SAs and SPD entries)",
        description=(
            "Run a setkey(8) script against a fresh in-process SADB and SPD and print what its "
            "get, dump and spddump commands print, or check it with -n."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-f", dest="file", metavar="FILE", help="read the script from FILE")
    source.add_argument("-c", dest="stdin", action="store_true", help="read the script from stdin")
    parser.add_argument(
        "-n", dest="check", action="store_true", help="check the script only; change nothing"
    )
    parser.add_argument(
        "-D", dest="dump", action="store_true", help="print the SAD dump after the script"
    )
    parser.add_argument(
        "-P", dest="spd", action="store_true", help="with -D: print the SPD dump instead"
    )
    parser.add_argument(
        "--show-keys", dest="show_keys", action="store_true", help="print keys in SA dumps"
    )
    parser.set_defaults(func=run)


def _read(args: argparse.Namespace) -> str | None:
    if args.stdin:
        return sys.stdin.read()
    try:
        with open(args.file, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"secsock setkey: cannot read {args.file}: {exc}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    """Carry out ``secsock setkey``; 0 on success, 1 on any error."""
    script = _read(args)
    if script is None:
        return 1
    try:
        if args.check:
            check_script(script)
            return 0
        sadb = MemoryStore()
        spd = SPD()
        now = time.time()
        out = setkey(script, sadb=sadb, spd=spd, now=now, show_keys=args.show_keys)
    except SetkeyError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    sys.stdout.write(out)
    if args.dump:
        if args.spd:
            sys.stdout.write(render_spd_dump(spd.dump(), pid=os.getpid()))
        else:
            sys.stdout.write(
                render_sa_dump(sadb.dump(), now=now, pid=os.getpid(), show_keys=args.show_keys)
            )
    return 0
