"""sysctl.conf-style files, the SECSOCK_SYSCTL environment variable and first-use loading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from secsock import sysctl

V4 = "net.inet.ipsec."
V6 = "net.inet6.ipsec6."


def _write(tmp_path: Path, text: str, name: str = "ipsec.conf") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_accepts_both_spellings_comments_and_blank_lines(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "# system defaults for the demo\n"
        "\n"
        "net.inet.ipsec.def_policy = 0\n"
        "net.inet.ipsec.esp_trans_deflev=2\n"
        "   net.inet6.ipsec6.ecn\t=\t-1   # trailing comment\n"
        "net.inet.ipsec.ah_offsetmask = 0x4000\n"
        "net.inet.ipsec.dfbit = 1\n"
        "net.inet.ipsec.dfbit = 2\n",  # a repeated name: the last one wins
    )
    gen = sysctl.generation()
    sysctl.load(path)
    assert sysctl.get(V4 + "def_policy") == 0
    assert sysctl.get(V4 + "esp_trans_deflev") == 2
    assert sysctl.get(V6 + "ecn") == -1
    assert sysctl.get(V4 + "ah_offsetmask") == 0x4000
    assert sysctl.get(V4 + "dfbit") == 2
    assert sysctl.get(V6 + "def_policy") == 1  # untouched
    assert sysctl.generation() != gen


def test_load_accepts_a_str_path(tmp_path: Path) -> None:
    sysctl.load(str(_write(tmp_path, "net.inet6.ipsec6.esp_randpad=256\n")))
    assert sysctl.get(V6 + "esp_randpad") == 256


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ("net.inet.ipsec.def_policy = 2", "0 (discard) or 1 (none)"),
        ("net.inet.ipsec.def_polcy = 0", "did you mean net.inet.ipsec.def_policy"),
        ("net.inet.ipsec.def_policy 0", "expected 'name = value'"),
        ("net.inet.ipsec.def_policy =", "expected a value"),
        ("= 1", "expected 'name = value'"),
        ("net.inet.ipsec.debug = one", "expected a decimal or 0x-hexadecimal integer"),
        ("net.inet6.ipsec6.dfbit = 1", "unknown sysctl"),
    ],
)
def test_a_bad_line_names_file_and_line_and_changes_nothing(
    tmp_path: Path, bad_line: str, fragment: str
) -> None:
    path = _write(
        tmp_path,
        f"net.inet.ipsec.debug = 0\n# comment\nnet.inet.ipsec.ecn = 1\n\n{bad_line}\n"
        "net.inet.ipsec.dfbit = 2\n",
    )
    sysctl.set(V4 + "esp_randpad", 100)
    before = dict(sysctl.snapshot())
    gen = sysctl.generation()
    with pytest.raises(sysctl.SysctlError) as info:
        sysctl.load(path)
    err = info.value
    assert err.path == str(path)
    assert err.line == 5
    assert str(err).startswith(f"{path}:5: ")
    assert fragment in str(err)
    # the good line 3 before the bad one was not applied either
    assert dict(sysctl.snapshot()) == before
    assert sysctl.generation() == gen


def test_an_unreadable_file_is_a_sysctl_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.conf"
    with pytest.raises(sysctl.SysctlError) as info:
        sysctl.load(missing)
    assert str(missing) in str(info.value)
    assert "cannot read" in str(info.value)
    assert info.value.line is None


def test_a_file_that_is_not_utf8_is_a_sysctl_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.conf"
    path.write_bytes(b"net.inet.ipsec.debug = 1 # caf\xe9\n")
    with pytest.raises(sysctl.SysctlError, match="cannot read"):
        sysctl.load(path)
    assert sysctl.get(V4 + "debug") == 0


# --- SECSOCK_SYSCTL -------------------------------------------------------------------------


def test_env_file_is_applied_on_first_get(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "net.inet.ipsec.def_policy = 0\nnet.inet6.ipsec6.debug = 0\n")
    monkeypatch.setenv(sysctl.ENV_VAR, str(path))
    assert sysctl.get(V4 + "def_policy") == 0
    # read once: later edits of the file do not leak in
    path.write_text("net.inet.ipsec.def_policy = 1\n", encoding="utf-8")
    assert sysctl.get(V4 + "def_policy") == 0


@pytest.mark.parametrize("first_use", ["get", "set", "names", "snapshot", "debug_enabled"])
def test_each_first_use_reads_the_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_use: str
) -> None:
    path = _write(tmp_path, "net.inet.ipsec.ecn = 1\nnet.inet.ipsec.esp_randpad = 32\n")
    monkeypatch.setenv(sysctl.ENV_VAR, str(path))
    if first_use == "get":
        sysctl.get(V4 + "debug")
    elif first_use == "set":
        sysctl.set(V4 + "esp_randpad", 64)  # applied after the file: the explicit call wins
    elif first_use == "names":
        sysctl.names()
    elif first_use == "snapshot":
        sysctl.snapshot()
    else:
        sysctl.debug_enabled()
    assert sysctl.snapshot()[V4 + "ecn"] == 1
    assert sysctl.get(V4 + "esp_randpad") == (64 if first_use == "set" else 32)


def test_a_broken_env_file_raises_on_first_use_and_until_fixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "net.inet.ipsec.def_policy = 0\nnet.inet.ipsec.def_policy = 7\n")
    monkeypatch.setenv(sysctl.ENV_VAR, str(path))
    for _ in range(2):  # failing closed: a broken file never degrades into silent defaults
        with pytest.raises(sysctl.SysctlError) as info:
            sysctl.get(V4 + "def_policy")
        assert info.value.line == 2
        assert str(path) in str(info.value)
    with pytest.raises(sysctl.SysctlError):
        sysctl.set(V4 + "debug", 1)
    path.write_text("net.inet.ipsec.def_policy = 0\n", encoding="utf-8")
    assert sysctl.get(V4 + "def_policy") == 0


def test_a_missing_env_file_raises_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sysctl.ENV_VAR, str(tmp_path / "nope.conf"))
    with pytest.raises(sysctl.SysctlError, match=re.escape("nope.conf: cannot read")):
        sysctl.names()


def test_an_empty_env_var_means_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sysctl.ENV_VAR, "")
    assert sysctl.get(V4 + "def_policy") == 1


def test_load_applies_the_env_file_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _write(tmp_path, "net.inet.ipsec.ecn = 1\nnet.inet.ipsec.dfbit = 1\n", "env.conf")
    explicit = _write(tmp_path, "net.inet.ipsec.dfbit = 2\n", "explicit.conf")
    monkeypatch.setenv(sysctl.ENV_VAR, str(env))
    sysctl.load(explicit)
    assert sysctl.get(V4 + "ecn") == 1
    assert sysctl.get(V4 + "dfbit") == 2


def test_reset_does_not_reread_the_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "net.inet.ipsec.def_policy = 0\n")
    monkeypatch.setenv(sysctl.ENV_VAR, str(path))
    assert sysctl.get(V4 + "def_policy") == 0
    sysctl.reset()
    assert sysctl.get(V4 + "def_policy") == 1


def test_a_huge_number_in_a_file_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "net.inet.ipsec.ecn = 1\nnet.inet.ipsec.debug = " + "9" * 5000 + "\n")
    with pytest.raises(sysctl.SysctlError) as info:
        sysctl.load(path)
    assert (info.value.path, info.value.line) == (str(path), 2)
    assert sysctl.get(V4 + "ecn") == 0
