"""ipsec_set_policy(3) text -> :class:`Policy`, and :class:`Policy` -> canonical text.

The lexer follows libipsec's flex rules (longest match; on a tie the earlier rule wins, so
keywords beat addresses and a bare digit string is a priority offset). The parser follows the
union of FreeBSD's and ipsec-tools' yacc grammars, including where their semantic actions fire,
so the same input fails with the same EIPSEC_* code::

    policy   := DIR [ACTION request*]
              | DIR ("prio"|"priority") prio ACTION request*
    prio     := OFFSET | "-" OFFSET | BASE | BASE "+" OFFSET | BASE "-" OFFSET
    request  := PROTO "/" MODE [ "/" [ addrs ["/" [level]] | "/" level ] ]
    addrs    := ADDR "-" ADDR | ADDR PORT "-" ADDR PORT | "me" "-" "any" | "any" "-" "me"
    level    := "default" | "use" | "require" | "unique" | "unique:" DIGITS

Formatting follows ipsec_dump_policy(3) (ipsec-tools' priority rendering; addresses printed
numerically with ``%scope`` and, when a port is set, ``[port]``). See docs/policy.md.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto
from typing import Final

from secsock import constants as c
from secsock.errors import PolicyError
from secsock.policy._errors import EAI_NONAME_TEXT, EAI_SERVICE_TEXT, policy_error
from secsock.policy.model import (
    Action,
    Address,
    Direction,
    Level,
    Mode,
    Policy,
    Protocol,
    Request,
)

__all__ = ("format_address", "format_policy", "format_request", "parse_policy")


class _K(Enum):
    DIR = auto()
    PRIORITY = auto()
    PRIO_BASE = auto()
    PLUS = auto()
    PRIO_OFFSET = auto()
    ACTION = auto()
    PROTOCOL = auto()
    MODE = auto()
    ME = auto()
    ANY = auto()
    LEVEL = auto()
    LEVEL_SPECIFY = auto()
    SLASH = auto()
    IPADDRESS = auto()
    HYPHEN = auto()
    PORT = auto()
    EOF = auto()


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _K
    text: str
    value: int
    column: int  # 1-based


_KEYWORDS: Final[dict[str, tuple[_K, int]]] = {
    "in": (_K.DIR, Direction.INBOUND),
    "out": (_K.DIR, Direction.OUTBOUND),
    "fwd": (_K.DIR, Direction.FWD),
    "priority": (_K.PRIORITY, 0),
    "prio": (_K.PRIORITY, 0),
    "low": (_K.PRIO_BASE, c.PRIORITY_LOW),
    "def": (_K.PRIO_BASE, c.PRIORITY_DEFAULT),
    "high": (_K.PRIO_BASE, c.PRIORITY_HIGH),
    "discard": (_K.ACTION, Action.DISCARD),
    "none": (_K.ACTION, Action.NONE),
    "ipsec": (_K.ACTION, Action.IPSEC),
    "bypass": (_K.ACTION, Action.BYPASS),
    "entrust": (_K.ACTION, Action.ENTRUST),
    "esp": (_K.PROTOCOL, Protocol.ESP),
    "ah": (_K.PROTOCOL, Protocol.AH),
    "ipcomp": (_K.PROTOCOL, Protocol.IPCOMP),
    "transport": (_K.MODE, Mode.TRANSPORT),
    "tunnel": (_K.MODE, Mode.TUNNEL),
    "me": (_K.ME, 0),
    "any": (_K.ANY, 0),
    "default": (_K.LEVEL, Level.DEFAULT),
    "use": (_K.LEVEL, Level.USE),
    "require": (_K.LEVEL, Level.REQUIRE),
    "unique": (_K.LEVEL, Level.UNIQUE),
}
_KEYWORDS_LONGEST_FIRST: Final = sorted(_KEYWORDS, key=len, reverse=True)

# (kind, pattern) in flex rule order after the keywords; rank breaks ties of equal length.
_PATTERNS: Final = (
    (_K.PLUS, re.compile(r"\+")),
    (_K.PRIO_OFFSET, re.compile(r"[0-9]+")),
    (_K.LEVEL_SPECIFY, re.compile(r"unique:[0-9]+")),
    (_K.SLASH, re.compile(r"/")),
    (_K.IPADDRESS, re.compile(r"[a-zA-Z0-9:._][a-zA-Z0-9:._]*(?:%[a-zA-Z0-9]+)?")),
    (_K.HYPHEN, re.compile(r"-")),
    (_K.PORT, re.compile(r"\[[0-9]+\]")),
)
_WHITESPACE: Final = frozenset(" \t\n")

_DESCRIBE: Final = {
    _K.DIR: "a direction (in, out, fwd)",
    _K.ACTION: "an action (discard, none, ipsec, entrust, bypass)",
    _K.PRIO_OFFSET: "a priority offset (decimal digits)",
    _K.HYPHEN: "'-'",
    _K.ANY: "'any'",
    _K.ME: "'me'",
    _K.IPADDRESS: "an address",
    _K.PORT: "a port like [500]",
}
_LEVELS_TEXT: Final = "a level (default, use, require, unique, unique:N)"
# Every number of the grammar is checked against a limit below 2**32; CPython refuses int() of
# a decimal string of more than 4300 digits, so digit strings are never converted whole.
_TOO_BIG: Final = 1 << 64


def _decimal(digits: str) -> int:
    """The value of a string of ASCII digits, or _TOO_BIG when it has more than 20 significant
    digits (above every limit here)."""
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= 20 else _TOO_BIG


def _found(value: int) -> str:
    return str(value) if value < _TOO_BIG else "a number of more than 20 digits"


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in _WHITESPACE:
            i += 1
            continue
        best_len, best_kind, best_value = 0, _K.EOF, 0
        for kw in _KEYWORDS_LONGEST_FIRST:
            if text.startswith(kw, i):
                best_len = len(kw)
                best_kind, best_value = _KEYWORDS[kw]
                break
        for kind, pattern in _PATTERNS:
            m = pattern.match(text, i)
            if m is not None and m.end() - i > best_len:  # strictly longer: earlier rule wins
                best_len, best_kind, best_value = m.end() - i, kind, 0
        if best_len == 0:
            raise policy_error(
                c.EIPSEC_INVAL_ARGUMENT,
                token=text[i],
                column=i + 1,
                text=text,
                note=f"expected a policy word, an address, '/', '-', '+' or [port]; "
                f"found the character {text[i]!r}",
            )
        tokens.append(_Token(best_kind, text[i : i + best_len], best_value, i + 1))
        i += best_len
    tokens.append(_Token(_K.EOF, "", 0, n + 1))
    return tokens


class _Parser:
    def __init__(self, text: str, ifindex: Callable[[str], int] | None) -> None:
        self.text = text
        self.ifindex = ifindex
        self.tokens = _tokenize(text)
        self.pos = 0

    # --- token helpers ------------------------------------------------------------------------
    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        tok = self.tokens[self.pos]
        if tok.kind is not _K.EOF:
            self.pos += 1
        return tok

    def error(self, code: int, tok: _Token, note: str, message: str | None = None) -> PolicyError:
        return policy_error(
            code,
            message=message,
            token=tok.text if tok.kind is not _K.EOF else None,
            column=tok.column,
            text=self.text,
            note=note,
        )

    def syntax(self, tok: _Token, expected: str) -> PolicyError:
        found = "the end of the text" if tok.kind is _K.EOF else repr(tok.text)
        return self.error(c.EIPSEC_INVAL_ARGUMENT, tok, f"expected {expected}, found {found}")

    def expect(self, kind: _K, expected: str | None = None) -> _Token:
        tok = self.take()
        if tok.kind is not kind:
            raise self.syntax(tok, expected or _DESCRIBE[kind])
        return tok

    # --- policy_spec --------------------------------------------------------------------------
    def policy(self) -> Policy:
        direction = Direction(self.expect(_K.DIR).value)
        tok = self.peek()
        if tok.kind is _K.EOF:  # bare "DIR": type 0, "ignored by kernel"
            return Policy(direction=direction, action=Action.DISCARD)
        if tok.kind is _K.ACTION:
            action, priority = Action(self.take().value), 0
        elif tok.kind is _K.PRIORITY:
            self.take()
            action, priority = self.priority()
        else:
            raise self.syntax(tok, "an action (discard, none, ipsec, entrust, bypass) or prio")
        requests: list[Request] = []
        while (tok := self.peek()).kind is not _K.EOF:
            if tok.kind is not _K.PROTOCOL:
                raise self.syntax(tok, "a request (esp, ah, ipcomp) or the end of the text")
            requests.append(self.rule(direction, action))
        return Policy(
            direction=direction, action=action, requests=tuple(requests), priority=priority
        )

    def priority(self) -> tuple[Action, int]:
        tok = self.take()
        if tok.kind is _K.PRIO_OFFSET:  # "prio N": N above the default
            action = Action(self.expect(_K.ACTION).value)
            offset = _decimal(tok.text)
            if offset > c.PRIORITY_DEFAULT:
                raise self.error(c.EIPSEC_INVAL_PRIORITY_OFFSET, tok,
                                 f"expected an offset of at most {c.PRIORITY_DEFAULT}, "
                                 f"found {_found(offset)}")
            return action, c.PRIORITY_DEFAULT - offset
        if tok.kind is _K.HYPHEN:  # "prio -N": N below the default
            otok = self.expect(_K.PRIO_OFFSET)
            action = Action(self.expect(_K.ACTION).value)
            offset = _decimal(otok.text)
            if offset > c.PRIORITY_DEFAULT - 1:
                raise self.error(c.EIPSEC_INVAL_PRIORITY_OFFSET, otok,
                                 f"expected an offset of at most {c.PRIORITY_DEFAULT - 1}, "
                                 f"found {_found(offset)}")
            return action, c.PRIORITY_DEFAULT + offset
        if tok.kind is not _K.PRIO_BASE:
            raise self.syntax(tok, "a priority (low, def, high, N or -N)")
        base = tok.value
        sign = self.take()
        if sign.kind is _K.ACTION:
            return Action(sign.value), base
        if sign.kind not in (_K.PLUS, _K.HYPHEN):
            raise self.syntax(sign, "'+', '-' or an action")
        otok = self.expect(_K.PRIO_OFFSET)
        action = Action(self.expect(_K.ACTION).value)
        offset = _decimal(otok.text)
        limit = (c.PRIORITY_OFFSET_NEGATIVE_MAX if sign.kind is _K.PLUS
                 else c.PRIORITY_OFFSET_POSITIVE_MAX)
        if offset > limit:
            raise self.error(c.EIPSEC_INVAL_PRIORITY_BASE_OFFSET, otok,
                             f"expected an offset of at most {limit} after "
                             f"'{tok.text} {sign.text}', found {_found(offset)}")
        return action, base - offset if sign.kind is _K.PLUS else base + offset

    # --- rule ---------------------------------------------------------------------------------
    def rule(self, direction: Direction, action: Action) -> Request:
        ptok = self.take()
        if self.peek().kind is not _K.SLASH:
            raise self.error(c.EIPSEC_FEW_ARGUMENTS, ptok,
                             f"expected '{ptok.text}/MODE' (transport or tunnel), "
                             f"found {self._found(self.peek())} after '{ptok.text}'")
        self.take()
        if self.peek().kind is not _K.MODE:
            raise self.error(c.EIPSEC_FEW_ARGUMENTS, ptok,
                             f"expected a mode (transport, tunnel) after '{ptok.text}/', "
                             f"found {self._found(self.peek())}")
        mtok = self.take()
        mode = Mode(mtok.value)
        level, reqid = Level.DEFAULT, 0
        src: tuple[Address, int, int] | None = None
        dst: tuple[Address, int, int] | None = None
        dst_tok = mtok
        if self.peek().kind is _K.SLASH:
            self.take()
            nxt = self.peek()
            if nxt.kind is _K.SLASH:
                self.take()
                level, reqid = self.level(self.take())
            elif nxt.kind in (_K.IPADDRESS, _K.ME, _K.ANY):
                src, dst, dst_tok = self.addresses(direction)
                if self.peek().kind is _K.SLASH:
                    self.take()
                    if self.peek().kind in (_K.LEVEL, _K.LEVEL_SPECIFY):
                        level, reqid = self.level(self.take())
        if action is Action.IPSEC:  # rule_check()
            if src is None and mode is not Mode.TRANSPORT:
                raise self.error(c.EIPSEC_INVAL_ADDRESS, mtok,
                                 f"expected src-dst addresses for {mtok.text} mode, found none")
            if src is not None and dst is not None and src[0].version != dst[0].version:
                raise self.error(c.EIPSEC_FAMILY_MISMATCH, dst_tok,
                                 f"expected an IPv{src[0].version} destination like the source, "
                                 f"found IPv{dst[0].version}")
        if src is None or dst is None:
            return Request(proto=Protocol(ptok.value), mode=mode, level=level, reqid=reqid)
        return Request(
            proto=Protocol(ptok.value),
            mode=mode,
            level=level,
            reqid=reqid,
            src=src[0],
            dst=dst[0],
            src_port=src[1],
            dst_port=dst[1],
            src_scope_id=src[2],
            dst_scope_id=dst[2],
        )

    @staticmethod
    def _found(tok: _Token) -> str:
        return "the end of the text" if tok.kind is _K.EOF else repr(tok.text)

    def level(self, tok: _Token) -> tuple[Level, int]:
        if tok.kind is _K.LEVEL:
            return Level(tok.value), 0
        if tok.kind is not _K.LEVEL_SPECIFY:
            raise self.syntax(tok, _LEVELS_TEXT)
        reqid = _decimal(tok.text[len("unique:") :])
        if reqid > 0xFFFF:
            raise self.error(c.EIPSEC_INVAL_LEVEL, tok,
                             f"expected a reqid of at most 65535 (manual reqids are 1-"
                             f"{c.IPSEC_MANUAL_REQID_MAX}), found {_found(reqid)}")
        return Level.UNIQUE, reqid

    def addresses(
        self, direction: Direction
    ) -> tuple[tuple[Address, int, int] | None, tuple[Address, int, int] | None, _Token]:
        tok = self.take()
        if tok.kind in (_K.ME, _K.ANY):
            if tok.kind is _K.ME:
                self.expect(_K.HYPHEN)
                self.expect(_K.ANY)
                wanted, form = Direction.OUTBOUND, "me-any"
            else:
                self.expect(_K.HYPHEN)
                self.expect(_K.ME)
                wanted, form = Direction.INBOUND, "any-me"
            if direction is not wanted:
                raise self.error(c.EIPSEC_INVAL_DIR, tok,
                                 f"expected '{form}' only in an '{wanted.keyword}' policy, "
                                 f"found it in an '{direction.keyword}' policy")
            return None, None, tok
        sport = self.take() if self.peek().kind is _K.PORT else None
        src = self.sockaddr(tok, sport)
        self.expect(_K.HYPHEN, "'-' between the source and destination addresses")
        dtok = self.expect(_K.IPADDRESS, "a destination address")
        dport = None
        if sport is not None:
            dport = self.expect(_K.PORT, "a destination port like [500], as the source has one")
        return src, self.sockaddr(dtok, dport), dtok

    def sockaddr(self, tok: _Token, port_tok: _Token | None) -> tuple[Address, int, int]:
        """getaddrinfo(AI_NUMERICHOST) on an address token: (address, port, scope id)."""
        host, _, scope_text = tok.text.partition("%")
        scope = 0
        addr: Address
        try:
            addr = ipaddress.IPv6Address(host) if "%" in tok.text else ipaddress.ip_address(host)
        except ValueError:
            raise self._bad_address(tok) from None
        if scope_text:
            if scope_text.isdigit():
                scope = _decimal(scope_text)
            elif self.ifindex is not None:
                try:
                    scope = self.ifindex(scope_text)
                except (OSError, ValueError, LookupError):
                    raise self._bad_address(tok, f"no interface named {scope_text!r}") from None
            else:
                raise self._bad_address(
                    tok, f"scope {scope_text!r} is not numeric and no interface resolver "
                    "(ifindex=) was given")
            if not 0 <= scope <= 0xFFFFFFFF:
                raise self._bad_address(tok, f"scope id {_found(scope)} does not fit in 32 bits")
        port = 0
        if port_tok is not None:
            port = _decimal(port_tok.text[1:-1])
            if port > 0xFFFF:
                raise self.error(c.EIPSEC_SYSTEM_ERROR, port_tok,
                                 f"expected a port of at most 65535, found {_found(port)}",
                                 message=EAI_SERVICE_TEXT)
        return addr, port, scope

    def _bad_address(self, tok: _Token, why: str | None = None) -> PolicyError:
        note = f"expected a numeric IPv4 or IPv6 address, found {tok.text!r}"
        if why:
            note += f" ({why})"
        return self.error(c.EIPSEC_SYSTEM_ERROR, tok, note, message=EAI_NONAME_TEXT)


def parse_policy(text: str, *, ifindex: Callable[[str], int] | None = None) -> Policy:
    """Parse ipsec_set_policy(3) text; raises PolicyError with code, message, token, column.

    Syntax errors are EIPSEC_INVAL_ARGUMENT (libipsec's answer when the parser set no code);
    a bad address or port is EIPSEC_SYSTEM_ERROR with gai_strerror(3)'s FreeBSD text. Every
    error has a note (``exc.__notes__``) saying what was expected and what was found.
    ``ifindex`` resolves interface names in ``%scope`` (e.g. ``socket.if_nametoindex``).
    """
    if not isinstance(text, str):
        raise TypeError(f"policy text must be a str, found {type(text).__name__}")
    return _Parser(text, ifindex).policy()


# --- formatting (ipsec_dump_policy) -----------------------------------------------------------
def _ntop6(addr: ipaddress.IPv6Address) -> str:
    """inet_ntop(3) for IPv6: like RFC 5952 text, but with the embedded IPv4 forms."""
    packed = addr.packed
    if packed[:10] == bytes(10) and packed[10:12] == b"\xff\xff":
        return "::ffff:" + str(ipaddress.IPv4Address(packed[12:]))
    if packed[:12] == bytes(12) and packed[12:14] != b"\0\0":
        return "::" + str(ipaddress.IPv4Address(packed[12:]))
    return str(addr)


def format_address(addr: Address, scope_id: int = 0) -> str:
    """getnameinfo(NI_NUMERICHOST) text of an address; a scope id is appended as ``%N``."""
    if isinstance(addr, ipaddress.IPv4Address):
        return str(addr)
    text = _ntop6(addr)
    return f"{text}%{scope_id}" if scope_id else text


def format_request(req: Request) -> str:
    """``proto/mode/src-dst/level`` with ``:reqid`` (manual) or ``#reqid`` (kernel-assigned)."""
    addrs = ""
    if req.src is not None and req.dst is not None:
        src = format_address(req.src, req.src_scope_id)
        dst = format_address(req.dst, req.dst_scope_id)
        if req.src_port or req.dst_port:
            src, dst = f"{src}[{req.src_port}]", f"{dst}[{req.dst_port}]"
        addrs = f"{src}-{dst}"
    text = f"{req.proto.keyword}/{req.mode.keyword}/{addrs}/{req.level.keyword}"
    if req.reqid:
        mark = "#" if req.reqid > c.IPSEC_MANUAL_REQID_MAX else ":"
        text += f"{mark}{req.reqid}"
    return text


def _format_priority(priority: int) -> str:
    if priority == 0:
        return ""
    if priority < c.PRIORITY_DEFAULT // 4 * 3:
        name, base = "high", c.PRIORITY_HIGH
    elif priority < c.PRIORITY_DEFAULT // 4 * 5:
        name, base = "def", c.PRIORITY_DEFAULT
    else:
        name, base = "low", c.PRIORITY_LOW
    offset = base - priority  # positive = matched earlier = "+"
    if offset == 0:
        return f" prio {name}"
    return f" prio {name} {'+' if offset > 0 else '-'} {abs(offset)}"


def format_policy(policy: Policy, delimiter: str | None = " ") -> str:
    """What ipsec_dump_policy(3) prints: ``<dir>[ prio ...] <action>`` and, for IPSEC, each
    request after ``delimiter`` (None means a space, as in C)."""
    delim = " " if delimiter is None else delimiter
    head = f"{policy.direction.keyword}{_format_priority(policy.priority)} {policy.action.keyword}"
    if policy.action is not Action.IPSEC:
        return head
    return head + "".join(delim + format_request(r) for r in policy.requests)
