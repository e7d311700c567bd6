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
from transforms.common.sharding import id_sort_keys, str_array

__all__ = ["BuildShardIndexes", "BuiltShards", "SAMPLE_TRUTH_TAG", "WriteIndexManifest",
           "MergeWithKeptShards", "CombineWithKeptShards",
           "FindKeptIds", "read_shard_ids",
           "read_index_manifest", "shard_dir_name", "IDS_FILE", "IDS_UTF8_FILE", "IDS_OFFSETS_FILE",
           "save_ids", "load_ids"]

_LOGGER = logging.getLogger(__name__)
# A shard's id map: the ids' UTF-8 bytes (uint8) and int64 offsets [n + 1] into them, both loaded
# without pickle; each row costs its own id's bytes. Indexes written before hold ``ids.npy``, a
# fixed-width unicode array (every row as wide as the longest id), still read.
IDS_UTF8_FILE = "ids_utf8.npy"
IDS_OFFSETS_FILE = "ids_offsets.npy"
IDS_FILE = "ids.npy"
# The test hook of the module docstring.
PAUSE_BUILD_ENV = "CORPUS_MATCHER_TEST_PAUSE_BUILD_SECONDS"


def save_ids(local_dir: str, ids: np.ndarray) -> None:
    """Writes an id map (``IDS_UTF8_FILE`` + ``IDS_OFFSETS_FILE``) to a local directory."""
    import pyarrow as pa

    arr = pa.array(np.asarray(ids, dtype=object), type=pa.large_string())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[:len(arr) + 1]
    data = arr.buffers()[2]
    data = (np.frombuffer(data, dtype=np.uint8)[:int(offsets[-1])] if data is not None
            else np.zeros(0, dtype=np.uint8))
    np.save(os.path.join(local_dir, IDS_UTF8_FILE), data, allow_pickle=False)
    np.save(os.path.join(local_dir, IDS_OFFSETS_FILE), offsets, allow_pickle=False)


def load_ids(read: Any) -> np.ndarray:
    """An id map as an object array of str. ``read(name)`` returns a file of the shard's directory
    as bytes, or None when it has no such file (then the older ``ids.npy`` is read)."""
    import io

    import pyarrow as pa

    offsets = read(IDS_OFFSETS_FILE)
    if offsets is None:
        return np.load(io.BytesIO(read(IDS_FILE)), allow_pickle=False).astype(object)
    offsets = np.load(io.BytesIO(offsets), allow_pickle=False)
    data = np.load(io.BytesIO(read(IDS_UTF8_FILE)), allow_pickle=False)
    n = len(offsets) - 1
    arr = pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    return arr.to_numpy(zero_copy_only=False).astype(object, copy=False)


