"""setkey(8) scripts: every command and option, exact dumps, errors, all or nothing, fuzzing."""

from __future__ import annotations

import errno
import os
from ipaddress import ip_address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secsock._setkey import check_script, parse_script, setkey
from secsock.core.algorithms import AUTH_ALGORITHMS, ENCRYPTION_ALGORITHMS, AuthKind, CipherMode
from secsock.errors import SequenceOverflowError, SetkeyError
from secsock.policy.model import Direction, Level
from secsock.sadb.lifetime import Lifetime
from secsock.sadb.model import LarvalSA, Padding, SAMode, SAProtocol, SAState, SecurityAssociation
from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore, default_sadb
from tests.sadb.sadb_helpers import Rng, addr

NOW = 1700000000.0  # Nov 14 22:13:20 2023 UTC
PID = os.getpid()
K16 = "0x000102030405060708090a0b0c0d0e0f"
K20 = "0x00112233445566778899aabbccddeeff00112233"
GCM = '"abcdefghijklmnopqrst"'  # 20 bytes: aes-gcm-16 key + salt


def run(script: str, sadb: MemoryStore | None = None, spd: SPD | None = None, *,
        now: float = NOW, show_keys: bool = False) -> str:
    return setkey(script, sadb=sadb if sadb is not None else MemoryStore(),
                  spd=spd if spd is not None else SPD(), now=now, show_keys=show_keys)


def stored(store: MemoryStore, dst: str, proto: str, spi: int) -> SecurityAssociation:
    rec = store.get(addr(dst), proto, spi)
    assert rec is not None
    assert isinstance(rec.sa, SecurityAssociation)
    return rec.sa


# --- exact dump formats ---------------------------------------------------------------------

THREE_SAS = f"""
# three SAs: ESP with every lifetime option, ESP-in-UDP with ESN, IPv6 AH with a long key
add 10.0.0.1 10.0.0.2 esp 0x1000 -m transport -u 5 -r 4 -f zero-pad -ls 60 -lh 120
    -bs 1000 -bh 2000 -E aes-cbc {K16} -A hmac-sha1 {K20};
add 10.0.0.2[4500] 10.0.0.1[4501] esp-udp 0x1001 -f esn -S 0x100000005
    -E aes-gcm-16 {GCM};
add 2001:db8::1 2001:db8::2 ah 0x2000 -m tunnel -A hmac-sha2-384 0x{bytes(range(48)).hex()};
"""

SAD_DUMP = (
    "10.0.0.1 10.0.0.2\n"
    "\tesp mode=transport spi=4096(0x00001000) reqid=5(0x00000005)\n"
    "\tE: aes-cbc  00010203 04050607 08090a0b 0c0d0e0f\n"
    "\tA: hmac-sha1  00112233 44556677 8899aabb ccddeeff 00112233\n"
    "\tseq=0x00000003 replay=4 flags=0x00000200 state=mature \n"
    "\tcreated: Nov 14 22:13:20 2023\tcurrent: Nov 14 22:13:30 2023\n"
    "\tdiff: 10(s)\thard: 120(s)\tsoft: 60(s)\n"
    "\tlast: Nov 14 22:13:25 2023\thard: 0(s)\tsoft: 0(s)\n"
    "\tcurrent: 150(bytes)\thard: 2000(bytes)\tsoft: 1000(bytes)\n"
    "\tallocated: 2\thard: 0\tsoft: 0\n"
    f"\tsadb_seq=2 pid={PID} refcnt=1\n"
    "10.0.0.2[4500] 10.0.0.1[4501]\n"
    "\tesp-udp mode=any spi=4097(0x00001001) reqid=0(0x00000000)\n"
    "\tE: aes-gcm-16  61626364 65666768 696a6b6c 6d6e6f70 71727374\n"
    "\tseq=0x00000005 replay=8 flags=0x00000400 state=mature \n"
    "\tcreated: Nov 14 22:13:20 2023\tcurrent: Nov 14 22:13:30 2023\n"
    "\tdiff: 10(s)\thard: 0(s)\tsoft: 0(s)\n"
    "\tlast:                     \thard: 0(s)\tsoft: 0(s)\n"
    "\tcurrent: 0(bytes)\thard: 0(bytes)\tsoft: 0(bytes)\n"
    "\tallocated: 0\thard: 0\tsoft: 0\n"
    f"\tsadb_seq=1 pid={PID} refcnt=1\n"
    "2001:db8::1 2001:db8::2\n"
    "\tah mode=tunnel spi=8192(0x00002000) reqid=0(0x00000000)\n"
    "\tA: hmac-sha2-384  00010203 04050607 08090a0b 0c0d0e0f 10111213 14151617 18191a1b 1c1d1e1f\n"
    " 20212223 24252627 28292a2b 2c2d2e2f\n"
    "\tseq=0x00000000 replay=8 flags=0x00000000 state=mature \n"
    "\tcreated: Nov 14 22:13:20 2023\tcurrent: Nov 14 22:13:30 2023\n"
    "\tdiff: 10(s)\thard: 0(s)\tsoft: 0(s)\n"
    "\tlast:                     \thard: 0(s)\tsoft: 0(s)\n"
    "\tcurrent: 0(bytes)\thard: 0(bytes)\tsoft: 0(bytes)\n"
    "\tallocated: 0\thard: 0\tsoft: 0\n"
    f"\tsadb_seq=0 pid={PID} refcnt=1\n"
)


