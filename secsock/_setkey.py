"""setkey(8) scripts against the SADB and the SPD, all or nothing.

    >>> out = setkey('''
    ... add 10.0.0.1 10.0.0.2 esp 0x1000 -m transport -E aes-gcm-16 "0123456789abcdefghij";
    ... get 10.0.0.1 10.0.0.2 esp 0x1000;
    ... ''', sadb=MemoryStore(), spd=SPD(), now=1700000000.0)   # doctest: +SKIP

The whole script is parsed (and every SA, algorithm, key and policy validated) before
anything is applied; it is then applied inside transactions of the SADB and the SPD, so a
failure anywhere -- syntax, an unknown algorithm, a wrong key length, a duplicate SPI, a delete
of a missing SA -- changes nothing. Errors are :class:`~secsock.errors.SetkeyError` with the
line, column and token, saying what was expected.

Grammar (IPSEC-REFERENCE §2.2, FreeBSD/KAME with ipsec-tools additions; docs/setkey.md)::

    add       [aif] src[port] dst[port] proto spi {ext} algo ;
    update    [aif] src[port] dst[port] proto spi {ext} algo ;     (extension)
    getspi    [aif] src dst proto spi {ext} ;                       (RIT; spi 0 = pick one)
    get       [aif] src dst proto spi {ext} ;
    delete    [aif] src dst proto spi {ext} ;
    deleteall [aif] src dst proto ;
    flush [proto] ;    dump [proto] ;
    spdadd    [aif] range range upperspec -P policy ;
    spdupdate [aif] range range upperspec -P policy ;
    spddelete [aif] range range upperspec -P direction ;
    spdflush ;    spddump ;    exit ; quit ; bye ;

Extensions: ``-m transport|tunnel|any``, ``-r bytes``, ``-u reqid``, ``-f
seq-pad|zero-pad|random-pad|nocyclic-seq|esn|align4|align8``, ``-ls/-lh`` seconds, ``-bs/-bh``
bytes, and ``-S N`` (secsock: the last sequence number already used).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum, auto
from ipaddress import ip_address, ip_network
from typing import Final, NoReturn, TypeVar

from secsock._setkey_render import PROTOCOL_NAMES, render_sa, render_sa_dump, render_spd_dump
from secsock.core.algorithms import (
    AuthAlgorithm,
    EncryptionAlgorithm,
    auth_algorithm,
    check_combination,
    check_key,
    encryption_algorithm,
)
from secsock.errors import AlgorithmError, PolicyError, SADBError, SetkeyError
from secsock.policy.model import Level, Policy, parse_policy
from secsock.sadb.lifetime import Lifetime
from secsock.sadb.model import (
    MAX_REPLAY,
    IPAddress,
    Padding,
    SAMode,
    SAProtocol,
    SecurityAssociation,
)
from secsock.sadb.spd import (
    SPD,
    ULPROTO_ANY,
    IPNetwork,
    SPDSelector,
    SPDTransaction,
    default_spd,
)
from secsock.sadb.store import SAAdmin, SAStore, default_sadb

__all__ = ("Command", "check_script", "parse_script", "setkey")

_U32: Final = 0xFFFFFFFF
_U64: Final = (1 << 64) - 1


# --- lexer -----------------------------------------------------------------------------------


class _T(Enum):
    WORD = auto()
    QUOTED = auto()
    SLASH = auto()
    LBRACK = auto()
    RBRACK = auto()
    SEMI = auto()
    POLICY = auto()
    EOF = auto()


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: _T
    text: str = field(repr=False)  # may be a key
    offset: int
    line: int
    column: int

    @property
    def shown(self) -> str:
        """The token as an error message shows it."""
        if self.kind is _T.EOF:
            return "end of script"
        if self.kind is _T.QUOTED:
            return '"..."'  # quoted strings are keys: never echo them
        if self.kind is _T.WORD and self.text.lower().startswith("0x") and len(self.text) > 18:
            return self.text[:4] + "..."  # longer than 64 bits: may be a key, never echo it
        return self.text


_PUNCT: Final = {";": _T.SEMI, "/": _T.SLASH, "[": _T.LBRACK, "]": _T.RBRACK}
_WORD_END: Final = frozenset(' \t\r\n\f\v;/[]"#')


# A hex word longer than 64 bits may be a key in the wrong place: messages keep its first two
# digits only, as _Tok.shown does for the token.
_LONG_HEX: Final = re.compile(r"0[xX][0-9a-fA-F]{17,}")


def _redact(text: str) -> str:
    return _LONG_HEX.sub(lambda m: m.group()[:4] + "...", text)


def _fail(message: str, tok: _Tok, *, secret: bool = False) -> NoReturn:
    """Raise SetkeyError at ``tok``; ``secret`` tokens (keys) are shown as ``<key>``, and long
    hex words in the message (which may quote a misplaced key) are cut."""
    shown = "<key>" if secret and tok.kind is not _T.EOF else tok.shown
    raise SetkeyError(_redact(message), line=tok.line, column=tok.column, token=shown)


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    line, line_start = 1, 0
    policy_next = False

    def tok(kind: _T, value: str, start: int) -> _Tok:
        return _Tok(kind, value, start, line, start - line_start + 1)

    while i < n:
        ch = text[i]
        if policy_next:
            policy_next = False
            # raw policy text up to ';' (may span lines), handed to the policy parser
            j = text.find(";", i)
            if j < 0:
                k = i
                while k < n and text[k] in " \t\r\n":
                    k += 1
                start_tok = _Tok(_T.EOF, "", n, line, n - line_start + 1)
                _fail("expected a policy ended by ';' after -P", start_tok)
            raw = text[i:j]
            lead = len(raw) - len(raw.lstrip())
            start = i + lead
            # compute line/column of the first policy character
            for k in range(i, start):
                if text[k] == "\n":
                    line += 1
                    line_start = k + 1
            toks.append(tok(_T.POLICY, raw.strip(), start))
            for k in range(start, j):
                if text[k] == "\n":
                    line += 1
                    line_start = k + 1
            i = j
            continue
        if ch == "\n":
            line += 1
            i += 1
            line_start = i
            continue
        if ch in " \t\r\f\v":
            i += 1
            continue
        if ch == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if ch in _PUNCT:
            toks.append(tok(_PUNCT[ch], ch, i))
            i += 1
            continue
        if ch == '"':
            j = text.find('"', i + 1)
            if j < 0:
                _fail('expected a closing \'"\' for the quoted string', tok(_T.QUOTED, "", i))
            t = tok(_T.QUOTED, text[i + 1 : j], i)
            toks.append(t)
            for k in range(i, j):
                if text[k] == "\n":
                    line += 1
                    line_start = k + 1
            i = j + 1
            continue
        j = i
        while j < n and text[j] not in _WORD_END:
            j += 1
        word = text[i:j]
        if not word.isprintable():
            _fail("expected a printable token", tok(_T.WORD, repr(word)[1:-1], i))
        toks.append(tok(_T.WORD, word, i))
        if word == "-P":
            policy_next = True
        i = j
    if policy_next:
        _fail("expected a policy ended by ';' after -P", _Tok(_T.EOF, "", n, line, n - line_start + 1))
    toks.append(_Tok(_T.EOF, "", n, line, n - line_start + 1))
    return toks


# --- parsed commands -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """One parsed setkey command: its verb, where it starts, and what it needs to run."""

    verb: str
    line: int
    column: int
    token: str
    sa: SecurityAssociation | None = None
    src: IPAddress | None = None
    dst: IPAddress | None = None
    proto: SAProtocol | None = None
    spi: int | None = None
    mode: SAMode = SAMode.ANY
    reqid: int = 0
    selector: SPDSelector | None = None
    policy: Policy | None = None
    where: tuple[int, int, str] = (0, 0, "")  # line, column, token of the key fact (SPI, ...)


_HOSTNAME: Final = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$")
_AIF: Final = re.compile(r"^-[46n]+$")
_ICMP_TYPE_CODE: Final = re.compile(r"([0-9]+)(?:,([0-9]+))?")
_UPPER_BY_NAME: Final[dict[str, int]] = {
    **{name: num for num, name in PROTOCOL_NAMES.items()},
    "any": ULPROTO_ANY,
    "icmp6": 58,
    "ipv6-icmp": 58,
    "ip4": 4,
    "ipencap": 4,
    "ipip": 4,
}
_SA_PROTOS: Final = {"esp": SAProtocol.ESP, "esp-udp": SAProtocol.ESP, "ah": SAProtocol.AH}
_UNSUPPORTED_PROTOS: Final = {
    "esp-old": "RFC 1827 ESP (esp-old) is not supported; use esp",
    "ah-old": "RFC 1826 AH (ah-old) is not supported; use ah",
    "ipcomp": "IPComp SAs are not supported; expected esp, esp-udp or ah",
    "tcp": "TCP-MD5 SAs are not supported; expected esp, esp-udp or ah",
}
_EXT_FLAGS: Final = ("seq-pad", "zero-pad", "random-pad", "nocyclic-seq", "esn", "align4", "align8")
_EXT_OPTS: Final = ("-m", "-r", "-u", "-f", "-ls", "-lh", "-bs", "-bh", "-S")


@dataclass(slots=True)
class _Ext:
    mode: SAMode = SAMode.ANY
    replay: int | None = None
    reqid: int = 0
    padding: Padding = Padding.SEQ
    esn: bool = False
    align: int | None = None
    soft: Lifetime = field(default_factory=Lifetime)
    hard: Lifetime = field(default_factory=Lifetime)
    seq_start: int = 0
    seq_tok: _Tok | None = None
    esn_tok: _Tok | None = None
    align_tok: _Tok | None = None
    pad_tok: _Tok | None = None


_Alg = TypeVar("_Alg", EncryptionAlgorithm, AuthAlgorithm)


@dataclass(slots=True)
class _Algo:
    enc: EncryptionAlgorithm | None = None
    enc_key: bytes = b""
    auth: AuthAlgorithm | None = None
    auth_key: bytes = b""


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.pos = 0

    # --- token helpers ----------------------------------------------------------------------

    def peek(self) -> _Tok:
        return self.toks[self.pos]

    def next(self) -> _Tok:
        t = self.toks[self.pos]
        if t.kind is not _T.EOF:
            self.pos += 1
        return t

    def expect_semi(self, what: str) -> None:
        t = self.next()
        if t.kind is not _T.SEMI:
            _fail(f"expected ';' to end the {what} command", t)

    def word(self, expected: str) -> _Tok:
        t = self.next()
        if t.kind is not _T.WORD:
            _fail(f"expected {expected}", t)
        return t

    def number(self, expected: str, limit: int, *, hex_ok: bool = True) -> tuple[int, _Tok]:
        t = self.next()
        value = _parse_number(t, hex_ok=hex_ok) if t.kind is _T.WORD else None
        if value is None:
            _fail(f"expected {expected}", t)
        if value > limit:  # the token is shown after the message: no value, it may be a key
            _fail(f"expected {expected} of at most {limit}", t)
        return value, t

    # --- script -----------------------------------------------------------------------------

    def script(self) -> list[Command]:
        out: list[Command] = []
        while True:
            t = self.peek()
            if t.kind is _T.EOF:
                return out
            if t.kind is not _T.WORD:
                _fail("expected a command (add, get, delete, deleteall, flush, dump, spdadd, "
                      "spdupdate, spddelete, spdflush, spddump)", t)
            verb = t.text
            method = _COMMANDS.get(verb)
            if method is None:
                _fail("expected a command (add, get, delete, deleteall, flush, dump, spdadd, "
                      "spdupdate, spddelete, spdflush, spddump)", t)
            self.next()
            if verb in ("exit", "quit", "bye"):
                self.expect_semi(verb)
                return out
            out.append(method(self, t))

    # --- pieces -----------------------------------------------------------------------------

    def aif(self) -> set[int] | None:
        t = self.peek()
        if t.kind is _T.WORD and _AIF.match(t.text):
            self.next()
            fams = {4 if c == "4" else 6 for c in t.text[1:] if c in "46"}
            return fams or None
        return None

    def address(self, fams: set[int] | None) -> tuple[IPAddress, _Tok]:
        t = self.next()
        if t.kind is not _T.WORD:
            _fail("expected a numeric IPv4 or IPv6 address", t)
        try:
            addr = ip_address(t.text)
        except ValueError:
            if _HOSTNAME.match(t.text) and any(c.isalpha() for c in t.text):
                _fail(
                    "expected a numeric IPv4 or IPv6 address; host names are not resolved "
                    "(secsock does no DNS)",
                    t,
                )
            _fail("expected a numeric IPv4 or IPv6 address", t)
        if fams is not None and addr.version not in fams:
            allowed = " or ".join(f"IPv{v}" for v in sorted(fams))
            _fail(f"expected an {allowed} address (restricted by the -4/-6 flag)", t)
        return addr, t

    def opt_port(self, *, any_ok: bool) -> tuple[int | None, _Tok | None]:
        if self.peek().kind is not _T.LBRACK:
            return None, None
        self.next()
        t = self.next()
        if t.kind is _T.WORD and t.text == "any" and any_ok:
            port = 0
        else:
            value = _parse_number(t, hex_ok=False) if t.kind is _T.WORD else None
            if value is None or value > 0xFFFF:
                _fail("expected a port number 0..65535" + (" or any" if any_ok else ""), t)
            port = value
        close = self.next()
        if close.kind is not _T.RBRACK:
            _fail("expected ']' after the port", close)
        return port, t

    def sa_proto(self) -> tuple[SAProtocol, bool, _Tok]:
        t = self.next()
        if t.kind is _T.WORD and t.text in _UNSUPPORTED_PROTOS:
            _fail(_UNSUPPORTED_PROTOS[t.text], t)
        if t.kind is not _T.WORD or t.text not in _SA_PROTOS:
            _fail("expected a protocol: esp, esp-udp or ah", t)
        return _SA_PROTOS[t.text], t.text == "esp-udp", t

    def spi(self, *, zero_ok: bool = False) -> tuple[int, _Tok]:
        t = self.next()
        value = _parse_number(t) if t.kind is _T.WORD else None
        if value is None:
            _fail("expected an SPI (decimal or 0x-hex)", t)
        if value > _U32:  # the token is shown after the message: no value, it may be a key
            _fail("expected an SPI of at most 0xffffffff", t)
        if value < 256 and not (zero_ok and value == 0):
            _fail(
                f"expected an SPI of 256..0xffffffff (0..255 are reserved), found {value}", t
            )
        return value, t

    def extensions(self) -> _Ext:
        ext = _Ext()
        while True:
            t = self.peek()
            if t.kind is not _T.WORD or t.text not in _EXT_OPTS:
                if t.kind is _T.WORD and t.text == "-ctx":
                    _fail("security contexts (-ctx) are not supported", t)
                return ext
            self.next()
            opt = t.text
            if opt == "-m":
                m = self.word("a mode: transport, tunnel or any")
                modes = {"transport": SAMode.TRANSPORT, "tunnel": SAMode.TUNNEL, "any": SAMode.ANY}
                if m.text not in modes:
                    _fail("expected a mode: transport, tunnel or any", m)
                ext.mode = modes[m.text]
            elif opt == "-r":
                value, vt = self.number("a replay window size in bytes (decimal)", _U32,
                                        hex_ok=False)
                if value > MAX_REPLAY:
                    _fail(
                        f"expected a replay window of at most {MAX_REPLAY} bytes "
                        f"({MAX_REPLAY * 8} packets), found {value}",
                        vt,
                    )
                ext.replay = value
            elif opt == "-u":
                ext.reqid, _ = self.number("a reqid (0..0xffffffff)", _U32)
            elif opt == "-f":
                f = self.word("a flag: " + ", ".join(_EXT_FLAGS))
                if f.text not in _EXT_FLAGS:
                    _fail("expected a flag: " + ", ".join(_EXT_FLAGS), f)
                if f.text in ("seq-pad", "zero-pad", "random-pad"):
                    ext.padding = {
                        "seq-pad": Padding.SEQ, "zero-pad": Padding.ZERO,
                        "random-pad": Padding.RANDOM,
                    }[f.text]
                    ext.pad_tok = f
                elif f.text == "esn":
                    ext.esn = True
                    ext.esn_tok = f
                elif f.text in ("align4", "align8"):
                    ext.align = 4 if f.text == "align4" else 8
                    ext.align_tok = f
                # nocyclic-seq: secsock never lets a sequence counter wrap anyway
            elif opt in ("-ls", "-lh", "-bs", "-bh"):  # l: seconds, b: bytes; s: soft, h: hard
                unit, limit = ("seconds", "addtime") if opt[1] == "l" else ("bytes", "bytes")
                value, _ = self.number(f"a lifetime in {unit}", _U64, hex_ok=False)
                if opt[2] == "s":
                    ext.soft = dataclasses.replace(ext.soft, **{limit: value})
                else:
                    ext.hard = dataclasses.replace(ext.hard, **{limit: value})
            else:  # -S
                ext.seq_start, ext.seq_tok = self.number(
                    "a sequence number (the last one already used)", _U64
                )

    def key(self, alg_name: str) -> tuple[bytes, _Tok]:
        t = self.next()
        if t.kind is _T.QUOTED:
            try:
                return t.text.encode("utf-8"), t
            except UnicodeEncodeError:
                _fail(f"expected the key of {alg_name} as UTF-8 text", t, secret=True)
        if t.kind is _T.WORD and t.text[:2] in ("0x", "0X"):
            digits = t.text[2:]
            if digits and all(c in "0123456789abcdefABCDEF" for c in digits):
                if len(digits) % 2:
                    digits = "0" + digits  # as setkey: an odd digit count gets a leading 0
                return bytes.fromhex(digits), t
        secret = t.kind is _T.WORD and t.text[:2] in ("0x", "0X")
        _fail(f'expected the key of {alg_name}: 0x-hex or a "quoted string"', t, secret=secret)

    def algorithms(self, proto: SAProtocol) -> tuple[_Algo, _Tok]:
        algo = _Algo()
        t = self.peek()
        if t.kind is _T.WORD and t.text in ("-C", "-R"):
            _fail("IPComp (-C) is not supported", t)
        if proto is SAProtocol.ESP:
            if t.kind is not _T.WORD or t.text != "-E":
                _fail("expected -E and an encryption algorithm (ESP needs one; -E null for "
                      "integrity only)", t)
            self.next()
            algo.enc, algo.enc_key, at = self.algorithm(
                encryption_algorithm, "an encryption algorithm"
            )
            t = self.peek()
            if t.kind is _T.WORD and t.text == "-A":
                self.next()
                algo.auth, algo.auth_key, _ = self.algorithm(
                    auth_algorithm, "an authentication algorithm"
                )
            try:
                check_combination(algo.enc, algo.auth)
            except AlgorithmError as exc:
                _fail(str(exc), at)
        else:
            if t.kind is not _T.WORD or t.text != "-A":
                if t.kind is _T.WORD and t.text == "-E":
                    _fail("AH takes no encryption algorithm; expected -A", t)
                _fail("expected -A and an authentication algorithm", t)
            self.next()
            algo.auth, algo.auth_key, _ = self.algorithm(
                auth_algorithm, "an authentication algorithm"
            )
        after = self.peek()
        if after.kind is _T.WORD and after.text in _EXT_OPTS:
            _fail("extensions (-m, -r, -u, -f, -l*, -b*, -S) come before -E/-A", after)
        return algo, t

    def algorithm(self, lookup: Callable[[str], _Alg], expected: str) -> tuple[_Alg, bytes, _Tok]:
        """An algorithm name (looked up in the registry) and its key, checked for length."""
        at = self.word(expected)
        try:
            alg = lookup(at.text)
        except AlgorithmError as exc:
            _fail(str(exc), at)
        key = b""
        if alg.key_sizes != (0,):
            key, kt = self.key(alg.name)
            try:
                check_key(alg, key)
            except AlgorithmError as exc:
                _fail(str(exc), kt, secret=True)
        return alg, key, at

    # --- SA commands ------------------------------------------------------------------------

    def cmd_add(self, head: _Tok) -> Command:
        fams = self.aif()
        src, src_tok = self.address(fams)
        sport, sport_tok = self.opt_port(any_ok=False)
        dst, dst_tok = self.address(fams)
        dport, dport_tok = self.opt_port(any_ok=False)
        proto, udp, ptok = self.sa_proto()
        spi, spi_tok = self.spi()
        ext = self.extensions()
        algo, algo_tok = self.algorithms(proto)
        self.expect_semi(head.text)
        if src.version != dst.version:
            _fail(f"expected src and dst of one address family, found {src} and {dst}", dst_tok)
        natt: tuple[int, int] | tuple[None, None] = (None, None)
        if udp:
            natt = (4500 if sport is None else sport, 4500 if dport is None else dport)
            for port, ptk in ((natt[0], sport_tok), (natt[1], dport_tok)):
                if port == 0:
                    assert ptk is not None
                    _fail("expected a NAT-T port of 1..65535", ptk)
        else:
            for ptk in (sport_tok, dport_tok):
                if ptk is not None:
                    _fail("a port is only allowed on esp-udp SAs (the NAT-T port)", ptk)
        if ext.align is not None and proto is not SAProtocol.AH:
            assert ext.align_tok is not None
            _fail("-f align4/align8 apply to AH SAs only", ext.align_tok)
        if ext.pad_tok is not None and proto is SAProtocol.AH:
            _fail("padding flags apply to ESP SAs only", ext.pad_tok)
        replay = ext.replay if ext.replay is not None else 8
        if ext.esn and replay == 0:
            assert ext.esn_tok is not None
            _fail("ESN (-f esn) needs a replay window; expected -r > 0, found -r 0", ext.esn_tok)
        if ext.seq_tok is not None and ext.seq_start > (_U64 if ext.esn else _U32):
            _fail(
                "expected a -S sequence number of at most 0xffffffff (use -f esn for 64 bits)",
                ext.seq_tok,
            )
        if ext.align == 4 and dst.version == 6:
            assert ext.align_tok is not None
            _fail("IPv6 AH is always 64-bit aligned (RFC 4302); align4 is for IPv4", ext.align_tok)
        try:
            sa = SecurityAssociation(
                spi=spi, proto=proto, src=src, dst=dst, mode=ext.mode, reqid=ext.reqid,
                enc=None if algo.enc is None else algo.enc.name, enc_key=algo.enc_key,
                auth=None if algo.auth is None else algo.auth.name, auth_key=algo.auth_key,
                replay=replay, esn=ext.esn, padding=ext.padding, ah_align=ext.align,
                natt_sport=natt[0], natt_dport=natt[1], soft=ext.soft, hard=ext.hard,
                seq_start=ext.seq_start,
            )
        except (ValueError, TypeError) as exc:
            _fail(str(exc), algo_tok if isinstance(exc, AlgorithmError) else head)
        del src_tok, ptok
        return Command(
            verb=head.text, line=head.line, column=head.column, token=head.text, sa=sa,
            where=(spi_tok.line, spi_tok.column, spi_tok.text),
        )

    def cmd_getspi(self, head: _Tok) -> Command:
        fams = self.aif()
        src, _ = self.address(fams)
        dst, dst_tok = self.address(fams)
        proto, udp, ptok = self.sa_proto()
        if udp:
            _fail("getspi reserves an ESP or AH SPI; expected esp or ah", ptok)
        spi, spi_tok = self.spi(zero_ok=True)
        ext = self.extensions()
        self.expect_semi("getspi")
        if src.version != dst.version:
            _fail(f"expected src and dst of one address family, found {src} and {dst}", dst_tok)
        return Command(
            verb="getspi", line=head.line, column=head.column, token=head.text, src=src,
            dst=dst, proto=proto, spi=spi, mode=ext.mode, reqid=ext.reqid,
            where=(spi_tok.line, spi_tok.column, spi_tok.text),
        )

    def cmd_get_delete(self, head: _Tok) -> Command:
        fams = self.aif()
        src, _ = self.address(fams)
        dst, _ = self.address(fams)
        proto, _, _ = self.sa_proto()
        spi, spi_tok = self.spi()
        self.extensions()  # accepted, as setkey's grammar does; the SA is found by its SPI
        self.expect_semi(head.text)
        return Command(
            verb=head.text, line=head.line, column=head.column, token=head.text, src=src,
            dst=dst, proto=proto, spi=spi, where=(spi_tok.line, spi_tok.column, spi_tok.text),
        )

    def cmd_deleteall(self, head: _Tok) -> Command:
        fams = self.aif()
        src, _ = self.address(fams)
        dst, _ = self.address(fams)
        proto, _, _ = self.sa_proto()
        self.expect_semi("deleteall")
        return Command(
            verb="deleteall", line=head.line, column=head.column, token=head.text, src=src,
            dst=dst, proto=proto,
        )

    def cmd_flush_dump(self, head: _Tok) -> Command:
        t = self.peek()
        proto: SAProtocol | None = None
        if t.kind is _T.WORD:
            proto, _, _ = self.sa_proto()
        self.expect_semi(head.text)
        return Command(
            verb=head.text, line=head.line, column=head.column, token=head.text, proto=proto
        )

    # --- SPD commands -----------------------------------------------------------------------

    def prefix_range(self, fams: set[int] | None) -> tuple[IPAddress, int, int, _Tok]:
        addr, at = self.address(fams)
        full = 32 if addr.version == 4 else 128
        plen = full
        if self.peek().kind is _T.SLASH:
            self.next()
            plen, pt = self.number(f"a prefix length 0..{full}", 10**6, hex_ok=False)
            if plen > full:
                _fail(f"expected a prefix length 0..{full}, found {plen}", pt)
        port, _ = self.opt_port(any_ok=True)
        return addr, plen, port or 0, at

    def upperspec(self) -> tuple[int, int | None, int | None, _Tok]:
        t = self.next()
        if t.kind is not _T.WORD:
            _fail("expected an upper-layer protocol (any, tcp, udp, icmp6, a number, ...)", t)
        if t.text == "tagged":
            _fail("PF tags (spdadd tagged) are not supported", t)
        ul = _UPPER_BY_NAME.get(t.text)
        if ul is None:
            num = _parse_number(t, hex_ok=False)
            if num is None or num > 255:
                _fail("expected an upper-layer protocol (any, tcp, udp, icmp, icmp6, gre, "
                      "ip4, or a number 0..255)", t)
            ul = num
        itype: int | None = None
        icode: int | None = None
        nt = self.peek()
        if nt.kind is _T.WORD and nt.text[:1].isdigit() and ul in (1, 58):
            self.next()
            m = _ICMP_TYPE_CODE.fullmatch(nt.text)
            if m is None:
                _fail("expected an ICMP type[,code] of 0..255 each", nt)
            itype, icode = _decimal(m.group(1)), _decimal(m.group(2) or "0")
            if itype > 255 or icode > 255:
                _fail("expected an ICMP type[,code] of 0..255 each", nt)
        return ul, itype, icode, t

    def selector(self, fams: set[int] | None) -> tuple[SPDSelector, _Tok]:
        src, splen, sport, stok = self.prefix_range(fams)
        dst, dplen, dport, dtok = self.prefix_range(fams)
        ul, itype, icode, utok = self.upperspec()
        if src.version != dst.version:
            _fail(f"expected src and dst of one address family, found {src} and {dst}", dtok)
        if itype is not None:
            if sport or dport:
                _fail("give either ports or an ICMP type,code, not both", utok)
            sport, dport = itype, icode or 0
        elif ul in (1, 58) and (sport > 255 or dport > 255):
            _fail("for ICMP the port fields carry type and code: expected 0..255", utok)
        try:
            sel = SPDSelector(
                src=_network(src, splen), dst=_network(dst, dplen), ul_proto=ul, sport=sport,
                dport=dport,
            )
        except (ValueError, TypeError) as exc:
            _fail(str(exc), stok)
        return sel, stok

    def policy_text(self) -> tuple[str, _Tok]:
        t = self.next()
        if t.kind is _T.WORD and t.text == "-ctx":
            _fail("security contexts (-ctx) are not supported", t)
        if t.kind is not _T.WORD or t.text != "-P":
            _fail("expected -P and a policy", t)
        pt = self.next()
        assert pt.kind is _T.POLICY
        return pt.text, pt

    def parse_policy_at(self, text: str, pt: _Tok) -> Policy:
        try:
            return parse_policy(text)
        except PolicyError as exc:
            col = exc.column or 1
            line, column = _advance(pt, text, col - 1)
            notes = getattr(exc, "__notes__", None)
            detail = f" ({notes[0]})" if notes else ""
            raise SetkeyError(
                _redact(f"invalid policy: {exc.message}{detail}"), line=line, column=column,
                token=_redact(exc.token if exc.token is not None else text),
            ) from None

    def cmd_spdadd(self, head: _Tok) -> Command:
        t = self.peek()
        if t.kind is _T.WORD and t.text == "tagged":
            _fail("PF tags (spdadd tagged) are not supported", t)
        fams = self.aif()
        sel, _ = self.selector(fams)
        text, pt = self.policy_text()
        self.expect_semi(head.text)
        policy = self.parse_policy_at(text, pt)
        if policy.action.keyword not in ("discard", "none", "ipsec"):
            _fail(
                f"expected a policy action discard, none or ipsec (setkey's SPD), found "
                f"{policy.action.keyword}",
                pt,
            )
        if policy.direction.keyword == "any":
            _fail("expected a policy direction in, out or fwd", pt)
        return Command(
            verb=head.text, line=head.line, column=head.column, token=head.text, selector=sel,
            policy=policy, where=(pt.line, pt.column, text),
        )

    def cmd_spddelete(self, head: _Tok) -> Command:
        fams = self.aif()
        sel, _ = self.selector(fams)
        text, pt = self.policy_text()
        self.expect_semi("spddelete")
        words = text.split()
        if not words or words[0] not in ("in", "out", "fwd"):
            _fail("expected a direction (in, out or fwd) after -P", pt)
        policy = self.parse_policy_at(text, pt)
        return Command(
            verb="spddelete", line=head.line, column=head.column, token=head.text, selector=sel,
            policy=policy, where=(pt.line, pt.column, text),
        )

    def cmd_plain(self, head: _Tok) -> Command:
        self.expect_semi(head.text)
        return Command(verb=head.text, line=head.line, column=head.column, token=head.text)


_COMMANDS: Final[dict[str, Callable[[_Parser, _Tok], Command]]] = {
    "add": _Parser.cmd_add,
    "update": _Parser.cmd_add,
    "getspi": _Parser.cmd_getspi,
    "get": _Parser.cmd_get_delete,
    "delete": _Parser.cmd_get_delete,
    "deleteall": _Parser.cmd_deleteall,
    "flush": _Parser.cmd_flush_dump,
    "dump": _Parser.cmd_flush_dump,
    "spdadd": _Parser.cmd_spdadd,
    "spdupdate": _Parser.cmd_spdadd,
    "spddelete": _Parser.cmd_spddelete,
    "spdflush": _Parser.cmd_plain,
    "spddump": _Parser.cmd_plain,
    "exit": _Parser.cmd_plain,
    "quit": _Parser.cmd_plain,
    "bye": _Parser.cmd_plain,
}


def _decimal(digits: str) -> int:
    """The value of ASCII digits; above 2^64 (past every limit) when there are more than 20
    significant digits -- CPython refuses int() of more than 4300 with a bare ValueError."""
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= 20 else 1 << 64


def _parse_number(t: _Tok, *, hex_ok: bool = True) -> int | None:
    text = t.text
    if text.isdecimal() and text.isascii():
        return _decimal(text)
    if hex_ok and text[:2] in ("0x", "0X") and len(text) > 2:
        digits = text[2:]
        if all(c in "0123456789abcdefABCDEF" for c in digits):
            return int(digits, 16)
    return None


def _network(addr: IPAddress, plen: int) -> IPNetwork:
    return ip_network(f"{addr}/{plen}", strict=False)


def _advance(tok: _Tok, text: str, n: int) -> tuple[int, int]:
    """Line and column of character ``n`` of a policy token's text."""
    line, column = tok.line, tok.column
    for ch in text[: max(0, min(n, len(text)))]:
        if ch == "\n":
            line += 1
            column = 1
        else:
            column += 1
    return line, column


