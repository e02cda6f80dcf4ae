from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from secsock import sysctl


@pytest.fixture(autouse=True)
def _fresh_sysctl(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts from the import state (defaults, env file not read) with no env file."""
    monkeypatch.delenv(sysctl.ENV_VAR, raising=False)
    sysctl._reset_for_tests()
    yield
    sysctl._reset_for_tests()
    logging.getLogger("secsock").setLevel(logging.NOTSET)
