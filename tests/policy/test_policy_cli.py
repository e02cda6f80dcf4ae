"""``secsock policy parse|dump`` in-process."""

from __future__ import annotations

import socket

import pytest

from secsock.cli.__main__ import main


def test_parse_prints_hex_and_dump(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "parse", "out ipsec esp/transport//require"]) == 0
    out, err = capsys.readouterr()
    assert out == "030012000200020000000000000000000800320001020000\nout ipsec esp/transport//require\n"
    assert err == ""


def test_parse_linux_layout_and_delimiter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "parse", "in ipsec ah/transport//use esp/transport",
                 "--layout", "linux", "--delimiter", ";"]) == 0
    hexline, text = capsys.readouterr().out.splitlines()
    assert bytes.fromhex(hexline)[:2] == b"\x06\x00"  # 16 + 2 x 16 = 48 bytes = 6 units
    assert text == "in ipsec;ah/transport//use;esp/transport//default"


def test_parse_error_has_caret_and_status_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "parse", "out ipsec esp/tunnel//require"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == ("secsock policy parse: Invalid address specification at 'tunnel' "
                        "(column 15)")
    assert lines[1] == "  out ipsec esp/tunnel//require"
    assert lines[2] == "  " + " " * 14 + "^"
    assert lines[3] == "  expected src-dst addresses for tunnel mode, found none"


def test_parse_error_on_a_later_line_and_at_the_end(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "parse", "out ipsec\n\tesp/transport//"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "secsock policy parse: Invalid argument (column 27)"
    assert lines[1] == "  \tesp/transport//"
    assert lines[2] == "  \t" + " " * 15 + "^"
    assert "found the end of the text" in lines[3]


def test_parse_resolves_interface_names(capsys: pytest.CaptureFixture[str]) -> None:
    index, name = socket.if_nameindex()[0]
    if not name.isalnum():
        pytest.skip(f"interface name {name!r} is not a policy token")
    assert main(["policy", "parse", f"out ipsec esp/transport/fe80::1%{name}-fe80::2%{name}"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        f"out ipsec esp/transport/fe80::1%{index}-fe80::2%{index}/default"
    )
    assert main(["policy", "parse", "out ipsec esp/transport/fe80::1%nosuchif0-fe80::2"]) == 1
    assert "nosuchif0" in capsys.readouterr().err


def test_dump(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "dump", ("03 00 12 00 02 00 02 00 00 00 00 00 00 00 00 00"
                 " 08:00:32:00:01:02:00:00")]) == 0
    assert capsys.readouterr().out == "out ipsec esp/transport//require\n"
    linux = "0x0400120002000200000000000000000010003200010200000000000000000000"
    assert main(["policy", "dump", linux, "--layout", "linux"]) == 0
    assert capsys.readouterr().out == "out ipsec esp/transport//require\n"


def test_dump_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "dump", "03001z"]) == 1
    assert "hexadecimal" in capsys.readouterr().err
    assert main(["policy", "dump", "0300130002000200000000000000000008003200010200"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("secsock policy dump: Invalid extension type\n")
    assert "found 19" in err


def test_policy_without_action_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy"]) == 2
    assert "parse" in capsys.readouterr().err


def test_layout_choices_are_enforced(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["policy", "parse", "in none", "--layout", "kame"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
