"""Deterministic k-means for the leaves of a shard's ScaNN tree (pure numpy).

Why not ScaNN's own k-means: its random initialisation ignores ``clustering_seed`` (a different tree
on every build, even on one thread), and its k-means++ initialisation, which honours the seed, is a
sequential pass over the training sample per centre: at 2,000 leaves it doubled the whole build.
Here the sample and the initial centres are drawn with a seeded numpy generator from the shard's
rows (which arrive sorted by id, so they are a function of the shard's records only), and Lloyd
iterations run as blocked float32 BLAS matmuls (multi-threaded, but each output element is computed
by one thread in a fixed order, so the result does not depend on timing); centre sums are reduced
in a fixed order. Same vectors, same parameters: the same centres, byte for byte, on one machine.

What it does not do: balance leaves, spill, or build the tree itself; :mod:`transforms.index.neighbor_index`
hands
the centres to ScaNN as a trained partitioner.
"""

from __future__ import annotations

import logging
import time

import numpy as np

__all__ = ["train_centers", "assign", "DEFAULT_ITERATIONS"]

_LOGGER = logging.getLogger(__name__)

# Lloyd iterations after the seeded initialisation (ScaNN's tree trains for at most 12).
DEFAULT_ITERATIONS = 10
# Rows scored per matmul: 4096 x 2000 float32 scores = 32 MiB, cache-friendly for the argmax.
_BLOCK_ROWS = 4096


def assign(vectors: np.ndarray, centers: np.ndarray, *, spherical: bool,
           out_scores: np.ndarray | None = None) -> np.ndarray:
    """The nearest centre of every row, int32 [n]: by dot product for ``spherical`` (unit rows and
    unit centres), else by squared L2 (|c|^2 - 2 x.c, the per-row |x|^2 dropped). Ties go to the
    smaller centre index. ``out_scores`` (float32 [n]), when given, receives each row's score for
    its centre (the larger, the nearer)."""
    n = len(vectors)
    labels = np.empty(n, dtype=np.int32)
    half_sq = None if spherical else 0.5 * np.einsum("kd,kd->k", centers, centers, dtype=np.float32)
    centers_t = np.ascontiguousarray(centers.T)
    for start in range(0, n, _BLOCK_ROWS):
        scores = vectors[start:start + _BLOCK_ROWS] @ centers_t
        if half_sq is not None:
            scores -= half_sq
        best = scores.argmax(axis=1)
        labels[start:start + len(best)] = best
        if out_scores is not None:
            out_scores[start:start + len(best)] = scores[np.arange(len(best)), best]
    return labels


def train_centers(vectors: np.ndarray, num_centers: int, *, sample_size: int, spherical: bool,
                  seed: int = 0, iterations: int = DEFAULT_ITERATIONS) -> np.ndarray:
    """``num_centers`` k-means centres of ``vectors``, float32 [num_centers, d].

    Trains on ``sample_size`` rows drawn without replacement by ``np.random.default_rng(seed)``
    (all rows when there are no more), starting from ``num_centers`` distinct sample rows drawn by
    the same generator, for ``iterations`` Lloyd rounds (fewer when the assignment stops changing).
    ``spherical`` normalises the centres to unit length after every update (for cosine, whose
    vectors are unit length). A centre that loses all its rows is moved onto the sample row
    farthest from its own centre (ties by row), so every centre stays in use.

    Raises:
        ValueError: fewer rows than centres, or a bad argument.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    if num_centers < 1 or iterations < 0 or sample_size < 1:
        raise ValueError(f"num_centers and sample_size must be >= 1 and iterations >= 0, got "
                         f"{num_centers}, {sample_size}, {iterations}")
    if min(n, sample_size) < num_centers:
        raise ValueError(f"k-means needs at least as many rows ({min(n, sample_size)}) as centres "
                         f"({num_centers})")
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    if sample_size < n:
        sample = vectors[np.sort(rng.choice(n, size=sample_size, replace=False))]
    else:
        sample = vectors
    m = len(sample)
    centers = sample[np.sort(rng.choice(m, size=num_centers, replace=False))].copy()
    labels = None
    scores = np.empty(m, dtype=np.float32)
    done = 0
    while done < iterations:
        done += 1
        new = assign(sample, centers, spherical=spherical, out_scores=scores)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        centers = _update(sample, labels, centers, scores, spherical=spherical)
    _LOGGER.info("k-means: %d centres of %d x %d sample rows, %d iterations in %.1f s", num_centers, m,
                 vectors.shape[1], done, time.perf_counter() - started)
    return centers


def _update(sample: np.ndarray, labels: np.ndarray, old: np.ndarray, scores: np.ndarray, *,
            spherical: bool) -> np.ndarray:
    """The mean of each centre's rows, summed in row order (deterministic); empty centres reseeded."""
    k, d = old.shape
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=k)
    present = np.flatnonzero(counts)
    starts = np.concatenate([[0], np.cumsum(counts[present])[:-1]])
    sums = np.add.reduceat(sample[order], starts, axis=0, dtype=np.float64)
    centers = old.copy()
    centers[present] = (sums / counts[present, None]).astype(np.float32)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        # The rows worst served by their centre (smallest score), one per empty centre.
        worst = np.argsort(scores, kind="stable")[:len(empty)]
        centers[empty] = sample[worst]
    if spherical:
        norms = np.linalg.norm(centers.astype(np.float64), axis=1)
        norms[norms == 0] = 1.0
        centers = (centers / norms[:, None]).astype(np.float32)
    return centers
