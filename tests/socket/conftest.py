from __future__ import annotations

from collections.abc import Iterator

import pytest

from secsock.sadb.spd import SPD
from secsock.sadb.store import MemoryStore
from tests.socket.helpers import Sockets


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def spd() -> SPD:
    return SPD()


@pytest.fixture
def socks(store: MemoryStore, spd: SPD) -> Iterator[Sockets]:
    s = Sockets(store, spd)
    try:
        yield s
    finally:
        s.close()
