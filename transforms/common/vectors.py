"""Vectors made ready for a distance: a float32 copy (L2-normalised under cosine) and the mask of
usable rows. Used by validation, the index and the launcher alike.

What it does not do: compute distances or drop rows (callers drop or dead-letter what the mask rejects).
"""

from __future__ import annotations

import numpy as np

from transforms.common.schema import DISTANCES

__all__ = ["check_distance", "prepare_vectors", "prepare_embedded"]



# Rows normalised per step in prepare_vectors (16k x 128 float64 = 16 MB of temporaries).
_NORMALIZE_BLOCK = 16_384


def check_distance(distance: str) -> None:
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")


def prepare_vectors(vectors: np.ndarray, distance: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns a float32 copy ready for indexing or search, and the mask of usable rows.

    For ``cosine`` rows are L2-normalised (norms computed in float64, so tiny or huge float32 rows
    normalise correctly). Rows that cannot be used, non-finite ones (also after the cast to float32)
    and, under cosine, zero-norm ones, are zero-filled in the copy and False in the mask; callers
    must drop or dead-letter them.

    Args:
        vectors: [n, d] array of any real dtype.
        distance: one of DISTANCES.

    Returns:
        (prepared float32 [n, d] C-contiguous array, ok_mask bool [n]).
    """
    check_distance(distance)
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D [n, d], got shape {vectors.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.array(vectors, dtype=np.float32, order="C", copy=True)
    ok = np.isfinite(out).all(axis=1)
    if distance == "cosine":
        out[~ok] = 0.0
        # Norms accumulate in float64; the division runs in float64 per block of rows and is
        # stored as float32, so no float64 copy of the whole matrix is made.
        norms = np.sqrt(np.einsum("ij,ij->i", out, out, dtype=np.float64))
        ok &= norms > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            for start in range(0, len(out), _NORMALIZE_BLOCK):
                block = slice(start, start + _NORMALIZE_BLOCK)
                out[block] = out[block] / norms[block, None]
    out[~ok] = 0.0
    return out, ok


def prepare_embedded(batch, distance: str):
    """A model's VectorBatch -> the same batch with its vectors prepared for ``distance``.

    The embed step has already rejected non-finite and zero vectors, so every row must pass here;
    one that does not is a bug, and raises ValueError.
    """
    from transforms.common.schema import VectorBatch

    vecs, ok = prepare_vectors(batch.vectors, distance)
    if ok.all():
        return VectorBatch(batch.ids, vecs, batch.origins)
    raise ValueError(f"{int((~ok).sum())} embedded vectors cannot be prepared for {distance}")
