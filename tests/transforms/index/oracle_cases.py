"""The seeded clustered data, ScaNN params and the independent numpy oracle shared by
test_neighbor_index and test_scann (the fixtures built from them are in conftest.py).

Data are seeded Gaussian clusters (20k candidates x 32 dims, 200 queries). The oracle computes full
float64 distance matrices itself and never calls transforms.index.neighbor_index's search code.
"""

from __future__ import annotations

import os

import numpy as np

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


def _recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want, strict=True)]))
