"""The public surface: what `import secsock` offers, and that the README tells the truth."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import secsock

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_all_names_exist_and_are_sorted_uniquely() -> None:
    missing = [name for name in secsock.__all__ if not hasattr(secsock, name)]
    assert missing == []
    assert len(set(secsock.__all__)) == len(secsock.__all__)


def test_issue_names_are_callables_not_shadowed_modules() -> None:
    # secsock.socket is the drop-in class, stats() and setkey() are functions, sysctl a module.
    import socket as stdlib_socket
    import types

    assert isinstance(secsock.socket, type)
    assert issubclass(secsock.socket, stdlib_socket.socket)
    assert callable(secsock.stats)
    assert not isinstance(secsock.stats, types.ModuleType)
    assert callable(secsock.setkey)
    assert not isinstance(secsock.setkey, types.ModuleType)
    assert isinstance(secsock.sysctl, types.ModuleType)
    assert callable(secsock.sysctl.get)


def test_ip_ipsec_policy_is_the_platforms_option() -> None:
    expected = {"linux": (16, 34), "freebsd": (21, 28), "darwin": (21, 28)}
    for prefix, values in expected.items():
        if sys.platform.startswith(prefix):
            assert values == (secsock.IP_IPSEC_POLICY, secsock.IPV6_IPSEC_POLICY)


def test_readme_python_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
    assert blocks, "README has no python example"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for block in blocks:
        proc = subprocess.run(
            [sys.executable, "-c", block],
            check=False, capture_output=True, text=True, timeout=60, env=env,
        )
        assert proc.returncode == 0, proc.stderr


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_test_command() -> None:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", section, flags=re.DOTALL)
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    main_job, test_command = commands
    assert main_job.endswith("secsock demo")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert f'"{test_command}"' in ci