def _three_sas_with_traffic() -> MemoryStore:
    store = MemoryStore()
    assert run(THREE_SAS, store) == ""
    entry = store.lookup_inbound("10.0.0.2", "esp", 0x1000)
    assert entry is not None
    store.reserve_seq(entry, 3)
    store.account(entry, 100, NOW + 5)
    store.account(entry, 50, NOW + 7)
    return store


def test_sad_dump_exact_text_with_keys() -> None:
    store = _three_sas_with_traffic()
    assert run("dump;", store, now=NOW + 10, show_keys=True) == SAD_DUMP


def test_sad_dump_hides_keys_by_default() -> None:
    store = _three_sas_with_traffic()
    hidden = run("dump;", store, now=NOW + 10)
    expected = (
        SAD_DUMP.replace("aes-cbc  00010203 04050607 08090a0b 0c0d0e0f", "aes-cbc (key hidden)")
        .replace("hmac-sha1  00112233 44556677 8899aabb ccddeeff 00112233",
                 "hmac-sha1 (key hidden)")
        .replace("aes-gcm-16  61626364 65666768 696a6b6c 6d6e6f70 71727374",
                 "aes-gcm-16 (key hidden)")
        .replace(
            "hmac-sha2-384  00010203 04050607 08090a0b 0c0d0e0f 10111213 14151617 18191a1b "
            "1c1d1e1f\n 20212223 24252627 28292a2b 2c2d2e2f",
            "hmac-sha2-384 (key hidden)",
        )
    )
    assert hidden == expected
    assert "(key hidden)" in hidden


def test_dump_by_protocol_and_get() -> None:
    store = _three_sas_with_traffic()
    ah_only = run("dump ah;", store, now=NOW + 10, show_keys=True)
    assert ah_only == SAD_DUMP[SAD_DUMP.index("2001:db8::1"):]
    esp_only = run("dump esp;", store, now=NOW + 10, show_keys=True)
    assert esp_only.count("sadb_seq=") == 2
    assert esp_only.startswith("10.0.0.1 10.0.0.2\n")
    assert "sadb_seq=1" in esp_only
    got = run("get 10.0.0.1 10.0.0.2 esp 4096;", store, now=NOW + 10, show_keys=True)
    first = SAD_DUMP[: SAD_DUMP.index("10.0.0.2[4500]")]
    assert got == first.replace("sadb_seq=2", "sadb_seq=0")


def test_empty_dumps() -> None:
    assert run("dump; spddump;") == "No SAD entries.\nNo SPD entries.\n"


SPD_SCRIPT = """
spdadd 10.0.0.0/24[any] 10.0.0.2[500] udp -P out ipsec esp/transport//require
    ah/transport//use;
spdadd ::/0 ::/0 icmp6 135,0 -P in none;
spdadd 10.0.0.1 10.0.0.2 any -P out prio high discard;
spdadd 10.0.0.1 10.0.0.2 tcp -P in ipsec esp/transport//unique:7;
spddump;
"""

SPD_DUMP = (
    "::/0 ::/0 icmp6 135,0\n"
    "\tin none\n"
    f"\tspid=2 seq=3 pid={PID} scope=global \n"
    "\trefcnt=1\n"
    "10.0.0.1[any] 10.0.0.2[any] tcp\n"
    "\tin ipsec\n"
    "\tesp/transport//unique:7\n"
    f"\tspid=4 seq=2 pid={PID} scope=global \n"
    "\trefcnt=1\n"
    "10.0.0.1[any] 10.0.0.2[any] any\n"
    "\tout prio high discard\n"
    f"\tspid=3 seq=1 pid={PID} scope=global \n"
    "\trefcnt=1\n"
    "10.0.0.0/24[any] 10.0.0.2[500] udp\n"
    "\tout ipsec\n"
    "\tesp/transport//require\n"
    "\tah/transport//use\n"
    f"\tspid=1 seq=0 pid={PID} scope=global \n"
    "\trefcnt=1\n"
)


def test_spd_dump_exact_text() -> None:
    assert run(SPD_SCRIPT) == SPD_DUMP


# --- commands and options -------------------------------------------------------------------


def _enc_cases() -> list[tuple[str, int, str]]:
    """(enc name, key length, what -A to add) for every encryption algorithm of the registry."""
    cases = []
    for name, alg in ENCRYPTION_ALGORITHMS.items():
        auth = ""
        if alg.mode is CipherMode.NULL:
            auth = f" -A hmac-sha1 {K20}"
        elif not alg.aead:
            auth = " -A hmac-sha2-256 0x" + "ab" * 32
        cases.append((name, alg.key_sizes[-1], auth))
    return cases


