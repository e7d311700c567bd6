"""Supervised Fellegi-Sunter: m, u and the prior counted from labelled candidate pairs.

The unsupervised fit (:mod:`transforms.scoring.fellegi_sunter`) guesses which candidate pairs are
matches. With labels there is nothing to guess: compare each labelled pair exactly as the job does
(:func:`transforms.scoring.comparisons.compare_fields`, the embedding distance's level last), and

* ``m_f[l]`` is the share of level ``l`` of field ``f`` among the true pairs,
* ``u_f[l]`` its share among the false candidate pairs (near neighbours that are not matches,
  which is what the job's candidate pairs hold besides the matches),
* the prior is the share of true pairs among the labelled candidate pairs,

each with add-half smoothing, so a level no labelled pair shows is rare, not impossible. The
term-frequency adjustment (``tf_base`` and the run's value sketch) is kept from the run's model: it
describes the corpus, not the labels. The result is a :class:`FellegiSunterModel` that the match job
takes as ``--scoring_model`` (``corpus-match calibrate --fit_scorer`` writes it).

The pairs must be candidate pairs, i.e. what the job emits: fit on a run with ``--min_probability 0``
(a run that dropped low-probability pairs hides the false pairs u is counted from).

Pure numpy, plus the run's inputs read through :mod:`transforms.io.read_corpus` (local or any Beam
filesystem).
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any, NamedTuple

import numpy as np

from transforms.common.sharding import str_array
from transforms.scoring.comparisons import (
    MISSING,
    NUM_LEVELS,
    RecordFields,
    compare_fields,
    concat_fields,
    take_rows,
)
from transforms.scoring.fellegi_sunter import FellegiSunterModel, estimate_u, probability, term_frequencies

__all__ = ["LabelledLevels", "compare_pairs", "fit_supervised", "label_cuts", "labelled_levels",
           "level_weights", "model_template", "rescore", "with_cuts"]

_SMOOTHING = 0.5  # the prior's add-half smoothing, as estimate_u's for the level shares


class LabelledLevels(NamedTuple):
    """Comparison levels of pairs of a run, in the order asked for.

    Attributes:
        levels: int8 [m, F] (the run model's fields: text, numeric, then the embedding distance).
        frequencies: float [m, T] term frequencies of exactly agreeing text values (NaN elsewhere),
            or None when the run kept no sketch.
        found: bool [m]: both records were found among the run's valid inputs (other rows are all
            MISSING and are left out of a fit).
        model: the run's fitted model (fields, cut points, tf_base).
    """

    levels: np.ndarray
    frequencies: np.ndarray | None
    found: np.ndarray
    model: FellegiSunterModel


def _level_counts(levels: np.ndarray) -> np.ndarray:
    """Per field, how many pairs show each level (missing not counted) [F, NUM_LEVELS]."""
    return np.stack([np.bincount(col[col != MISSING].astype(np.int64), minlength=NUM_LEVELS)[:NUM_LEVELS]
                     for col in levels.T])


def fit_supervised(levels: np.ndarray, is_true: np.ndarray, base: FellegiSunterModel) -> FellegiSunterModel:
    """The model counted from labelled candidate pairs (see the module docstring).

    Args:
        levels: int8 [m, F] comparison levels of the labelled pairs (fields as ``base.fields``).
        is_true: bool [m]: the pair is a true match.
        base: the run's model: fields, kinds, term-frequency base and distance cut points are kept.

    Raises:
        ValueError: the levels do not fit the model, or the labels hold no true or no false pair.
    """
    levels = np.asarray(levels, dtype=np.int8)
    is_true = np.asarray(is_true, dtype=bool)
    if levels.ndim != 2 or levels.shape[1] != len(base.fields) or len(levels) != len(is_true):
        raise ValueError(f"levels {levels.shape} do not fit {len(base.fields)} fields and "
                         f"{len(is_true)} labels")
    n_true, n_false = int(is_true.sum()), int((~is_true).sum())
    if not n_true or not n_false:
        raise ValueError(f"a supervised fit needs true and false labelled pairs (got {n_true} true, "
                         f"{n_false} false)")
    m, u = estimate_u(levels[is_true]), estimate_u(levels[~is_true])  # add-half smoothed level shares
    m_counts, u_counts = _level_counts(levels[is_true]), _level_counts(levels[~is_true])
    prior = (n_true + _SMOOTHING) / (n_true + n_false + 2 * _SMOOTHING)
    fit = {"method": "supervised", "true_pairs": n_true, "false_pairs": n_false,
           "m_counts": m_counts.tolist(), "u_counts": u_counts.tolist()}
    for key in ("distance_cuts",):
        if key in base.fit:
            fit[key] = base.fit[key]
    return dataclasses.replace(base, m=m, u=u, prior=float(prior), fit=fit)


def compare_pairs(left: RecordFields, right: RecordFields, distances: np.ndarray, cuts: np.ndarray,
                  sketch: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(levels [m, F], term frequencies [m, T] or None) of row-aligned pairs, as the job's join
    computes them: the fields' levels, the embedding distance's level last; the frequency of each
    exactly agreeing text value from ``sketch`` (none without one)."""
    from transforms.scoring.score_pairs import distance_levels

    levels = np.concatenate([compare_fields(left, right),
                             distance_levels(np.asarray(distances), cuts)[:, None]], axis=1)
    t = left.text.shape[1]
    if not t or sketch is None or not len(sketch):
        return levels, None
    agreed = np.where(levels[:, :t] == 0, left.hashes, np.uint64(0))
    return levels, term_frequencies(sketch, agreed)


