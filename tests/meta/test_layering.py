"""The sans-IO core knows nothing of sockets, clocks or randomness.

secsock/core, secsock/policy and secsock/sadb are pure: randomness and time enter as
parameters at the engine. This test reads their source and rejects imports of the I/O and
clock modules and any call of os.urandom, so the rule cannot erode silently.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "secsock"
PURE_PACKAGES = ("core", "policy", "sadb")
FORBIDDEN_MODULES = {"socket", "asyncio", "anyio", "trio", "time", "random", "secrets", "selectors"}
# The pure layers may import each other and errors/constants, never the adapters.
FORBIDDEN_SECSOCK = {"secsock._socket", "secsock.asyncio", "secsock.anyio", "secsock.engine", "secsock.cli"}


def _pure_files() -> list[Path]:
    files: list[Path] = []
    for pkg in PURE_PACKAGES:
        files.extend(sorted((ROOT / pkg).rglob("*.py")))
    return files


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names = [node.module]
            if node.module == "os" and any(a.name == "urandom" for a in node.names):
                found.append(f"{path.name}:{node.lineno} imports os.urandom")
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in names:
                top = name.split(".")[0]
                if top in FORBIDDEN_MODULES:
                    found.append(f"{path.name}:{node.lineno} imports {name}")
                if any(name == m or name.startswith(m + ".") for m in FORBIDDEN_SECSOCK):
                    found.append(f"{path.name}:{node.lineno} imports adapter module {name}")
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "urandom"
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            found.append(f"{path.name}:{node.lineno} uses os.urandom")
    return found


def test_pure_layers_exist() -> None:
    assert len(_pure_files()) >= 3


@pytest.mark.parametrize("path", _pure_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_does_no_io(path: Path) -> None:
    assert _violations(path) == []


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import time\nimport os\nx = os.urandom(8)\nfrom secsock.engine import IPsecEngine\n"
        "from os import urandom\n"
    )
    found = _violations(bad)
    assert len(found) == 4
