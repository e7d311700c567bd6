"""The worker's shard cache: the build hands its index to searches in the same process, never a stale
one, and never more shards held than the cache's size."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from transforms.common.artifacts import IncompleteArtifactError
from transforms.common.schema import VectorBatch
from transforms.index import shard_cache
from transforms.index.build import _BuildShardIndexFn
from transforms.index.index_manifest import _WriteIndexManifestFn, index_manifest_path, read_index_manifest
from transforms.index.shard_cache import build_finished, build_started, load_shard

SCANN_PARAMS = {"num_leaves": 20, "num_leaves_to_search": 5, "training_sample_size": 3000,
                "quantization": "ah", "anisotropic_quantization_threshold": 0.2, "reorder": 50,
                "spherical": True, "training_threads": 1}


@pytest.fixture(autouse=True)
def empty_cache():
    """Each test starts and ends with nothing held (the cache is per process, like a worker's)."""
    def clear():
        with shard_cache._LOCK:
            shard_cache._CACHE.clear()
            shard_cache._built = None
            shard_cache._builds_running = 0
    clear()
    yield
    clear()


def _build(output_dir, vectors: np.ndarray, kind: str = "exact"):
    fn = _BuildShardIndexFn(output_dir=str(output_dir), distance="cosine", kind=kind,
                            params_for=lambda size: dict(SCANN_PARAMS) if kind == "scann" else {}, seed=0)
    ids = np.array([f"c{i:05d}" for i in range(len(vectors))], dtype=object)
    [info] = fn.process((0, VectorBatch(ids, vectors, ids.copy())), num_shards=1)
    return info


def _unit_rows(rng, n: int, dims: int = 8) -> np.ndarray:
    v = rng.standard_normal((n, dims)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _held() -> int:
    return len(shard_cache._CACHE) + (shard_cache._built is not None)


@pytest.mark.parametrize("kind", ["exact", "scann"])
def test_a_search_in_the_building_process_takes_the_built_index_as_a_reload_would_give_it(tmp_path, kind):
    rng = np.random.default_rng(5)
    queries = _unit_rows(rng, 50, 16)
    info = _build(tmp_path / "out", _unit_rows(rng, 3000, 16), kind)
    assert info.kind == kind
    saved = tmp_path / "saved"
    shutil.copytree(info.path, saved)
    shutil.rmtree(info.path)  # gone from disk: only the hand-off can serve it now
    handed = load_shard(info.path, info.build)
    assert load_shard(info.path, info.build) is handed  # then cached like a loaded shard
    reloaded = load_shard(str(saved))
    assert handed.ids.dtype == reloaded.ids.dtype == object
    np.testing.assert_array_equal(handed.ids, reloaded.ids)
    for effort in ({}, {"leaves_to_search": 2, "reorder": 25}):
        for got, want in zip(handed.index.search(queries, 5, **effort),
                             reloaded.index.search(queries, 5, **effort), strict=True):
            np.testing.assert_array_equal(got, want)


def test_a_shard_rebuilt_at_the_same_path_is_never_served_stale(tmp_path):
    rng = np.random.default_rng(6)
    first = _build(tmp_path / "out", _unit_rows(rng, 300))
    load_shard(first.path, first.build)
    load_shard(first.path)  # also cached as read from disk, as a kept shard of a later run would be
    second_vectors = _unit_rows(rng, 300)
    second = _build(tmp_path / "out", second_vectors)  # same path, new contents, same process
    assert second.path == first.path and second.build != first.build
    np.testing.assert_array_equal(load_shard(second.path, second.build).index.vectors, second_vectors)
    np.testing.assert_array_equal(load_shard(second.path).index.vectors, second_vectors)
    np.testing.assert_array_equal(load_shard(first.path, first.build).index.vectors, second_vectors)


def test_the_built_index_is_released_by_any_other_load_hit_or_miss(tmp_path):
    rng = np.random.default_rng(7)
    other = _build(tmp_path / "other", _unit_rows(rng, 300))
    load_shard(other.path, other.build)
    for first_call in ("miss", "hit"):
        info = _build(tmp_path / first_call, _unit_rows(rng, 300))
        if first_call == "miss":
            load_shard(other.path, "not-cached")
        else:
            load_shard(other.path, other.build)
        shutil.rmtree(info.path)
        with pytest.raises(IncompleteArtifactError):  # read from disk: it was not held any more
            load_shard(info.path, info.build)


def test_never_more_shards_held_than_the_cache_size(monkeypatch, tmp_path):
    rng = np.random.default_rng(8)
    for name in ("a", "b"):
        built = _build(tmp_path / name, _unit_rows(rng, 300))
        load_shard(built.path, built.build)
    assert len(shard_cache._CACHE) == shard_cache._CACHE_SIZE == 2
    _build(tmp_path / "c", _unit_rows(rng, 300))
    assert shard_cache._built is not None and _held() == 2


def test_no_index_is_handed_over_while_another_build_runs_or_after_a_failed_build(tmp_path):
    rng = np.random.default_rng(9)
    build_started()  # another harness thread's build, still running
    info = _build(tmp_path / "out", _unit_rows(rng, 300))
    assert shard_cache._built is None  # the running build holds its own index: no third one
    build_finished("elsewhere", "x", None)  # that build failed
    assert shard_cache._built is None and shard_cache._builds_running == 0
    shutil.rmtree(info.path)
    with pytest.raises(IncompleteArtifactError):
        load_shard(info.path, info.build)


def test_a_failing_build_hands_nothing_over_and_is_not_counted_as_running(monkeypatch, tmp_path):
    from transforms.common import artifacts

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts, "publish_dir", broken)
    with pytest.raises(OSError, match="disk full"):
        _build(tmp_path / "out", _unit_rows(np.random.default_rng(10), 300))
    assert shard_cache._built is None and shard_cache._builds_running == 0


def test_the_index_manifest_leaves_out_the_build_token(tmp_path):
    info = _build(tmp_path / "out", _unit_rows(np.random.default_rng(11), 300))
    root = str(tmp_path / "out" / "indexes")
    list(_WriteIndexManifestFn(root, {}).process(None, shards=[info], dims=8))
    with open(index_manifest_path(root)) as f:
        written = json.load(f)
    assert "build" not in written["shards"][0]
    assert read_index_manifest(str(tmp_path / "out"))["shards"][0] == info._replace(build="")
