"""The SPD: selectors, priority order, wildcards, writes, generation and transactions."""

from __future__ import annotations

import errno

import pytest

from secsock.constants import PRIORITY_DEFAULT, PRIORITY_HIGH
from secsock.errors import SADBError
from secsock.policy.model import Direction, parse_policy
from secsock.sadb.spd import SPD, SPDSelector, default_spd
from tests.sadb.sadb_helpers import addr

OUT = Direction.OUTBOUND
IN = Direction.INBOUND


def sel(src: str = "10.0.0.1/32", dst: str = "10.0.0.2/32", ul: int = 255, sp: int = 0,
        dp: int = 0) -> SPDSelector:
    return SPDSelector(src=src, dst=dst, ul_proto=ul, sport=sp, dport=dp)  # type: ignore[arg-type]


def test_default_spd_is_one_table() -> None:
    assert default_spd() is default_spd()


def test_selector_normalises_and_validates() -> None:
    s = sel("10.0.0.77/24", "10.0.1.0/24")
    assert str(s.src) == "10.0.0.0/24"
    assert s.icmp_type is None
    icmp = sel("::/0", "::/0", 58, 135, 0)
    assert (icmp.icmp_type, icmp.icmp_code) == (135, 0)
    with pytest.raises(ValueError, match="one address family"):
        sel("10.0.0.0/8", "::/0")
    with pytest.raises(ValueError, match=r"0\.\.255"):
        sel(ul=256)
    with pytest.raises(ValueError, match="port"):
        sel(sp=70000)
    with pytest.raises(ValueError, match="ICMP type/code"):
        sel("::/0", "::/0", 58, 300)
    with pytest.raises(ValueError, match="prefix"):
        sel("10.0.0.300/8")


def test_lookup_first_match_in_priority_then_insertion_order() -> None:
    spd = SPD()
    broad = spd.add(sel("10.0.0.0/8", "10.0.0.0/8"), parse_policy("out none"))
    narrow = spd.add(sel(), parse_policy("out ipsec esp/transport//require"))
    assert spd.lookup(OUT, addr("10.0.0.1"), addr("10.0.0.2"), 17, 1, 2) is broad  # tie: first
    high = spd.add(sel(ul=17), parse_policy("out discard"), priority=PRIORITY_HIGH)
    assert spd.lookup(OUT, addr("10.0.0.1"), addr("10.0.0.2"), 17, 1, 2) is high
    assert spd.lookup(OUT, addr("10.0.0.1"), addr("10.0.0.2"), 6, 1, 2) is broad
    assert spd.lookup(IN, addr("10.0.0.1"), addr("10.0.0.2"), 17) is None
    assert spd.lookup(OUT, addr("11.0.0.1"), addr("10.0.0.2"), 17) is None
    assert broad.priority == narrow.priority == PRIORITY_DEFAULT
    prio = spd.add(sel("10.9.0.0/16", "0.0.0.0/0"),
                   parse_policy("out prio high + 5 none"))
    assert prio.priority == PRIORITY_HIGH - 5  # the policy's own priority is used
    assert [e.spid for e in spd.dump()] == [prio.spid, high.spid, broad.spid, narrow.spid]


def test_wildcards_ports_and_protocols() -> None:
    spd = SPD()
    e = spd.add(sel(ul=17, dp=500), parse_policy("in none"))
    assert spd.lookup(IN, "10.0.0.1", "10.0.0.2", 17, 1234, 500) is e
    assert spd.lookup(IN, "10.0.0.1", "10.0.0.2", 17, 1234, 501) is None
    assert spd.lookup(IN, "10.0.0.1", "10.0.0.2", 6, 1234, 500) is None
    assert spd.lookup(IN, "10.0.0.1", "10.0.0.2", 255) is None  # unknown protocol: only "any"
    anyp = spd.add(sel(), parse_policy("in discard"))
    assert spd.lookup(IN, "10.0.0.1", "10.0.0.2", 255) is anyp
    assert spd.lookup(IN, "::1", "::2", 17, 1, 500) is None  # other family