def model_template(text_fields: tuple[str, ...], numeric_fields: tuple[str, ...], cuts: np.ndarray,
                   sketch: np.ndarray | None, records: int) -> FellegiSunterModel:
    """A model with the job's fields, these distance cut points and the term-frequency base of
    ``sketch`` (over ``records`` records), its m/u still flat: :func:`fit_supervised` fills them."""
    from transforms.scoring.fellegi_sunter import agreement_rates
    from transforms.scoring.score_pairs import DISTANCE_FIELD

    fields = tuple(text_fields) + tuple(numeric_fields) + (DISTANCE_FIELD,)
    kinds = ("text",) * len(text_fields) + ("numeric",) * len(numeric_fields) + ("distance",)
    flat = np.full((len(fields), NUM_LEVELS), 1.0 / NUM_LEVELS)
    tf_base = agreement_rates(sketch) if sketch is not None and len(sketch) else None
    return FellegiSunterModel(fields, kinds, flat, flat.copy(), 0.5, records if tf_base is not None else 0,
                              {"distance_cuts": [float(c) for c in cuts]}, tf_base)


def label_cuts(distances: np.ndarray, is_true: np.ndarray) -> np.ndarray:
    """The embedding distance's four cut points chosen from labelled pairs: where the true pairs'
    distances end (their 80th and 99th percentiles) and the false pairs' begin (1st and 10th),
    sorted, so the levels resolve the overlap of the two instead of the spread of rank-1 distances
    the unsupervised fit must use (on generated people dedup: best pairwise F1 0.977 against 0.966).
    """
    d = np.asarray(distances, dtype=np.float64)
    t = np.asarray(is_true, dtype=bool)
    if not t.any() or t.all():
        raise ValueError("distance cut points need true and false labelled pairs")
    return np.sort(np.r_[np.quantile(d[t], (0.8, 0.99)), np.quantile(d[~t], (0.01, 0.1))])


