"""The Fellegi-Sunter model: EM recovers planted m/u/prior, term frequencies, weights and explain."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.scoring import fellegi_sunter
from transforms.scoring.comparisons import MISSING, NUM_LEVELS
from transforms.scoring.fellegi_sunter import (
    FellegiSunterModel,
    agreement_rates,
    estimate_u,
    fit_em,
    fit_em_classes,
    fit_em_fields_first,
    fit_prior,
    fit_with_derived,
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
    freq = term_frequencies(sketch, hashes)
    np.testing.assert_allclose(freq[:100, 0], 0.5)
    assert np.all(freq[100:, 0] >= 1 / 200) and np.all(freq[100:, 0] <= 3 / 200)
    np.testing.assert_allclose(freq[:150, 1], 1 / 150)  # among the field's 150 present values
    assert np.isnan(freq[150:, 1]).all()
    # Random-pair agreement: half the values are one value, the rest distinct.
    rates = agreement_rates(sketch)
    assert rates[0] == pytest.approx(0.25 + 100 / 200**2, rel=0.02)
    assert rates[1] == pytest.approx(1 / 150, rel=0.05)
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


def test_three_classes_keep_households_out_of_the_match_class():
    # Fields: given name, surname, address, birth date. Households agree on surname and address
    # only; two-class EM takes matches + households for "matches", three classes do not.
    rng = np.random.default_rng(7)
    m = np.array([[0.85, 0.05, 0.04, 0.03, 0.03]] * 4)
    household = np.array([[0.02, 0.02, 0.02, 0.04, 0.90], [0.9, 0.04, 0.02, 0.02, 0.02],
                          [0.9, 0.04, 0.02, 0.02, 0.02], [0.01, 0.01, 0.01, 0.07, 0.90]])
    far = np.array([[0.02, 0.01, 0.02, 0.05, 0.90]] * 4)
    n_match, n_house, n_far = 3000, 6000, 21000
    levels = np.concatenate([_draw(rng, m, n_match), _draw(rng, household, n_house), _draw(rng, far, n_far)])
    is_match = np.r_[np.ones(n_match, bool), np.zeros(n_house + n_far, bool)]
    hist = pattern_histogram(levels)
    m3, u3, prior3, _, converged = fit_em_classes(hist, far, max_iterations=2000)
    assert converged
    assert prior3 == pytest.approx(0.1, abs=0.01)
    np.testing.assert_allclose(m3, m, atol=0.03)
    three = FellegiSunterModel(tuple("abcd"), ("text",) * 4, m3, u3, prior3)
    m2, u2, prior2, _, _ = fit_em(hist, far)
    two = FellegiSunterModel(tuple("abcd"), ("text",) * 4, m2, u2, prior2)
    acc3 = ((probability(three.weights(levels)) >= 0.5) == is_match).mean()
    acc2 = ((probability(two.weights(levels)) >= 0.5) == is_match).mean()
    assert acc3 > 0.99 and acc3 > acc2 + 0.05, (acc3, acc2)


def test_sketch_accumulates_in_place():
    rng = np.random.default_rng(9)
    a, b = (rng.integers(1, 2**63, size=(50, 3), dtype=np.uint64) for _ in range(2))
    acc = term_sketch(a)
    same = term_sketch(b, into=acc)
    assert same is acc
    np.testing.assert_array_equal(acc, term_sketch(np.concatenate([a, b])))


def test_the_match_class_starts_from_at_least_one_pattern():
    # One all-exact pattern holds 30 % of the pairs: more than the seed share on its own.
    rng = np.random.default_rng(8)
    exact = np.zeros((3000, 4), dtype=np.int8)
    levels = np.concatenate([exact, _draw(rng, U, 7000)])
    m, _, prior, _, _ = fit_em_classes(pattern_histogram(levels), U)
    assert m[:, 0].min() > 0.9 and prior == pytest.approx(0.3, abs=0.02)
    with pytest.raises(ValueError, match="seed_share"):
        fit_em_classes(pattern_histogram(levels), U, seed_share=0.6)


# Class tables measured on the generated people link data's candidate pairs (8 fields: given name,
# surname, street number, address, suburb, postcode, state, birth date), by truth: matches, people of
# one household, neighbours of one place, the rest; shares 8 %, 2.8 %, 24 %, 65 %.
_PEOPLE_CLASSES = (
    [[.62, .11, .09, .08, .10], [.74, .10, .08, .04, .05], [.89, 0, 0, .01, .09], [.84, .06, .03, .01, .06],
     [.86, .06, .02, 0, .06], [.85, .01, .06, .01, .06], [.87, 0, 0, .03, .10], [.88, .09, .02, .01, 0]],
    [[.02, .01, .01, .02, .94], [.99, 0, 0, 0, 0], [.93, .01, .01, .01, .05], [.99, 0, 0, 0, 0],
     [.89, .08, .02, 0, .01], [.9, .02, .07, 0, .01], [.91, 0, 0, .03, .06], [.02, .01, 0, .12, .84]],
    [[.01, 0, 0, .02, .97], [.03, .02, .02, .02, .91], [.11, 0, 0, .03, .85], [.05, .01, .02, .02, .89],
     [1, 0, 0, 0, 0], [.96, .01, .02, .01, 0], [.94, 0, 0, .03, .03], [0, .01, 0, .08, .91]],
    [[.04, 0, 0, .02, .94], [.04, .01, 0, .02, .93], [.12, 0, 0, .04, .84], [.02, .01, .06, .03, .88],
     [0, .02, .01, .02, .96], [.02, 0, .01, .08, .88], [.38, 0, 0, .01, .61], [.01, .07, 0, .23, .69]],
)


def _mixture(tables, sizes, seed):
    rng = np.random.default_rng(seed)
    parts = []
    for table, n in zip(tables, sizes, strict=True):
        t = np.asarray(table, dtype=np.float64)
        parts.append(_draw(rng, t / t.sum(axis=1, keepdims=True), n))
    return np.concatenate(parts), rng


def _f1_at_half(m, u, prior, levels, is_match):
    model = FellegiSunterModel(tuple(f"f{i}" for i in range(levels.shape[1])), ("text",) * levels.shape[1],
                               m, u, prior)
    kept = probability(model.weights(levels)) >= 0.5
    tp = int((kept & is_match).sum())
    return 2 * tp / (kept.sum() + is_match.sum())


def test_a_split_of_the_match_class_keeps_households_out():
    sizes = (1600, 560, 4820, 13020)
    levels, rng = _mixture(_PEOPLE_CLASSES, sizes, seed=0)
    is_match = np.r_[np.ones(sizes[0], bool), np.zeros(sum(sizes[1:]), bool)]
    far = np.asarray(_PEOPLE_CLASSES[3], dtype=np.float64)
    u = estimate_u(_draw(rng, far / far.sum(axis=1, keepdims=True), 20_000))
    hist = pattern_histogram(levels)
    m3, u3, prior3, _, _ = fit_em_classes(hist, u, split=False)
    m4, u4, prior4, _, converged = fit_em_classes(hist, u, split=True)
    assert converged
    assert prior3 > 0.1  # three classes take about half the households for matches
    assert prior4 == pytest.approx(is_match.mean(), abs=0.005)
    assert m4[0, 0] == pytest.approx(0.62, abs=0.03)  # the matches' given-name agreement, not 0.46
    f3, f4 = _f1_at_half(m3, u3, prior3, levels, is_match), _f1_at_half(m4, u4, prior4, levels, is_match)
    assert f4 > 0.95 and f4 > f3 + 0.1, (f3, f4)


# The four classes a split finds on FEBRL3-like dedup pairs (10 fields: 9 person fields, the
# embedding distance last): matches at the nearest distances, matches a little farther (more
# corrupted), place neighbours, the rest; shares 6 %, 14 %, 22 %, 57 %.
_FEBRL3_CLASSES = (
    [[.81, .13, .03, .01, .01], [.82, .11, .05, .01, .01], [.85, 0, .01, .02, .12], [.74, .11, .14, 0, .01],
     [.83, .14, .01, 0, .02], [.93, 0, .05, .01, 0], [.88, .01, .01, .05, .05], [1, 0, 0, 0, 0],
     [.93, .05, .02, 0, 0], [.29, .71, 0, 0, 0]],
    [[.58, .23, .1, .03, .06], [.59, .21, .12, .03, .05], [.67, 0, .02, .03, .28], [.53, .17, .25, .01, .05],
     [.63, .25, .04, .01, .06], [.79, 0, .14, .06, .02], [.78, .01, .02, .09, .11], [.77, .09, .1, .02, .03],
     [.82, .11, .05, 0, .02], [0, 0, .83, .17, 0]],
    [[.01, 0, .01, .02, .96], [.02, 0, 0, .02, .95], [.05, 0, 0, .04, .91], [0, 0, .02, .02, .95],
     [.88, .1, .01, 0, .01], [.96, 0, .03, .01, 0], [.91, 0, .01, .03, .04], [0, .01, 0, .08, .91],
     [0, 0, 0, .01, .99], [0, 0, 0, .33, .66]],
    [[.04, .01, 0, .02, .93], [.04, 0, 0, .01, .94], [.11, 0, 0, .04, .84], [.02, .01, .05, .03, .9],
     [0, 0, 0, .01, .98], [0, 0, .02, .08, .91], [.35, 0, 0, .02, .63], [.02, .08, 0, .23, .68],
     [0, 0, 0, .01, .99], [0, 0, 0, .13, .87]],
)


# The four classes the best split finds on heavy-corruption people dedup pairs (10 fields: given
# name, surname, street number, address, suburb, postcode, state, birth date, soc_sec_id, the
# embedding distance): matches, matches who moved (the address differs, identity agrees), place
# neighbours, the rest; shares 20 %, 1.7 %, 24 %, 54 %.
_MOVED_CLASSES = (
    [[.49, .07, .09, .17, .18], [.6, .14, .1, .06, .1], [.89, 0, 0, .03, .08], [.86, .08, .05, 0, 0],
     [.9, .08, .01, .01, 0], [.89, .01, .08, .02, 0], [.83, 0, 0, .06, .1], [.87, .1, .01, .01, .01],
     [.94, .02, .02, 0, .02], [.21, .36, .43, 0, 0]],
    [[.54, .03, .11, .11, .22], [.7, .05, .16, .03, .05], [.16, .03, .03, .03, .76],
     [.03, .03, .03, .03, .88], [.03, .03, .03, .03, .89], [.03, .03, .11, .06, .77],
     [.24, .03, .03, .03, .68], [.79, .11, .03, .03, .05], [.87, .05, .03, .03, .03],
     [.03, .03, .87, .03, .05]],
    [[.03, .02, .01, 0, .94], [.39, .08, .02, .01, .5], [.49, 0, 0, .02, .49], [.46, .04, .03, .01, .47],
     [.95, .03, 0, .01, 0], [.94, .01, .04, .01, 0], [.89, 0, 0, .03, .08], [0, .02, 0, .09, .89],
     [0, 0, 0, .02, .98], [0, 0, .34, .46, .19]],
    [[.04, 0, .01, .02, .93], [.04, 0, .01, .01, .94], [.08, 0, 0, .04, .87], [.01, .01, .04, .02, .91],
     [0, 0, 0, .01, .99], [0, 0, .01, .07, .92], [.34, 0, 0, .01, .65], [0, .08, 0, .19, .72],
     [0, 0, 0, .02, .98], [0, 0, 0, .29, .71]],
)


@pytest.mark.parametrize("classes, sizes", [(_FEBRL3_CLASSES, (1180, 2880, 4480, 11460)),
                                            (_MOVED_CLASSES, (4040, 340, 4740, 10880))],
                         ids=["febrl3_noisier_duplicates", "people_who_moved"])
def test_a_split_of_the_matches_themselves_is_not_kept(monkeypatch, classes, sizes):
    levels, rng = _mixture(classes, sizes, seed=1)
    far = np.asarray(classes[3], dtype=np.float64)
    u = estimate_u(_draw(rng, far / far.sum(axis=1, keepdims=True), 20_000))
    hist = pattern_histogram(levels)
    share = (sizes[0] + sizes[1]) / sum(sizes)
    m4, _, prior, _, _ = fit_em_classes(hist, u)
    m3, _, prior3, _, _ = fit_em_classes(hist, u, split=False)
    assert prior == pytest.approx(share, abs=0.015) and prior == prior3
    np.testing.assert_array_equal(m4, m3)
    # The split does pay: taking its other half for non-matches would lose those matches.
    monkeypatch.setattr("transforms.scoring.fellegi_sunter._KIN_AGREEMENT", 2.0)
    _, _, without_test, _, _ = fit_em_classes(hist, u)
    assert without_test < share - 0.01


def _orgs_like(seed: int, derived_from_fields: bool):
    """Planted pairs of organisation-like records: a name (matches close, others far), a city and
    country most candidate non-matches share, and a derived fourth field: a noisy sum of the three
    fields' agreement (as an embedding distance is), or evidence independent of them given the class.
    Returns (levels [n, 4], is_match, u from random pairs)."""
    rng = np.random.default_rng(seed)
    n = 40_000
    is_match = rng.random(n) < 0.1
    same_city = np.where(is_match, rng.random(n) < 0.9, rng.random(n) < 0.6)
    name = np.where(is_match, rng.choice(5, n, p=[0.3, 0.3, 0.2, 0.15, 0.05]),
                    rng.choice(5, n, p=[0.001, 0.009, 0.04, 0.15, 0.8]))
    city = np.where(same_city, 0, rng.choice([3, 4], n))
    country = np.where(same_city | (rng.random(n) < 0.8), 0, 4)
    if derived_from_fields:
        score = (4 - name) * 0.5 + (city == 0) * 3.0 + (country == 0) + rng.normal(0, 0.5, n)
    else:
        score = is_match * 2.0 + rng.normal(0, 1.0, n)
    derived = np.digitize(-score, np.quantile(-score, [0.2, 0.5, 0.8, 0.95]))
    levels = np.stack([name, city, country, derived], axis=1).astype(np.int8)
    k = 5_000
    random_levels = np.stack([rng.choice(5, k, p=[0.0005, 0.005, 0.02, 0.1, 0.8745]),
                              np.where(rng.random(k) < 0.02, 0, 4), np.where(rng.random(k) < 0.3, 0, 4),
                              rng.choice(5, k)], axis=1).astype(np.int8)
    return levels, is_match, estimate_u(random_levels)


def _fit_f1_at_half(fit, levels, is_match) -> float:
    model = FellegiSunterModel(("name", "city", "country", "distance"), ("text",) * 3 + ("distance",),
                               fit[0], fit[1], fit[2])
    kept = probability(model.weights(levels)) >= 0.5
    return 2 * (kept & is_match).sum() / (kept.sum() + is_match.sum())


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("derived_from_fields", [True, False])
def test_a_derived_field_that_would_define_the_classes_is_fitted_after_the_fields(seed, derived_from_fields):
    levels, is_match, u = _orgs_like(seed, derived_from_fields)
    histogram = pattern_histogram(levels)
    m, u_fit, prior, _, _, facts = fit_with_derived(histogram, u, derived=(3,))
    joint = fit_em_classes(histogram, u, derived=(3,))
    first = fit_em_fields_first(histogram, u, derived=(3,))
    f1_joint, f1_first = _fit_f1_at_half(joint, levels, is_match), _fit_f1_at_half(first, levels, is_match)
    if derived_from_fields:  # the joint fit double-counts city and country: a match class too big
        assert facts["derived_evidence"] == "after the fields"
        assert f1_first > f1_joint + 0.05 and joint[2] > 1.5 * first[2]
        np.testing.assert_array_equal(m, first[0])
    else:  # independent evidence: the joint fit uses it, and is the better one
        assert facts["derived_evidence"] == "joint"
        assert f1_joint > f1_first
        np.testing.assert_array_equal(m, joint[0])
    assert facts["match_share_joint"] == pytest.approx(joint[2], abs=1e-6)


def test_fields_first_fits_the_fields_alone_then_the_derived_field_from_their_posteriors():
    levels, _, u = _orgs_like(3, True)
    histogram = pattern_histogram(levels)
    m, u_fit, prior, _, _ = fit_em_fields_first(histogram, u, derived=(3,))
    masked = levels.copy()
    masked[:, 3] = MISSING
    fields = fit_em_classes(pattern_histogram(masked), u, derived=(3,))
    np.testing.assert_allclose(m[:3], fields[0][:3])
    np.testing.assert_allclose(u_fit[:3], fields[1][:3])
    assert prior == pytest.approx(fields[2])
    # The derived field's m: its level shares weighted by each pair's posterior under the fields.
    model = FellegiSunterModel(("a", "b", "c", "d"), ("text",) * 4, fields[0], fields[1], fields[2])
    post = probability(model.weights(masked))
    shares = np.bincount(levels[:, 3], weights=post, minlength=NUM_LEVELS) + 1.0
    np.testing.assert_allclose(m[3], shares / shares.sum(), rtol=1e-9)


# The four classes of the 1M-record people link data's candidate pairs (bench.people_job; 9 fields,
# the embedding distance last), as the split on the given name finds them: matches, households
# (given name and birth date differ), place neighbours, and the rest, people *born the same day*
# (the rare whole-date tokens pull them together in the embedding); shares 7.5 %, 1.4 %, 25 %, 66 %.
# The last class agrees on the birth date, so no field but the given name is "different" in every
# non-match class: only the embedding distance tells the households from the matches.
_BIRTHDAY_CLASSES = (
    [[.6, .11, .1, .08, .11], [.74, .1, .08, .03, .05], [.95, 0, 0, .01, .03], [.89, .07, .04, 0, 0],
     [.91, .07, .02, 0, 0], [.91, .01, .06, .02, 0], [.92, 0, 0, .03, .05], [.92, .07, .01, 0, 0],
     [.27, .41, .32, 0, 0]],
    [[.09, .02, .02, .03, .85], [.82, .08, .05, .02, .03], [.98, 0, 0, 0, .02], [.93, .05, .02, 0, 0],
     [.94, .05, .01, 0, 0], [.95, .01, .03, .01, 0], [.95, 0, 0, .02, .03], [0, .03, .03, .17, .76],
     [0, 0, .13, .38, .49]],
    [[.05, 0, .01, .02, .92], [.06, 0, 0, .02, .92], [.13, 0, 0, .04, .83], [.03, .01, .07, .03, .85],
     [.97, .02, 0, 0, 0], [.98, 0, .01, 0, 0], [.98, 0, 0, .01, .01], [.04, .07, 0, .19, .7],
     [0, 0, .04, .12, .84]],
    [[.02, 0, 0, .01, .96], [.02, 0, 0, .01, .96], [.05, 0, 0, .04, .9], [.01, 0, .02, .02, .95],
     [0, 0, 0, .01, .99], [0, 0, .01, .06, .93], [.3, 0, 0, .01, .7], [.74, .23, 0, .01, .02],
     [0, 0, .02, .24, .73]],
)


def _normalised(classes):
    return [np.asarray(t, dtype=np.float64) / np.asarray(t, dtype=np.float64).sum(axis=1, keepdims=True)
            for t in classes]


def test_the_embedding_distance_tells_households_from_matches_when_no_identity_field_is_left(monkeypatch):
    tables = _normalised(_BIRTHDAY_CLASSES)
    # Split on the given name (field 0): the other half (households) is another entity.
    assert not fellegi_sunter._sibling_is_matches(tables, 0, 0, derived=(8,))
    # Without the distance as a witness the test had no field left that tells (the birth date is
    # shared by the last class, the address by the households): it called the households matches.
    monkeypatch.setattr("transforms.scoring.fellegi_sunter._DERIVED_KIN_AGREEMENT", 0.0)
    assert fellegi_sunter._sibling_is_matches(tables, 0, 0, derived=(8,))


def test_people_who_moved_stay_matches_with_the_distance_as_a_witness():
    tables = _normalised(_MOVED_CLASSES)  # split on the address (field 3); the distance is field 9
    assert fellegi_sunter._sibling_is_matches(tables, 0, 3, derived=(9,))


# The four classes of the best-paying split (on the state) of FEBRL4-like link pairs (1,000
# entities, 10 fields: 9 person fields with soc_sec_id, the embedding distance last): matches,
# matches with a corrupted birth date that sit far on the distance, place neighbours, the rest.
_FEBRL4_FAR_MATCHES = (
    [[.67, .19, .08, .02, .04], [.64, .2, .1, .02, .03], [.69, 0, .02, .03, .26], [.56, .13, .26, .01, .04],
     [.72, .19, .04, .01, .04], [.82, 0, .12, .04, .02], [.85, .01, 0, .06, .08], [.99, 0, 0, 0, 0],
     [.84, .11, .03, 0, .01], [.24, .36, .33, .06, 0]],
    [[.67, .15, .08, .04, .07], [.71, .15, .09, .03, .02], [.68, .01, .01, .04, .26],
     [.58, .14, .23, .01, .04], [.67, .22, .07, .01, .03], [.83, .01, .15, .01, .01],
     [.85, .01, .01, .08, .05], [.02, .28, .49, .11, .1], [.84, .12, .02, .01, .02],
     [.01, .01, .13, .57, .29]],
    [[.01, 0, 0, .01, .97], [.01, 0, 0, .02, .97], [.04, 0, 0, .04, .91], [0, 0, .01, .01, .97],
     [.83, .12, .02, 0, .02], [.93, 0, .05, .02, 0], [.9, .01, 0, .04, .05], [0, .01, 0, .07, .92],
     [0, 0, 0, .01, .99], [0, 0, 0, 0, 1]],
    [[.03, 0, 0, .01, .95], [.03, .01, 0, .02, .94], [.09, 0, 0, .04, .86], [.01, .01, .04, .03, .91],
     [0, 0, 0, .01, .98], [0, 0, .01, .06, .92], [.32, 0, 0, .01, .66], [0, .05, 0, .19, .75],
     [0, 0, 0, .01, .98], [0, 0, 0, 0, 1]],
)


def test_matches_far_on_the_distance_but_agreeing_on_the_fields_stay_matches():
    # Far on the embedding distance (close in 15 % of pairs, the matches in 93 %) is not enough:
    # they agree on every field as the matches do (the birth date a little less exactly).
    assert fellegi_sunter._sibling_is_matches(_normalised(_FEBRL4_FAR_MATCHES), 0, 6, derived=(9,))
