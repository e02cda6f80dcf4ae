"""benchmarks/bench_socket.py runs: blast and the per-step breakdown work on loopback and
deliver every datagram (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_socket.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("secsock_bench_socket", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", ["plain", "secsock"])
def test_blast_delivers_every_datagram(bench: ModuleType, kind: str) -> None:
    # recv() has a 5 s timeout in the benchmark: a lost datagram would raise TimeoutError
    assert bench.blast(kind, 64, 2 * bench.BATCH) > 0


def test_breakdown_times_every_step(bench: ModuleType) -> None:
    steps = bench.breakdown(64, rounds=1)
    names = [name.strip() for name, _ in steps]
    assert "engine.protect_one" in names
    assert "engine.receive_udp" in names
    assert all(ns > 0 for _, ns in steps)