@pytest.mark.parametrize(("name", "key_len", "auth"), _enc_cases())
def test_every_encryption_algorithm(name: str, key_len: int, auth: str) -> None:
    store = MemoryStore()
    key = f" 0x{bytes(range(key_len)).hex()}" if key_len else ""
    run(f"add 10.0.0.1 10.0.0.2 esp 0x1000 -E {name}{key}{auth};", store)
    sa = stored(store, "10.0.0.2", "esp", 0x1000)
    assert sa.enc == name
    assert sa.enc_key == bytes(range(key_len))
    assert store.lookup_inbound("10.0.0.2", "esp", 0x1000) is not None


@pytest.mark.parametrize("name", list(AUTH_ALGORITHMS))
def test_every_authentication_algorithm(name: str) -> None:
    store = MemoryStore()
    alg = AUTH_ALGORITHMS[name]
    n = alg.key_sizes[-1]
    key = f" 0x{bytes(range(n)).hex()}" if n else ""
    if alg.kind is AuthKind.NULL:  # AH needs an ICV; null integrity only beside a cipher
        run(f"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-cbc {K16} -A null;", store)
        sa = stored(store, "10.0.0.2", "esp", 0x1000)
    elif alg.kind is AuthKind.GMAC:  # AES-GMAC integrity is for AH
        run(f"add 10.0.0.1 10.0.0.2 ah 0x1000 -A {name}{key};", store)
        sa = stored(store, "10.0.0.2", "ah", 0x1000)
    else:
        run(f"add 10.0.0.1 10.0.0.2 ah 0x1000 -A {name}{key};"
            f"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-cbc {K16} -A {name}{key};", store)
        assert stored(store, "10.0.0.2", "esp", 0x1000).auth == name
        sa = stored(store, "10.0.0.2", "ah", 0x1000)
    assert sa.auth == name
    assert sa.auth_key == bytes(range(n))


def test_aliases_keys_and_number_forms() -> None:
    store = MemoryStore()
    run(f"""
    add 10.0.0.1 10.0.0.2 esp 4096 -E rijndael-cbc "0123456789abcdef" -A hmac-sha256
        0x{"11" * 32};
    add 10.0.0.1 10.0.0.2 esp 0X1001 -E simple -A hmac-sha1 0x{"1" * 39};
    """, store)
    a = stored(store, "10.0.0.2", "esp", 4096)
    assert (a.enc, a.auth, a.enc_key) == ("aes-cbc", "hmac-sha2-256", b"0123456789abcdef")
    b = stored(store, "10.0.0.2", "esp", 0x1001)
    assert b.enc == "null"
    assert b.auth_key == bytes.fromhex("0" + "1" * 39)  # an odd digit count gets a leading 0


def test_extensions() -> None:
    store = MemoryStore()
    run(f"""
    add -4 10.0.0.1 10.0.0.2 esp 0x1000 -m tunnel -r 0 -u 77 -f random-pad -f nocyclic-seq
        -ls 1 -lh 2 -bs 3 -bh 4 -S 41 -E aes-gcm-16 {GCM};
    add -6n ::1 ::2 ah 0x1001 -f align8 -r 64 -f esn -S 0x123456789 -A hmac-sha1 {K20};
    add -46 10.0.0.1 10.0.0.2 ah 0x1002 -m any -f align4 -A hmac-sha1 {K20};
    add 10.0.0.1 10.0.0.2 esp 0x1003 -f seq-pad -E aes-gcm-16 {GCM};
    """, store)
    a = stored(store, "10.0.0.2", "esp", 0x1000)
    assert (a.mode, a.replay, a.reqid, a.padding) == (SAMode.TUNNEL, 0, 77, Padding.RANDOM)
    assert (a.soft, a.hard, a.seq_start) == (Lifetime(addtime=1, bytes=3),
                                             Lifetime(addtime=2, bytes=4), 41)
    b = stored(store, "::2", "ah", 0x1001)
    assert (b.ah_align, b.replay, b.esn, b.seq_start) == (8, 64, True, 0x123456789)
    assert b.mode is SAMode.ANY  # setkey's default mode
    c = stored(store, "10.0.0.2", "ah", 0x1002)
    assert c.ah_align == 4
    assert stored(store, "10.0.0.2", "esp", 0x1003).padding is Padding.SEQ
    entry = store.lookup_inbound("10.0.0.2", "esp", 0x1000)
    assert entry is not None
    assert store.reserve_seq(entry) == 42  # -S 41: the next packet carries 42


def test_replay_default_is_eight_bytes() -> None:
    store = MemoryStore()
    run(f"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 {GCM};", store)
    assert stored(store, "10.0.0.2", "esp", 0x1000).replay_window == 64


