"""benchmarks/bench_asyncio.py's stream floor does the work it claims (no timing asserted).

The floor (``--stream-floor``) is the yardstick docs/asyncio.md measures secure streams against,
so its frames must be the real wire format: a secsock stream receiver opens every one of them
and gets back exactly the bytes written, and every step moves every byte end to end.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from secsock.asyncio._channel import SecureStreamConnection
from secsock.asyncio._protector import StreamSecurity, stream_policy
from secsock.policy.model import Policy

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_asyncio.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("secsock_bench_asyncio", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("step", ["bare", "esp", "esp+sadb"])
def test_floor_frames_are_what_a_secure_stream_reads(bench: ModuleType, step: str) -> None:
    floor = bench._Floor(step)
    policy = stream_policy((Policy.parse("out ipsec esp/transport//require"),), floor.store)
    security = StreamSecurity(sadb=floor.store, policy=policy, local=(bench.B, 2),
                              peer=(bench.A, 1))
    receiver = SecureStreamConnection(security, local=(bench.B, 2), peer=(bench.A, 1),
                                      initiator=False)
    chunks = [os.urandom(64 * 1024) for _ in range(3)]
    wire = b"".join(floor.wire(c) for c in chunks)
    got = bytearray()
    for cut in range(0, len(wire), 100_000):  # reads that cut frames
        payloads, error = receiver.receive_data(wire[cut : cut + 100_000], now=0.0)
        assert error is None
        for p in payloads:
            got += p
    assert bytes(got) == b"".join(chunks)
    assert security.statistics().in_success == 6  # two frames per 64 KiB write


@pytest.mark.parametrize("step", ["bare", "esp", "esp+sadb"])
def test_every_floor_step_moves_every_byte(bench: ModuleType, step: str) -> None:
    # stream_floor_rate raises unless all bytes arrived through the floor's own receiver.
    assert asyncio.run(bench.stream_floor_rate(step, 2)) > 0


def test_the_ladder_reports_every_step(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    best = asyncio.run(bench.stream_floor(1, 1))
    assert list(best) == ["plain", "bare", "esp", "esp+sadb", "secure"]
    assert all(rate > 0 for rate in best.values())
    bench.print_stream_floor(best, "asyncio", 1)
    out = capsys.readouterr().out
    assert all(name in out for name in best)
