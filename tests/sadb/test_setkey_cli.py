"""``secsock setkey``: -f, -c, -n, -D, -DP, --show-keys and error reporting, run in-process."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from secsock.cli.__main__ import main

GCM = '"abcdefghijklmnopqrst"'
SCRIPT = f"""# one SA and one policy
add 10.0.0.1 10.0.0.2 esp 0x1000 -m transport -E aes-gcm-16 {GCM};
spdadd 10.0.0.1 10.0.0.2 udp -P out ipsec esp/transport//require;
get 10.0.0.1 10.0.0.2 esp 0x1000;
"""


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "script.conf"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_run_file_prints_what_the_script_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["setkey", "-f", _write(tmp_path, SCRIPT)]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    assert out.out.startswith("10.0.0.1 10.0.0.2\n\tesp mode=transport spi=4096(0x00001000)")
    assert "\tE: aes-gcm-16 (key hidden)\n" in out.out
    assert "61626364" not in out.out


def test_show_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["setkey", "--show-keys", "-f", _write(tmp_path, SCRIPT)]) == 0
    assert "\tE: aes-gcm-16  61626364 65666768 696a6b6c 6d6e6f70 71727374\n" in (
        capsys.readouterr().out
    )


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(SCRIPT + "dump ah;\n"))
    assert main(["setkey", "-c"]) == 0
    assert capsys.readouterr().out.endswith("No SAD entries.\n")


def test_dump_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, SCRIPT.replace("get 10.0.0.1 10.0.0.2 esp 0x1000;\n", ""))
    assert main(["setkey", "-f", path, "-D"]) == 0
    sad = capsys.readouterr().out
    assert sad.startswith("10.0.0.1 10.0.0.2\n")
    assert "sadb_seq=0 pid=" in sad
    assert main(["setkey", "-f", path, "-D", "-P"]) == 0
    spd = capsys.readouterr().out
    assert spd.startswith("10.0.0.1[any] 10.0.0.2[any] udp\n\tout ipsec\n")
    assert "\tspid=1 seq=0 pid=" in spd


def test_check_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # -n checks without a store: a delete of an SA the script never added is fine here
    path = _write(tmp_path, SCRIPT + "delete 10.0.0.1 10.0.0.2 esp 0x2000;\n")
    assert main(["setkey", "-n", "-f", path]) == 0
    assert capsys.readouterr().out == ""
    assert main(["setkey", "-f", path]) == 1
    err = capsys.readouterr().err
    assert err.startswith("line 5, column 30: delete failed (ESRCH)")


def test_errors_exit_1_with_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "flush;\nadd 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 0x0011;\n")
    for argv in (["setkey", "-n", "-f", path], ["setkey", "-f", path]):
        assert main(argv) == 1
        out = capsys.readouterr()
        assert out.out == ""
        assert out.err == (
            "line 2, column 48: aes-gcm-16 takes a 20, 28 or 36-byte key (key and 4-byte "
            "salt), got 2 bytes at [<key>]\n"
        )


def test_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["setkey", "-f", str(tmp_path / "missing.conf")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_a_source_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["setkey"])
    assert "-f" in capsys.readouterr().err