def test_esp_udp_ports_default_to_4500() -> None:
    store = MemoryStore()
    run(f"add 10.0.0.1 10.0.0.2[4600] esp-udp 0x1000 -m transport -E aes-gcm-16 {GCM};", store)
    sa = stored(store, "10.0.0.2", "esp", 0x1000)
    assert (sa.natt_sport, sa.natt_dport, sa.proto) == (4500, 4600, SAProtocol.ESP)


def test_sequence_overflow_from_a_script() -> None:
    store = MemoryStore()
    run(f"add 10.0.0.1 10.0.0.2 esp 0x1000 -S 4294967294 -E aes-gcm-16 {GCM};", store)
    entry = store.lookup_outbound("10.0.0.1", "10.0.0.2", "esp", SAMode.TRANSPORT)
    assert entry is not None
    assert store.reserve_seq(entry) == 2**32 - 1
    with pytest.raises(SequenceOverflowError) as info:
        store.reserve_seq(entry)
    assert info.value.errno == errno.EOVERFLOW
    assert entry.state is SAState.DEAD
    assert run("dump;", store) == "No SAD entries.\n"


def test_get_delete_deleteall_flush() -> None:
    store = MemoryStore()
    run(f"""
    add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 {GCM};
    add 10.0.0.1 10.0.0.2 esp 0x1001 -E aes-gcm-16 {GCM};
    add 10.0.0.2 10.0.0.1 esp 0x1002 -E aes-gcm-16 {GCM};
    add 10.0.0.1 10.0.0.2 ah 0x1003 -A hmac-sha1 {K20};
    add 10.0.0.1 10.0.0.3 ah 0x1004 -A hmac-sha1 {K20};
    """, store)
    run("delete 10.0.0.1 10.0.0.2 esp 0x1000 -m any;", store)
    assert [r.sa.spi for r in store.dump()] == [0x1001, 0x1002, 0x1003, 0x1004]
    run("deleteall 10.0.0.1 10.0.0.2 esp;", store)
    assert [r.sa.spi for r in store.dump()] == [0x1002, 0x1003, 0x1004]
    run("flush ah;", store)
    assert [r.sa.spi for r in store.dump()] == [0x1002]
    run("flush esp-udp;", store)  # the ESP satype: esp and esp-udp SAs alike
    assert store.dump() == []
    run(f"add 10.0.0.1 10.0.0.2 ah 0x1003 -A hmac-sha1 {K20}; flush;", store)
    assert store.dump() == []


def test_getspi_and_update() -> None:
    store = MemoryStore()
    out = setkey("getspi 10.0.0.1 10.0.0.2 esp 0 -m transport -u 3; dump;",
                 sadb=store, spd=SPD(), now=NOW, rng=Rng(0x1234))
    (rec,) = store.dump()
    assert rec.sa == LarvalSA(spi=0x100 + 0x1234, proto=SAProtocol.ESP, src=addr("10.0.0.1"),
                              dst=addr("10.0.0.2"), mode=SAMode.TRANSPORT, reqid=3)
    assert "state=larval" in out
    assert "spi=4916(0x00001334) reqid=3(0x00000003)" in out
    run(f"getspi 10.0.0.1 10.0.0.2 ah 0x2000;"
        f"update 10.0.0.1 10.0.0.2 esp 0x1334 -m transport -u 3 -E aes-gcm-16 {GCM};", store)
    entry = store.lookup_inbound("10.0.0.2", "esp", 0x1334)
    assert entry is not None
    assert entry.state is SAState.MATURE
    rec2 = store.get(addr("10.0.0.2"), "ah", 0x2000)
    assert rec2 is not None
    assert rec2.status.state is SAState.LARVAL
    run(f"update 10.0.0.1 10.0.0.2 esp 0x1334 -m transport -u 3 -lh 100 -E aes-gcm-16 {GCM};",
        store)
    assert entry.sa.hard.addtime == 100


def test_spd_commands() -> None:
    store, spd = MemoryStore(), SPD()
    run("""
    spdadd 10.0.0.1 10.0.0.2 udp -P out ipsec esp/transport//require;
    spdadd 10.0.0.2 10.0.0.1 udp -P in ipsec esp/transport//require;
    spdupdate 10.0.0.1 10.0.0.2 udp -P out discard;
    spdadd 10.0.0.1/32[1000] 10.0.0.2/32[2000] 17 -P out none;
    spdadd fe80::/10 ::/0 icmp6 -P out none;
    spdadd 10.0.0.1 10.0.0.2 icmp 8 -P out none;
    """, store, spd)
    assert len(spd) == 5  # spdupdate replaced the first entry
    assert spd.lookup(Direction.OUTBOUND, "10.0.0.1", "10.0.0.2", 17, 1, 2) is not None
    hit = spd.lookup(Direction.OUTBOUND, "10.0.0.1", "10.0.0.2", 17, 5, 6)
    assert hit is not None
    assert hit.policy.action.keyword == "discard"
    ported = spd.lookup(Direction.OUTBOUND, "10.0.0.1", "10.0.0.2", 17, 1000, 2000)
    assert ported is not None
    assert ported.policy.action.keyword == "discard"  # discard was added first: same priority
    echo = spd.lookup(Direction.OUTBOUND, "10.0.0.1", "10.0.0.2", 1, 8, 0)
    assert echo is not None
    assert echo.selector.icmp_type == 8
    run("spddelete 10.0.0.1 10.0.0.2 udp -P out;", store, spd)
    assert len(spd) == 4
    run("spddelete 10.0.0.2 10.0.0.1 udp -P in ipsec esp/transport//require;", store, spd)
    assert len(spd) == 3
    run("spdflush;", store, spd)
    assert len(spd) == 0


