"""The unsupervised Fellegi-Sunter model: m/u probabilities per field level, fitted by EM, and scoring.

For a candidate pair with comparison levels ``l_f`` (``transforms.scoring.comparisons``), the match
weight is ``log2(prior / (1 - prior)) + sum_f log2(m_f[l_f] / u_f[l_f])``, where ``m_f[l]`` is the
probability of level ``l`` among true matches, ``u_f[l]`` among non-matches and ``prior`` the share of
matches among the candidate pairs; the match probability is ``1 / (1 + 2**-weight)``. A missing level
adds nothing.

* **u** starts from random record pairs (almost all non-matches): :func:`estimate_u`, with
  add-half smoothing so a level never seen among random pairs is rare, not impossible.
* **m, u and the prior** come from EM over the candidate pairs: :func:`fit_em_classes` (three
  latent classes folded into m/u, robust to households and shared places among near neighbours),
  or the classic two-class :func:`fit_em` (u can be held fixed, Splink's recipe, but candidate
  non-matches are near neighbours that agree far more often than random pairs). EM runs on the
  *sufficient statistics* only, the histogram of level patterns (:func:`pattern_histogram`), which
  the pipeline sums across workers in a CombineFn: a batch of pairs becomes a few hundred
  distinct patterns whatever the corpus size.
* **Term-frequency adjustment.** Exact agreement on a common value (``smith``) is weaker evidence
  than on a rare one (``kowalczyk``): for text fields the exact level's ``u`` is replaced by the
  value's frequency among the field's values, ``tf(v)``, i.e. the weight gains
  ``log2(tf_base_f / tf(v))``, where ``tf_base_f = sum_v tf(v)**2`` is the exact-agreement rate of
  random pairs. Both come from a count-min sketch of the normalised values' hashes
  (:func:`term_sketch`, fixed size, summed across workers), whose overestimate is at most about
  ``e * records / width`` per value.

Everything here is pure numpy: the Beam wiring is ``transforms.scoring.score_pairs``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

from transforms.common.flags import DEFAULT_MIN_PROBABILITY
from transforms.scoring.comparisons import LEVEL_NAMES, MISSING, NUM_LEVELS

__all__ = [
    "DEFAULT_MIN_PROBABILITY",
    "FellegiSunterModel",
    "SKETCH_DEPTH",
    "SKETCH_WIDTH",
    "term_sketch",
    "term_frequencies",
    "agreement_rates",
    "pattern_histogram",
    "merge_histograms",
    "unpack_histogram",
    "estimate_u",
    "fit_em",
    "fit_em_classes",
    "fit_em_fields_first",
    "fit_with_derived",
    "fit_prior",
    "probability",
]

SKETCH_DEPTH = 3
SKETCH_WIDTH = 1 << 17
_SKETCH_BITS = 17
_M_INIT = np.array([0.85, 0.07, 0.04, 0.02, 0.02])
_PRIOR_INIT = 0.3
# fit_em_classes: the match class starts from this share of pairs with the most evidence.
_SEED_SHARE = 0.05
# fit_em_classes: the match class is tried split on this many of its most bimodal fields, those
# with at least this share of pairs both agreeing exactly and agreeing weakly or not at all.
_SPLIT_FIELDS = 3
_SPLIT_MIN_SHARE = 0.05
# ... and the other half stays matches unless it agrees on an identity field (one every non-match
# class is "different" on in this share of its pairs) less than this fraction as often as the matches.
_IDENTITY_DIFFERENT = 0.6
_KIN_AGREEMENT = 0.5
# A derived field witnesses where the matches are close on it at least this often, and the other
# half less than this fraction as often.
_DERIVED_MIN_CLOSE = 0.5
_DERIVED_KIN_AGREEMENT = 0.25
_CLOSE_LEVELS = 3
_FLOOR = 1e-6
_PATTERN_BITS = 3  # a level (MISSING..4) + 1 in 0..5
# One pseudo-pair per level: a level no fitted match shows is rare among matches, not impossible.
_M_PSEUDO = 1.0
# A joint fit whose match share is more than this factor off the fields-first fit's is not kept.
_DERIVED_PRIOR_RATIO = 1.5
_EM_MAX_ITERATIONS = 200
_EM_TOLERANCE = 1e-7


# ------------------------------------------------------------------------------------------------
# Term frequencies: a count-min sketch per text field


def _sketch_slots(hashes: np.ndarray) -> np.ndarray:
    """[..., SKETCH_DEPTH] int64 slots of uint64 hashes: one 17-bit window of the hash per row."""
    shifts = np.array([_SKETCH_BITS * d for d in range(SKETCH_DEPTH)], dtype=np.uint64)
    return ((hashes[..., None] >> shifts) & np.uint64(SKETCH_WIDTH - 1)).astype(np.int64)


def term_sketch(hashes: np.ndarray, into: np.ndarray | None = None) -> np.ndarray:
    """Count-min sketch of value hashes [n, T] (0 = missing, not counted): int64 [T, DEPTH, WIDTH].

    With ``into`` (a sketch of the same fields) the counts are added to it in place and it is
    returned: a CombineFn accumulates batch after batch without a new array each time.
    """
    n, t = hashes.shape
    sketch = np.zeros((t, SKETCH_DEPTH, SKETCH_WIDTH), dtype=np.int64) if into is None else into
    for j in range(t):
        h = hashes[:, j]
        h = h[h != 0]
        if len(h):
            slots = _sketch_slots(h)
            for d in range(SKETCH_DEPTH):
                sketch[j, d] += np.bincount(slots[:, d], minlength=SKETCH_WIDTH)
    return sketch


def term_frequencies(sketch: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Estimated frequency of each value hash [m, T] among the field's present values; NaN where
    the hash is 0 (missing)."""
    slots = _sketch_slots(hashes)  # [m, T, DEPTH]
    t = hashes.shape[1]
    counts = np.empty(hashes.shape, dtype=np.int64)
    for j in range(t):
        counts[:, j] = np.min(np.stack([sketch[j, d][slots[:, j, d]] for d in range(SKETCH_DEPTH)],
                                       axis=1), axis=1)
    present = np.maximum(sketch[:, 0].sum(axis=1), 1)  # values counted per field
    freq = np.maximum(counts, 1) / present[None, :t]
    return np.where(hashes == 0, np.nan, freq)


