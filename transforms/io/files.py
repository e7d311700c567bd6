"""File plumbing the format modules share: opening a Beam file, binary lines, the read stage's dead
letter, and the rows of a pair batch.

What it does not do: parse or encode any format (one module per format beside this one).
"""

from __future__ import annotations

from typing import Any

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.common.dead_letters import DeadLetter, make_dead_letter
from transforms.common.schema import MATCH_COLUMNS, SCORE_COLUMNS, PairBatch, ScoredPairBatch

__all__ = ["STAGE", "open_for", "read_dead_letter", "WatchedFile", "binary_lines", "columns_of", "pair_rows"]



STAGE = "read"


def open_for(path: str, fmt: str):
    # parquet needs random access: never let Beam guess a decompressor for it.
    compression = CompressionTypes.UNCOMPRESSED if fmt == "parquet" else CompressionTypes.AUTO
    return FileSystems.open(path, compression_type=compression)


def read_dead_letter(error: str, payload: Any, source: str, rows: int = 1) -> DeadLetter:
    return make_dead_letter(STAGE, "", error, payload, source, rows=rows)


class WatchedFile:
    """A read-only view of a Beam file that remembers whether the file itself raised.

    pyarrow reports corrupt parquet (bad thrift, bad compression) as a plain ``OSError``, the same type
    as a real I/O failure. Corrupt data is a bad record (dead letter); an I/O failure must raise so the
    runner retries. Errors raised while this view was reading are the I/O ones.
    """

    def __init__(self, fh):
        self._fh = fh
        self.failed = False

    def _call(self, name: str, *args):
        try:
            return getattr(self._fh, name)(*args)
        except BaseException:
            self.failed = True
            raise

    def read(self, size: int = -1) -> bytes:
        return self._call("read", size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._call("seek", offset, whence)

    def tell(self) -> int:
        return self._call("tell")

    @property
    def closed(self) -> bool:
        return self._fh.closed


def binary_lines(fh):
    """Binary lines of a Beam file (``CompressedFile`` is not iterable, but has readline)."""
    return iter(fh.readline, b"")


def columns_of(pairs: PairBatch | ScoredPairBatch) -> tuple[str, ...]:
    return MATCH_COLUMNS + (SCORE_COLUMNS if isinstance(pairs, ScoredPairBatch) else ())


def pair_rows(pairs: PairBatch | ScoredPairBatch):
    """Rows as Python values (str, str, int, float[, float, float])."""
    tail = [c.tolist() for c in pairs[2:]]
    return zip(pairs.query_ids, pairs.candidate_ids, *tail, strict=True)