def with_cuts(compared: LabelledLevels, distances: np.ndarray, cuts: np.ndarray) -> LabelledLevels:
    """The same pairs with the embedding distance's level (the last) recut at ``cuts``, and the
    model carrying those cut points (so the job levels distances alike)."""
    from transforms.scoring.score_pairs import distance_levels

    levels = compared.levels.copy()
    rows = compared.found
    levels[rows, -1] = distance_levels(np.asarray(distances, dtype=np.float64)[rows], cuts)
    model = dataclasses.replace(compared.model, fit={**compared.model.fit,
                                                     "distance_cuts": [float(c) for c in cuts]})
    return compared._replace(levels=levels, model=model)


def rescore(model: FellegiSunterModel, labelled: LabelledLevels) -> tuple[np.ndarray, np.ndarray]:
    """(match weights, match probabilities) of the pairs under ``model``."""
    weights = model.weights(labelled.levels, labelled.frequencies)
    return weights, probability(weights)


def _fields_of(found: dict[str, RecordFields], ids: np.ndarray) -> RecordFields:
    """The records of ``ids`` (repeats allowed) from one-row RecordFields by id: joined once per
    distinct record, then taken per pair."""
    distinct = sorted(set(ids.tolist()))
    position = {rid: k for k, rid in enumerate(distinct)}
    return take_rows(concat_fields([found[rid] for rid in distinct]),
                     np.array([position[rid] for rid in ids.tolist()], dtype=np.int64))


def labelled_levels(run_dir: str, left_ids: np.ndarray, right_ids: np.ndarray,
                    distances: np.ndarray) -> LabelledLevels:
    """Compares pairs of a finished scored run from its own inputs, as the job does.

    Args:
        run_dir: the run's output directory (its manifest, ``scoring/model.json`` and sketch).
        left_ids, right_ids: the pairs (link: query id, candidate id; dedup: either order).
        distances: the pairs' embedding distances as the run emitted them.

    Raises:
        ValueError: the run was not scored.
    """
    from transforms.common.artifacts import read_bytes, read_text
    from transforms.io.results import read_manifest
    from transforms.scoring.explain import find_records
    from transforms.scoring.score_pairs import model_path, sketch_path

    manifest = read_manifest(run_dir)
    flags = manifest["flags"]
    if flags.get("scorer", "none") == "none":
        raise ValueError(f"{run_dir} was run with --scorer none: there are no comparisons to fit")
    model = FellegiSunterModel.from_json(read_text(model_path(run_dir)))
    left_ids = str_array(np.asarray(left_ids, dtype=object))
    right_ids = str_array(np.asarray(right_ids, dtype=object))
    if flags["mode"] == "link":
        left = find_records(flags["queries"], flags, set(left_ids.tolist()))
        right = find_records(flags["candidates"], flags, set(right_ids.tolist()))
    else:
        left = right = find_records(flags["input"], flags, set(left_ids.tolist()) | set(right_ids.tolist()))
    found = np.array([a in left and b in right for a, b in zip(left_ids, right_ids, strict=True)], dtype=bool)
    levels = np.full((len(left_ids), len(model.fields)), MISSING, dtype=np.int8)
    frequencies = None
    rows = np.flatnonzero(found)
    if len(rows):
        a, b = _fields_of(left, left_ids[rows]), _fields_of(right, right_ids[rows])
        cuts = np.array(model.fit.get("distance_cuts") or [np.inf] * 4)
        sketch = np.load(io.BytesIO(read_bytes(sketch_path(run_dir))))["sketch"]
        levels[rows], freq = compare_pairs(a, b, np.asarray(distances)[rows], cuts, sketch)
        if freq is not None:
            frequencies = np.full((len(left_ids), freq.shape[1]), np.nan)
            frequencies[rows] = freq
    return LabelledLevels(levels, frequencies, found, model)


def level_weights(model: FellegiSunterModel) -> dict[str, Any]:
    """Per field, the level weights of the fitted model (for the calibration report)."""
    return {name: [round(float(w), 3) for w in row] for name, row in zip(model.fields, model.level_weights,
                                                                          strict=True)}
