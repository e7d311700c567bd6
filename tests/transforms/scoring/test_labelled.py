"""The supervised Fellegi-Sunter fit: counted m/u/prior recover a planted model; what it keeps."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.scoring.comparisons import MISSING, NUM_LEVELS
from transforms.scoring.fellegi_sunter import FellegiSunterModel
from transforms.scoring.labelled import fit_supervised

M = np.array([[0.90, 0.05, 0.03, 0.01, 0.01], [0.70, 0.15, 0.05, 0.05, 0.05]])
U = np.array([[0.05, 0.05, 0.10, 0.20, 0.60], [0.30, 0.10, 0.10, 0.10, 0.40]])
BASE = FellegiSunterModel(("surname", "embedding_distance"), ("text", "numeric"), np.full((2, 5), 0.2),
                          np.full((2, 5), 0.2), 0.5, records=123, fit={"distance_cuts": [0.1, 0.2, 0.3, 0.4]},
                          tf_base=np.array([0.01]))


def _planted(n: int, prior: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < prior
    levels = np.empty((n, 2), dtype=np.int8)
    for f in range(2):
        levels[:, f] = np.where(truth, rng.choice(NUM_LEVELS, n, p=M[f]), rng.choice(NUM_LEVELS, n, p=U[f]))
    levels[rng.random(n) < 0.1, 0] = MISSING
    return levels, truth


def test_counts_recover_the_planted_model_and_keep_the_corpus_parts():
    levels, truth = _planted(40_000, 0.2)
    model = fit_supervised(levels, truth, BASE)
    np.testing.assert_allclose(model.m, M, atol=0.015)
    np.testing.assert_allclose(model.u, U, atol=0.015)
    assert model.prior == pytest.approx(truth.mean(), abs=1e-3)
    assert model.fields == BASE.fields and model.records == 123
    np.testing.assert_array_equal(model.tf_base, BASE.tf_base)
    assert model.fit["distance_cuts"] == [0.1, 0.2, 0.3, 0.4] and model.fit["method"] == "supervised"
    # missing levels are not counted: field 0 has ~10 % fewer counts than field 1
    counts = np.array(model.fit["m_counts"]).sum(axis=1) + np.array(model.fit["u_counts"]).sum(axis=1)
    assert counts[1] == len(levels) and counts[0] == int((levels[:, 0] != MISSING).sum())


def test_a_level_no_labelled_pair_shows_stays_possible_and_scores_rank_by_evidence():
    levels = np.array([[0, 0], [0, 1], [4, 4], [3, 4], [4, 0]], dtype=np.int8)
    truth = np.array([True, True, False, False, False])
    model = fit_supervised(levels, truth, BASE)
    assert (model.m > 0).all() and (model.u > 0).all()
    w = model.weights(np.array([[0, 0], [4, 4]], dtype=np.int8))
    assert w[0] > 0 > w[1]


def test_needs_both_classes_and_matching_shapes():
    levels, truth = _planted(100, 0.5)
    with pytest.raises(ValueError, match="true and false"):
        fit_supervised(levels, np.ones(100, bool), BASE)
    with pytest.raises(ValueError, match="do not fit"):
        fit_supervised(levels[:, :1], truth, BASE)
