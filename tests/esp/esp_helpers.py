"""Shared helpers for the ESP/algorithm/replay tests: vector loading and SA combinations."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Final

from secsock.core.algorithms import (
    AUTH_ALGORITHMS,
    ENCRYPTION_ALGORITHMS,
    AuthAlgorithm,
    EncryptionAlgorithm,
    check_combination,
)
from secsock.core.esp import EspContext
from secsock.errors import AlgorithmError

VECTOR_DIR: Final = Path(__file__).parent / "vectors"


def load_vectors(name: str) -> list[dict[str, Any]]:
    """The ``vectors`` list of one JSON file in tests/esp/vectors."""
    with (VECTOR_DIR / name).open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    vectors: list[dict[str, Any]] = data["vectors"]
    return vectors


def valid_combinations() -> list[tuple[str, str | None]]:
    """Every (encryption, integrity-or-None) pair the registry accepts for ESP."""
    out: list[tuple[str, str | None]] = []
    auths: list[AuthAlgorithm | None] = [None, *AUTH_ALGORITHMS.values()]
    for enc in ENCRYPTION_ALGORITHMS.values():
        for auth in auths:
            try:
                check_combination(enc, auth)
            except AlgorithmError:
                continue
            out.append((enc.name, None if auth is None else auth.name))
    return out


def make_context(
    enc: EncryptionAlgorithm,
    auth: AuthAlgorithm | None,
    *,
    seed: int = 0,
    enc_key_len: int | None = None,
) -> tuple[EspContext, bytes, bytes | None]:
    """An EspContext with deterministic pseudo-random keys; returns (ctx, enc_key, auth_key)."""
    rnd = random.Random(seed)
    key_len = enc.key_sizes[-1] if enc_key_len is None else enc_key_len
    enc_key = rnd.randbytes(key_len)
    auth_key = None if auth is None else rnd.randbytes(auth.key_sizes[-1])
    ctx = EspContext.create(enc=enc, enc_key=enc_key, auth=auth, auth_key=auth_key)
    return ctx, enc_key, auth_key