def test_unique_without_number_gets_a_reqid() -> None:
    store, spd = MemoryStore(), SPD()
    out = run("spdadd 10.0.0.1 10.0.0.2 any -P out ipsec esp/transport//unique; spddump;",
              store, spd)
    (entry,) = spd.dump()
    (req,) = entry.policy.requests
    assert req.level is Level.UNIQUE
    assert req.reqid == 0x4000
    assert "esp/transport//unique#16384" in out


def test_exit_stops_the_script() -> None:
    store = MemoryStore()
    run(f"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 {GCM}; exit; this is not parsed", store)
    assert len(store) == 1


def test_default_stores_are_used() -> None:
    spi = 0x5EC5
    try:
        setkey(f"add 192.0.2.1 192.0.2.2 esp {spi} -E aes-gcm-16 {GCM};", now=NOW)
        assert default_sadb().lookup_inbound("192.0.2.2", "esp", spi) is not None
    finally:
        default_sadb().deleteall("192.0.2.1", "192.0.2.2", "esp")


# --- errors ---------------------------------------------------------------------------------

ERRORS = [
    # (script, line, column, token, message fragment)
    ("frob;", 1, 1, "frob", "expected a command"),
    (";", 1, 1, ";", "expected a command"),
    (f"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 {GCM}", 1, 70, "end of script",
     "expected ';'"),
    ("add 10.0.0.1\n  host.example.com esp 0x1000 -E null;", 2, 3, "host.example.com",
     "no DNS"),
    ("add 10.0.0.1 10.0.0.2 esp 0x10 -E null;", 1, 27, "0x10", "reserved"),
    ("add 10.0.0.1 10.0.0.2 esp 0x100000000 -E null;", 1, 27, "0x100000000", "0xffffffff"),
    ("add 10.0.0.1 10.0.0.2 esp spi -E null;", 1, 27, "spi", "expected an SPI"),
    ("add 10.0.0.1 10.0.0.2 esq 0x1000 -E null;", 1, 23, "esq", "expected a protocol"),
    ("add 10.0.0.1 10.0.0.2 ipcomp 0x1000 -C deflate;", 1, 23, "ipcomp", "not supported"),
    ("add 10.0.0.1 10.0.0.2 esp 0x1000 -E des-cbc 0x0001020304050607;", 1, 37, "des-cbc",
     "unknown encryption algorithm"),
    ("add 10.0.0.1 10.0.0.2 ah 0x1000 -A hmac-sha3 0x00;", 1, 36, "hmac-sha3",
     "unknown authentication algorithm"),
    (f"add 10.0.0.1 10.0.0.2 esp 0x1000\n  -E aes-cbc {K20};", 2, 14, "<key>",
     "16, 24 or 32-byte key"),
    (f"add 10.0.0.1 10.0.0.2 ah 0x1000 -A hmac-sha1 {K16};", 1, 46, "<key>", "20-byte key"),
    ("add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-cbc nokey;", 1, 45, "nokey",
     "expected the key of aes-cbc"),
    ("add 10.0.0.1 10.0.0.2 esp 0x1000 -E null;", 1, 37, "null", "confidentiality or integrity"),
    (f"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 {GCM} -A hmac-sha1 {K20};", 1, 37,
     "aes-gcm-16", "combined-mode"),
    (f"add 10.0.0.1 10.0.0.2 esp 0x1000 -A hmac-sha1 {K20};", 1, 34, "-A", "expected -E"),
    (f"add 10.0.0.1 10.0.0.2 ah 0x1000 -E aes-gcm-16 {GCM};", 1, 33, "-E",
     "AH takes no encryption"),
    (f"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 {GCM} -m transport;", 1, 71, "-m",
     "come before"),
    (f"add 10.0.0.1 10.0.0.2 esp 0x1000 -m sideways -E aes-gcm-16 {GCM};", 1, 37, "sideways",
     "expected a mode"),
    (f"add 10.0.0.1 10.0.0.2 esp 0x1000 -r 513 -E aes-gcm-16 {GCM};", 1, 37, "513",
     "at most 512"),
    (f"add 10.0.0.1 10.0.0.2 esp 0x1000 -r 0 -f esn -E aes-gcm-16 {GCM};", 1, 42, "esn",
     "needs a replay window"),
    (f"add 10.0.0.1 10.0.0.2 esp 0x1000 -f fast -E aes-gcm-16 {GCM};", 1, 37, "fast",
     "expected a flag"),
    (f"add 10.0.0.1 10.0.0.2 esp 0x1000 -S 0x100000000 -E aes-gcm-16 {GCM};", 1, 37,
     "0x100000000", "-f esn for 64 bits"),
    (f"add 10.0.0.1 10.0.0.2 esp 0x1000 -f align8 -E aes-gcm-16 {GCM};", 1, 37, "align8",
     "AH SAs only"),
    (f"add ::1 ::2 ah 0x1000 -f align4 -A hmac-sha1 {K20};", 1, 26, "align4", "64-bit"),
    (f"add 10.0.0.1[500] 10.0.0.2 esp 0x1000 -E aes-gcm-16 {GCM};", 1, 14, "500",
     "only allowed on esp-udp"),
    (f"add 10.0.0.1 ::2 esp 0x1000 -E aes-gcm-16 {GCM};", 1, 14, "::2", "one address family"),
    (f"add -4 10.0.0.1 ::2 esp 0x1000 -E aes-gcm-16 {GCM};", 1, 17, "::2", "IPv4"),
    ((f"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 {GCM};\n"
     f"add 10.0.0.9 10.0.0.2 esp 4096 -E aes-gcm-16 {GCM};"), 2, 27, "4096", "EEXIST"),
    ("delete 10.0.0.1 10.0.0.2 esp 0x1000;", 1, 30, "0x1000", "ESRCH"),
    ("get 10.0.0.1 10.0.0.2 ah 0x1000;", 1, 26, "0x1000", "ESRCH"),
    ("update 10.0.0.1 10.0.0.2 ah 0x1000 -A hmac-sha1 " + K20 + ";", 1, 29, "0x1000", "ESRCH"),
    ('add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-cbc "0123456789abcdef;', 1, 45, '"..."',
     "closing"),
    ("spdadd 10.0.0.1 10.0.0.2 any -P out ipsec esp/transport//require", 1, 65,
     "end of script", "ended by ';'"),
    ("spdadd 10.0.0.1 10.0.0.2 any -P out ipsec\n  esp/transport//requir;", 2, 18, "requir",
     "invalid policy"),
    ("spdadd 10.0.0.1 10.0.0.2 any -P out bypass;", 1, 33, "out bypass", "discard, none or ipsec"),
    ("spdadd 10.0.0.1 10.0.0.2 any -P out none;\nspdadd 10.0.0.1 10.0.0.2 any -P out discard;",
     2, 33, "out discard", "EEXIST"),
    ("spddelete 10.0.0.1 10.0.0.2 any -P out;", 1, 36, "out", "ENOENT"),
    ("spddelete 10.0.0.1 10.0.0.2 any -P sideways;", 1, 36, "sideways", "direction"),
    ("spdadd 10.0.0.1/33 10.0.0.2 any -P out none;", 1, 17, "33", "prefix length"),
    ("spdadd 10.0.0.1[http] 10.0.0.2 any -P out none;", 1, 17, "http", "port number"),
    ("spdadd 10.0.0.1 10.0.0.2 smtp -P out none;", 1, 26, "smtp", "upper-layer protocol"),
    ("spdadd 10.0.0.1 10.0.0.2 icmp6 1,999 -P out none;", 1, 32, "1,999", "type[,code]"),
    ("spdadd tagged \"x\" -P out none;", 1, 8, "tagged", "not supported"),
    ("spdadd 10.0.0.1 10.0.0.2 any -ctx 1 1 \"x\" -P out none;", 1, 30, "-ctx", "not supported"),
    ("deleteall 10.0.0.1 10.0.0.2;", 1, 28, ";", "expected a protocol"),
    ("flush everything;", 1, 7, "everything", "expected a protocol"),
    ("dump esp esp;", 1, 10, "esp", "expected ';'"),
    ("getspi 10.0.0.1 10.0.0.2 esp-udp 0;", 1, 26, "esp-udp", "esp or ah"),
]