def agreement_rates(sketch: np.ndarray) -> np.ndarray:
    """Per field, the chance that two random present values are equal, ``sum_v tf(v)**2``.

    From the sketch's second moment: a row's sum of squared counts overestimates ``sum_v c_v**2`` by
    the colliding pairs, about ``(n**2 - F2) / width`` (n values counted), which is subtracted.
    """
    n = sketch[:, 0].sum(axis=1).astype(np.float64)  # [T]
    squares = (sketch.astype(np.float64) ** 2).sum(axis=2)  # [T, DEPTH]
    f2 = ((SKETCH_WIDTH * squares - n[:, None] ** 2) / (SKETCH_WIDTH - 1)).min(axis=1)
    f2 = np.maximum(f2, n)  # every value at least equals itself
    return np.where(n > 0, f2 / np.maximum(n, 1) ** 2, 1.0)


# ------------------------------------------------------------------------------------------------
# Sufficient statistics and fitting


def pattern_histogram(levels: np.ndarray) -> dict[bytes, int]:
    """Distinct level patterns of int8 [m, F] rows and how often each occurs."""
    if not len(levels):
        return {}
    levels = np.ascontiguousarray(levels, dtype=np.int8)
    num_fields = levels.shape[1]
    if num_fields * _PATTERN_BITS > 63:
        patterns, counts = np.unique(levels, axis=0, return_counts=True)
    else:  # each row as one int64 (3 bits per level): a plain sort, not a row-wise one (5x faster)
        shifts = np.arange(num_fields, dtype=np.int64) * _PATTERN_BITS
        keys = ((levels.astype(np.int64) + 1) << shifts).sum(axis=1)
        keys, counts = np.unique(keys, return_counts=True)
        patterns = (((keys[:, None] >> shifts) & ((1 << _PATTERN_BITS) - 1)) - 1).astype(np.int8)
    return {p.tobytes(): int(c) for p, c in zip(patterns, counts, strict=True)}


