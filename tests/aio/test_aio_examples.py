"""The asyncio and anyio examples run to completion (in-process, through their main())."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"secsock_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv", [["--count", "2"], ["--count", "1", "--uvloop"]])
def test_asyncio_echo(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _load("asyncio_echo").main(argv) == 0
    out = capsys.readouterr().out
    assert "datagram echo: datagram 0" in out
    assert "stream echo: LINE 0" in out
    assert "auth-failed" in out
    assert out.rstrip().endswith("OK")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_anyio_chat(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _load("anyio_chat").main(["--backend", backend]) == 0
    out = capsys.readouterr().out
    assert "bob heard  alice: hello" in out
    assert "alice heard  bob: fine, thanks" in out
    assert "outbound SPI 0x00006001" in out
    assert out.rstrip().endswith("OK")