@pytest.mark.parametrize(("script", "line", "column", "token", "fragment"), ERRORS)
def test_errors_name_line_column_and_token(
    script: str, line: int, column: int, token: str, fragment: str
) -> None:
    store, spd = MemoryStore(), SPD()
    with pytest.raises(SetkeyError) as info:
        setkey(script, sadb=store, spd=spd, now=NOW)
    err = info.value
    assert (err.line, err.column, err.token) == (line, column, token), str(err)
    assert fragment in err.message
    assert str(err).startswith(f"line {line}, column {column}: ")
    assert len(store) == 0
    assert len(spd) == 0


def test_getspi_of_a_taken_or_high_spi() -> None:
    store = MemoryStore()
    run("getspi 10.0.0.1 10.0.0.2 esp 0xfffffff0;", store)  # outside KAME's random range: fine
    with pytest.raises(SetkeyError, match="EEXIST"):
        run("getspi 10.0.0.1 10.0.0.2 esp 0xfffffff0;", store)


def test_quoted_key_that_is_not_utf8() -> None:
    with pytest.raises(SetkeyError, match="UTF-8") as info:
        run('add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 "\ud800bcdefghijklmnopqrs";')
    assert info.value.token == "<key>"


def test_check_script_only_parses() -> None:
    check_script(f"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 {GCM};"
                 "delete 10.0.0.1 10.0.0.2 esp 0x1000; delete 10.0.0.1 10.0.0.2 esp 0x1000;")
    with pytest.raises(SetkeyError):
        check_script("add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 0x00;")
    assert [c.verb for c in parse_script("spdflush; flush; dump;")] == ["spdflush", "flush",
                                                                        "dump"]


