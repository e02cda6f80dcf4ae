"""benchmarks/bench_codec.py measures what it says: every benchmark function runs, the floor
builds the same packets as ``seal``, and the round statistics are ordered (no timing asserted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_codec.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("secsock_bench_codec", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("size", [0, 1, 64, 1400])
def test_every_pair_runs(bench: ModuleType, size: int) -> None:
    pairs = [bench.aead_pair(name, size) for name in ("aes-gcm-16", "chacha20-poly1305")]
    pairs += [bench.cbc_hmac_pair(size), bench.floor_pair(size)]
    for esp, bare in pairs:
        for i in range(3):
            esp(i)
            bare(i)


def test_floor_checks_itself_against_seal(bench: ModuleType,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real_seal = bench.seal

    def other_seal(ctx: object, **kw: object) -> bytes:
        packet: bytes = real_seal(ctx, **kw)
        return packet[:-1] + bytes((packet[-1] ^ 1,))

    monkeypatch.setattr(bench, "seal", other_seal)
    with pytest.raises(AssertionError, match="packet seal builds"):
        bench.floor_pair(64)


def test_compare_statistics_are_ordered(bench: ModuleType) -> None:
    calls = {"esp": 0, "bare": 0}

    def esp(i: int) -> None:
        calls["esp"] += 1

    def bare(i: int) -> None:
        calls["bare"] += 1

    result = bench.compare(esp, bare, 0.002, 5)
    assert result.esp > 0
    assert result.bare > 0
    assert result.low <= result.ratio <= result.high
    assert calls["esp"] > 5
    assert calls["bare"] > 5