# --- public API ------------------------------------------------------------------------------


def parse_script(script: str) -> list[Command]:
    """Parse and validate a whole setkey script (no store is touched).

    Checks syntax, addresses, algorithms, key lengths, SA options and policies; raises
    SetkeyError naming the line, column and token and what was expected.
    """
    if not isinstance(script, str):
        raise TypeError(f"a setkey script is a str, found {type(script).__name__}")
    return _Parser(script).script()


def check_script(script: str) -> None:
    """``setkey -n``: parse and validate without running (raises SetkeyError)."""
    parse_script(script)


def _err(cmd: Command, exc: SADBError, *, at_fact: bool = True) -> SetkeyError:
    line, column, token = cmd.where if at_fact and cmd.where[0] else (cmd.line, cmd.column,
                                                                      cmd.token)
    name = {2: "ENOENT", 3: "ESRCH", 11: "EAGAIN", 17: "EEXIST", 22: "EINVAL"}.get(
        exc.errno or 0, f"errno {exc.errno}"
    )
    return SetkeyError(f"{cmd.verb} failed ({name}): {exc.strerror}", line=line, column=column,
                       token=token)


class _Run:
    def __init__(
        self, sadb: SAAdmin, spd: SPDTransaction | None, allocate_reqid: Callable[[], int],
        now: float, show_keys: bool, rng: Callable[[int], bytes] | None,
    ) -> None:
        self.sadb = sadb
        self.spd = spd
        self.allocate_reqid = allocate_reqid
        self.now = now
        self.show_keys = show_keys
        self.rng = rng
        self.pid = os.getpid()
        self.out: list[str] = []

    def run(self, cmd: Command) -> None:
        try:
            self._dispatch(cmd)
        except SADBError as exc:
            raise _err(cmd, exc) from exc

    def _dispatch(self, cmd: Command) -> None:
        v = cmd.verb
        now = self.now
        if v in ("add", "update"):
            assert cmd.sa is not None
            if v == "add":
                self.sadb.add(cmd.sa, now=now)
            else:
                self.sadb.update(cmd.sa, now=now)
        elif v == "getspi":
            assert cmd.src is not None
            assert cmd.dst is not None
            assert cmd.proto is not None
            if cmd.spi:  # that SPI exactly (EEXIST if taken)
                self.sadb.getspi(
                    cmd.src, cmd.dst, cmd.proto, now=now, hint=cmd.spi, spi_min=cmd.spi,
                    spi_max=cmd.spi, mode=cmd.mode, reqid=cmd.reqid,
                )
            else:  # SPI 0: the key engine picks one in KAME's range
                self.sadb.getspi(
                    cmd.src, cmd.dst, cmd.proto, now=now, rng=self.rng or os.urandom,
                    mode=cmd.mode, reqid=cmd.reqid,
                )
        elif v == "get":
            assert cmd.dst is not None
            assert cmd.proto is not None
            assert cmd.spi is not None
            rec = self.sadb.get(cmd.dst, cmd.proto, cmd.spi, src=cmd.src)
            if rec is None:
                raise SADBError(
                    3, f"no SA {cmd.src}->{cmd.dst} {cmd.proto.setkey_name} spi "
                    f"{cmd.spi}(0x{cmd.spi:08x})",
                )
            self.out.append(
                render_sa(rec, now=now, sadb_seq=0, pid=self.pid, show_keys=self.show_keys)
            )
        elif v == "delete":
            assert cmd.dst is not None
            assert cmd.proto is not None
            assert cmd.spi is not None
            self.sadb.delete(cmd.dst, cmd.proto, cmd.spi, src=cmd.src)
        elif v == "deleteall":
            assert cmd.src is not None
            assert cmd.dst is not None
            assert cmd.proto is not None
            self.sadb.deleteall(cmd.src, cmd.dst, cmd.proto)
        elif v == "flush":
            self.sadb.flush(cmd.proto)
        elif v == "dump":
            self.out.append(
                render_sa_dump(
                    self.sadb.dump(cmd.proto), now=now, pid=self.pid, show_keys=self.show_keys
                )
            )
        else:
            self._spd(cmd)

    def _spd(self, cmd: Command) -> None:
        spd = self.spd
        assert spd is not None
        v = cmd.verb
        if v in ("spdadd", "spdupdate"):
            assert cmd.selector is not None
            assert cmd.policy is not None
            policy = self._assign_reqids(cmd.policy)
            if v == "spdadd":
                spd.add(cmd.selector, policy, now=self.now)
            else:
                spd.update(cmd.selector, policy, now=self.now)
        elif v == "spddelete":
            assert cmd.selector is not None
            assert cmd.policy is not None
            spd.delete(cmd.selector, cmd.policy.direction)
        elif v == "spdflush":
            spd.flush()
        elif v == "spddump":
            self.out.append(render_spd_dump(spd.dump(), pid=self.pid))

    def _assign_reqids(self, policy: Policy) -> Policy:
        """KAME key_msg2sp: a ``unique`` request without a number gets key_newreqid()'s."""
        if not any(r.level is Level.UNIQUE and r.reqid == 0 for r in policy.requests):
            return policy
        return policy.with_requests(
            dataclasses.replace(r, reqid=self.allocate_reqid())
            if r.level is Level.UNIQUE and r.reqid == 0
            else r
            for r in policy.requests
        )