# --- all or nothing -------------------------------------------------------------------------


def _state(store: MemoryStore, spd: SPD) -> tuple[str, str]:
    return (run("dump;", store, spd, show_keys=True), run("spddump;", store, spd))


@pytest.mark.parametrize(
    "tail",
    [
        "add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 " + GCM + ";",  # duplicate vs store
        "delete 10.0.0.7 10.0.0.8 esp 0x1000;",  # missing SA
        "spdadd 10.0.0.1 10.0.0.2 any -P out none;",  # duplicate policy vs store
        "add 10.0.0.1 10.0.0.2 esp 0x3000 -E aes-gcm-16 0x00;",  # wrong key length
        "frobnicate;",  # syntax
    ],
)
def test_a_failing_script_changes_nothing(tail: str) -> None:
    store, spd = MemoryStore(), SPD()
    run(f"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 {GCM};"
        "spdadd 10.0.0.1 10.0.0.2 any -P out none;", store, spd)
    before = _state(store, spd)
    generation = spd.generation
    entry = store.lookup_inbound("10.0.0.2", "esp", 0x1000)
    script = f"""
    flush;
    spdflush;
    add 10.0.0.3 10.0.0.4 esp 0x2000 -E aes-gcm-16 {GCM};
    spdadd 10.0.0.3 10.0.0.4 any -P in none;
    getspi 10.0.0.3 10.0.0.4 ah 0x4444;
    add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 {GCM};
    spdadd 10.0.0.1 10.0.0.2 any -P out none;
    {tail}
    """
    with pytest.raises(SetkeyError):
        run(script, store, spd)
    assert _state(store, spd) == before
    assert spd.generation == generation
    assert store.lookup_inbound("10.0.0.2", "esp", 0x1000) is entry
    assert entry is not None
    assert entry.state is SAState.MATURE


# --- keys never leak ------------------------------------------------------------------------

SECRET = "c0ffee11c0ffee22c0ffee33c0ffee44"


def test_keys_absent_from_dumps_errors_and_reprs() -> None:
    store = MemoryStore()
    out = run(f"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-cbc 0x{SECRET} -A hmac-sha1 "
              f'"supersecretpassword1"; dump;', store)
    assert SECRET not in out
    assert "c0ffee" not in out
    assert "supersecret" not in out
    for bad in (
        f"add 10.0.0.1 10.0.0.2 esp 0x2000 -E aes-cbc 0x{SECRET}00;",
        'add 10.0.0.1 10.0.0.2 esp 0x2000 -E aes-cbc "supersecretpasswor";',
        f"add 10.0.0.1 10.0.0.2 esp 0x2000 -E aes-gcm-16 0x{SECRET}{SECRET};",
        f"add 10.0.0.1 10.0.0.2 esp 0x2000 -E aes-cbc -A 0x{SECRET};",
        (f"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-cbc 0x{SECRET} -A hmac-sha1 "
        '"supersecretpassword1";'),
    ):
        with pytest.raises(SetkeyError) as info:
            run(bad, store)
        text = f"{info.value} {info.value!r} {info.value.token} {info.value.__cause__!r}"
        assert "c0ffee" not in text, text
        assert "supersecret" not in text, text
    rec = store.get(ip_address("10.0.0.2"), "esp", 0x1000)
    assert rec is not None
    assert "c0ffee" not in repr(rec)
    assert "supersecret" not in repr(rec)
    entry = store.lookup_inbound("10.0.0.2", "esp", 0x1000)
    assert "c0ffee" not in repr(entry)
    assert "c0ffee" not in repr(entry.crypto if entry else None)


# --- fuzzing --------------------------------------------------------------------------------

_WORDS = [
    "add", "get", "delete", "deleteall", "flush", "dump", "spdadd", "spdupdate", "spddelete",
    "spdflush", "spddump", "getspi", "update", "esp", "ah", "esp-udp", "10.0.0.1", "10.0.0.2",
    "::1", "fe80::1", "0x1000", "4096", "0", "0x10000000", "0xffffffff", "255", "-E", "-A",
    "-m", "-r", "-u", "-f", "-S", "-ls", "-lh", "-bs", "-bh", "-4", "-P", "aes-gcm-16", "aes-cbc", "null", "hmac-sha1", "transport",
    "any", "esn", "align4", GCM, K16, K20, "out", "in", "ipsec", "none", "discard",
    "esp/transport//require", "udp", "icmp6", "135,0", "/", "[", "]", ";", "#", "\n", '"',
]