def test_icmp_type_and_code_in_the_port_fields() -> None:
    spd = SPD()
    ns = spd.add(sel("::/0", "::/0", 58, 135, 0), parse_policy("out none"))
    assert spd.lookup(OUT, "fe80::1", "ff02::1", 58, 135, 0) is ns
    assert spd.lookup(OUT, "fe80::1", "ff02::1", 58, 135, 7) is ns  # code 0 = any
    assert spd.lookup(OUT, "fe80::1", "ff02::1", 58, 136, 0) is None


def test_add_update_delete_flush_and_generation() -> None:
    spd = SPD()
    g0 = spd.generation
    first = spd.add(sel(), parse_policy("out ipsec esp/transport//require"))
    assert first.spid == 1
    assert spd.generation == g0 + 1
    with pytest.raises(SADBError) as info:
        spd.add(sel(), parse_policy("out discard"))
    assert info.value.errno == errno.EEXIST
    assert spd.generation == g0 + 1  # a failed write changes nothing
    spd.add(sel(), parse_policy("in none"))  # another direction: another entry
    new = spd.update(sel(), parse_policy("out discard"))
    assert new.spid == 3
    assert spd.get(sel(), OUT) is new
    fresh = spd.update(sel(dp=53), parse_policy("out none"))  # update of a missing one adds
    assert spd.get(sel(dp=53), OUT) is fresh
    assert spd.delete(sel(), OUT) is new
    with pytest.raises(SADBError) as info:
        spd.delete(sel(), OUT)
    assert info.value.errno == errno.ENOENT
    assert spd.delete_spid(fresh.spid) is fresh
    with pytest.raises(SADBError):
        spd.delete_spid(999)
    before = spd.generation
    assert spd.flush() == 1
    assert len(spd) == 0
    assert spd.generation == before + 1


def test_policies_the_spd_refuses() -> None:
    spd = SPD()
    with pytest.raises(ValueError, match="entrust and bypass"):
        spd.add(sel(), parse_policy("out bypass"))
    with pytest.raises(TypeError):
        spd.add(sel(), "out none")  # type: ignore[arg-type]


def test_transaction_all_or_nothing() -> None:
    spd = SPD()
    spd.add(sel(), parse_policy("out none"))
    g = spd.generation
    def failing_script() -> None:
        with spd.transaction() as txn:
            txn.flush()
            txn.add(sel(dp=1), parse_policy("out none"))
            txn.delete(sel(dp=2), OUT)

    with pytest.raises(SADBError):
        failing_script()
    assert spd.generation == g
    assert len(spd) == 1
    assert spd.lookup(OUT, "10.0.0.1", "10.0.0.2", 17, 5, 1) is not None  # the old entry
    with spd.transaction() as txn:
        txn.flush()
        txn.add(sel(dp=1), parse_policy("out discard"))
    assert spd.generation == g + 1
    assert len(spd) == 1
    assert spd.lookup(OUT, "10.0.0.1", "10.0.0.2", 17, 5, 2) is None


@pytest.mark.parametrize("bad", [-1, 2**32, "high"])
def test_a_rejected_priority_changes_nothing(bad: object) -> None:
    spd = SPD()
    kept = spd.add(sel(), parse_policy("out ipsec esp/transport//require"))
    generation = spd.generation
    for write in (spd.update, spd.add):
        with pytest.raises(ValueError, match="priority"):
            write(sel(), parse_policy("out none"), priority=bad)  # type: ignore[arg-type]
        assert spd.dump() == [kept]
        assert spd.lookup(OUT, addr("10.0.0.1"), addr("10.0.0.2")) is kept
        assert spd.generation == generation
    assert spd.add(sel("10.0.0.9/32"), parse_policy("out none")).spid == kept.spid + 1
