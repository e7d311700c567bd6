"""Tests for transforms.index.neighbor_index: ScaNN and the exact twin against an independent numpy oracle.

Data are seeded Gaussian clusters (20k candidates x 32 dims, 200 queries). The oracle
(tests/transforms/index/oracle_cases.py) computes full float64 distance matrices itself and never calls
transforms.index.neighbor_index's search code.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.transforms.index.oracle_cases import (
    NUM_QUERIES,
    SCANN_PARAMS,
    D,
    K,
    N,
    _clustered,
    _oracle,
    _recall,
)
from transforms.common.vectors import prepare_vectors
from transforms.index.neighbor_index import (
    DISTANCES,
    ExactIndex,
    NeighborIndex,
    ScannIndex,
    build_index,
    exact_distances,
)


@pytest.fixture(scope="module")
def scann_indexes(prepared) -> dict[str, ScannIndex]:
    out = {}
    for distance in DISTANCES:
        params = dict(SCANN_PARAMS, spherical=distance == "cosine")
        if distance == "squared_l2":
            # ScaNN quantises residuals (to the leaf centre) under dot product only, so its L2 scores
            # are coarser: on this data reorder 100 reached recall 0.94, 200 reaches 1.0.
            params["reorder"] = 200
        out[distance] = build_index(prepared[distance][0], distance=distance, kind="scann", params=params)
        assert isinstance(out[distance], ScannIndex)
    return out


def test_exact_distances_formulas():
    q = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    c = np.array([[[1.0, 0.0], [0.0, 1.0]], [[3.0, 4.0], [0.0, -1.0]]], dtype=np.float32)
    np.testing.assert_array_equal(exact_distances("cosine", q, c), [[0.0, 1.0], [-7.0, 3.0]])
    np.testing.assert_array_equal(exact_distances("dot", q, c), [[-1.0, 0.0], [-8.0, 2.0]])
    np.testing.assert_array_equal(exact_distances("squared_l2", q, c), [[0.0, 2.0], [13.0, 9.0]])
    assert exact_distances("dot", q, c).dtype == np.float64


@pytest.mark.parametrize("distance", DISTANCES)
def test_exact_index_equals_oracle(distance, prepared, oracle):
    db, q = prepared[distance]
    positions, distances = build_index(db, distance=distance, kind="exact", params={}).search(q, K)
    want_pos, want_dist = oracle[distance]
    np.testing.assert_array_equal(positions, want_pos)
    np.testing.assert_allclose(distances, want_dist, rtol=1e-9, atol=1e-12)
    assert positions.dtype == np.int64 and distances.dtype == np.float64


@pytest.mark.parametrize("width", [7, 64])
def test_smallest_columns_by_block_minima_equal_a_full_partition(monkeypatch, width):
    from transforms.index import neighbor_index as index_mod

    monkeypatch.setattr(index_mod, "_SELECT_BLOCK", width)
    rng = np.random.default_rng(3)
    fetch = 30
    for size in (4 * fetch * width + 5, 10 * fetch * width):  # with and without a partial block
        # Small integers: many ties, also at the cut-off.
        scores = rng.integers(0, 50, size=(40, size)).astype(np.float32)
        scores[0, -3:] = -1.0  # the best scores sit in the partial block
        picked = index_mod._smallest_columns(scores, fetch)
        assert picked.shape == (40, fetch) and picked.dtype == np.int64
        for row, cols in zip(scores, picked, strict=True):
            assert len(set(cols.tolist())) == fetch and cols.min() >= 0 and cols.max() < size
            np.testing.assert_array_equal(np.sort(row[cols]), np.sort(row)[:fetch])


@pytest.mark.parametrize("distance", DISTANCES)
def test_exact_index_equals_oracle_with_block_selection(monkeypatch, distance, prepared, oracle):
    from transforms.index import neighbor_index as index_mod

    monkeypatch.setattr(index_mod, "_SELECT_BLOCK", 16)  # 20,000 columns -> 1250 blocks
    db, q = prepared[distance]
    positions, distances = build_index(db, distance=distance, kind="exact", params={}).search(q, K)
    np.testing.assert_array_equal(positions, oracle[distance][0])
    np.testing.assert_allclose(distances, oracle[distance][1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("distance", DISTANCES)
def test_exact_candidates_across_tiles_equal_a_full_partition(monkeypatch, distance):
    from transforms.index import neighbor_index as index_mod

    rng = np.random.default_rng(4)
    fetch, tile = 12, 100
    # Small integers: many ties. The last tile (of 7 vectors, fewer than fetch) holds the best rows.
    vectors = rng.integers(-4, 5, size=(10 * tile + 7, 6)).astype(np.float32)
    vectors[-7:] = 9.0 if distance != "squared_l2" else 2.0
    queries = np.full((23, 6), 2.0, dtype=np.float32) if distance == "squared_l2" else None
    if queries is None:
        queries = rng.integers(1, 4, size=(23, 6)).astype(np.float32)
    sq_norms = np.einsum("nd,nd->n", vectors, vectors)
    monkeypatch.setattr(index_mod, "_QUERY_BLOCK", 5)
    monkeypatch.setattr(index_mod, "_SCORE_BLOCK_ELEMENTS", 5 * tile)
    got = index_mod._exact_candidates(distance, vectors, sq_norms, queries, fetch)
    scores = -(queries @ vectors.T) if distance != "squared_l2" else sq_norms - 2 * (queries @ vectors.T)
    assert got.shape == (len(queries), fetch) and got.dtype == np.int64
    for row, cols in zip(scores, got, strict=True):
        assert len(set(cols.tolist())) == fetch
        np.testing.assert_array_equal(np.sort(row[cols]), np.sort(row)[:fetch])
    assert np.isin(got, np.arange(len(vectors) - 7, len(vectors))).sum(axis=1).min() == 7


@pytest.mark.parametrize("distance", DISTANCES)
def test_exact_index_equals_oracle_across_query_blocks_and_shard_tiles(monkeypatch, distance, prepared,
                                                                        oracle):
    from transforms.index import neighbor_index as index_mod

    db, q = prepared[distance]
    # 7 queries per block and 7 * 571 scores per block: tiles of 571 vectors, the last one holding
    # fewer than fetch (2k + 10) vectors, so a tile's best join those of the tiles before it.
    fetch = index_mod._fetch_count(K, len(db))
    tile = 571
    assert 0 < len(db) % tile <= fetch and len(q) % 7
    monkeypatch.setattr(index_mod, "_QUERY_BLOCK", 7)
    monkeypatch.setattr(index_mod, "_SCORE_BLOCK_ELEMENTS", 7 * tile)
    positions, distances = build_index(db, distance=distance, kind="exact", params={}).search(q, K)
    np.testing.assert_array_equal(positions, oracle[distance][0])
    np.testing.assert_allclose(distances, oracle[distance][1], rtol=1e-9, atol=1e-12)


def test_exact_index_breaks_ties_by_position():
    db = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    positions, distances = ExactIndex(db, distance="dot").search(db[:1], 3)
    assert positions.tolist() == [[0, 2, 3]]
    assert distances.tolist() == [[-1.0, -1.0, -1.0]]


@pytest.mark.parametrize("distance", DISTANCES)
def test_scann_recall_against_oracle(distance, prepared, oracle, scann_indexes):
    positions, _ = scann_indexes[distance].search(prepared[distance][1], K)
    assert _recall(positions, oracle[distance][0]) >= 0.95


@pytest.mark.parametrize("distance", DISTANCES)
def test_scann_distances_are_exact_and_sorted(distance, prepared, scann_indexes):
    index = scann_indexes[distance]
    q = prepared[distance][1]
    positions, distances = index.search(q, K)
    assert positions.shape == distances.shape == (NUM_QUERIES, K)
    assert (positions >= 0).all() and (positions < N).all()
    assert all(len(set(row)) == K for row in positions)
    np.testing.assert_allclose(distances, exact_distances(distance, q, index.vectors[positions]),
                               rtol=1e-12, atol=1e-12)
    assert (np.diff(distances, axis=1) >= 0).all()


def test_scann_completes_short_rows_by_brute_force(small_cosine):
    # One leaf holds far fewer than 500 vectors: ScaNN comes back short and brute force completes it.
    db, params = small_cosine
    index = build_index(db, distance="cosine", kind="scann", params=params)
    positions, distances = index.search(db[:20], 500, leaves_to_search=1)
    want_pos, want_dist = _oracle("cosine", db[:20], db, 500)
    np.testing.assert_array_equal(positions, want_pos)
    np.testing.assert_allclose(distances, want_dist, rtol=1e-9, atol=1e-12)


def test_scann_handles_odd_dimensions():
    # score_ah(2) gives the last of an odd number of dims a 1-dim block of its own.
    rng = np.random.default_rng(3)
    db, _ = prepare_vectors(_clustered(rng, 3.0 * rng.standard_normal((20, 7)), 3000), "squared_l2")
    params = dict(SCANN_PARAMS, num_leaves=50, num_leaves_to_search=10, training_sample_size=3000,
                  spherical=False)
    index = build_index(db, distance="squared_l2", kind="scann", params=params)
    assert isinstance(index, ScannIndex) and index.dims == 7
    positions, _ = index.search(db[:50], K)
    assert _recall(positions, _oracle("squared_l2", db[:50], db, K)[0]) >= 0.95


@pytest.mark.parametrize("kind", ["scann", "exact"])
def test_save_load_round_trip(kind, tmp_path, prepared, scann_indexes):
    db, q = prepared["cosine"]
    index = (scann_indexes["cosine"] if kind == "scann"
             else build_index(db, distance="cosine", kind="exact", params={"note": "x"}))
    index.save(str(tmp_path / "saved"))
    # Move it, as a copy to and from remote storage would: nothing may depend on the first path.
    shutil.move(str(tmp_path / "saved"), str(tmp_path / "moved"))
    loaded = NeighborIndex.load(str(tmp_path / "moved"))
    assert type(loaded) is type(index)
    assert (loaded.kind, loaded.distance, loaded.size, loaded.dims, loaded.params) == (
        kind, "cosine", N, D, index.params)
    np.testing.assert_array_equal(loaded.vectors, index.vectors)
    for got, want in zip(loaded.search(q, K), index.search(q, K), strict=True):
        np.testing.assert_array_equal(got, want)
    config = json.loads((tmp_path / "moved" / "index_config.json").read_text())
    assert config["kind"] == kind and config["size"] == N
    assert (tmp_path / "moved" / "scann" / "scann_assets.pbtxt").exists() == (kind == "scann")
    # ScaNN's float dataset is the vectors themselves: kept once, not twice (format 2 says so).
    assert config["vectors_file"] == ("scann/dataset.npy" if kind == "scann" else "vectors.npy")
    assert config["format_version"] == (2 if kind == "scann" else 1)
    assert (tmp_path / "moved" / "vectors.npy").exists() == (kind == "exact")


def test_scann_index_writes_vectors_npy_when_scann_keeps_no_matching_dataset(monkeypatch, tmp_path,
                                                                             prepared, scann_indexes):
    from transforms.index import neighbor_index as index_mod

    db = prepared["cosine"][0]
    index = scann_indexes["cosine"]
    monkeypatch.setattr(index_mod, "SCANN_DATASET_FILE", "no-such-file.npy")
    index.save(str(tmp_path / "a"))
    monkeypatch.setattr(index_mod, "SCANN_DATASET_FILE", "dataset.npy")
    # A dataset that differs from the vectors (here: another array of the same shape) is not used.
    monkeypatch.setattr(index, "vectors", index.vectors[::-1].copy())
    index.save(str(tmp_path / "b"))
    for name in ("a", "b"):
        config = json.loads((tmp_path / name / "index_config.json").read_text())
        assert config["vectors_file"] == "vectors.npy" and (tmp_path / name / "vectors.npy").exists()
        assert config["format_version"] == 1  # readable by code that knows only vectors.npy
    np.testing.assert_array_equal(NeighborIndex.load(str(tmp_path / "a")).vectors, db)
    np.testing.assert_array_equal(NeighborIndex.load(str(tmp_path / "b")).vectors, db[::-1])


def test_an_index_saved_without_vectors_file_reads_vectors_npy_and_unsafe_ones_are_refused(tmp_path,
                                                                                          prepared):
    db = prepared["dot"][0]
    build_index(db, distance="dot", kind="exact", params={}).save(str(tmp_path / "old"))
    config_path = tmp_path / "old" / "index_config.json"
    config = json.loads(config_path.read_text())
    del config["vectors_file"]  # as indexes were saved before the key existed
    config_path.write_text(json.dumps(config))
    np.testing.assert_array_equal(NeighborIndex.load(str(tmp_path / "old")).vectors, db)
    for unsafe in ("../elsewhere.npy", str(tmp_path / "old" / "vectors.npy"), "scann//x.npy", None):
        config["vectors_file"] = unsafe
        config_path.write_text(json.dumps(config))
        with pytest.raises(ValueError, match="unsafe vectors_file"):
            NeighborIndex.load(str(tmp_path / "old"))


@pytest.mark.parametrize("kind", ["scann", "exact"])
def test_shard_smaller_than_k_pads_with_minus_one_and_inf(kind):
    db = np.arange(10, dtype=np.float32).reshape(5, 2)
    index = build_index(db, distance="squared_l2", kind=kind, params=dict(SCANN_PARAMS, num_leaves=2))
    positions, distances = index.search(db[[4, 0]], 8)
    assert positions.tolist() == [[4, 3, 2, 1, 0, -1, -1, -1], [0, 1, 2, 3, 4, -1, -1, -1]]
    assert distances[0].tolist() == [0.0, 8.0, 32.0, 72.0, 128.0] + [np.inf] * 3


def test_tiny_shard_falls_back_to_exact():
    db, _ = prepare_vectors(np.random.default_rng(5).standard_normal((1999, 8)), "cosine")
    params = dict(SCANN_PARAMS, num_leaves=89, num_leaves_to_search=15, training_sample_size=1999)
    index = build_index(db, distance="cosine", kind="scann", params=params)
    assert isinstance(index, ExactIndex) and index.kind == "exact"
    assert index.params == dict(params, fallback="too_small")
    assert "fallback" not in params
    # Large enough in total, but under 2 vectors per requested leaf.
    index = build_index(np.vstack([db, db]), distance="cosine", kind="scann",
                        params=dict(params, num_leaves=2500, training_sample_size=3998))
    assert index.params["fallback"] == "too_small"


def test_search_edge_cases_and_argument_checks(prepared):
    index = ExactIndex(prepared["dot"][0][:100], distance="dot")
    positions, distances = index.search(np.zeros((0, D), np.float32), 3)
    assert positions.shape == distances.shape == (0, 3)
    empty = ExactIndex(np.zeros((0, D), np.float32), distance="dot")
    assert empty.search(prepared["dot"][1][:2], 2)[0].tolist() == [[-1, -1], [-1, -1]]
    with pytest.raises(ValueError, match="queries must be"):
        index.search(np.zeros((2, D + 1), np.float32), 3)
    with pytest.raises(ValueError, match="k must be"):
        index.search(prepared["dot"][1][:2], 0)
    with pytest.raises(ValueError, match="non-finite"):
        index.search(np.full((1, D), np.nan, np.float32), 3)
    with pytest.raises(ValueError, match="kind"):
        build_index(prepared["dot"][0], distance="dot", kind="hnsw", params={})
    with pytest.raises(ValueError, match="training_sample_size"):
        build_index(prepared["dot"][0], distance="dot", kind="scann",
                    params=dict(SCANN_PARAMS, training_sample_size=100))


def test_cosine_distances_of_identical_vectors_are_clamped_to_zero():
    from transforms.common.vectors import prepare_vectors
    from transforms.index.neighbor_index import clamp_distances, exact_distances

    rng = np.random.default_rng(11)
    raw = rng.normal(size=(200, 37))
    vecs, ok = prepare_vectors(raw, "cosine")
    assert ok.all()
    unclamped = exact_distances("cosine", vecs, vecs[:, None, :])
    assert (unclamped < 0).any()  # the rounding the clamp repairs happens on this data
    d = clamp_distances("cosine", unclamped.copy())
    assert (d >= 0).all() and (d[unclamped <= 0] == 0).all()
    assert (d[unclamped > 0] == unclamped[unclamped > 0]).all()
    opposite = clamp_distances("cosine", exact_distances("cosine", vecs, -vecs[:, None, :]))
    assert (opposite <= 2).all()
    assert (clamp_distances("squared_l2", np.array([-1e-9, 0.5])) == [0.0, 0.5]).all()
    dot = np.array([-3.0, 5.0])
    assert (clamp_distances("dot", dot.copy()) == dot).all()  # unbounded
