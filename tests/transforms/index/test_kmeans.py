"""Tests for transforms.index.kmeans (the deterministic tree trainer) against plain numpy oracles."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.index.kmeans import assign, train_centers


def _blobs(n: int, d: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = 4.0 * rng.standard_normal((k, d))
    x = centers[rng.integers(k, size=n)] + rng.standard_normal((n, d))
    return x.astype(np.float32)


@pytest.mark.parametrize("spherical", [True, False])
def test_assign_is_the_nearest_centre_of_a_float64_oracle(spherical):
    x = _blobs(3000, 12, 8, seed=1)
    c = _blobs(40, 12, 8, seed=2)
    if spherical:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        c /= np.linalg.norm(c, axis=1, keepdims=True)
    dist = ((x[:, None, :].astype(np.float64) - c[None, :, :]) ** 2).sum(axis=2)
    want = dist.argmin(axis=1)
    got = assign(x, c, spherical=spherical)
    # float32 scores may flip near-ties only: the chosen centre is as near as the oracle's to 1e-4.
    chosen = dist[np.arange(len(x)), got]
    assert (chosen <= dist[np.arange(len(x)), want] + 1e-4).all()
    assert (got == want).mean() > 0.99


def test_train_centers_is_byte_identical_across_runs_and_finds_the_blobs():
    x = _blobs(20_000, 16, 30, seed=3)
    a = train_centers(x, 30, sample_size=5000, spherical=False, seed=0)
    b = train_centers(x.copy(), 30, sample_size=5000, spherical=False, seed=0)
    assert a.dtype == np.float32 and a.shape == (30, 16)
    assert a.tobytes() == b.tobytes()
    assert train_centers(x, 30, sample_size=5000, spherical=False, seed=1).tobytes() != a.tobytes()
    # Lloyd from a random start may leave two blobs to one centre, but the centres explain most of
    # the spread: mean squared distance to the centre well under a fifth of that to the global mean.
    labels = assign(x, a, spherical=False)
    inertia = float(((x - a[labels]) ** 2).sum(axis=1).mean())
    assert inertia < 0.2 * float(((x - x.mean(axis=0)) ** 2).sum(axis=1).mean())


def test_spherical_centres_are_unit_length_and_every_centre_is_used():
    x = _blobs(5000, 8, 5, seed=4)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    # Many more centres than blobs: some lose their rows along the way and are reseeded.
    c = train_centers(x, 60, sample_size=5000, spherical=True, seed=0)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, rtol=1e-5)
    assert len(np.unique(assign(x, c, spherical=True))) > 50


def test_train_centers_rejects_too_few_rows_and_bad_arguments():
    x = _blobs(100, 4, 3, seed=5)
    with pytest.raises(ValueError, match="at least as many rows"):
        train_centers(x, 200, sample_size=100, spherical=False)
    with pytest.raises(ValueError, match="at least as many rows"):
        train_centers(x, 60, sample_size=50, spherical=False)
    with pytest.raises(ValueError, match="num_centers"):
        train_centers(x, 0, sample_size=100, spherical=False)
