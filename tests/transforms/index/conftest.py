"""Fixtures of the index tests built on tests/transforms/index/oracle_cases.py: the data prepared per
distance, the oracle's answers, and a small cosine shard.

Package-scoped: built once for test_neighbor_index and test_scann together, as they were when the
two were one module (the other index tests do not use them).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.transforms.index.oracle_cases import NUM_QUERIES, SCANN_PARAMS, D, K, N, _clustered, _oracle
from transforms.common.vectors import prepare_vectors
from transforms.index.neighbor_index import (
    DISTANCES,
)


@pytest.fixture(scope="package")
def raw_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    centers = 3.0 * rng.standard_normal((100, D))
    return _clustered(rng, centers, N), _clustered(rng, centers, NUM_QUERIES)


@pytest.fixture(scope="package")
def prepared(raw_data) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for distance in DISTANCES:
        (db, db_ok), (q, q_ok) = (prepare_vectors(x, distance) for x in raw_data)
        assert db_ok.all() and q_ok.all()
        out[distance] = db, q
    return out


@pytest.fixture(scope="package")
def oracle(prepared) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {d: _oracle(d, prepared[d][1], prepared[d][0], K) for d in DISTANCES}


@pytest.fixture(scope="package")
def small_cosine() -> tuple[np.ndarray, dict]:
    """4000 x 15 (odd) unit vectors in 20 clusters, with params for a 60-leaf tree."""
    rng = np.random.default_rng(7)
    db, _ = prepare_vectors(_clustered(rng, 3.0 * rng.standard_normal((20, 15)), 4000), "cosine")
    return db, dict(SCANN_PARAMS, num_leaves=60, num_leaves_to_search=6, training_sample_size=3000,
                    spherical=True)
