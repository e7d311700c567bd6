"""Tests for transforms.io.parquet: corrupt footers and row groups, and the rows they cost."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.transforms.io.io_cases import (
    _pipeline,
    _read_directly,
)
from transforms.io.read_corpus import ReadCorpus


def _corrupt(data: bytes, pos: int, n: int = 20) -> bytes:
    out = bytearray(data)
    for k in range(n):
        out[pos + k] ^= 0x5A
    return bytes(out)


def test_corrupt_parquet_is_a_dead_letter_but_io_errors_raise(tmp_path, monkeypatch):
    import io as std_io
    import struct

    import transforms.io.parquet as tio

    table = pa.table({"id": [str(i) for i in range(600)]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=300)
    good = sink.getvalue().to_pybytes()
    footer_len = struct.unpack("<I", good[-8:-4])[0]
    (tmp_path / "footer.parquet").write_bytes(_corrupt(good, len(good) - 8 - footer_len + 10))
    (tmp_path / "page.parquet").write_bytes(_corrupt(good, 200))  # inside row group 0's data

    batches, dead = _read_directly(str(tmp_path / "footer.parquet"), "parquet")
    assert batches == [] and len(dead) == 1 and "not a valid parquet file" in dead[0].error

    batches, dead = _read_directly(str(tmp_path / "page.parquet"), "parquet")
    assert sum(len(b) for b in batches) == 300  # row group 1 is intact
    assert len(dead) == 1 and "corrupt parquet row group 0" in dead[0].error

    class _Flaky(std_io.BytesIO):
        def read(self, *args):
            raise ConnectionResetError(104, "connection reset")

    monkeypatch.setattr(tio, "open_for", lambda path, fmt: _Flaky(good))
    with pytest.raises(ConnectionResetError):
        _read_directly(str(tmp_path / "page.parquet"), "parquet")


def test_parquet_faults_count_the_rows_the_footer_gives_or_are_bad_files(tmp_path):
    table = pa.table({"id": [str(i) for i in range(600)]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=300)
    good = sink.getvalue().to_pybytes()
    (tmp_path / "page.parquet").write_bytes(_corrupt(good, 200))  # inside row group 0's data
    (tmp_path / "cut.parquet").write_bytes(good[: len(good) // 2])  # no footer
    batches, dead = _read_directly(str(tmp_path / "page.parquet"), "parquet")
    assert sum(len(b) for b in batches) == 300 and [d.rows for d in dead] == [300]
    batches, dead = _read_directly(str(tmp_path / "cut.parquet"), "parquet")
    assert batches == [] and [d.rows for d in dead] == [0]
    assert "row count is unknown" in dead[0].error

    p = _pipeline()
    result = p | ReadCorpus(file_pattern=str(tmp_path / "*.parquet"), input_format="auto", role="input")
    # 300 read + 300 lost in page.parquet, 1 for the file whose count is unknown.
    assert_that(result.rows_read, equal_to([601]))
    p.run().wait_until_finish()
