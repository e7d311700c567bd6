"""Groups validated records into shards by a stable hash of their id, removing duplicate ids.

Every record of an id lands in the same shard, so a shard sees all copies of a duplicated id: the first
occurrence (smallest source file, then row) is kept and the others go to dead letters. A shard's rows
come out sorted by id, so what is built from them (an index, query batches) does not depend on the
order in which the runner delivered them. ``SplitQueryBatches`` cuts a shard's rows into query batches
with stable keys.

The number of shards can be a singleton PCollection (sized from the corpus in the pipeline: see
``transforms.placement.sizing``). Finding repeated ids without moving the vectors is
``transforms.placement.duplicate_ids``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms.common import metrics
from transforms.common.dead_letters import DEAD_LETTER_TAG, make_dead_letter
from transforms.common.schema import VectorBatch
from transforms.common.sharding import assign_shards, split_by_shard
from transforms.placement.duplicate_ids import DUPLICATE_ID_REASON, sort_and_dedupe

__all__ = ["ShardRecords", "ShardResult", "SplitQueryBatches", "concat_batches", "split_batch"]

_LOGGER = logging.getLogger(__name__)


class ShardResult(NamedTuple):
    shards: beam.PCollection  # (shard: int, VectorBatch) with all rows of the shard
    dead_letters: beam.PCollection


def concat_batches(parts: Iterable[VectorBatch]) -> VectorBatch | None:
    parts = [p for p in parts if len(p)]
    if not parts:
        return None
    return VectorBatch(ids=np.concatenate([p.ids for p in parts]),
                       vectors=np.concatenate([p.vectors for p in parts]),
                       origins=np.concatenate([p.origins for p in parts]))


def split_batch(batch: VectorBatch, shard_of: np.ndarray,
                num_shards: int) -> Iterator[tuple[int, VectorBatch]]:
    """(shard, the batch's rows of that shard) for every shard that has rows; row order is kept."""
    for shard, rows in split_by_shard(shard_of, num_shards):
        yield shard, VectorBatch(batch.ids[rows], batch.vectors[rows], batch.origins[rows])


class _SplitByShardFn(beam.DoFn):
    def process(self, batch: VectorBatch, num_shards: int) -> Iterator[tuple[int, VectorBatch]]:
        yield from split_batch(batch, assign_shards(batch.ids, num_shards), num_shards)


class _AssembleShardFn(beam.DoFn):
    def __init__(self, role: str):
        self._role = role
        self._dups = Metrics.counter(metrics.NAMESPACE, f"{role}_duplicate_ids")

    def process(self, element: tuple[int, Iterable[VectorBatch]]) -> Iterator[Any]:
        shard, parts = element
        whole = concat_batches(parts)
        if whole is None:
            return
        ordered, keep, kept_row = sort_and_dedupe(whole)
        for d in np.flatnonzero(~keep):
            self._dups.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, make_dead_letter(
                "validate", ordered.ids[d],
                DUPLICATE_ID_REASON.format(ordered.origins[kept_row[d]]),
                ordered.vectors[d], ordered.origins[d]))
        deduped = ordered if keep.all() else VectorBatch(
            ordered.ids[keep], ordered.vectors[keep], ordered.origins[keep])
        _LOGGER.info("%s shard %d: %d records, %d duplicate ids dropped", self._role, shard,
                     len(deduped), int((~keep).sum()))
        yield shard, deduped


class ShardRecords(beam.PTransform):
    """VectorBatch -> (shard, all of the shard's VectorBatch rows sorted by id, duplicates removed).

    Args:
        num_shards: a singleton PCollection holding the shard count.
        role: corpus role for metrics and logs.
    """

    def __init__(self, *, num_shards: beam.PCollection, role: str):
        super().__init__()
        self._num_shards = num_shards
        self._role = role

    def expand(self, batches):
        split = batches | "SplitByShard" >> beam.ParDo(
            _SplitByShardFn(), num_shards=beam.pvalue.AsSingleton(self._num_shards))
        out = (split
               | "GroupByShard" >> beam.GroupByKey()
               | "AssembleShard" >> beam.ParDo(_AssembleShardFn(self._role)).with_outputs(
                   DEAD_LETTER_TAG, main="shards"))
        return ShardResult(shards=out.shards, dead_letters=out[DEAD_LETTER_TAG])


class _SplitQueryBatchesFn(beam.DoFn):
    def __init__(self, batch_size: int, prefix: str):
        self._batch_size = batch_size
        self._prefix = prefix

    def process(self, element: tuple[int, VectorBatch]) -> Iterator[tuple[str, VectorBatch]]:
        shard, batch = element
        for chunk, start in enumerate(range(0, len(batch), self._batch_size)):
            sl = slice(start, start + self._batch_size)
            yield (f"{self._prefix}-{shard:05d}-{chunk:06d}",
                   VectorBatch(batch.ids[sl], batch.vectors[sl], batch.origins[sl]))


class SplitQueryBatches(beam.PTransform):
    """(shard, VectorBatch) -> (batch_key, VectorBatch of at most batch_size rows), keys stable."""

    def __init__(self, *, batch_size: int, prefix: str = "q"):
        super().__init__()
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._batch_size = batch_size
        self._prefix = prefix

    def expand(self, shards):
        return shards | "SplitQueryBatches" >> beam.ParDo(
            _SplitQueryBatchesFn(self._batch_size, self._prefix))
