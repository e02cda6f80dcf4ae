"""The console script stops quietly when its reader has gone away (``secsock sysctl -a | head``)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_closed_pipe_gives_no_traceback() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte is written
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "secsock.cli.__main__", "sysctl", "-a"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert b"Traceback" not in proc.stderr
    assert b"BrokenPipeError" not in proc.stderr
    assert proc.returncode == 1