def shard_dir_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}"


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
        from transforms.quality.audit import shard_sample_truth

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
        if gate is not None and not gate["ok"]:
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
        params_for: picklable callable shard_size -> ScaNN params (see config.scann_params_for).
        num_shards: singleton PCollection with the shard count (names the directories).
        gate: optional singleton PCollection that must be computed (e.g. the bad-record check)
            before any index is built.
        num_queries: singleton PCollection with the number of queries (kind 'auto').
        audit_sample: optional singleton VectorBatch (``audit.SampleQueries``); needs ``top_k``.
        top_k, exclude_self: the audit's K, and dedup mode (a query is not its own neighbour).
    """

    def __init__(self, *, output_dir: str, distance: str, kind: str, params_for, num_shards,
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


INDEX_MANIFEST = "index_manifest.json"
CENTROIDS_FILE = "routing_centroids.npy"


def index_manifest_path(index_root: str) -> str:
    return f"{index_root.rstrip('/')}/{INDEX_MANIFEST}"


class _WriteIndexManifestFn(beam.DoFn):
    def __init__(self, index_root: str, static: dict[str, Any]):
        self._root = index_root.rstrip("/")
        self._static = static

    def process(self, _: Any, shards: list[ShardIndexInfo], dims: int, plan: Any = None):
        import io
        import json

        from transforms.common.artifacts import write_bytes, write_text

        manifest = dict(self._static)
        manifest["dims"] = int(dims)
        manifest["shards"] = [{k: v for k, v in s._asdict().items() if k != "build"}
                              for s in sorted(shards, key=lambda s: s.shard)]
        manifest["candidates_indexed"] = sum(s.size for s in shards)
        if plan is not None:
            manifest["routing"] = plan.to_dict() | {"distance": plan.distance}
            if plan.kind == "centroids":
                buf = io.BytesIO()
                np.save(buf, plan.centroids, allow_pickle=False)
                write_bytes(f"{self._root}/{CENTROIDS_FILE}", buf.getvalue())
                manifest["routing"]["centroids_file"] = CENTROIDS_FILE
        write_text(index_manifest_path(self._root), json.dumps(manifest, indent=2, sort_keys=True,
                                                               default=str))
        yield manifest


class WriteIndexManifest(beam.PTransform):
    """Writes ``indexes/index_manifest.json`` (and the routing centroids) once every shard is built,
    so a later run can reuse the indices with ``--index_dir``.

    Args:
        index_root: ``DIR/indexes``.
        static: launch-time facts (distance, index kind, id field, embedding settings, versions).
        dims: singleton PCollection with the vector dimension.
        plan: optional singleton RoutingPlan.
    """

    def __init__(self, *, index_root: str, static: dict[str, Any], dims, plan=None):
        super().__init__()
        self._fn = _WriteIndexManifestFn(index_root, static)
        self._dims = dims
        self._plan = plan

    def expand(self, infos):
        side = {"plan": beam.pvalue.AsSingleton(self._plan)} if self._plan is not None else {}
        return (infos.pipeline
                | "Once" >> beam.Create([None])
                | "WriteIndexManifest" >> beam.ParDo(
                    self._fn, shards=beam.pvalue.AsList(infos), dims=beam.pvalue.AsSingleton(self._dims),
                    **side))


def read_index_manifest(index_dir: str) -> dict[str, Any]:
    """Reads a kept index (``--index_dir``: a run's output dir or its ``indexes/`` dir).

    Returns the manifest with ``shards`` as ShardIndexInfo and, for centroid routing, the plan as a
    RoutingPlan under ``plan``. Raises FileNotFoundError naming --index_dir when nothing is there.
    """
    import io
    import json

    from transforms.common.artifacts import read_bytes, read_text
    from transforms.placement.routing import RoutingPlan

    root = index_dir.rstrip("/")
    candidates = [root, f"{root}/indexes"]
    for r in candidates:
        try:
            manifest = json.loads(read_text(index_manifest_path(r)))
            break
        except (OSError, ValueError):
            continue
    else:
        raise FileNotFoundError(f"--index_dir {index_dir}: no {INDEX_MANIFEST} there or under "
                                "indexes/ (is it the output directory of a finished run?)")
    manifest["shards"] = [ShardIndexInfo(**s) for s in manifest["shards"]]
    routing = manifest.get("routing")
    manifest["plan"] = None
    if routing:
        centroids = np.zeros((0, 0), np.float32)
        if routing.get("centroids_file"):
            centroids = np.load(io.BytesIO(read_bytes(f"{r}/{routing['centroids_file']}")),
                                allow_pickle=False)
        manifest["plan"] = RoutingPlan(centroids=centroids, distance=routing["distance"],
                                       pieces=tuple(tuple(p) for p in routing["pieces"]),
                                       num_shards=routing["num_shards"], kind=routing["kind"])
    return manifest


class MergeResult(NamedTuple):
    shards: beam.PCollection  # (shard, VectorBatch): kept rows + new rows, sorted by id
    dead_letters: beam.PCollection


class _MergeWithKeptFn(beam.DoFn):
    def __init__(self, kept_paths: dict[int, str]):
        self._kept = kept_paths

    def process(self, element: tuple[int, VectorBatch]):
        from transforms.common.dead_letters import DEAD_LETTER_TAG, make_dead_letter
        from transforms.index.shard_cache import load_shard
        from transforms.placement.shard_records import concat_batches

        shard, new = element
        path = self._kept.get(shard)
        if path is None:  # a shard the kept plan had room for but no vectors yet
            yield shard, new
            return
        kept = load_shard(path)
        clash = np.isin(np.asarray(new.ids, dtype=object), np.asarray(kept.ids, dtype=object))
        for i in np.flatnonzero(clash):
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, make_dead_letter(
                "validate", new.ids[i], f"id is already in the kept index ({path}); --append adds "
                "new ids only", new.vectors[i], new.origins[i]))
        keep = ~clash
        old = VectorBatch(kept.ids, np.asarray(kept.index.vectors, dtype=np.float32),
                          np.array([f"{path}#{i}" for i in range(len(kept.ids))], dtype=object))
        whole = concat_batches([old, VectorBatch(new.ids[keep], new.vectors[keep], new.origins[keep])])
        order = np.argsort(id_sort_keys(whole.ids)[0], kind="stable")
        _LOGGER.info("append: shard %d gets %d new vectors (%d kept)", shard, int(keep.sum()), len(old))
        yield shard, VectorBatch(whole.ids[order], whole.vectors[order], whole.origins[order])


def _sorted_unique_ids(id_arrays: list[np.ndarray]) -> np.ndarray:
    return (np.unique(np.concatenate([np.asarray(a, dtype=object) for a in id_arrays]))
            if id_arrays else np.empty(0, dtype=object))


def read_shard_ids(path: str) -> np.ndarray:
    """A published shard's id map (object array of str), without loading its index; local or remote."""
    from apache_beam.io.filesystems import FileSystems

    def read(name: str) -> bytes | None:
        if name == IDS_OFFSETS_FILE and not FileSystems.exists(f"{path}/{name}"):
            return None
        with FileSystems.open(f"{path}/{name}") as fh:
            return fh.read()

    return load_ids(read)


def _ids_held(shard_path: tuple[int, str], new_ids: np.ndarray) -> Iterator[tuple[str, str]]:
    """(id, shard path) for the new ids that kept shard holds."""
    _, path = shard_path
    if len(new_ids):
        for rid in new_ids[np.isin(new_ids, read_shard_ids(path))]:
            yield str(rid), path


def _ids_aliased(_: Any, alias_ids: np.ndarray, new_ids: np.ndarray,
                 where: str) -> Iterator[tuple[str, str]]:
    for rid in new_ids[np.isin(new_ids, alias_ids)] if len(alias_ids) and len(new_ids) else ():
        yield str(rid), where


class FindKeptIds(beam.PTransform):
    """--append: new candidate batches -> (id, where in the kept index) for ids it already holds.

    Checks every kept shard's id map (and the ids of its collapsed exact duplicates), whichever
    shard a new record would land in: the new ids, sorted and unique once, travel as a side input
    (an append's new records are the small side); the kept ids are read shard by shard where they
    are.

    Args:
        kept_shards: the kept index's ShardIndexInfo list.
        aliases: optional PCollection of the kept AliasGroups (representative id, alias ids, norm).
        aliases_where: how dead letters name the kept alias map.
    """

    def __init__(self, *, kept_shards: list[ShardIndexInfo], aliases: beam.PCollection | None = None,
                 aliases_where: str = "the kept index's exact-duplicate aliases"):
        super().__init__()
        self._paths = sorted((s.shard, s.path) for s in kept_shards)
        self._aliases = aliases
        self._aliases_where = aliases_where

    def expand(self, batches):
        new_ids = beam.pvalue.AsSingleton(
            batches | "NewIds" >> beam.Map(lambda b: np.array([str(v) for v in b.ids], dtype=object))
            | "SortNewIds" >> beam.combiners.ToList() | "UniqueNewIds" >> beam.Map(_sorted_unique_ids))
        found = (batches.pipeline | "KeptShardPaths" >> beam.Create(self._paths)
                 | "IdsInKeptShards" >> beam.FlatMap(_ids_held, new_ids=new_ids))
        if self._aliases is None:
            return found
        alias_ids = (self._aliases | "AliasIds" >> beam.Map(
            lambda kv: np.array([str(v) for v in kv[1]], dtype=object))
                     | "AllAliasIds" >> beam.combiners.ToList()
                     | "UniqueAliasIds" >> beam.Map(_sorted_unique_ids))
        in_aliases = (batches.pipeline | "Once" >> beam.Create([None])
                      | "IdsInKeptAliases" >> beam.FlatMap(
                          _ids_aliased, alias_ids=beam.pvalue.AsSingleton(alias_ids),
                          new_ids=new_ids, where=self._aliases_where))
        return (found, in_aliases) | "FlattenKeptIds" >> beam.Flatten()


class MergeWithKeptShards(beam.PTransform):
    """--append: (shard, new VectorBatch) -> (shard, kept + new rows) for the shards to rebuild.

    New ids already in the kept shard go to dead letters (an append adds records; it does not
    update them).
    """

    def __init__(self, *, kept_shards: list[ShardIndexInfo]):
        super().__init__()
        self._fn = _MergeWithKeptFn({s.shard: s.path for s in kept_shards})

    def expand(self, placed):
        from transforms.common.dead_letters import DEAD_LETTER_TAG

        out = placed | "MergeKept" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER_TAG, main="shards")
        return MergeResult(shards=out.shards, dead_letters=out[DEAD_LETTER_TAG])


def _prefer_rebuilt(element: tuple[int, Any]) -> ShardIndexInfo:
    shard, infos = element
    infos = list(infos)
    rebuilt = [i for tag, i in infos if tag == "rebuilt"]
    return (rebuilt or [i for _, i in infos])[0]


class CombineWithKeptShards(beam.PTransform):
    """--append: the rebuilt shards' infos plus the kept shards that were not touched."""

    def __init__(self, *, kept_shards: list[ShardIndexInfo]):
        super().__init__()
        self._kept = kept_shards

    def expand(self, rebuilt):
        kept = (rebuilt.pipeline | "KeptInfos" >> beam.Create(self._kept)
                | "TagKept" >> beam.Map(lambda i: (i.shard, ("kept", i))))
        new = rebuilt | "TagRebuilt" >> beam.Map(lambda i: (i.shard, ("rebuilt", i)))
        return ((kept, new) | "FlattenInfos" >> beam.Flatten()
                | "GroupByShard" >> beam.GroupByKey()
                | "PreferRebuilt" >> beam.Map(_prefer_rebuilt))
