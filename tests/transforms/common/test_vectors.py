"""Tests for transforms.common.vectors: prepare_vectors masks unusable rows and normalises like float64."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.common.vectors import prepare_vectors


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
