"""Parquet: read one row group of an input file as RawBatches, and encode match rows with the pinned
writer options (the same rows give the same bytes).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from transforms.common.schema import PairBatch, RawBatch, ScoredPairBatch
from transforms.io.files import WatchedFile, open_for, read_dead_letter

__all__ = ["MATCH_SCHEMA", "SCORED_SCHEMA", "PARQUET_OPTIONS", "read_parquet", "encode_parquet"]



MATCH_SCHEMA = pa.schema([
    pa.field("query_id", pa.string(), nullable=False),
    pa.field("candidate_id", pa.string(), nullable=False),
    pa.field("rank", pa.int64(), nullable=False),
    pa.field("distance", pa.float64(), nullable=False),
])


SCORED_SCHEMA = pa.schema(list(MATCH_SCHEMA) + [
    pa.field("match_weight", pa.float64(), nullable=False),
    pa.field("match_probability", pa.float64(), nullable=False),
])


# Every writer option is pinned: the same rows must give the same bytes (with the same pyarrow, whose
# version is recorded in the file's created_by field).
PARQUET_OPTIONS = {
    "row_group_size": 1 << 20,
    "version": "2.6",
    "data_page_version": "1.0",
    "compression": "snappy",
    "use_dictionary": True,
    "write_statistics": True,
    "write_page_index": False,
    "write_page_checksum": False,
    "store_schema": True,
}


def read_parquet(path: str, row_group: int, first_row: int, batch_size: int, rows: int = -1):
    """RawBatches of one row group; a corrupt row group is one dead letter for every row of it not
    read (``rows``, the footer's count; at least 1)."""
    start = first_row
    with open_for(path, "parquet") as fh:
        watched = WatchedFile(fh)
        error = None
        try:
            for table in pq.ParquetFile(watched).iter_batches(batch_size=batch_size,
                                                              row_groups=[row_group]):
                yield RawBatch(source=path, first_row=first_row, table=table)
                first_row += table.num_rows
        except OSError as e:
            if watched.failed:
                raise
            error = e
        except pa.ArrowInvalid as e:
            error = e
        if error is not None:
            lost = max(1, rows - (first_row - start)) if rows >= 0 else 1
            yield read_dead_letter(f"corrupt parquet row group {row_group} from row {first_row} "
                                    f"({lost} rows lost): {error}", f"row group {row_group}", path,
                                    rows=lost)


def encode_parquet(pairs: PairBatch) -> bytes:
    scored = isinstance(pairs, ScoredPairBatch)
    arrays = [pa.array(pairs.query_ids, pa.string()), pa.array(pairs.candidate_ids, pa.string()),
              pa.array(pairs.ranks, pa.int64()), pa.array(pairs.distances, pa.float64())]
    if scored:
        arrays += [pa.array(pairs.match_weights, pa.float64()),
                   pa.array(pairs.match_probabilities, pa.float64())]
    table = pa.Table.from_arrays(arrays, schema=SCORED_SCHEMA if scored else MATCH_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_OPTIONS)
    return sink.getvalue().to_pybytes()
