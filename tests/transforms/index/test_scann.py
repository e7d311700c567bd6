"""Tests for transforms.index.scann: pinned seeds (reproducible builds, and which files threads may
change), and the tree trained by transforms.index.kmeans handed to ScaNN as a partitioner."""

from __future__ import annotations

import numpy as np
import pytest

from tests.transforms.index.oracle_cases import (
    SCANN_PARAMS,
    K,
    _recall,
)
from transforms.common.vectors import prepare_vectors
from transforms.index.neighbor_index import (
    DISTANCES,
    NeighborIndex,
    ScannIndex,
    build_index,
    exact_distances,
)


def test_scann_build_is_deterministic(small_cosine):
    db, params = small_cosine
    raw = []
    for _ in range(2):
        index = build_index(db, distance="cosine", kind="scann", params=params, seed=3)
        # The searcher's own (approximate) output, before exact rescoring could hide differences.
        raw.append(index._searcher.search_batched(db[:100], final_num_neighbors=20, leaves_to_search=6,
                                                  pre_reorder_num_neighbors=100))
    np.testing.assert_array_equal(raw[0][0], raw[1][0])
    np.testing.assert_array_equal(raw[0][1], raw[1][1])


def test_multithreaded_scann_builds_are_reproducible(tmp_path):
    import hashlib
    import os

    from transforms.index.neighbor_index import build_index

    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((6000, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    params = {"num_leaves": 40, "num_leaves_to_search": 8, "training_sample_size": 6000,
              "quantization": "ah", "anisotropic_quantization_threshold": 0.2, "reorder": 50,
              "spherical": True}

    def digest(threads: int) -> dict[str, str]:
        out = tmp_path / f"t{threads}-{len(list(tmp_path.iterdir()))}"
        build_index(vecs, distance="cosine", kind="scann",
                    params=params | {"training_threads": threads}).save(str(out))
        return {f: hashlib.sha256((out / "scann" / f).read_bytes()).hexdigest()
                for f in sorted(os.listdir(out / "scann"))}

    first = digest(0)
    assert digest(0) == first
    assert digest(1) == first


def test_which_scann_files_may_differ_between_multithreaded_builds(tmp_path):
    """README: with --scann_training_threads 0 only the leaf assignment (datapoint_to_token.npy) and
    the AH codebook trained on it (ah_codebook.pb) may differ between identical builds; every other
    file is byte-identical, and one thread makes all of them identical (on data where 0 threads did
    differ: 430 of 20,000 assignments when this was measured)."""
    from transforms.testing.clustered import make_link_vectors

    cands, _ = make_link_vectors(20000, 1, 16, clusters=40, seed=3)
    vecs, _ = prepare_vectors(cands, "cosine")
    params = {"num_leaves": 283, "num_leaves_to_search": 26, "training_sample_size": 20000,
              "quantization": "ah", "anisotropic_quantization_threshold": 0.2, "reorder": 100,
              "spherical": True}

    def digest(threads: int) -> dict[str, str]:
        return _scann_file_digests(tmp_path, vecs, params, threads)

    may_differ = {"datapoint_to_token.npy", "ah_codebook.pb"}
    a, b = digest(0), digest(0)
    assert a.keys() == b.keys() and may_differ <= a.keys()
    assert {f for f in a if a[f] != b[f]} <= may_differ
    assert digest(1) == digest(1)


def _scann_file_digests(tmp_path, vecs, params: dict, threads: int) -> dict[str, str]:
    """SHA-256 of every file of a ScaNN index built on ``vecs`` with ``threads`` training threads."""
    import hashlib
    import os

    from transforms.index.neighbor_index import build_index

    out = tmp_path / f"t{threads}-{len(list(tmp_path.iterdir()))}"
    build_index(vecs, distance="cosine", kind="scann", params=params | {"training_threads": threads},
                seed=0).save(str(out))
    return {f: hashlib.sha256((out / "scann" / f).read_bytes()).hexdigest()
            for f in sorted(os.listdir(out / "scann"))}


SAMPLED = {"tree_training": "sampled_kmeans"}


@pytest.mark.parametrize("distance", DISTANCES)
def test_sampled_tree_recall_against_oracle(distance, prepared, oracle):
    params = dict(SCANN_PARAMS, spherical=distance == "cosine", **SAMPLED)
    if distance == "squared_l2":
        params["reorder"] = 200  # as scann_indexes: L2 scores are coarser under AH
    index = build_index(prepared[distance][0], distance=distance, kind="scann", params=params)
    assert isinstance(index, ScannIndex) and index.params["tree_training"] == "sampled_kmeans"
    positions, distances = index.search(prepared[distance][1], K)
    assert _recall(positions, oracle[distance][0]) >= 0.95
    np.testing.assert_allclose(distances, exact_distances(distance, prepared[distance][1],
                                                          index.vectors[positions]), rtol=1e-12)


def test_sampled_tree_builds_byte_identical_files_on_any_thread_count(tmp_path):
    """The data on which ScaNN's own multi-threaded training gave differing leaf assignments
    (test_which_scann_files_may_differ_between_multithreaded_builds): with the sampled tree every
    file is the same from build to build, on all cores as on one."""
    from transforms.testing.clustered import make_link_vectors

    cands, _ = make_link_vectors(20000, 1, 16, clusters=40, seed=3)
    vecs, _ = prepare_vectors(cands, "cosine")
    params = {"num_leaves": 283, "num_leaves_to_search": 26, "training_sample_size": 20000,
              "quantization": "ah", "anisotropic_quantization_threshold": 0.2, "reorder": 100,
              "spherical": True, **SAMPLED}

    def digest(threads: int) -> dict[str, str]:
        return _scann_file_digests(tmp_path, vecs, params, threads)

    first = digest(0)
    assert {"datapoint_to_token.npy", "ah_codebook.pb", "serialized_partitioner.pb"} <= first.keys()
    assert digest(0) == first
    assert digest(1) == first


def test_the_partitioner_we_write_is_what_scann_serialises(tmp_path, small_cosine):
    from transforms.index.scann import serialized_partitioner
    from transforms.index.scann_lib import load_scann_pybind

    load_scann_pybind()
    from scann.partitioning import partitioner_pb2

    db, params = small_cosine
    # Built by ScaNN's own trainer: its centres, written back by our writer, give its bytes.
    build_index(db, distance="cosine", kind="scann", params=params).save(str(tmp_path / "own"))
    raw = (tmp_path / "own" / "scann" / "serialized_partitioner.pb").read_bytes()
    parsed = partitioner_pb2.SerializedPartitioner.FromString(raw)
    centers = np.array([list(c.dimension) for c in parsed.kmeans.kmeans_tree.root.centers])
    assert serialized_partitioner(centers.astype(np.float32)) == raw


def test_sampled_tree_round_trips_and_rejects_an_unknown_training(tmp_path, small_cosine):
    db, params = small_cosine
    index = build_index(db, distance="cosine", kind="scann", params=params | SAMPLED)
    index.save(str(tmp_path / "saved"))
    loaded = NeighborIndex.load(str(tmp_path / "saved"))
    assert loaded.params["tree_training"] == "sampled_kmeans"
    for got, want in zip(loaded.search(db[:50], K), index.search(db[:50], K), strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="tree_training"):
        build_index(db, distance="cosine", kind="scann", params=params | {"tree_training": "faiss"})
