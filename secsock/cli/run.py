"""``secsock run``: run an unmodified Python program with its UDP sockets under IPsec.

    secsock run --setkey FILE [--sysctl FILE] [--transport udp|raw] [--stats] -- program.py args...
    secsock run --setkey FILE -- -m package.module args...

In this process: load the ipsec(4) settings (``--sysctl``), run the setkey(8) script into the
default SADB and SPD (``--setkey``), ``secsock.install()`` -- so every
``socket.socket(AF_INET/AF_INET6, SOCK_DGRAM)`` the program creates is a secure socket at
``entrust``, i.e. governed by the SPD and the system defaults -- then run the program with
``runpy`` as ``__main__`` with ``sys.argv`` set to the program and its arguments. TCP and other
sockets are left alone. The exit status is the program's. ``--stats`` prints the process-wide
counters to stderr when the program ends.

secsock stays installed until the process exits: after the main module returns, the
interpreter still joins the program's non-daemon threads, runs its atexit handlers, and lets
daemon threads run, and each of them may open UDP sockets. ``--stats`` is printed by an atexit
handler registered before the program runs, so it comes after all of that.
"""

from __future__ import annotations

import argparse
import atexit
import os
import runpy
import sys

from secsock import sysctl
from secsock._patch import install, uninstall
from secsock.errors import SecsockError

__all__ = ("add_parser", "run_program")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "run",
        help="run a Python program with its UDP sockets replaced by secure sockets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--setkey", metavar="FILE", help="setkey(8) script to load first")
    p.add_argument("--sysctl", metavar="FILE", help="sysctl.conf-style ipsec(4) settings")
    p.add_argument("--transport", choices=("udp", "raw"), default="udp",
                   help="how esp SAs travel (default udp: ESP-in-UDP, no privilege needed)")
    p.add_argument("--stats", action="store_true",
                   help="print the IPsec counters to stderr when the program ends")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="-- program.py [args...]  or  -- -m module [args...]")
    p.set_defaults(func=_main)


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_program(command: list[str], *, transport: str = "udp", restore: bool = True) -> int:
    """Install secsock and run ``command`` (``[path, *args]`` or ``["-m", module, *args]``)
    in this process as ``__main__``; returns its exit status. Restores ``sys.argv`` and
    ``sys.path`` afterwards, and ``socket.socket`` too unless ``restore`` is False.

    With ``restore`` (in-process use), sockets the program's threads or atexit handlers
    create after its main module returned are ordinary sockets again; ``secsock run`` passes
    ``restore=False`` because the process ends with the program."""
    if not command:
        raise ValueError("expected a program to run: -- program.py [args...]")
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    install(transport="raw" if transport == "raw" else "udp")
    try:
        if command[0] == "-m":
            if len(command) < 2:
                raise ValueError("expected a module name after -m")
            sys.argv = [command[1], *command[2:]]
            sys.path.insert(0, os.getcwd())
            runpy.run_module(command[1], run_name="__main__", alter_sys=True)
        else:
            path = command[0]
            sys.argv = list(command)
            sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
            runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        return _exit_code(exc)
    finally:
        if restore:
            uninstall()
        sys.argv[:] = saved_argv
        sys.path[:] = saved_path
    return 0


def _main(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("secsock run: expected a program: secsock run [options] -- program.py args...",
              file=sys.stderr)
        return 2
    try:
        if args.sysctl:
            sysctl.load(args.sysctl)
        if args.setkey:
            from secsock._setkey import setkey

            with open(args.setkey, encoding="utf-8") as f:
                setkey(f.read())
    except (OSError, SecsockError) as exc:
        print(f"secsock run: {exc}", file=sys.stderr)
        return 1
    if command[0] != "-m" and not os.path.exists(command[0]):
        print(f"secsock run: no such program: {command[0]}", file=sys.stderr)
        return 2
    if args.stats:
        # atexit runs its handlers last-registered first, and only after the interpreter has
        # joined the non-daemon threads: registered now, the counters are printed after the
        # program's threads and its own atexit handlers are done.
        atexit.register(_print_stats)
    # Not restored: the program is not over when its main module returns (threads, atexit
    # handlers), and the process ends with it.
    return run_program(command, transport=args.transport, restore=False)


def _print_stats() -> None:
    from secsock._stats import stats
    from secsock.cli.stats import format_stats, sadb_rows
    from secsock.sadb.store import MemoryStore, default_sadb

    store = default_sadb()
    rows = sadb_rows(store) if isinstance(store, MemoryStore) else []
    for line in format_stats(stats(), rows):
        print(line, file=sys.stderr)
