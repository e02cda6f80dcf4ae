"""``secsock stats``: the process-wide IPsec counters, like ``netstat -s -p ipsec``.

The counters live in the process, so a fresh ``secsock stats`` prints zeros unless it first
does something: ``--setkey FILE`` loads SAs and SPD entries into the default stores,
``--demo`` runs the demo exchange quietly in the default stores (its counters are added and
its two SAs listed), and ``--sysctl FILE``
loads ipsec(4) settings first. The SADB section lists each SA with its packet and byte
counts (keys are never printed). ``--json`` prints one JSON object instead.

Inside a program, the same numbers come from ``secsock.stats()`` (process-wide) and
``sock.ipsec_stats()`` (one socket); ``secsock run --stats`` prints them when a program ends.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from secsock import sysctl
from secsock._stats import IPsecStats, stats
from secsock.errors import SecsockError
from secsock.sadb.model import SecurityAssociation
from secsock.sadb.store import MemoryStore, default_sadb

__all__ = ("DESCRIPTIONS", "add_parser", "format_stats", "sadb_rows")

#: What each counter counts (the netstat line).
DESCRIPTIONS: dict[str, str] = {
    "in_success": "inbound datagrams delivered after IPsec processing",
    "in_clear": "inbound clear datagrams allowed by policy",
    "in_polvio": "inbound datagrams violating the policy",
    "in_nosa": "inbound packets with no SA for their SPI",
    "in_inval": "inbound packets malformed (outer packet or inner datagram)",
    "in_replay": "inbound packets replayed or outside the replay window",
    "in_authfail": "inbound packets failing authentication (ICV)",
    "in_badpad": "inbound packets with bad ESP padding",
    "in_dummy": "inbound ESP dummy packets (next header 59) discarded",
    "in_keepalive": "NAT keepalives ignored",
    "in_ike": "IKE datagrams (non-ESP marker) kept from the applications",
    "out_success": "outbound datagrams protected and sent",
    "out_clear": "outbound datagrams sent in the clear by policy",
    "out_polvio": "outbound datagrams refused by a discard policy",
    "out_nosa": "outbound datagrams refused for want of an SA",
    "out_inval": "outbound datagrams refused for another reason",
    "out_seqoverflow": "outbound datagrams refused: SA sequence counter exhausted",
}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "stats",
        help="print the process-wide IPsec counters (netstat -s -p ipsec style)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--setkey", metavar="FILE", help="run this setkey(8) script first")
    p.add_argument("--sysctl", metavar="FILE", help="load these ipsec(4) settings first")
    p.add_argument("--demo", action="store_true",
                   help="run the demo exchange quietly first, so there is something to count")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_main)


def sadb_rows(store: MemoryStore) -> list[dict[str, object]]:
    """One dict per SA: identity, state and traffic counters -- never keys."""
    rows: list[dict[str, object]] = []
    for record in store.dump():
        sa = record.sa
        st = record.status
        row: dict[str, object] = {
            "proto": "esp-udp" if isinstance(sa, SecurityAssociation) and sa.natt
            else sa.proto.setkey_name,
            "spi": f"0x{sa.spi:08x}",
            "src": str(sa.src),
            "dst": str(sa.dst),
            "reqid": sa.reqid,
            "state": st.state.name.lower(),
            "packets": st.packets,
            "bytes": st.bytes,
            "seq": st.seq,
            "replay_top": st.replay_top,
        }
        if isinstance(sa, SecurityAssociation):
            row["enc"] = sa.enc
            row["auth"] = sa.auth
        rows.append(row)
    return rows


def format_stats(s: IPsecStats, rows: list[dict[str, object]]) -> list[str]:
    """The text report: counters, drops by reason, then the SADB."""
    width = max(len(str(v)) for _, v in s.items())
    lines = ["ipsec (process-wide):"]
    for name, value in s.items():
        lines.append(f"\t{value:>{width}} {DESCRIPTIONS[name]} ({name})")
    drops = [(r, n) for r, n in s.drops.items() if n]
    lines.append("inbound drops by reason:" if drops else "inbound drops by reason: none")
    lines.extend(f"\t{n:>{width}} {reason}" for reason, n in drops)
    lines.append(f"SADB ({len(rows)} SA{'s' if len(rows) != 1 else ''}, keys not shown):")
    lines.extend(
        f"\t{r['proto']} spi={r['spi']} {r['src']}->{r['dst']} reqid={r['reqid']} "
        f"{r['state']} packets={r['packets']} bytes={r['bytes']} seq={r['seq']} "
        f"replay_top={r['replay_top']}"
        for r in rows
    )
    return lines


def _main(args: argparse.Namespace, *, stdout: TextIO | None = None,
          stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        if args.sysctl:
            sysctl.load(args.sysctl)
        if args.setkey:
            from secsock._setkey import setkey

            with open(args.setkey, encoding="utf-8") as f:
                setkey(f.read())
    except (OSError, SecsockError) as exc:
        print(f"secsock stats: {exc}", file=err)
        return 1
    if args.demo:
        from secsock.cli.demo import run_demo
        from secsock.sadb.spd import default_spd

        def quiet(_line: str) -> None:
            pass

        try:
            result = run_demo(quiet, sadb=default_sadb(), spd=default_spd())
        except SecsockError as exc:
            print(f"secsock stats: cannot run the demo: {exc}", file=err)
            return 1
        if result != 0:
            print("secsock stats: the demo exchange did not go as expected", file=err)
            return 1
    snapshot = stats()
    store = default_sadb()
    rows = sadb_rows(store) if isinstance(store, MemoryStore) else []
    if args.json:
        doc = snapshot.as_dict()
        doc["sadb"] = rows
        print(json.dumps(doc, indent=2), file=out)
    else:
        for line in format_stats(snapshot, rows):
            print(line, file=out)
    return 0
