"""Builds one index per candidate shard and publishes it under ``DIR/indexes/``.

Each shard's rows arrive whole and sorted by id (``ShardRecords``). The index is built on local disk
(ScaNN serializes only to local directories), its id map written beside it, and the directory is
published through Beam FileSystems so ``gs://`` outputs work. Only the directory path travels on as a
``ShardIndexInfo``: ScaNN searchers do not pickle, so search workers load them from there.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms import metrics
from transforms.schema import ShardIndexInfo, VectorBatch

__all__ = ["BuildShardIndexes", "shard_dir_name", "IDS_FILE"]

_LOGGER = logging.getLogger(__name__)
IDS_FILE = "ids.npy"


def shard_dir_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}"


class _BuildShardIndexFn(beam.DoFn):
    def __init__(self, *, output_dir: str, distance: str, kind: str, params_for, seed: int):
        self._output_dir = output_dir
        self._distance = distance
        self._kind = kind
        self._params_for = params_for
        self._seed = seed
        self._built = Metrics.counter(metrics.NAMESPACE, "shards_built")
        self._seconds = Metrics.distribution(metrics.NAMESPACE, "build_ms")

    def process(self, element: tuple[int, VectorBatch], num_shards: int,
                gate: Any = None) -> Iterator[ShardIndexInfo]:
        from transforms.artifacts import publish_dir
        from transforms.index import build_index

        shard, batch = element
        if gate is not None and not gate["ok"]:
            return  # the run is failing (see WriteManifest); do not spend hours building
        start = time.perf_counter()
        params = self._params_for(len(batch))
        index = build_index(batch.vectors, distance=self._distance, kind=self._kind, params=params,
                            seed=self._seed)
        dest = f"{self._output_dir}/indexes/{shard_dir_name(shard, num_shards)}"
        local = tempfile.mkdtemp(prefix=f"shard-{shard:05d}-")
        try:
            index.save(local)
            # Fixed-width unicode, so np.load needs no pickle.
            np.save(os.path.join(local, IDS_FILE), batch.ids.astype(str), allow_pickle=False)
            publish_dir(local, dest)
        finally:
            shutil.rmtree(local, ignore_errors=True)
        elapsed = time.perf_counter() - start
        self._built.inc()
        self._seconds.update(int(elapsed * 1000))
        _LOGGER.info("built %s index for shard %d: %d vectors x %d dims in %.1f s (%.0f vectors/s)",
                     index.kind, shard, len(batch), batch.vectors.shape[1], elapsed,
                     len(batch) / max(elapsed, 1e-9))
        yield ShardIndexInfo(shard=shard, path=dest, size=len(batch), kind=index.kind,
                             params=dict(index.params))


class BuildShardIndexes(beam.PTransform):
    """(shard, VectorBatch) -> ShardIndexInfo, one index published per shard.

    Args:
        output_dir: the run's output directory; indices go to ``output_dir/indexes/shard-*``.
        distance: cosine, dot or squared_l2 (vectors are already prepared for it).
        kind: 'scann' or 'exact'.
        params_for: picklable callable shard_size -> index params (see config.scann_params_for).
        num_shards: singleton PCollection with the shard count (names the directories).
        gate: optional singleton PCollection that must be computed (e.g. the bad-record check)
            before any index is built.
    """

    def __init__(self, *, output_dir: str, distance: str, kind: str, params_for, num_shards,
                 gate=None, seed: int = 0):
        super().__init__()
        if kind not in ("scann", "exact"):
            raise ValueError(f"kind must be 'scann' or 'exact', got {kind!r}")
        self._fn = _BuildShardIndexFn(output_dir=output_dir, distance=distance, kind=kind,
                                      params_for=params_for, seed=seed)
        self._num_shards = num_shards
        self._gate = gate

    def expand(self, shards):
        side = {"num_shards": beam.pvalue.AsSingleton(self._num_shards)}
        if self._gate is not None:
            side["gate"] = beam.pvalue.AsSingleton(self._gate)
        # Reshuffle so shards build in parallel on different workers.
        return (shards
                | "SpreadShards" >> beam.Reshuffle()
                | "BuildIndex" >> beam.ParDo(self._fn, **side))
