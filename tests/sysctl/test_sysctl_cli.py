"""`secsock sysctl`, run in-process through the console script's main()."""

from __future__ import annotations

from pathlib import Path

import pytest

from secsock import sysctl
from secsock.cli.__main__ import main

V4 = "net.inet.ipsec."
V6 = "net.inet6.ipsec6."


def _lines(text: str) -> list[str]:
    return text.splitlines()


def test_dash_a_prints_every_variable(capsys: pytest.CaptureFixture[str]) -> None:
    sysctl.set(V4 + "esp_randpad", 48)
    assert main(["sysctl", "-a"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    expected = [f"{n}: {v}" for n, v in sysctl.snapshot().items()]
    assert _lines(out) == expected
    assert f"{V4}esp_randpad: 48" in _lines(out)
    assert len(expected) == len(sysctl.names())


def test_a_name_prints_name_and_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sysctl", V4 + "def_policy", V6 + "esp_randpad"]) == 0
    out, _ = capsys.readouterr()
    assert _lines(out) == [f"{V4}def_policy: 1", f"{V6}esp_randpad: -1"]


def test_n_prints_values_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sysctl", "-n", V4 + "ecn", V4 + "ecn=-1"]) == 0
    out, _ = capsys.readouterr()
    assert _lines(out) == ["0", "-1"]


def test_a_subtree_prints_its_variables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sysctl", "net.inet6.ipsec6"]) == 0
    out, _ = capsys.readouterr()
    names = [line.split(":")[0] for line in _lines(out)]
    assert names == [n for n in sysctl.names() if n.startswith(V6)]


def test_name_equals_value_sets_and_prints_old_and_new(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sysctl", f"{V4}def_policy=0", f"{V4}ah_offsetmask=0x4000"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert _lines(out) == [f"{V4}def_policy: 1 -> 0", f"{V4}ah_offsetmask: 0 -> 16384"]
    assert sysctl.get(V4 + "def_policy") == 0  # in this process


def test_errors_go_to_stderr_exit_1_and_other_arguments_still_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = main(["sysctl", f"{V4}def_policy=5", f"{V4}def_polcy", f"{V4}ecn=1"])
    assert rc == 1
    out, err = capsys.readouterr()
    assert _lines(out) == [f"{V4}ecn: 0 -> 1"]
    err_lines = _lines(err)
    assert len(err_lines) == 2
    assert "def_policy" in err_lines[0]
    assert "0 (discard) or 1 (none)" in err_lines[0]
    assert "did you mean net.inet.ipsec.def_policy" in err_lines[1]
    assert sysctl.get(V4 + "def_policy") == 1


def test_dash_f_loads_a_file_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "s.conf"
    conf.write_text("net.inet.ipsec.dfbit = 2\n", encoding="utf-8")
    assert main(["sysctl", "-f", str(conf), V4 + "dfbit"]) == 0
    out, _ = capsys.readouterr()
    assert _lines(out) == [f"{V4}dfbit: 2"]


def test_dash_f_with_a_bad_file_reports_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text("net.inet.ipsec.ecn = 1\nnet.inet.ipsec.dfbit = 3\n", encoding="utf-8")
    assert main(["sysctl", "-f", str(conf)]) == 1
    _, err = capsys.readouterr()
    assert f"{conf}:2:" in err
    assert sysctl.get(V4 + "ecn") == 0  # nothing from the bad file


def test_nothing_to_do_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sysctl"]) == 1
    _, err = capsys.readouterr()
    assert "nothing to do" in err


def test_a_broken_env_file_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "env.conf"
    conf.write_text("net.inet.ipsec.debug = -4\n", encoding="utf-8")
    monkeypatch.setenv(sysctl.ENV_VAR, str(conf))
    assert main(["sysctl", "-a"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{conf}:1:" in err
