"""Finds and drops repeated record ids: the first occurrence (smallest source file, then row) wins.

``FindDuplicateIds`` groups only ids and origins (by id hash, into ``id_buckets`` buckets), never the
vectors, and returns each repeated (id, origin) with the origin of the kept first occurrence; the
``drop_*`` helpers remove the named rows from a batch and make their dead letters (stage validate).
:func:`first_occurrences` / :func:`sort_and_dedupe` are the one definition of "first occurrence",
also used when a shard is assembled (``transforms.placement.place``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np

from transforms.common import metrics
from transforms.common.dead_letters import make_dead_letter
from transforms.common.schema import VectorBatch
from transforms.common.sharding import assign_shards, split_by_shard

__all__ = ["FindDuplicateIds", "DUPLICATE_ID_REASON", "id_buckets", "first_occurrences", "sort_and_dedupe",
           "drop_rows", "drop_duplicate_ids", "drop_indexed_ids"]

_LOGGER = logging.getLogger(__name__)


def _origin_key(origin: str) -> tuple[str, int]:
    source, _, row = origin.rpartition("#")
    return source, int(row) if row.isdigit() else -1


def first_occurrences(ids: np.ndarray, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orders rows by (id, source, row) and marks the first occurrence of each id.

    Returns the order (row positions), a bool mask over the ordered rows of those to keep, and for
    every ordered row the position (in the order) of the kept row with the same id.
    """
    from transforms.common.sharding import id_sort_keys

    (text,) = id_sort_keys(ids)  # int keys: no copy as wide as the longest id
    order = np.argsort(text, kind="stable")
    ordered = text[order]
    keep = np.ones(len(ordered), dtype=bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    if not keep.all():
        # Only rows of repeated ids need (source, row) order: re-sort those in the places they hold
        # (the places are in id order already, so the whole stays sorted by id).
        repeated = ~keep
        repeated[:-1] |= ~keep[1:]
        places = np.flatnonzero(repeated)
        rows = order[places]
        keys = [(text[r], *_origin_key(str(origins[r]))) for r in rows]
        order[places] = rows[sorted(range(len(rows)), key=keys.__getitem__)]
    kept_row = np.maximum.accumulate(np.where(keep, np.arange(len(ordered)), 0))
    return order.astype(np.int64), keep, kept_row


def sort_and_dedupe(batch: VectorBatch) -> tuple[VectorBatch, np.ndarray, np.ndarray]:
    """Sorts rows by (id, source, row) and marks the first occurrence of each id.

    Returns the sorted batch, a bool mask of rows to keep, and for every row the index (in the
    sorted batch) of the kept row with the same id.
    """
    order, keep, kept_row = first_occurrences(batch.ids, batch.origins)
    return VectorBatch(batch.ids[order], batch.vectors[order], batch.origins[order]), keep, kept_row


# Most records per id bucket when duplicate ids are looked for (ids and origins only, no vectors):
# one bucket stays a bounded share of a worker whatever the corpus size (4M ids ~ 1 GB of heap while
# sorted). With a shard count, there are at least as many buckets as shards, so a bucket holds no
# more ids than a shard holds vectors and the step's memory follows the shard size.
_IDS_PER_BUCKET = 4_000_000
DUPLICATE_ID_REASON = "duplicate id; the first occurrence at {} is kept"


def _ids_of(batch: VectorBatch) -> tuple[np.ndarray, np.ndarray, int]:
    # The vector length travels on: rows of another length than the job's are not indexed.
    return batch.ids, batch.origins, int(batch.vectors.shape[1])


class _KeyIdsFn(beam.DoFn):
    def process(self, part: tuple[np.ndarray, np.ndarray, int],
                num_buckets: int) -> Iterator[tuple[int, tuple]]:
        ids, origins, width = part
        if num_buckets == 1:
            yield 0, part
            return
        for bucket, rows in split_by_shard(assign_shards(ids, num_buckets), num_buckets):
            yield bucket, (ids[rows], origins[rows], width)


class _DuplicatesInBucketFn(beam.DoFn):
    def __init__(self):
        self._timer = metrics.StageTimer("duplicate_ids")

    def process(self, element: tuple[int, Iterable[tuple]],
                dims: int | None = None) -> Iterator[tuple[tuple[str, str], str]]:
        _, parts = element
        with self._timer:
            # Rows of the wrong length are dead-lettered by CheckDims; they never win an id.
            parts = [p for p in parts if len(p[0]) and (dims is None or p[2] == dims)]
            if not parts:
                return
            ids = np.concatenate([p[0] for p in parts])
            # The usual bucket: no id repeats (compared as first_occurrences compares them), so no
            # sort; a set is far cheaper.
            if len(set(ids.tolist())) == len(ids):
                return
            origins = np.concatenate([p[1] for p in parts])
            order, keep, kept_row = first_occurrences(ids, origins)
            found = [((str(ids[order[d]]), str(origins[order[d]])), str(origins[order[kept_row[d]]]))
                     for d in np.flatnonzero(~keep)]
        yield from found


def id_buckets(num_records: int, num_shards: int | None = None) -> int:
    """How many id buckets FindDuplicateIds groups ids into: one per _IDS_PER_BUCKET records, and at
    least one per shard."""
    return max(1, math.ceil(num_records / _IDS_PER_BUCKET), int(num_shards or 1))


class FindDuplicateIds(beam.PTransform):
    """VectorBatch -> ((id, origin), origin of the kept first occurrence) for every repeated id.

    Only ids and origins are grouped (by id hash), never the vectors, so finding duplicates costs a
    small fraction of moving the corpus; the result is as large as the number of duplicates and
    travels as a side input to the step that drops them (see ``DropDuplicateIds``).

    Args:
        num_records: singleton PCollection with the corpus size (sizes the number of id buckets).
        num_shards: optional singleton PCollection with the shard count: at least that many buckets.
        dims: optional singleton PCollection with the job's vector length: batches of another length
            take no part (CheckDims rejects them), so the input need not be dims-checked first.
    """

    def __init__(self, *, num_records: beam.PCollection, num_shards: beam.PCollection | None = None,
                 dims: beam.PCollection | None = None):
        super().__init__()
        self._num_records = num_records
        self._num_shards = num_shards
        self._dims = dims

    def expand(self, batches):
        if self._num_shards is None:
            buckets = self._num_records | "IdBuckets" >> beam.Map(id_buckets)
        else:
            buckets = self._num_records | "IdBuckets" >> beam.Map(
                id_buckets, num_shards=beam.pvalue.AsSingleton(self._num_shards))
        # Ids only, in a step without side inputs, so the runner fuses it into the step that made
        # the batches: the grouping step that follows decodes ids, not the whole batches.
        return (batches
                | "IdsOnly" >> beam.Map(_ids_of)
                | "KeyIds" >> beam.ParDo(_KeyIdsFn(), num_buckets=beam.pvalue.AsSingleton(buckets))
                | "GroupIds" >> beam.GroupByKey()
                | "Duplicates" >> (beam.ParDo(_DuplicatesInBucketFn()) if self._dims is None else
                                   beam.ParDo(_DuplicatesInBucketFn(),
                                              dims=beam.pvalue.AsSingleton(self._dims))))


def drop_rows(batch: VectorBatch, rows: list[int], reasons: list[str]) -> tuple[VectorBatch, list[Any]]:
    """Removes ``rows`` from ``batch``; returns the rest and a dead letter per row (stage validate)."""
    if not rows:
        return batch, []
    dead = [make_dead_letter("validate", batch.ids[r], reason, batch.vectors[r], batch.origins[r])
            for r, reason in zip(rows, reasons, strict=True)]
    keep = np.ones(len(batch), dtype=bool)
    keep[rows] = False
    return VectorBatch(batch.ids[keep], batch.vectors[keep], batch.origins[keep]), dead


def drop_duplicate_ids(batch: VectorBatch, duplicates: dict) -> tuple[VectorBatch, list[Any]]:
    """Removes the rows ``FindDuplicateIds`` named; returns the rest and a dead letter per row removed."""
    if not duplicates or not len(batch):
        return batch, []
    named = {rid for rid, _ in duplicates}
    maybe = np.flatnonzero(np.fromiter((str(i) in named for i in batch.ids), dtype=bool,
                                       count=len(batch)))
    drop = [int(r) for r in maybe if (str(batch.ids[r]), str(batch.origins[r])) in duplicates]
    return drop_rows(batch, drop, [DUPLICATE_ID_REASON.format(
        duplicates[(str(batch.ids[r]), str(batch.origins[r]))]) for r in drop])


def drop_indexed_ids(batch: VectorBatch, indexed: dict) -> tuple[VectorBatch, list[Any]]:
    """--append: removes rows whose id the kept index already holds (``indexed``: id -> where, from
    ``build.FindKeptIds``); returns the rest and a dead letter per row removed."""
    if not indexed or not len(batch):
        return batch, []
    drop = [int(r) for r in np.flatnonzero(np.fromiter(
        (str(i) in indexed for i in batch.ids), dtype=bool, count=len(batch)))]
    return drop_rows(batch, drop, [f"id is already in the kept index ({indexed[str(batch.ids[r])]}); "
                                   "--append adds new ids only" for r in drop])