def merge_histograms(histograms: list[dict[bytes, int]]) -> dict[bytes, int]:
    out: dict[bytes, int] = {}
    for h in histograms:
        for k, v in h.items():
            out[k] = out.get(k, 0) + v
    return out


def unpack_histogram(histogram: dict[bytes, int], num_fields: int) -> tuple[np.ndarray, np.ndarray]:
    """A histogram as (int8 patterns [P, F], float64 counts [P]), patterns in sorted byte order."""
    keys = sorted(histogram)  # a fixed order: the fit does not depend on how workers merged
    patterns = np.frombuffer(b"".join(keys), dtype=np.int8).reshape(len(keys), num_fields)
    counts = np.array([histogram[k] for k in keys], dtype=np.float64)
    return patterns, counts


def estimate_u(levels: np.ndarray) -> np.ndarray:
    """u [F, NUM_LEVELS] from the levels of random pairs, add-half smoothed; missing levels ignored."""
    num_fields = levels.shape[1]
    u = np.empty((num_fields, NUM_LEVELS))
    for f in range(num_fields):
        col = levels[:, f]
        counts = np.bincount(col[col != MISSING].astype(np.int64), minlength=NUM_LEVELS)[:NUM_LEVELS]
        u[f] = (counts + 0.5) / (counts.sum() + 0.5 * NUM_LEVELS)
    return u


def _log_likelihoods(cells: np.ndarray, table: np.ndarray) -> np.ndarray:
    """sum_f log table[f, pattern_f] per pattern (``cells`` from :func:`_cells`), missing levels
    contributing 0."""
    # Each field's cell after its levels holds log(1) = 0: the MISSING level's.
    logs = np.log(np.concatenate([table, np.ones((table.shape[0], 1))], axis=1)).ravel()
    return logs[cells].sum(axis=1)


def _cells(patterns: np.ndarray) -> np.ndarray:
    """The flat (field, level) cell of every pattern's every field, int64 [P, F]: field f's levels
    are cells f * (NUM_LEVELS + 1) + level, its MISSING level the cell after them."""
    width = NUM_LEVELS + 1
    return np.arange(patterns.shape[1]) * width + patterns.astype(np.int64) % width


def _posterior(cells: np.ndarray, m: np.ndarray, u: np.ndarray, prior: float) -> np.ndarray:
    """P(match | pattern) for every pattern (``cells`` from :func:`_cells`)."""
    a = math.log(prior) + _log_likelihoods(cells, m)
    b = math.log1p(-prior) + _log_likelihoods(cells, u)
    return 1.0 / (1.0 + np.exp(np.clip(b - a, -700, 700)))


