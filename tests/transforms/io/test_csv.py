"""Tests for transforms.io.csv: what an unclosed quote costs."""

from __future__ import annotations

from tests.transforms.io.io_cases import (
    _read_directly,
)


def test_an_unclosed_csv_quote_costs_its_line_not_the_rows_after_it(tmp_path):
    (tmp_path / "q.csv").write_bytes(
        b'id,embedding,note\n'
        b'c1,"[1.0]",ok\n'
        b'c2,"[2.0]","never closed\n'  # line 3
        b'c3,"[3.0]",ok\n'
        b'c4,"[4.0]","two\nlines"\n'  # a quoted field may span lines when the record fits
        b'c5,"[5.0]",ok\n')
    batches, dead = _read_directly(str(tmp_path / "q.csv"), "csv")
    rows = [r for b in batches for r in b.rows]
    assert [r["id"] for r in rows] == ["c1", "c3", "c4", "c5"]
    assert rows[2]["note"] == "two\nlines"
    assert len(dead) == 1 and dead[0].error.startswith("line 3: a quoted field is not closed")
    assert dead[0].rows == 1 and "never closed" in dead[0].payload


def test_an_unclosed_quote_on_the_last_line_is_that_line_only(tmp_path):
    (tmp_path / "q.csv").write_bytes(b'id,embedding\nc1,"[1.0]"\nc2,"[2.0]\n')
    batches, dead = _read_directly(str(tmp_path / "q.csv"), "csv")
    assert [r["id"] for b in batches for r in b.rows] == ["c1"]
    assert [d.error[:7] for d in dead] == ["line 3:"]
