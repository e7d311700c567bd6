"""SOAR spilling (``params['soar_lambda']``, --scann_soar_lambda): a second leaf per vector in the
sampled k-means tree's ScaNN index, measured against a numpy brute-force oracle, byte-identical from
build to build, on by default only when the job embeds records, and off where ScaNN does not define
it (squared_l2)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from beam_jobs.config import config_from_flags, scann_params_for
from transforms.common.vectors import prepare_vectors
from transforms.index.neighbor_index import ScannIndex, build_index
from transforms.testing.clustered import make_link_vectors

K = 10
_BASE = {"num_leaves": 200, "num_leaves_to_search": 3, "training_sample_size": 20000, "quantization": "ah",
         "anisotropic_quantization_threshold": 0.2, "reorder": 100, "tree_training": "sampled_kmeans"}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """20k candidates and 500 queries near them, cosine-prepared, with the exact top-10 (float64)."""
    cands, queries = make_link_vectors(20000, 500, 32, clusters=50, seed=11)
    db, _ = prepare_vectors(cands, "cosine")
    q, _ = prepare_vectors(queries, "cosine")
    exact = np.argsort(-(q.astype(np.float64) @ db.astype(np.float64).T), axis=1, kind="stable")[:, :K]
    return db, q, exact


def _recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(w)) / K for g, w in zip(got, want, strict=True)]))


def _files(index: ScannIndex, path) -> dict[str, str]:
    index.save(str(path))
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted((path / "scann").iterdir())}


def test_soar_finds_more_true_neighbours_at_the_same_leaves_searched(data):
    db, q, exact = data
    recall = {}
    for soar in (None, 1.5):
        index = build_index(db, distance="cosine", kind="scann",
                            params=dict(_BASE, spherical=True, soar_lambda=soar))
        positions, _ = index.search(q, K)
        recall[soar] = _recall(positions, exact)
    assert recall[1.5] > recall[None] + 0.02, recall
    assert recall[1.5] >= 0.9, recall


def test_soar_builds_are_byte_identical_and_hold_a_second_code(data, tmp_path):
    db = data[0]
    params = dict(_BASE, spherical=True, soar_lambda=1.5)
    first = _files(build_index(db, distance="cosine", kind="scann", params=params), tmp_path / "a")
    second = _files(build_index(db, distance="cosine", kind="scann", params=params), tmp_path / "b")
    assert "hashed_dataset_soar.npy" in first
    first.pop("scann_assets.pbtxt"), second.pop("scann_assets.pbtxt")  # names its own directory
    assert first == second


def test_soar_is_off_for_squared_l2_and_when_the_flag_is_zero(data, tmp_path):
    db = data[0]
    l2 = build_index(db, distance="squared_l2", kind="scann", params=dict(_BASE, soar_lambda=1.5))
    assert "hashed_dataset_soar.npy" not in _files(l2, tmp_path / "l2")
    flags = {"queries": "q.csv", "candidates": "c.csv", "output": "out", "text_fields": "name"}

    def soar(**more: str) -> float | None:
        return scann_params_for(config_from_flags(flags | more), 20000)["soar_lambda"]

    assert soar() == 1.5  # the job embeds records (--text_fields)
    assert soar(text_fields="", vector_field="v") is None  # precomputed vectors: off unless asked
    assert soar(text_fields="", vector_field="v", scann_soar_lambda="1.5") == 1.5
    assert soar(scann_soar_lambda="0") is None
    assert soar(distance="squared_l2") is None
