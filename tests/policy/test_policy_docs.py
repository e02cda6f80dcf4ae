"""The example and error tables of docs/policy.md are the grammar's test table, so the docs
cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from secsock import constants
from secsock.errors import PolicyError
from secsock.policy.libipsec import ipsec_dump_policy, ipsec_set_policy
from secsock.policy.model import parse_policy

DOC = Path(__file__).resolve().parents[2] / "docs" / "policy.md"
CELL = re.compile(r"`([^`]*)`")


def _rows(marker: str) -> list[list[str]]:
    text = DOC.read_text(encoding="utf-8")
    body = text.split(f"<!-- {marker} -->", 1)[1].split(f"<!-- /{marker} -->", 1)[0]
    rows = []
    for line in body.strip().splitlines()[2:]:  # skip header and |---|
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows.append(cells)
    return rows


def _code(cell: str) -> str:
    m = CELL.search(cell)
    assert m is not None, cell
    return m.group(1)


EXAMPLES = [(_code(a), _code(b)) for a, b in _rows("policy-examples")]
ERRORS = _rows("policy-errors")


def test_tables_are_found() -> None:
    assert len(EXAMPLES) >= 30
    assert len(ERRORS) >= 20


@pytest.mark.parametrize("layout", ["bsd", "linux"])
@pytest.mark.parametrize(("text", "canonical"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_dumps_to_canonical_text(text: str, canonical: str, layout: str) -> None:
    buf = ipsec_set_policy(text, layout)  # type: ignore[arg-type]
    assert ipsec_dump_policy(buf, None, layout) == canonical  # type: ignore[arg-type]
    assert parse_policy(text).to_text() == canonical
    # the canonical text is itself a fixed point with the same buffer
    assert ipsec_set_policy(canonical, layout) == buf  # type: ignore[arg-type]


@pytest.mark.parametrize("row", ERRORS, ids=[_code(r[0]) for r in ERRORS])
def test_error_table(row: list[str]) -> None:
    text_cell, code_cell, message, column, token_cell = row
    text = _code(text_cell)
    number, name = code_cell.split()[0], _code(code_cell)
    with pytest.raises(PolicyError) as info:
        ipsec_set_policy(text)
    exc = info.value
    assert exc.code == int(number) == getattr(constants, name)
    assert exc.message == message
    assert exc.column == int(column)
    assert exc.token == (None if token_cell == "(end)" else _code(token_cell))
    assert exc.text == text
    assert exc.__notes__
    assert "expected" in exc.__notes__[0]
