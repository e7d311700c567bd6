"""Tests for transforms.index.neighbor_index: ScaNN and the exact twin against an independent numpy oracle.

Data are seeded Gaussian clusters (20k candidates x 32 dims, 200 queries). The oracle below computes
full float64 distance matrices itself and never calls transforms.index.neighbor_index's search code.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from transforms.common.vectors import prepare_vectors
from transforms.index.neighbor_index import (
    DISTANCES,
    ExactIndex,
    NeighborIndex,
    ScannIndex,
    build_index,
    exact_distances,
)

os.environ["CUDA_VISIBLE_DEVICES"] = ""

N, D, NUM_QUERIES, K = 20_000, 32, 200, 10
# What beam_jobs.config.scann_params_for gives a 20k shard: 2*sqrt(n) leaves, 1.5*sqrt(leaves) searched.
SCANN_PARAMS = {
    "num_leaves": 283,
    "num_leaves_to_search": 26,
    "training_sample_size": N,
    "quantization": "ah",
    "anisotropic_quantization_threshold": 0.2,
    "reorder": 100,
}


def _clustered(rng: np.random.Generator, centers: np.ndarray, n: int) -> np.ndarray:
    return centers[rng.integers(len(centers), size=n)] + rng.standard_normal((n, centers.shape[1]))


@pytest.fixture(scope="module")
def raw_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    centers = 3.0 * rng.standard_normal((100, D))
    return _clustered(rng, centers, N), _clustered(rng, centers, NUM_QUERIES)


@pytest.fixture(scope="module")
def prepared(raw_data) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for distance in DISTANCES:
        (db, db_ok), (q, q_ok) = (prepare_vectors(x, distance) for x in raw_data)
        assert db_ok.all() and q_ok.all()
        out[distance] = db, q
    return out


def _oracle(distance: str, queries: np.ndarray, db: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k in float64 over the whole matrix; stable sort breaks ties by position."""
    q, c = queries.astype(np.float64), db.astype(np.float64)
    dots = q @ c.T
    if distance == "cosine":
        dist = 1.0 - dots
    elif distance == "dot":
        dist = -dots
    else:
        dist = (q * q).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2.0 * dots
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(dist, order, axis=1)


@pytest.fixture(scope="module")
def oracle(prepared) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {d: _oracle(d, prepared[d][1], prepared[d][0], K) for d in DISTANCES}


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


@pytest.fixture(scope="module")
def small_cosine() -> tuple[np.ndarray, dict]:
    """4000 x 15 (odd) unit vectors in 20 clusters, with params for a 60-leaf tree."""
    rng = np.random.default_rng(7)
    db, _ = prepare_vectors(_clustered(rng, 3.0 * rng.standard_normal((20, 15)), 4000), "cosine")
    return db, dict(SCANN_PARAMS, num_leaves=60, num_leaves_to_search=6, training_sample_size=3000,
                    spherical=True)


def _recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want, strict=True)]))


# --- prepare_vectors / exact_distances -------------------------------------------------------------

def test_prepare_vectors_masks_unusable_rows():
    raw = np.array([[3.0, 4.0], [0.0, 0.0], [np.nan, 1.0], [np.inf, 1.0], [1e300, 1.0],
                    [1e-30, 0.0]])
    before = raw.copy()
    for distance, want_ok in [("cosine", [1, 0, 0, 0, 0, 1]), ("dot", [1, 1, 0, 0, 0, 1]),
                              ("squared_l2", [1, 1, 0, 0, 0, 1])]:
        out, ok = prepare_vectors(raw, distance)
        assert out.dtype == np.float32 and out.flags.c_contiguous
        assert ok.tolist() == [bool(v) for v in want_ok]
        assert np.isfinite(out).all() and not out[~ok].any()
    np.testing.assert_array_equal(raw, before)
    out, _ = prepare_vectors(raw, "cosine")
    # Norms are taken in float64, so even a 1e-30 row (denormal-ish in float32) normalises.
    np.testing.assert_allclose(out[[0, 5]], [[0.6, 0.8], [1.0, 0.0]], rtol=1e-7)


def test_prepare_vectors_cosine_normalises_every_block_like_float64(monkeypatch):
    import transforms.common.vectors

    # 50 rows: 8 blocks, a partial one
    monkeypatch.setattr(transforms.common.vectors, "_NORMALIZE_BLOCK", 7)
    rng = np.random.default_rng(5)
    raw = rng.standard_normal((50, 5)) * rng.choice([1e-20, 1.0, 1e20], size=(50, 1))
    raw[[3, 17]] = np.nan
    raw[9] = 0.0
    out, ok = prepare_vectors(raw, "cosine")
    wide = raw.astype(np.float32).astype(np.float64)
    with np.errstate(invalid="ignore"):  # the NaN and zero rows; compared only where ok
        want = (wide / np.linalg.norm(wide, axis=1, keepdims=True)).astype(np.float32)
    assert ok.tolist() == [i not in (3, 9, 17) for i in range(50)]
    np.testing.assert_allclose(out[ok], want[ok], rtol=2e-7, atol=0)
    assert not out[~ok].any()


def test_prepare_vectors_rejects_bad_arguments():
    with pytest.raises(ValueError, match="distance"):
        prepare_vectors(np.ones((2, 2)), "l1")
    with pytest.raises(ValueError, match="2-D"):
        prepare_vectors(np.ones(3), "dot")


def test_exact_distances_formulas():
    q = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    c = np.array([[[1.0, 0.0], [0.0, 1.0]], [[3.0, 4.0], [0.0, -1.0]]], dtype=np.float32)
    np.testing.assert_array_equal(exact_distances("cosine", q, c), [[0.0, 1.0], [-7.0, 3.0]])
    np.testing.assert_array_equal(exact_distances("dot", q, c), [[-1.0, 0.0], [-8.0, 2.0]])
    np.testing.assert_array_equal(exact_distances("squared_l2", q, c), [[0.0, 2.0], [13.0, 9.0]])
    assert exact_distances("dot", q, c).dtype == np.float64


# --- ExactIndex --------------------------------------------------------------------------------------

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


# --- ScannIndex --------------------------------------------------------------------------------------

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


# --- save / load -------------------------------------------------------------------------------------

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


# --- small shards, padding, argument checks ---------------------------------------------------------

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


# --- the tree trained by transforms.index.kmeans (params['tree_training'] 'sampled_kmeans') ---------------

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
