"""Element types that flow between the pipeline's stages, and shared constants.

Every hot-path element is a *batch*: numpy arrays of ids and vectors, never one vector per element
(Beam costs about 2 us per element plus coder work). Grouping keys are plain ints or strings.

This module holds types and constants only; it imports nothing heavy.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "DISTANCES",
    "INPUT_FORMATS",
    "OUTPUT_FORMATS",
    "MATCH_COLUMNS",
    "RawBatch",
    "VectorBatch",
    "SpilledRows",
    "FeatureBatch",
    "ShardIndexInfo",
    "NeighborBatch",
    "PairBatch",
    "ScoredPairBatch",
    "SCORE_COLUMNS",
    "Role",
]

DISTANCES = ("cosine", "dot", "squared_l2")
INPUT_FORMATS = ("auto", "jsonl", "csv", "parquet", "tfrecord")
OUTPUT_FORMATS = ("parquet", "jsonl", "csv", "tfrecord")
# Columns of every match file, in order.
MATCH_COLUMNS = ("query_id", "candidate_id", "rank", "distance")
# Columns the pairwise scorer (--scorer fields) adds after those.
SCORE_COLUMNS = ("match_weight", "match_probability")


class Role:
    """Which corpus a record came from (used in dead letters, metrics and labels)."""

    QUERIES = "queries"
    CANDIDATES = "candidates"
    INPUT = "input"  # dedup mode: one corpus plays both roles


class RawBatch(NamedTuple):
    """A chunk of rows as read from one file, before validation.

    Exactly one of ``table`` (parquet: a ``pyarrow.RecordBatch``) and ``rows`` (jsonl, csv, tfrecord:
    a list of dicts of already-decoded values) is set.

    Attributes:
        source: the file the rows came from.
        first_row: 0-based row number of the first row within ``source``.
        table: the rows as an Arrow record batch, or None.
        rows: the rows as dicts, or None.
    """

    source: str
    first_row: int
    table: Any = None
    rows: list | None = None

    def __len__(self) -> int:  # number of rows, not fields
        return self.table.num_rows if self.table is not None else len(self.rows)


class VectorBatch(NamedTuple):
    """Validated records with their vectors.

    Attributes:
        ids: object array of str, shape [n].
        vectors: float32 array, shape [n, d].
        origins: object array of str, shape [n]: ``"<file>#<row>"`` where each record was read; used to
            break ties deterministically (first occurrence wins on duplicate ids) and in dead letters.
    """

    ids: np.ndarray
    vectors: np.ndarray
    origins: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def __reduce__(self):  # string columns as Arrow buffers (see transforms.common.batch_pickle)
        from transforms.common.batch_pickle import reduce_columns

        return reduce_columns(self)


class SpilledRows(NamedTuple):
    """Rows of one shard whose vectors wait in a spill file (see ``transforms.placement.spill``).

    Attributes:
        ids: object array of str, shape [n].
        origins: object array of str, shape [n].
        path: a float32 ``.npy`` file (any Beam filesystem) holding the rows' vectors, in this order.
        dims: the vectors' length.
    """

    ids: np.ndarray
    origins: np.ndarray
    path: str
    dims: int

    def __len__(self) -> int:
        return len(self.ids)

    def __reduce__(self):  # string columns as Arrow buffers (see transforms.common.batch_pickle)
        from transforms.common.batch_pickle import reduce_columns

        return reduce_columns(self)


class FeatureBatch(NamedTuple):
    """Validated raw records to be embedded (when --text_fields/--numeric_fields are given).

    Attributes:
        ids: object array of str, shape [n].
        origins: object array of str, shape [n] (``"<file>#<row>"``).
        table: ``pyarrow.RecordBatch`` with one column per embedded field, in flag order: text fields
            as ``string`` (null = missing; bytes decoded as UTF-8 with replacement; values longer than
            ``MAX_TEXT_CHARS`` truncated), numeric fields as ``float64`` (null = missing).
    """

    ids: np.ndarray
    origins: np.ndarray
    table: Any

    def __len__(self) -> int:
        return len(self.ids)


MAX_TEXT_CHARS = 10_000


class ShardIndexInfo(NamedTuple):
    """Where one candidate shard's index lives and what it holds (the build step's output)."""

    shard: int
    path: str  # directory, local or any Beam filesystem (gs://, mem://)
    size: int
    kind: str  # 'scann' or 'exact'
    params: dict
    # A fresh token per build ('' for a shard kept from an earlier run): the process that built the
    # index hands it to its own searches under (path, build) instead of reloading it; never written
    # to the index manifest.
    build: str = ""


class NeighborBatch(NamedTuple):
    """Top-K neighbours of a batch of queries (from one shard, or merged across shards).

    Rows align with ``query_ids``. Unused slots (a shard with fewer than K vectors) have
    ``candidate_ids == ''`` and ``distances == inf``. Distances are exact, smaller is closer.
    """

    batch_key: str
    query_ids: np.ndarray  # object [n]
    candidate_ids: np.ndarray  # object [n, k]
    distances: np.ndarray  # float64 [n, k]

    def __reduce__(self):  # string columns as Arrow buffers (see transforms.common.batch_pickle)
        from transforms.common.batch_pickle import reduce_columns

        return reduce_columns(self)


class PairBatch(NamedTuple):
    """Rows of the match output as column arrays (flat, one row per pair)."""

    query_ids: np.ndarray  # object [m]
    candidate_ids: np.ndarray  # object [m]
    ranks: np.ndarray  # int64 [m], 1 = nearest
    distances: np.ndarray  # float64 [m]

    def __len__(self) -> int:
        return len(self.query_ids)

    def __reduce__(self):  # string columns as Arrow buffers (see transforms.common.batch_pickle)
        from transforms.common.batch_pickle import reduce_columns

        return reduce_columns(self)


class ScoredPairBatch(NamedTuple):
    """Scored match rows (``--scorer``): PairBatch's columns, then the Fellegi-Sunter score."""

    query_ids: np.ndarray  # object [m]
    candidate_ids: np.ndarray  # object [m]
    ranks: np.ndarray  # int64 [m]
    distances: np.ndarray  # float64 [m]
    match_weights: np.ndarray  # float64 [m]: log2 odds of a match
    match_probabilities: np.ndarray  # float64 [m]

    def __len__(self) -> int:
        return len(self.query_ids)

    def __reduce__(self):  # string columns as Arrow buffers (see transforms.common.batch_pickle)
        from transforms.common.batch_pickle import reduce_columns

        return reduce_columns(self)
