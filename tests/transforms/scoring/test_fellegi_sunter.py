"""The Fellegi-Sunter model: EM recovers planted m/u/prior, term frequencies, weights and explain."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.scoring.comparisons import MISSING, NUM_LEVELS
from transforms.scoring.fellegi_sunter import (
    FellegiSunterModel,
    estimate_u,
    fit_em,
    fit_prior,
    merge_histograms,
    pattern_histogram,
    probability,
    term_frequencies,
    term_sketch,
)

M = np.array([[0.90, 0.05, 0.03, 0.01, 0.01],
              [0.80, 0.10, 0.05, 0.03, 0.02],
              [0.85, 0.02, 0.03, 0.05, 0.05],
              [0.95, 0.02, 0.01, 0.01, 0.01]])
U = np.array([[0.02, 0.01, 0.02, 0.05, 0.90],
              [0.05, 0.02, 0.03, 0.10, 0.80],
              [0.10, 0.05, 0.05, 0.10, 0.70],
              [0.01, 0.01, 0.02, 0.06, 0.90]])


def _draw(rng, table, n):
    return np.stack([rng.choice(NUM_LEVELS, size=n, p=row) for row in table], axis=1).astype(np.int8)


def _planted(n=40_000, prior=0.15, missing=0.05, seed=0):
    rng = np.random.default_rng(seed)
    is_match = rng.random(n) < prior
    levels = np.where(is_match[:, None], _draw(rng, M, n), _draw(rng, U, n))
    levels[rng.random(levels.shape) < missing] = MISSING
    return levels, is_match


def test_em_recovers_planted_m_u_and_prior():
    levels, is_match = _planted()
    random_pairs = _draw(np.random.default_rng(1), U, 20_000)
    hist = merge_histograms([pattern_histogram(levels[:15_000]), pattern_histogram(levels[15_000:])])
    m, u, prior, iterations, converged = fit_em(hist, estimate_u(random_pairs))
    assert converged and iterations > 1
    assert prior == pytest.approx(is_match.mean(), abs=0.01)
    np.testing.assert_allclose(m, M, atol=0.03)
    np.testing.assert_allclose(u, U, atol=0.03)


def test_fixed_u_and_prior_only_fit():
    levels, is_match = _planted(prior=0.3, seed=2)
    hist = pattern_histogram(levels)
    m, u, _, _, _ = fit_em(hist, U, fit_u=False)
    np.testing.assert_array_equal(u, U)
    np.testing.assert_allclose(m, M, atol=0.03)
    other, is_other = _planted(prior=0.05, seed=3)
    assert fit_prior(pattern_histogram(other), m, u) == pytest.approx(is_other.mean(), abs=0.01)


def test_scores_separate_matches_and_are_calibrated():
    levels, is_match = _planted(seed=4)
    model = FellegiSunterModel(tuple("abcd"), ("text",) * 4, M, U, 0.15)
    p = probability(model.weights(levels))
    assert ((p >= 0.5) == is_match).mean() > 0.97
    # Calibration: among pairs scored about 0.8, about 80 % are matches.
    band = (p > 0.7) & (p < 0.9)
    assert is_match[band].mean() == pytest.approx(p[band].mean(), abs=0.08)


def test_histogram_does_not_depend_on_batching():
    levels, _ = _planted(n=5000)
    whole = pattern_histogram(levels)
    parts = merge_histograms([pattern_histogram(levels[i:i + 700]) for i in range(0, 5000, 700)])
    assert whole == parts and sum(whole.values()) == 5000


def test_term_frequencies_count_values_and_skip_missing():
    rng = np.random.default_rng(5)
    hashes = rng.integers(1, 2**63, size=(200, 2), dtype=np.uint64)
    hashes[:100, 0] = 12345  # a common value: half the records
    hashes[150:, 1] = 0  # missing
    sketch = term_sketch(hashes)
    freq = term_frequencies(sketch, hashes, 200)
    np.testing.assert_allclose(freq[:100, 0], 0.5)
    assert np.all(freq[100:, 0] >= 1 / 200) and np.all(freq[100:, 0] <= 3 / 200)
    assert np.isnan(freq[150:, 1]).all()
    np.testing.assert_array_equal(term_sketch(hashes[:120]) + term_sketch(hashes[120:]), sketch)


def test_common_exact_values_weigh_less_than_rare_ones():
    model = FellegiSunterModel(("a", "b"), ("text", "text"), M[:2], U[:2], 0.1, records=1000)
    levels = np.array([[0, 4], [0, 4]], dtype=np.int8)
    freq = np.array([[0.2, np.nan], [0.001, np.nan]])
    w = model.weights(levels, freq)
    assert w[1] > model.weights(levels[:1])[0] > w[0]


def test_explain_adds_up_to_the_weight():
    model = FellegiSunterModel(("a", "b", "c", "d"), ("text",) * 4, M, U, 0.1, records=1000)
    levels = np.array([0, MISSING, 2, 4], dtype=np.int8)
    freq = np.array([0.01, np.nan, np.nan, np.nan])
    rows = model.explain(levels, freq)
    total = rows[-1]
    assert total["term"] == "total"
    assert sum(r["weight"] for r in rows[:-1]) == pytest.approx(total["weight"])
    assert total["weight"] == pytest.approx(model.weights(levels[None, :], freq[None, :])[0])
    assert rows[2]["level"] == "missing" and rows[2]["weight"] == 0.0
    assert rows[1]["tf_adjustment"] == pytest.approx(np.log2(U[0, 0] / 0.01))


def test_json_round_trip():
    model = FellegiSunterModel(("a", "b", "c", "d"), ("text",) * 4, M, U, 0.1, 77, {"em_iterations": 3})
    back = FellegiSunterModel.from_json(model.to_json())
    levels, _ = _planted(n=100)
    np.testing.assert_allclose(back.weights(levels), model.weights(levels), rtol=1e-9)
    assert back.fields == model.fields and back.fit == {"em_iterations": 3}