def _outcome(script: str) -> str | SetkeyError:
    """What setkey gives for ``script``: its output or its SetkeyError (anything else raises)."""
    try:
        return run(script)
    except SetkeyError as exc:
        return exc


def _check_outcome(result: str | SetkeyError, script: str) -> None:
    if isinstance(result, SetkeyError):
        lines = script.count("\n") + 1
        assert 1 <= result.line <= lines
        assert result.column >= 1
        assert str(result).startswith(f"line {result.line}, column {result.column}: ")
    else:
        assert isinstance(result, str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_WORDS), max_size=30))
def test_token_soup_gives_output_or_setkey_error(words: list[str]) -> None:
    script = " ".join(words)
    _check_outcome(_outcome(script), script)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_text_gives_output_or_setkey_error(text: str) -> None:
    _check_outcome(_outcome(text), text)


BIG = "9" * 5000  # CPython's int() refuses more than 4300 decimal digits with a bare ValueError


@pytest.mark.parametrize(
    ("script", "column", "fragment"),
    [
        (f"add 10.0.0.1 10.0.0.2 esp {BIG} -E null;", 27, "SPI of at most 0xffffffff"),
        (f"add 10.0.0.1 10.0.0.2 esp 4096 -r {BIG} -E null;", 35, "at most 4294967295"),
        (f"add 10.0.0.1 10.0.0.2 esp 4096 -S {BIG} -E null;", 35, "at most 18446744073709551615"),
        (f"spdadd 10.0.0.1[{BIG}] 10.0.0.2 any -P out none;", 17, "port number"),
        (f"spdadd 10.0.0.1/{BIG} 10.0.0.2 any -P out none;", 17, "prefix length"),
        (f"spdadd 10.0.0.1 10.0.0.2 {BIG} -P out none;", 26, "upper-layer protocol"),
        (f"spdadd 10.0.0.1 10.0.0.2 icmp6 {BIG},1 -P out none;", 32, "type[,code]"),
        (f"spdadd 10.0.0.1 10.0.0.2 icmp6 1,{BIG} -P out none;", 32, "type[,code]"),
    ],
)
def test_huge_numbers_are_setkey_errors(script: str, column: int, fragment: str) -> None:
    with pytest.raises(SetkeyError) as info:
        parse_script(script)
    assert (info.value.line, info.value.column) == (1, column)
    assert fragment in info.value.message


def test_icmp_type_and_code_are_ascii_digits() -> None:
    # "\u0661" is ARABIC-INDIC DIGIT ONE: \d and int() take it, setkey's grammar does not.
    with pytest.raises(SetkeyError, match="type"):
        parse_script("spdadd 10.0.0.1 10.0.0.2 icmp6 1,\u0661 -P out none;")
    (cmd,) = parse_script(f"spdadd 10.0.0.1 10.0.0.2 icmp6 {'0' * 5000}135,0 -P out none;")
    assert cmd.selector is not None
    assert (cmd.selector.sport, cmd.selector.dport) == (135, 0)


MISPLACED = "0x00112233445566778899aabbccddeeff0a0b0c0d"  # a 20-byte key in the wrong place


@pytest.mark.parametrize(
    "script",
    [
        f"add 10.0.0.1 10.0.0.2 esp {MISPLACED} -E aes-gcm-16 {GCM};",  # as the SPI
        f"add 10.0.0.1 10.0.0.2 esp 0x1000 -u {MISPLACED} -E aes-gcm-16 {GCM};",  # as -u
        f"add 10.0.0.1 10.0.0.2 esp 0x1000 -S {MISPLACED}{MISPLACED[2:]} -E aes-gcm-16 {GCM};",
        f"add 10.0.0.1 10.0.0.2 esp 0x1000 -E {MISPLACED};",  # as the algorithm name
        f"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-cbc {K16} -A {MISPLACED};",
        f"add 10.0.0.1 10.0.0.2 ah 0x1000 -A {MISPLACED} {MISPLACED};",
        f"spdadd 10.0.0.1 10.0.0.2 any -P out ipsec esp/transport/{MISPLACED}/require;",
        f"spdadd 10.0.0.1 10.0.0.2 any -P out ipsec esp/transport//{MISPLACED};",
        f"spdadd 10.0.0.1 10.0.0.2 any -P out prio {MISPLACED} ipsec;",
    ],
)
def test_a_misplaced_key_never_shows_in_the_error(script: str) -> None:
    value = int(MISPLACED, 16)
    with pytest.raises(SetkeyError) as info:
        run(script)
    err = info.value
    text = f"{err} {err!r} {err.token} {err.message} {getattr(err, '__notes__', '')}"
    assert MISPLACED[4:20] not in text.lower(), text
    assert str(value)[:12] not in text, text
    assert f"{value:x}"[:12] not in text.lower(), text