def _level_shares(cells: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per field, the weighted share of each level (one pseudo-pair per level), [F, NUM_LEVELS];
    ``cells`` from :func:`_cells`. One bincount over all fields (missing levels fall in cells of
    their own, dropped)."""
    num_fields = cells.shape[1]
    totals = np.bincount(cells.ravel(), weights=np.repeat(weight, num_fields),
                         minlength=num_fields * (NUM_LEVELS + 1))
    totals = totals.reshape(num_fields, NUM_LEVELS + 1)[:, :NUM_LEVELS]
    return (totals + _M_PSEUDO) / (totals.sum(axis=1, keepdims=True) + _M_PSEUDO * NUM_LEVELS)


def fit_em(histogram: dict[bytes, int], u: np.ndarray, *, fit_u: bool = True,
           max_iterations: int = _EM_MAX_ITERATIONS,
           tolerance: float = _EM_TOLERANCE) -> tuple[np.ndarray, np.ndarray, float, int, bool]:
    """EM for m, u (unless ``fit_u`` is False) and the prior over level patterns.

    Args:
        histogram: pattern bytes -> count (:func:`pattern_histogram`, merged).
        u: [F, NUM_LEVELS] start (or fixed) u, e.g. :func:`estimate_u` of random pairs.

    Returns:
        (m [F, NUM_LEVELS], u [F, NUM_LEVELS], prior, iterations, converged). m starts at mostly
        exact agreement, so the class EM calls "match" is the one that agrees.
    """
    num_fields = u.shape[0]
    m = np.tile(_M_INIT, (num_fields, 1))
    u = np.array(u, dtype=np.float64)
    prior = _PRIOR_INIT
    if not histogram:
        return m, u, prior, 0, True
    patterns, counts = unpack_histogram(histogram, num_fields)
    cells = _cells(patterns)
    converged = False
    iteration = 0
    for iteration in range(1, max_iterations + 1):  # noqa: B007 (reported)
        g = _posterior(cells, m, u, prior)
        new_prior = float(np.clip((counts * g).sum() / counts.sum(), _FLOOR, 1 - _FLOOR))
        new_m = _level_shares(cells, counts * g)
        new_u = _level_shares(cells, counts * (1 - g)) if fit_u else u
        change = max(abs(new_prior - prior), float(np.abs(new_m - m).max()), float(np.abs(new_u - u).max()))
        m, u, prior = new_m, new_u, new_prior
        if change < tolerance:
            converged = True
            break
    return m, u, prior, iteration, converged


def _mixture_loglik(cells: np.ndarray, counts: np.ndarray, tables: list[np.ndarray],
                    shares: np.ndarray) -> tuple[np.ndarray, float]:
    """(posterior class memberships [P, K], total log-likelihood) of the patterns under a mixture."""
    ll = np.stack([math.log(p) + _log_likelihoods(cells, t) for p, t in zip(shares, tables, strict=True)],
                  axis=1)
    top = ll.max(axis=1, keepdims=True)
    g = np.exp(ll - top)
    total = g.sum(axis=1, keepdims=True)
    return g / total, float((counts * (top[:, 0] + np.log(total[:, 0]))).sum())


def _mixture_em(cells: np.ndarray, counts: np.ndarray, tables: list[np.ndarray],
                shares: np.ndarray, max_iterations: int,
                tolerance: float) -> tuple[list[np.ndarray], np.ndarray, int, bool, float]:
    """EM of a latent-class mixture from a start: (tables, shares, iterations, converged, loglik)."""
    converged = False
    iteration = 0
    for iteration in range(1, max_iterations + 1):  # noqa: B007 (reported)
        g, _ = _mixture_loglik(cells, counts, tables, shares)
        new_shares = np.clip((counts[:, None] * g).sum(axis=0) / counts.sum(), _FLOOR, 1.0)
        new_tables = [_level_shares(cells, counts * g[:, k]) for k in range(len(tables))]
        change = max(float(np.abs(new_shares - shares).max()),
                     max(float(np.abs(a - b).max()) for a, b in zip(new_tables, tables, strict=True)))
        shares, tables = new_shares, new_tables
        if change < tolerance:
            converged = True
            break
    return tables, shares, iteration, converged, _mixture_loglik(cells, counts, tables, shares)[1]


def _match_class(tables: list[np.ndarray]) -> int:
    """The class that agrees exactly most often: the matches."""
    return int(np.argmax([t[:, 0].sum() for t in tables]))


def _split_candidates(table: np.ndarray, num_fields: int) -> list[int]:
    """Fields on which a class is most bimodal (a large share both of exact agreement and of weak or
    no agreement): where it may hold two kinds of pair, e.g. matches and people of one household
    (who agree on the address but not on the given name or the birth date)."""
    both = np.minimum(table[:num_fields, 0], table[:num_fields, 3:].sum(axis=1))
    order = np.argsort(-both, kind="stable")
    return [int(f) for f in order[:_SPLIT_FIELDS] if both[f] >= _SPLIT_MIN_SHARE]


def _sibling_is_matches(tables: list[np.ndarray], match: int, split_field: int,
                        derived: tuple[int, ...] = ()) -> bool:
    """Whether the other half of a split match class is matches too.

    Identity fields are those every non-match class (the classes besides the two halves) is
    "different" on in at least ``_IDENTITY_DIFFERENT`` of its pairs: the given name, the birth date,
    an id, not the suburb that place neighbours share. The other half is matches if on each identity
    field (but the one split on) it agrees (any of the first ``_CLOSE_LEVELS`` levels, exact to
    close) at least ``_KIN_AGREEMENT`` as often as the match class: moved people (the address
    differs, identity agrees) and noisier duplicates are matches; people of one household (the
    address agrees, given name and birth date do not) are not. ``derived`` fields (the embedding
    distance, a function of every field, the split one included) are a weaker witness: the other
    half is not matches either if it is close on one less than ``_DERIVED_KIN_AGREEMENT`` as often
    as the matches (where the matches are close on it at least half the time) and fails the
    agreement test on a field that at least one non-match class is "different" on.
    """
    sibling = 1 - match
    others = [k for k in range(len(tables)) if k not in (0, 1)]
    compared = np.arange(tables[match].shape[0]) != split_field  # fields that may witness
    compared[list(derived)] = False
    different = np.array([tables[k][:, -1] >= _IDENTITY_DIFFERENT for k in others])
    close = [t[:, :_CLOSE_LEVELS].sum(axis=1) for t in (tables[match], tables[sibling])]
    agrees = close[1] >= _KIN_AGREEMENT * close[0]
    if not np.all(agrees[compared & different.all(axis=0)]):
        return False
    # A derived field is a weaker witness (the split field moves it too): the other half is another
    # entity if it is far on one where the matches are close *and* disagrees on a field that some
    # (not every) non-match class is "different" on. On the 1M-record people link data the
    # households (given name and birth date differ) were close on the embedding distance in 13 %
    # of pairs, the matches in all, while a far non-match class (people born the same day) agreed
    # on the birth date and so left no identity field but the one split on. FEBRL4's noisier
    # duplicates are far on the distance too, but agree on every field as the matches do.
    far = any(d != split_field and close[0][d] >= _DERIVED_MIN_CLOSE
              and close[1][d] < _DERIVED_KIN_AGREEMENT * close[0][d] for d in derived)
    if far and not np.all(agrees[compared & different.any(axis=0)]):
        return False
    return True


def fit_em_classes(histogram: dict[bytes, int], u: np.ndarray, *, seed_share: float = _SEED_SHARE,
                   max_iterations: int = 500, tolerance: float = 1e-6,
                   split: bool = True,
                   derived: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray, float, int, bool]:
    """EM with three latent classes (matches, near non-matches, far non-matches), then, where the
    data say so, a fourth split off the match class; folded into m/u.

    Candidate pairs are near neighbours: besides the matches, many share a household or a place
    (surname, street, suburb and postcode agree; given name and birth date do not). A two-class
    model under conditional independence explains that shared-address structure better than it
    explains the matches, so it calls the households "matches" (Larsen and Rubin, 2001, fit more
    latent classes for this). Here the classes start as: the ``seed_share`` of pairs with the most
    evidence under ``u`` (random pairs), the level shares of all candidate pairs, and ``u``.

    Three classes still merge the matches with the households where both are common (on the
    generated people link data the match class agreed on the given name in only 40 % of its pairs,
    the true matches in 62 %). So the match class is then tried split in two on each of its
    ``_SPLIT_FIELDS`` most bimodal fields (pairs agreeing exactly on the field against pairs
    agreeing weakly or not at all), each split refitted as a four-class EM; the split with the
    largest log-likelihood gain is kept if the gain beats the BIC penalty of the extra class
    (``0.5 * parameters * log(pairs)``), provided the new half is not matches by the identity test of
    :func:`_sibling_is_matches`; else the three-class fit stands. Households split off on the
    given name and agree on it and on the birth date a fraction as often as the matches: a split
    kept, the households go to u. People who moved (split off on the address) and FEBRL3's noisier
    duplicates (split off on the embedding distance) agree on the identity fields as matches do:
    such a split is not kept. After EM the class that agrees exactly most often is the match class
    (m, prior); the others, weighted by their shares, are u.

    Returns:
        (m [F, NUM_LEVELS], u [F, NUM_LEVELS], prior, iterations, converged).
    """
    if not 0.0 < seed_share < 0.5:
        raise ValueError(f"seed_share must be in (0, 0.5), got {seed_share!r}")
    num_fields = u.shape[0]
    if not histogram:
        return np.tile(_M_INIT, (num_fields, 1)), np.array(u, dtype=np.float64), _PRIOR_INIT, 0, True
    patterns, counts = unpack_histogram(histogram, num_fields)
    cells = _cells(patterns)
    m_init = np.tile(_M_INIT, (num_fields, 1))
    evidence = _log_likelihoods(cells, m_init) - _log_likelihoods(cells, u)
    order = np.argsort(-evidence, kind="stable")
    # The patterns before the share is reached (at least the one with the most evidence).
    top = order[np.cumsum(counts[order]) - counts[order] < seed_share * counts.sum()]
    seed_weight = np.zeros(len(counts))
    seed_weight[top] = counts[top]
    tables = [_level_shares(cells, seed_weight), _level_shares(cells, counts),
              np.array(u, dtype=np.float64)]
    shares = np.array([seed_share, 0.5, 0.5 - seed_share])
    tables, shares, iterations, converged, loglik = _mixture_em(cells, counts, tables, shares, max_iterations,
                                                                tolerance)
    if split:
        penalty = 0.5 * (num_fields * (NUM_LEVELS - 1) + 1) * math.log(max(counts.sum(), 2.0))
        match = _match_class(tables)
        g, _ = _mixture_loglik(cells, counts, tables, shares)
        weight = counts * g[:, match]
        others = [k for k in range(len(tables)) if k != match]
        paying = []
        for f in _split_candidates(tables[match], num_fields):
            agree = weight * (patterns[:, f] == 0)
            differ = weight * (patterns[:, f] >= 3)
            if agree.sum() < 1 or differ.sum() < 1:
                continue
            part = shares[match] / (agree.sum() + differ.sum())
            start = [_level_shares(cells, agree), _level_shares(cells, differ)]
            fitted = _mixture_em(cells, counts, start + [tables[k] for k in others],
                                 np.r_[part * agree.sum(), part * differ.sum(), shares[others]],
                                 max_iterations, tolerance)
            if fitted[4] - loglik > penalty:
                paying.append((fitted, f))
        # The best-paying split, if its other half is not matches (a split of the matches
        # themselves, e.g. into people who moved and who did not, is no reason to leave three
        # classes; nor is it a sign that a weaker split is the households).
        if paying:
            fitted, f = max(paying, key=lambda item: item[0][4])
            match = _match_class(fitted[0])
            if match in (0, 1) and not _sibling_is_matches(fitted[0], match, f, derived):
                tables, shares, more, converged, loglik = fitted
                iterations += more
    matches = [_match_class(tables)]
    rest = [k for k in range(len(tables)) if k not in matches]
    m = sum(shares[k] * tables[k] for k in matches) / sum(shares[k] for k in matches)
    u_fold = sum(shares[k] * tables[k] for k in rest) / sum(shares[k] for k in rest)
    prior = float(np.clip(sum(shares[k] for k in matches), _FLOOR, 1 - _FLOOR))
    return m, u_fold, prior, iterations, converged


def _masked(histogram: dict[bytes, int], num_fields: int, fields: tuple[int, ...]) -> dict[bytes, int]:
    """The histogram with ``fields`` set to MISSING in every pattern (their evidence left out)."""
    out: dict[bytes, int] = {}
    for key in sorted(histogram):
        pattern = np.frombuffer(key, dtype=np.int8).copy()
        pattern[list(fields)] = MISSING
        k = pattern.tobytes()
        out[k] = out.get(k, 0) + histogram[key]
    return out


def fit_em_fields_first(histogram: dict[bytes, int], u: np.ndarray, *, derived: tuple[int, ...],
                        split: bool = True) -> tuple[np.ndarray, np.ndarray, float, int, bool]:
    """:func:`fit_em_classes` over the compared fields alone (``derived`` fields left out), then
    each derived field's m and u as its level shares among the pairs, weighted by their posterior
    of being matches (or not) under that fit: one M-step, no say in what the classes are.

    A derived field (the embedding distance) is computed from the very fields that are compared,
    so it is far from independent of them given the class. In a joint fit it can define the
    classes instead of adding evidence to them: on generated organisation records (three fields)
    the joint fit's match class held 38 % of the candidate pairs, the true matches 11 %.
    """
    num_fields = u.shape[0]
    m, u_fit, prior, iterations, converged = fit_em_classes(
        _masked(histogram, num_fields, derived), u, split=split, derived=derived)
    if not histogram or not derived:
        return m, u_fit, prior, iterations, converged
    patterns, counts = unpack_histogram(histogram, num_fields)
    fields_only = patterns.copy()
    fields_only[:, list(derived)] = MISSING
    post = _posterior(_cells(fields_only), m, u_fit, prior)
    cells = _cells(patterns)
    rows = list(derived)
    m[rows] = _level_shares(cells, counts * post)[rows]
    u_fit[rows] = _level_shares(cells, counts * (1.0 - post))[rows]
    return m, u_fit, prior, iterations, converged


def fit_with_derived(histogram: dict[bytes, int], u: np.ndarray, *, derived: tuple[int, ...],
                     split: bool = True) -> tuple[np.ndarray, np.ndarray, float, int, bool, dict]:
    """The scorer's unsupervised fit: the joint fit (:func:`fit_em_classes`, derived fields in the
    EM) unless its match share differs from the fields-first fit's (:func:`fit_em_fields_first`)
    by more than ``_DERIVED_PRIOR_RATIO`` either way, a sign that the derived fields define the
    classes rather than add to them; then the fields-first fit.

    Measured on the candidate pairs of generated data (pairwise F1 at match probability >= 0.5):
    organisation records, joint 0.41, fields first 0.63 (match shares 0.378 and 0.124); people
    link data, joint top-1 F1 0.954, fields first 0.939 (shares 0.076 and 0.068: the joint fit
    kept); FEBRL3-like data alike either way (0.203 and 0.203).

    Returns:
        (m, u, prior, iterations, converged, facts): facts say which fit was kept and both shares.
    """
    joint = fit_em_classes(histogram, u, split=split, derived=derived)
    if not derived or not histogram:
        return (*joint, {"derived_evidence": "joint"})
    first = fit_em_fields_first(histogram, u, derived=derived, split=split)
    ratio = joint[2] / first[2]
    keep_joint = 1.0 / _DERIVED_PRIOR_RATIO <= ratio <= _DERIVED_PRIOR_RATIO
    chosen = joint if keep_joint else first
    facts = {"derived_evidence": "joint" if keep_joint else "after the fields",
             "match_share_joint": round(float(joint[2]), 6),
             "match_share_fields_first": round(float(first[2]), 6)}
    return chosen[0], chosen[1], chosen[2], joint[3] + first[3], joint[4] and first[4], facts


def fit_prior(histogram: dict[bytes, int], m: np.ndarray, u: np.ndarray, *, start: float = _PRIOR_INIT,
              max_iterations: int = _EM_MAX_ITERATIONS, tolerance: float = _EM_TOLERANCE) -> float:
    """EM for the prior alone over another set of pairs, m and u fixed."""
    if not histogram:
        return start
    patterns, counts = unpack_histogram(histogram, m.shape[0])
    cells = _cells(patterns)
    prior = start
    for _ in range(max_iterations):
        new = float(np.clip((counts * _posterior(cells, m, u, prior)).sum() / counts.sum(), _FLOOR,
                            1 - _FLOOR))
        if abs(new - prior) < tolerance:
            return new
        prior = new
    return prior


def probability(weights: np.ndarray) -> np.ndarray:
    """Match probability of match weights (log2 odds)."""
    return 1.0 / (1.0 + np.exp2(-np.clip(weights, -1000, 1000)))


# ------------------------------------------------------------------------------------------------
# The fitted model


@dataclasses.dataclass(frozen=True)
class FellegiSunterModel:
    """A fitted model: per field, m and u over the comparison levels, and the candidate-pair prior.

    Attributes:
        fields: compared field names (text fields first, then numeric).
        kinds: 'text' or 'numeric' per field.
        m, u: [F, NUM_LEVELS] probabilities.
        prior: share of matches among candidate pairs.
        records: records counted in the term-frequency sketch (0: no term-frequency adjustment).
        fit: how the fit went (EM iterations, convergence, pair counts), for the manifest.
        tf_base: per text field, the exact-agreement rate of random pairs, ``sum_v tf(v)**2``
            (:func:`agreement_rates`): exact agreement on value ``v`` gains ``log2(tf_base / tf(v))``,
            so a value as common as the field's average value gains nothing. None: ``u[:, 0]``.
            (Candidate non-matches agree far more often than random pairs do, so ``u[:, 0]``
            fitted on them would inflate every rare value's gain.)
    """

    fields: tuple[str, ...]
    kinds: tuple[str, ...]
    m: np.ndarray
    u: np.ndarray
    prior: float
    records: int = 0
    fit: dict = dataclasses.field(default_factory=dict)
    tf_base: np.ndarray | None = None

    @property
    def level_weights(self) -> np.ndarray:
        """log2(m / u) [F, NUM_LEVELS]."""
        return np.log2(self.m / self.u)

    @property
    def prior_weight(self) -> float:
        return math.log2(self.prior / (1.0 - self.prior))

    def field_weights(self, levels: np.ndarray, frequencies: np.ndarray | None = None) -> np.ndarray:
        """Per-field weights [m, F] of pairs' levels; ``frequencies`` [m, T] (term_frequencies of the
        exactly agreeing value, NaN elsewhere) adjusts the exact level of text fields."""
        f = len(self.fields)
        present = levels != MISSING
        safe = np.where(present, levels, 0).astype(np.int64)
        w = np.where(present, self.level_weights[np.arange(f)[None, :], safe], 0.0)
        if frequencies is not None and self.records:
            t = frequencies.shape[1]
            exact = (levels[:, :t] == 0) & np.isfinite(frequencies)
            floor = 1.0 / self.records
            tf = np.maximum(np.nan_to_num(frequencies, nan=1.0), floor)
            base = self.u[:t, 0] if self.tf_base is None else self.tf_base[:t]
            adjust = np.log2(base[None, :] / tf)
            w[:, :t] += np.where(exact, adjust, 0.0)
        return w

    def weights(self, levels: np.ndarray, frequencies: np.ndarray | None = None) -> np.ndarray:
        """Match weights [m] (log2 odds) of pairs' levels."""
        return self.prior_weight + self.field_weights(levels, frequencies).sum(axis=1)

    def explain(self, levels: np.ndarray, frequencies: np.ndarray | None = None) -> list[dict[str, Any]]:
        """One pair's waterfall: the prior, then per field its level, weight and tf adjustment."""
        levels = np.asarray(levels, dtype=np.int8).reshape(1, -1)
        freq = None if frequencies is None else np.asarray(frequencies, dtype=np.float64).reshape(1, -1)
        base = self.field_weights(levels)[0]
        full = self.field_weights(levels, freq)[0]
        rows = [{"term": "prior", "level": None, "weight": self.prior_weight, "tf_adjustment": 0.0}]
        for i, name in enumerate(self.fields):
            lv = int(levels[0, i])
            rows.append({"term": name, "level": "missing" if lv == MISSING else LEVEL_NAMES[lv],
                         "weight": float(full[i]), "tf_adjustment": float(full[i] - base[i])})
        total = self.prior_weight + float(full.sum())
        rows.append({"term": "total", "level": None, "weight": total,
                     "match_probability": float(probability(np.array([total]))[0])})
        return rows

    def to_json(self) -> str:
        return json.dumps({
            "format_version": 1, "fields": list(self.fields), "kinds": list(self.kinds),
            "levels": list(LEVEL_NAMES), "m": self.m.round(12).tolist(), "u": self.u.round(12).tolist(),
            "prior": round(self.prior, 12), "records": self.records,
            "level_weights": self.level_weights.round(6).tolist(), "fit": self.fit,
            "tf_base": None if self.tf_base is None else self.tf_base.round(12).tolist()}, indent=1,
            sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FellegiSunterModel:
        d = json.loads(text)
        if d.get("format_version") != 1:
            raise ValueError(f"unsupported scoring model format_version {d.get('format_version')!r}")
        return cls(tuple(d["fields"]), tuple(d["kinds"]), np.array(d["m"], dtype=np.float64),
                   np.array(d["u"], dtype=np.float64), float(d["prior"]), int(d.get("records", 0)),
                   dict(d.get("fit") or {}),
                   None if d.get("tf_base") is None else np.array(d["tf_base"], dtype=np.float64))
