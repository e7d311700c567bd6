"""Builds one index per candidate shard and publishes it under ``DIR/indexes/``.

Each shard's rows arrive whole and sorted by id (``ShardRecords``). The index is built on local disk
(ScaNN serializes only to local directories), its id map written beside it, and the directory is
published through Beam FileSystems so ``gs://`` outputs work. Only the directory path (and a fresh
build token) travels on as a ``ShardIndexInfo``: ScaNN searchers do not pickle, so search workers load
them from there, except a search in the process that built the shard, which takes the index from
``transforms.index.shard_cache`` as it is.

Test hook (off by default): with ``CORPUS_MATCHER_TEST_PAUSE_BUILD_SECONDS`` set in a worker's
environment, each shard's build first sleeps that long, so a test can kill a run during the build
(tests/test_output_dir_e2e.py). Nothing else reads it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms.common import metrics, progress
from transforms.common.schema import ShardIndexInfo, VectorBatch
from transforms.common.sharding import str_array
from transforms.index.shard_files import save_ids, shard_dir_name

__all__ = ["BuildShardIndexes", "BuiltShards", "SAMPLE_TRUTH_TAG"]

_LOGGER = logging.getLogger(__name__)
# The test hook of the module docstring.
PAUSE_BUILD_ENV = "CORPUS_MATCHER_TEST_PAUSE_BUILD_SECONDS"


# --index auto: a shard is searched by brute force while (queries x shard vectors x dims) is at most
# this. bench/exact_crossover.py on this 2-core machine: the exact index (build + search) beat ScaNN
# (build + search, default or tuned) up to q*n of 1.2-1.6e8 at 192 dims (1e8-2.8e8 at 128), about
# 2-3 s of exact search; past that ScaNN wins more the larger the shard.
EXACT_MAX_WORK = 3e10


def auto_index_kind(shard_size: int, num_queries: int, dims: int,
                    max_work: float = EXACT_MAX_WORK) -> str:
    """'exact' when brute force over the shard costs at most ``max_work`` (q x n x d), else 'scann'."""
    return "exact" if float(shard_size) * max(num_queries, 1) * max(dims, 1) <= max_work else "scann"


# The tagged output of the build's per-shard exact audit truth (BuildShardIndexes(audit_sample=...)).
SAMPLE_TRUTH_TAG = "sample_truth"


class BuiltShards(NamedTuple):
    infos: beam.PCollection  # ShardIndexInfo, one per built shard
    sample_truth: beam.PCollection  # audit SampleTruth per shard (empty without audit_sample)


class _SampleTruthThread(threading.Thread):
    """The audit sample's exact top-K in one shard, computed beside the index build: ScaNN completes
    the index on one thread (and releases the GIL), so on two cores the brute force costs no wall
    time. Metrics are updated by the caller (Beam's metric context is per thread)."""

    def __init__(self, vectors: np.ndarray, ids: np.ndarray, *, distance: str, shard: int,
                 sample: VectorBatch, top_k: int, exclude_self: bool):
        super().__init__(name=f"audit-exact-shard-{shard}", daemon=True)
        self._args = (vectors, ids)
        self._kwargs = {"distance": distance, "shard": shard, "sample": sample, "top_k": top_k,
                        "exclude_self": exclude_self}
        self.truth = self.error = None
        self.seconds = 0.0

    def run(self) -> None:
        from transforms.index.sample_truth import shard_sample_truth

        start = time.perf_counter()
        try:
            self.truth = shard_sample_truth(*self._args, **self._kwargs)
        except BaseException as e:  # re-raised by the build's thread after join()
            self.error = e
        self.seconds = time.perf_counter() - start


class _BuildShardIndexFn(beam.DoFn):
    def __init__(self, *, output_dir: str, distance: str, kind: str, params_for, seed: int,
                 top_k: int | None = None, exclude_self: bool = False):
        self._output_dir = output_dir
        self._distance = distance
        self._kind = kind
        self._params_for = params_for
        self._seed = seed
        self._top_k = top_k
        self._exclude_self = exclude_self
        self._built = Metrics.counter(metrics.NAMESPACE, "shards_built")
        self._seconds = Metrics.distribution(metrics.NAMESPACE, "build_ms")
        self._truth_ms = Metrics.distribution(metrics.NAMESPACE, "audit_exact_search_ms")

    def process(self, element: tuple[int, VectorBatch], num_shards: int,
                gate: Any = None, num_queries: int | None = None,
                audit_sample: VectorBatch | None = None) -> Iterator[Any]:
        from transforms.common.artifacts import publish_dir, staging_dir_for
        from transforms.index.neighbor_index import build_index
        from transforms.index.shard_cache import LoadedShard, build_finished, build_started

        shard, batch = element
        if gate is not None and not gate.ok:
            # The run is failing (see WriteManifest); do not spend hours building. (A bare return:
            # Beam warns about "yield and return" in process() when a comment follows it.)
            return
        pause = float(os.environ.get(PAUSE_BUILD_ENV) or 0)
        if pause > 0:
            _LOGGER.warning("test hook %s: pausing %.1f s before building shard %d", PAUSE_BUILD_ENV,
                            pause, shard)
            time.sleep(pause)
        metrics.heap_watch_start()
        start = time.perf_counter()
        dest = f"{self._output_dir}/indexes/{shard_dir_name(shard, num_shards)}"
        build, built = uuid.uuid4().hex, None
        truth = None
        if audit_sample is not None:
            truth = _SampleTruthThread(batch.vectors, str_array(np.asarray(batch.ids, dtype=object)),
                                       distance=self._distance, shard=shard, sample=audit_sample,
                                       top_k=self._top_k, exclude_self=self._exclude_self)
            truth.start()
        build_started()
        try:
            kind = self._kind
            if kind == "auto":
                kind = auto_index_kind(len(batch), num_queries or len(batch), batch.vectors.shape[1])
            params = self._params_for(len(batch)) if kind == "scann" else {}
            index = build_index(batch.vectors, distance=self._distance, kind=kind, params=params,
                                seed=self._seed)
            ids = np.asarray(batch.ids, dtype=object)
            # Built beside dest when the output is local: publishing renames instead of copying.
            local = tempfile.mkdtemp(prefix=f".tmp-shard-{shard:05d}-", dir=staging_dir_for(dest))
            try:
                index.save(local)
                save_ids(local, ids)
                publish_dir(local, dest, move=True)
            finally:
                shutil.rmtree(local, ignore_errors=True)
            # The ids as load_shard reads them back, so a search here sees what a reload would give.
            built = LoadedShard(index, str_array(ids))
        finally:
            build_finished(dest, build, built)
            if truth is not None:
                truth.join()
        elapsed = time.perf_counter() - start
        self._built.inc()
        progress.set_total("built", num_shards)
        progress.add("built")
        self._seconds.update(int(elapsed * 1000))
        metrics.heap_watch_end("build")
        _LOGGER.info("built %s index for shard %d: %d vectors x %d dims in %.1f s (%.0f vectors/s)",
                     index.kind, shard, len(batch), batch.vectors.shape[1], elapsed,
                     len(batch) / max(elapsed, 1e-9))
        if truth is not None:
            if truth.error is not None:
                raise truth.error
            self._truth_ms.update(int(truth.seconds * 1000))
            _LOGGER.info("exact top-%d of %d audit sample queries in shard %d, beside its build, in "
                         "%.1f s", self._top_k, len(audit_sample), shard, truth.seconds)
            yield beam.pvalue.TaggedOutput(SAMPLE_TRUTH_TAG, truth.truth)
        yield ShardIndexInfo(shard=shard, path=dest, size=len(batch), kind=index.kind,
                             params=dict(index.params), build=build)


class BuildShardIndexes(beam.PTransform):
    """(shard, VectorBatch) -> BuiltShards: a ShardIndexInfo per published shard index and, with
    ``audit_sample``, the sample's exact top-K in each shard (what ``audit.ExactSampleTopK`` would
    compute from the published shard, merged by ``audit.MergeSampleTruth``), brute-forced beside the
    build instead of after it.

    Args:
        output_dir: the run's output directory; indices go to ``output_dir/indexes/shard-*``.
        distance: cosine, dot or squared_l2 (vectors are already prepared for it).
        kind: 'scann', 'exact', or 'auto' (per shard: exact while queries x vectors x dims is at
            most ``EXACT_MAX_WORK``, see :func:`auto_index_kind`; needs ``num_queries``).
        params_for: picklable callable shard_size -> ScannParams (see ``beam_jobs.config.scann_params``)
            or their dict.
        num_shards: singleton PCollection with the shard count (names the directories).
        gate: optional singleton GateVerdict (``transforms.run.gate``) that must be computed before any
            index is built; a failed verdict builds nothing.
        num_queries: singleton PCollection with the number of queries (kind 'auto').
        audit_sample: optional singleton VectorBatch (``audit.SampleQueries``); needs ``top_k``.
        top_k, exclude_self: the audit's K, and dedup mode (a query is not its own neighbour).
    """

    def __init__(self, *, output_dir: str, distance: str, kind: str, params_for, num_shards,  # noqa: PLR0913 - keyword-only composite settings
                 gate=None, seed: int = 0, num_queries=None, audit_sample=None,
                 top_k: int | None = None, exclude_self: bool = False):
        super().__init__()
        if kind not in ("scann", "exact", "auto"):
            raise ValueError(f"kind must be 'scann', 'exact' or 'auto', got {kind!r}")
        if kind == "auto" and num_queries is None:
            raise ValueError("kind 'auto' needs num_queries")
        if audit_sample is not None and not (isinstance(top_k, int) and top_k >= 1):
            raise ValueError(f"audit_sample needs top_k >= 1, got {top_k!r}")
        self._num_queries = num_queries
        self._audit_sample = audit_sample
        self._fn = _BuildShardIndexFn(output_dir=output_dir, distance=distance, kind=kind,
                                      params_for=params_for, seed=seed, top_k=top_k,
                                      exclude_self=exclude_self)
        self._num_shards = num_shards
        self._gate = gate

    def expand(self, shards):
        side = {"num_shards": beam.pvalue.AsSingleton(self._num_shards)}
        if self._gate is not None:
            side["gate"] = beam.pvalue.AsSingleton(self._gate)
        if self._num_queries is not None:
            side["num_queries"] = beam.pvalue.AsSingleton(self._num_queries)
        if self._audit_sample is not None:
            side["audit_sample"] = beam.pvalue.AsSingleton(self._audit_sample)
        # No Reshuffle: the shards come out of a GroupByKey, which already spreads them over
        # workers; a Reshuffle would move every shard's vectors through the shuffle once more.
        out = shards | "BuildIndex" >> beam.ParDo(self._fn, **side).with_outputs(
            SAMPLE_TRUTH_TAG, main="infos")
        return BuiltShards(infos=out.infos, sample_truth=out[SAMPLE_TRUTH_TAG])


