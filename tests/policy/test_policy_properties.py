"""Hypothesis: the parser and the buffer readers take anything and answer with a result or
their one documented error, and canonical text and buffers round-trip."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secsock import constants as c
from secsock.errors import PolicyError
from secsock.policy.kernel import check_policy_buffer, check_socket_policy, check_spd_policy
from secsock.policy.libipsec import ipsec_dump_policy, ipsec_get_policylen, ipsec_set_policy
from secsock.policy.model import Action, Direction, Layout, Level, Mode, Policy, Protocol, Request

SETTINGS = settings(max_examples=300, deadline=None, database=None)
LAYOUTS: tuple[Layout, ...] = ("bsd", "linux")

WORDS = [
    "in", "out", "fwd", "prio", "priority", "low", "def", "high", "+", "-", "/", "//",
    "discard", "none", "ipsec", "entrust", "bypass", "esp", "ah", "ipcomp", "tcp",
    "transport", "tunnel", "me", "any", "default", "use", "require", "unique", "unique:5",
    "unique:16384", "unique:70000", "1.2.3.4", "10.0.0.256", "::1", "::ffff:1.2.3.4",
    "fe80::1%2", "fe80::1%eth0", "[500]", "[70000]", "10", "2147483648", "4294967296", "x",
    "$", "%", "esp/transport", "esp/tunnel/1.1.1.1-2.2.2.2/", "me-any", "any-me",
]
SEPARATORS = st.sampled_from(["", " ", " ", "\t", "\n", "/", "-"])
token_soup = st.lists(st.tuples(st.sampled_from(WORDS), SEPARATORS), max_size=12).map(
    lambda parts: "".join(w + s for w, s in parts)
)

# grammar-shaped text with occasional wrong parts, so that most inputs get deep into the parser
_offset = st.integers(0, 2**33).map(str)
_prio = st.one_of(
    st.just(""),
    st.tuples(st.sampled_from(["prio", "priority"]), st.one_of(
        _offset, _offset.map(lambda n: f"-{n}"), st.sampled_from(["low", "def", "high"]),
        st.tuples(st.sampled_from(["low", "def", "high"]), st.sampled_from(["+", "-", " + "]),
                  _offset).map(" ".join),
    )).map(" ".join),
)
_addr = st.sampled_from(["1.2.3.4", "10.0.0.1", "::1", "2001:db8::2", "fe80::1%3",
                         "::ffff:1.2.3.4", "1.2.3.999", "fe80::1%lo0"])
_port = st.sampled_from(["", "", "[0]", "[500]", "[65535]", "[65536]"])
_addrs = st.one_of(
    st.sampled_from(["", "", "me-any", "any-me", "any-any"]),
    st.tuples(_addr, _port, _addr, _port).map(lambda t: f"{t[0]}{t[1]}-{t[2]}{t[3]}"),
)
_level = st.sampled_from(["", "default", "use", "require", "unique", "unique:1", "unique:16383",
                          "unique:20000", "unique:65536", "bogus"])
_request = st.tuples(
    st.sampled_from(["esp", "ah", "ipcomp", "esp", "tcp"]),
    st.sampled_from(["/transport", "/tunnel", "/transport", "", "/"]),
    st.sampled_from(["", "/", "//"]),
    _addrs,
    st.sampled_from(["", "/"]),
    _level,
).map("".join)
policy_like = st.tuples(
    st.sampled_from(["in", "out", "fwd", "out", "in", "any"]),
    _prio,
    st.sampled_from(["ipsec", "ipsec", "ipsec", "discard", "none", "entrust", "bypass", ""]),
    st.lists(_request, max_size=3),
).map(lambda t: " ".join([t[0], t[1], t[2], *t[3]]))

texts = st.one_of(st.text(max_size=80), token_soup, policy_like)


@SETTINGS
@given(text=texts, layout=st.sampled_from(LAYOUTS))
def test_any_text_gives_bytes_or_policy_error(text: str, layout: Layout) -> None:
    error: PolicyError | None = None
    try:
        buf = ipsec_set_policy(text, layout)
    except PolicyError as exc:
        error = exc
    if error is not None:
        assert 0 <= error.code <= c.EIPSEC_MAX
        assert error.column is not None
        assert 1 <= error.column <= len(text) + 1
        if error.token is not None:
            assert text[error.column - 1 :].startswith(error.token)
        assert error.__notes__
        return
    assert isinstance(buf, bytes)
    assert len(buf) >= 16
    dumped = ipsec_dump_policy(buf, None, layout)  # whatever parses also dumps
    assert dumped == Policy.parse(text).to_text()
    if "#" not in dumped:  # "unique#N" is output only
        assert Policy.parse(dumped).to_text() == dumped  # canonical text is a fixed point


def _address_pair(version: int) -> st.SearchStrategy[dict[str, object]]:
    addr = st.ip_addresses(v=4) if version == 4 else st.ip_addresses(v=6)
    scope = st.integers(0, 2**32 - 1) if version == 6 else st.just(0)
    return st.fixed_dictionaries(
        {
            "src": addr,
            "dst": addr,
            "src_port": st.integers(0, 65535),
            "dst_port": st.integers(0, 65535),
            "src_scope_id": scope,
            "dst_scope_id": scope,
        }
    )


@st.composite
def requests(draw: st.DrawFn) -> Request:
    mode = draw(st.sampled_from([Mode.TRANSPORT, Mode.TUNNEL]))
    level = draw(st.sampled_from(list(Level)))
    reqid = draw(st.integers(0, c.IPSEC_MANUAL_REQID_MAX)) if level is Level.UNIQUE else 0
    addrs: dict[str, object] = {}
    if mode is Mode.TUNNEL or draw(st.booleans()):
        addrs = draw(st.sampled_from([4, 6]).flatmap(_address_pair))
    return Request(proto=draw(st.sampled_from(list(Protocol))), mode=mode, level=level,
                   reqid=reqid, **addrs)  # type: ignore[arg-type]


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    action = draw(st.sampled_from(list(Action)))
    reqs = tuple(draw(st.lists(requests(), max_size=4))) if action is Action.IPSEC else ()
    return Policy(
        direction=draw(st.sampled_from([Direction.INBOUND, Direction.OUTBOUND, Direction.FWD])),
        action=action,
        requests=reqs,
        priority=draw(st.integers(0, 2**32 - 1)),
    )


@SETTINGS
@given(policy=policies(), layout=st.sampled_from(LAYOUTS))
def test_dump_then_parse_gives_the_same_bytes(policy: Policy, layout: Layout) -> None:
    buf = policy.encode(layout)
    assert ipsec_get_policylen(buf, layout) == len(buf)
    text = ipsec_dump_policy(buf, None, layout)
    assert text == policy.to_text()
    assert ipsec_set_policy(text, layout) == buf
    assert Policy.decode(buf, layout) == policy
    assert check_policy_buffer(buf, layout) == policy


@SETTINGS
@given(policy=policies())
def test_layouts_hold_the_same_policy(policy: Policy) -> None:
    bsd, linux = policy.encode("bsd"), policy.encode("linux")
    assert bsd[2:] != linux[2:] or not policy.requests
    assert Policy.decode(bsd, "bsd") == Policy.decode(linux, "linux")


def _read_everything(buf: bytes) -> None:
    """Every reader returns or raises its one documented error (any other exception fails)."""
    for layout in LAYOUTS:
        with contextlib.suppress(PolicyError):
            ipsec_dump_policy(buf, None, layout)
        with contextlib.suppress(PolicyError):
            Policy.decode(buf, layout)
        with contextlib.suppress(PolicyError):
            ipsec_get_policylen(buf, layout)
        for check in (check_policy_buffer, check_spd_policy, _check_socket):
            failure: OSError | None = None
            try:
                kept = check(buf, layout)
            except OSError as exc:
                failure = exc
            if failure is not None:
                assert failure.errno is not None
                assert failure.strerror
                continue
            assert isinstance(kept, Policy)
            # what the kernel keeps can be written again and read back, except an ipsec request
            # mixing families, which key_msg2sp() accepts and encode() refuses
            mixed = any(r.src is not None and r.dst is not None and r.src.version != r.dst.version
                        for r in kept.requests)
            if mixed:
                with pytest.raises(PolicyError):
                    kept.encode(layout)
            else:
                assert Policy.decode(kept.encode(layout), layout) == kept


def _check_socket(buf: bytes, layout: Layout) -> Policy:
    return check_socket_policy(buf, c.AF_INET, layout)


@SETTINGS
@given(buf=st.binary(max_size=160))
def test_any_bytes_give_a_result_or_the_documented_error(buf: bytes) -> None:
    _read_everything(buf)


@SETTINGS
@given(
    policy=policies(),
    layout=st.sampled_from(LAYOUTS),
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(-16, 16),
)
def test_mutated_buffers_give_a_result_or_the_documented_error(
    policy: Policy, layout: Layout, edits: list[tuple[int, int]], cut: int
) -> None:
    buf = bytearray(policy.encode(layout))
    for index, value in edits:
        if index < len(buf):
            buf[index] = value
    data = bytes(buf[:cut]) if cut < 0 else bytes(buf) + bytes(cut)
    _read_everything(data)


def test_generated_addresses_cover_both_families() -> None:
    # a sanity check on the strategy itself: both families appear in a small sample
    seen: set[int] = set()

    @settings(max_examples=50, database=None, derandomize=True)
    @given(requests())
    def collect(req: Request) -> None:
        if req.src is not None:
            seen.add(req.src.version)
            assert isinstance(req.src, (ipaddress.IPv4Address, ipaddress.IPv6Address))

    collect()
    assert seen == {4, 6}