def _needs_spd(commands: list[Command]) -> bool:
    return any(c.verb.startswith("spd") for c in commands)


def setkey(
    script: str,
    *,
    sadb: SAStore | None = None,
    spd: SPD | None = None,
    now: float | None = None,
    show_keys: bool = False,
    rng: Callable[[int], bytes] | None = None,
) -> str:
    """Run a setkey(8) script against the default SADB and SPD (or the given ones).

    Returns what the script's ``get``, ``dump`` and ``spddump`` commands print (setkey -D /
    -DP formats, FreeBSD variant; keys only with ``show_keys=True``). ``now`` is the time of
    the changes (default ``time.time()``); ``rng`` is the random source for ``getspi`` with
    SPI 0 (default ``os.urandom``).

    All or nothing: any error leaves both stores unchanged and raises SetkeyError.
    """
    commands = parse_script(script)
    store = default_sadb() if sadb is None else sadb
    table = default_spd() if spd is None else spd
    when = time.time() if now is None else float(now)
    with _transactions(store, table, commands) as (admin, spd_txn):
        runner = _Run(admin, spd_txn, store.allocate_reqid, when, show_keys, rng)
        for cmd in commands:
            runner.run(cmd)
    return "".join(runner.out)


@contextmanager
def _transactions(
    store: SAStore, table: SPD, commands: list[Command]
) -> Iterator[tuple[SAAdmin, SPDTransaction | None]]:
    if _needs_spd(commands):
        with store.transaction() as admin, table.transaction() as spd_txn:
            yield admin, spd_txn
    else:
        with store.transaction() as admin:
            yield admin, None

