"""The ``secsock`` console script: one module per subcommand under secsock.cli.

Each subcommand module defines ``add_parser(subparsers) -> None`` (which registers its parser
and sets ``func``) ; ``main(argv) -> int`` dispatches. Tests call ``main([...])`` in-process.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# subcommand name -> module under secsock.cli that registers it
SUBCOMMANDS: tuple[tuple[str, str], ...] = (
    ("policy", "secsock.cli.policy"),
    ("sysctl", "secsock.cli.sysctl"),
    ("setkey", "secsock.cli.setkey"),
    ("stats", "secsock.cli.stats"),
    ("demo", "secsock.cli.demo"),
    ("run", "secsock.cli.run"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secsock", description="User-space BSD/KAME per-socket IPsec."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _name, modname in SUBCOMMANDS:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
            continue  # subcommand not built yet
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        result: int = func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``secsock sysctl -a | head``): stop quietly, as sysctl(8) does,
        # and keep the interpreter's final flush from failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
