"""Chooses a ``--max_distance`` (or, on a scored run, a ``--min_probability``) for a wanted precision (or
recall) from a run's matches and labelled pairs, and can refit the scorer to the labels.

``corpus-match calibrate --matches OUT_DIR --truth holdout.csv --target_precision 0.99`` reads the pairs a
run emitted (:func:`transforms.io.results.read_matches`), labels each one from the truth file, sweeps the
distance
threshold and picks:

* with ``--target_precision P``: the **largest** threshold ``t`` whose precision on the labelled pairs
  (pairs with ``distance <= t``, the job's own ``--max_distance`` rule) is ``>= P``;
* with ``--target_recall R``: the **smallest** ``t`` whose recall is ``>= R``.

``t`` is always the distance of an emitted labelled pair (the conservative end of the gap before the
next one). It writes ``OUT_DIR/calibration.json`` (or ``--output``)::

    {"max_distance": t, "target_precision": P, "target_recall": null, "achieved_precision": ...,
     "recall": ..., "f1": ..., "precision_lower_95": ..., "pairs_at_threshold": ..., "counts": {...},
     "curve": [{"max_distance", "precision", "recall", "f1", "pairs", "true_positives"}, ...]}

and the precision/recall curve as a PNG beside it (``calibration.png``). The match job reads the
``max_distance`` key (``--calibration FILE``).

On a scored run (match files with ``match_probability``) the sweep is over the probability instead
(``--threshold auto``, the default; ``--threshold distance`` keeps the distance sweep): the pick is the
**smallest** ``t`` with precision ``>= P`` among pairs with ``match_probability >= t``, written as
``min_probability`` (and ``"threshold": "probability"``), which ``--calibration`` applies as
``--min_probability``. With ``--fit_scorer`` the labelled pairs are first compared from the run's own
inputs exactly as the job compares them, the Fellegi-Sunter m/u and prior are counted from them
(:mod:`transforms.scoring.labelled`), the pairs are rescored with that model and the sweep runs on
the new probabilities; the model goes to ``calibration.scoring_model.json`` beside the JSON, whose
``scoring_model`` key names it, so ``--calibration FILE`` then scores with it (``--scorer model``).
The threshold is chosen on the same pairs the model was counted from (a few dozen parameters, so the
optimism is small; hold out labels to check it).

Which pairs are labelled (``--unlabelled``):

* ``ignore`` (default): a pair counts only if the truth file speaks for it: its query (link) or either of
  its records (dedup) is *labelled*, i.e. named in the truth file (any id of a cluster file, singletons
  included; an id of a pair file). A labelled record's partners are taken to be all listed, so its
  emitted pair to anyone else is a false match; pairs between two unlabelled records are left out and
  counted. Label a random sample of records with all their matches (a cluster file can also list the
  records that have none) and the estimate is unbiased for the whole run. A pair file cannot name a
  record without matches, so with one, precision ignores queries that have no true partner: it is
  optimistic when many queries have none.
* ``negative``: every emitted pair not in the truth is a false match (the truth covers the whole run, as
  ``corpus-match evaluate`` assumes).

Recall is over every true pair of the truth file, including those the run never emitted (beyond the
top K, or rejected records): the threshold cannot recover those, and their number is reported. In dedup
mode pairs are unordered (a pair emitted from both sides counts once, at its smaller distance).

Pure pandas/numpy (Beam's filesystems only through ``transforms.io.read_corpus`` when reading a run); the PNG
needs
matplotlib and is skipped, with a warning, without it. What it does not do: rerun the match, smooth the
curve or extrapolate beyond the labelled pairs.
"""

from __future__ import annotations

import logging
import math
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from transforms.learn.evaluate import load_truth
from transforms.run.plots import figure_png

__all__ = [
    "CALIBRATION_KEY",
    "CalibrationLabels",
    "TargetNotReachedError",
    "read_calibration_labels",
    "label_pairs",
    "precision_recall_curve",
    "calibrate",
    "MODES",
    "PROBABILITY_KEY",
    "THRESHOLDS",
    "UNLABELLED",
    "plot_calibration",
    "refit_scorer",
]

_LOGGER = logging.getLogger(__name__)

# The key of calibration.json that holds the threshold for the match job's --max_distance.
CALIBRATION_KEY = "max_distance"
# ... and the key for --min_probability (a calibration on a scored run's match_probability).
PROBABILITY_KEY = "min_probability"
THRESHOLDS = ("auto", "distance", "probability")
MODES = ("link", "dedup")
UNLABELLED = ("ignore", "negative")
_ID_COLUMNS = ("id", "rec_id", "record_id")
_CURVE_POINTS = 200
_Z95 = 1.959963984540054
_SEP = "\x1f"


class TargetNotReachedError(ValueError):
    """No threshold reaches the target on the labelled pairs."""


class CalibrationLabels(NamedTuple):
    """True pairs (link: ``(query, candidate)``; dedup: ``(min, max)``) and the labelled ids."""

    pairs: set[tuple[str, str]]
    labelled_ids: set[str]


def read_calibration_labels(path: str, *, mode: str) -> CalibrationLabels:
    """Reads a truth CSV (pairs or clusters, as :func:`transforms.learn.evaluate.load_truth`) and its
    labelled ids.

    Labelled ids: every id of a cluster file (singleton clusters included); for a pair file the query ids
    (link) or both ids (dedup) of its pairs.

    Raises:
        ValueError: the file has neither layout, or an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    pairs = load_truth(path, mode=mode)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if {"query_id", "candidate_id"} <= set(frame.columns):
        if mode == "dedup":
            labelled = {i for pair in pairs for i in pair}
        else:
            labelled = {q for q, _ in pairs}
    else:
        column = next(c for c in _ID_COLUMNS if c in frame.columns)  # load_truth checked it exists
        labelled = {i for i in frame[column].tolist() if i}
    pairs = {(a, b) for a, b in pairs if a and b and (mode == "link" or a != b)}
    return CalibrationLabels(pairs=pairs, labelled_ids=labelled)


def label_pairs(matches: pd.DataFrame, labels: CalibrationLabels, *, mode: str,
                unlabelled: str = "ignore") -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per distinct emitted pair with its distance, whether it is labelled and whether it is true.

    Args:
        matches: columns ``query_id, candidate_id, rank, distance`` (a run's match output).
        labels: from :func:`read_calibration_labels`.
        mode: 'link' or 'dedup' (dedup pairs are unordered).
        unlabelled: 'ignore' or 'negative' (see the module docstring).

    Returns:
        (frame with columns ``a, b, distance, labelled, true``, counts of what was dropped or left out).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if unlabelled not in UNLABELLED:
        raise ValueError(f"unlabelled must be one of {UNLABELLED}, got {unlabelled!r}")
    missing = [c for c in ("query_id", "candidate_id", "distance") if c not in matches.columns]
    if missing:
        raise ValueError(f"matches lack columns {missing}")
    q = matches["query_id"].astype(str).to_numpy()
    c = matches["candidate_id"].fillna("").astype(str).to_numpy()
    d = pd.to_numeric(matches["distance"]).to_numpy(np.float64)
    empty = c == ""
    self_pair = (q == c) & ~empty if mode == "dedup" else np.zeros(len(q), bool)
    finite = np.isfinite(d)
    keep = ~empty & ~self_pair & finite
    q, c, d = q[keep], c[keep], d[keep]
    if mode == "dedup":
        q, c = np.where(q <= c, q, c), np.where(q <= c, c, q)
    pairs = (pd.DataFrame({"a": q, "b": c, "distance": d})
             .groupby(["a", "b"], sort=True, as_index=False)["distance"].min())
    ids = labels.labelled_ids
    if unlabelled == "negative":
        labelled = np.ones(len(pairs), dtype=bool)
    elif mode == "dedup":
        labelled = pairs["a"].isin(ids).to_numpy() | pairs["b"].isin(ids).to_numpy()
    else:
        labelled = pairs["a"].isin(ids).to_numpy()
    keys = pd.Index([a + _SEP + b for a, b in labels.pairs])
    true = (pairs["a"] + _SEP + pairs["b"]).isin(keys).to_numpy()
    pairs = pairs.assign(labelled=labelled | true, true=true)
    counts = {
        "emitted_rows": int(len(matches)),
        "empty_slots_dropped": int(empty.sum()),
        "self_pairs_dropped": int(self_pair.sum()),
        "non_finite_dropped": int((~finite & ~empty).sum()),
        "distinct_pairs": int(len(pairs)),
        "labelled_pairs": int(pairs["labelled"].sum()),
        "unlabelled_pairs_ignored": int((~pairs["labelled"]).sum()),
    }
    return pairs, counts


def _wilson_lower(successes: int, n: int) -> float:
    if n == 0:
        return 0.0
    p = successes / n
    denom = 1 + _Z95**2 / n
    centre = p + _Z95**2 / (2 * n)
    margin = _Z95 * math.sqrt(p * (1 - p) / n + _Z95**2 / (4 * n * n))
    return max(0.0, (centre - margin) / denom)


def precision_recall_curve(pairs: pd.DataFrame, n_true: int) -> pd.DataFrame:
    """Precision and recall of ``distance <= t`` for every distinct distance t of the labelled pairs.

    Args:
        pairs: from :func:`label_pairs`.
        n_true: the recall denominator (all true pairs of the truth file).

    Returns:
        Columns ``max_distance, pairs, true_positives, precision, recall, f1``, ascending distance.
    """
    labelled = pairs[pairs["labelled"]].sort_values("distance", kind="stable")
    dist = labelled["distance"].to_numpy(np.float64)
    tp = np.cumsum(labelled["true"].to_numpy(np.int64))
    accepted = np.arange(1, len(dist) + 1)
    last = np.r_[dist[1:] != dist[:-1], True] if len(dist) else np.zeros(0, bool)  # end of each tie run
    dist, tp, accepted = dist[last], tp[last], accepted[last]
    precision = tp / np.maximum(accepted, 1)
    recall = tp / n_true if n_true else np.zeros(len(tp))
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return pd.DataFrame({"max_distance": dist, "pairs": accepted, "true_positives": tp,
                         "precision": precision, "recall": recall, "f1": f1})


def _curve_points(curve: pd.DataFrame, chosen: int | None,
                  key: str = CALIBRATION_KEY) -> list[dict[str, Any]]:
    """At most ``_CURVE_POINTS`` rows spread over the curve, the chosen one and the best-F1 one kept."""
    if curve.empty:
        return []
    rows = set(np.unique(np.linspace(0, len(curve) - 1, min(len(curve), _CURVE_POINTS)).round().astype(int)))
    rows.add(int(curve["f1"].to_numpy().argmax()))
    if chosen is not None:
        rows.add(chosen)
    out = []
    for i in sorted(rows):
        r = curve.iloc[i]
        out.append({key: float(r[key]), "precision": float(r["precision"]),
                    "recall": float(r["recall"]), "f1": float(r["f1"]), "pairs": int(r["pairs"]),
                    "true_positives": int(r["true_positives"])})
    return out


def calibrate(matches: pd.DataFrame, labels: CalibrationLabels, *, mode: str,
              target_precision: float | None = None, target_recall: float | None = None,
              unlabelled: str = "ignore", threshold: str = "distance") -> dict[str, Any]:
    """Picks the threshold (see the module docstring) and returns the calibration dict.

    Args:
        matches: a run's match output.
        labels: from :func:`read_calibration_labels`.
        mode: 'link' or 'dedup'.
        target_precision: wanted precision in (0, 1]; exactly one of the two targets.
        target_recall: wanted recall in (0, 1].
        unlabelled: 'ignore' or 'negative'.
        threshold: 'distance' (pairs with ``distance <= t``; the result's ``max_distance``) or
            'probability' (pairs with ``match_probability >= t``, a scored run's column; the
            result's ``min_probability``, the lowest one reaching the target precision).

    Returns:
        The JSON-serialisable calibration (``CALIBRATION_KEY`` or ``PROBABILITY_KEY`` holds the
        threshold, ``threshold`` says which).

    Raises:
        TargetNotReachedError: no threshold reaches the target (the message gives the best there is).
        ValueError: bad arguments, or no labelled pair among the matches.
    """
    if (target_precision is None) == (target_recall is None):
        raise ValueError("give exactly one of --target_precision and --target_recall")
    target = target_precision if target_precision is not None else target_recall
    if not 0.0 < target <= 1.0:
        raise ValueError(f"the target must be in (0, 1], got {target}")
    if threshold not in ("distance", "probability"):
        raise ValueError(f"threshold must be distance or probability, got {threshold!r}")
    key = CALIBRATION_KEY
    if threshold == "probability":
        if "match_probability" not in matches.columns:
            raise ValueError("the matches carry no match_probability (the run was not scored): "
                             "calibrate --threshold distance")
        # "distance <= t" on -probability is "probability >= -t": one sweep serves both.
        matches = matches.assign(distance=-pd.to_numeric(matches["match_probability"]))
        key = PROBABILITY_KEY
    pairs, counts = label_pairs(matches, labels, mode=mode, unlabelled=unlabelled)
    n_true = len(labels.pairs)
    emitted_true = int(pairs["true"].sum())
    counts.update({"true_pairs": n_true, "true_pairs_emitted": emitted_true,
                   "true_pairs_not_emitted": n_true - emitted_true})
    if counts["labelled_pairs"] == 0:
        raise ValueError("no emitted pair is labelled: do the truth ids belong to this run's records? "
                         f"(counts: {counts})")
    curve = precision_recall_curve(pairs, n_true)
    if threshold == "probability":
        curve = curve.assign(max_distance=-curve["max_distance"]).rename(columns={"max_distance": key})
    if target_precision is not None:
        ok = np.flatnonzero(curve["precision"].to_numpy() >= target_precision)
        chosen = int(ok[-1]) if len(ok) else None
        what = f"precision {target_precision}"
    else:
        ok = np.flatnonzero(curve["recall"].to_numpy() >= target_recall)
        chosen = int(ok[0]) if len(ok) else None
        what = f"recall {target_recall}"
    if chosen is None:
        best = curve.iloc[int(curve["f1"].to_numpy().argmax())]
        top = ("precision", curve["precision"].max()) if target_precision is not None else (
            "recall", curve["recall"].max())
        raise TargetNotReachedError(
            f"no threshold reaches {what} on the {counts['labelled_pairs']} labelled pairs; the highest "
            f"{top[0]} is {top[1]:.4f} (best F1 {best['f1']:.4f} at {key} "
            f"{best[key]:.6g}); "
            f"{counts['true_pairs_not_emitted']} true pairs were never emitted")
    row = curve.iloc[chosen]
    result = {
        key: float(row[key]),
        "threshold": threshold,
        "target_precision": target_precision,
        "target_recall": target_recall,
        "achieved_precision": float(row["precision"]),
        "recall": float(row["recall"]),
        "f1": float(row["f1"]),
        "precision_lower_95": _wilson_lower(int(row["true_positives"]), int(row["pairs"])),
        "pairs_at_threshold": int(row["pairs"]),
        "true_positives_at_threshold": int(row["true_positives"]),
        "mode": mode,
        "unlabelled": unlabelled,
        "counts": counts,
        "curve": _curve_points(curve, chosen, key),
    }
    if result["pairs_at_threshold"] < 100:
        _LOGGER.warning("the threshold rests on %d labelled pairs: its precision is a rough estimate "
                        "(95%% lower bound %.3f)", result["pairs_at_threshold"], result["precision_lower_95"])
    return result


def plot_calibration(result: dict[str, Any]) -> bytes | None:
    """The calibration curves (precision/recall by threshold, precision-recall) of a :func:`calibrate`
    result as PNG bytes; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _LOGGER.warning("matplotlib is not installed: no calibration plot written")
        return None
    curve = result["curve"]
    key = PROBABILITY_KEY if result.get("threshold") == "probability" else CALIBRATION_KEY
    rule = "match_probability >= min_probability" if key == PROBABILITY_KEY else "distance <= max_distance"
    xs = [p[key] for p in curve]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(xs, [p["precision"] for p in curve], label="precision")
    left.plot(xs, [p["recall"] for p in curve], label="recall")
    left.axvline(result[key], color="grey", linestyle="--", label=f"{key} {result[key]:.4g}")
    left.set_xlabel(key)
    left.set_title(f"precision / recall of pairs with {rule}")
    left.legend(loc="lower right", fontsize=8)
    right.plot([p["recall"] for p in curve], [p["precision"] for p in curve])
    right.scatter([result["recall"]], [result["achieved_precision"]], color="red", zorder=3,
                  label="chosen")
    right.set_xlabel("recall")
    right.set_ylabel("precision")
    right.set_title("precision-recall (labelled pairs)")
    right.legend(loc="lower left", fontsize=8)
    return figure_png(fig)


def refit_scorer(run_dir: str, matches: pd.DataFrame, labels: CalibrationLabels, *, mode: str,
                 unlabelled: str = "ignore") -> tuple[Any, pd.DataFrame, dict[str, Any]]:
    """Fits the run's scorer to the labelled emitted pairs (:mod:`transforms.scoring.labelled`).

    Returns:
        (the supervised FellegiSunterModel, the labelled pairs as match rows rescored by it, fit
        facts for the calibration JSON).
    """
    from transforms.io.results import read_manifest
    from transforms.scoring.labelled import (
        fit_supervised,
        label_cuts,
        labelled_levels,
        level_weights,
        rescore,
        with_cuts,
    )

    pairs, _ = label_pairs(matches, labels, mode=mode, unlabelled=unlabelled)
    lab = pairs[pairs["labelled"]].reset_index(drop=True)
    compared = labelled_levels(run_dir, lab["a"].to_numpy(), lab["b"].to_numpy(), lab["distance"].to_numpy())
    truth = lab["true"].to_numpy()
    found = compared.found
    compared = with_cuts(compared, lab["distance"].to_numpy(), label_cuts(lab["distance"].to_numpy()[found],
                                                                          truth[found]))
    model = fit_supervised(compared.levels[compared.found], truth[compared.found], compared.model)
    weights, probs = rescore(model, compared)
    frame = pd.DataFrame({"query_id": lab["a"], "candidate_id": lab["b"], "distance": lab["distance"],
                          "match_weight": weights, "match_probability": probs})
    run_min = read_manifest(run_dir).get("flags", {}).get("min_probability")
    if run_min:
        _LOGGER.warning("%s dropped pairs below match_probability %s: the false pairs the fit counts u "
                        "from are the near misses above it only; fit on a run with --min_probability 0",
                        run_dir, run_min)
    facts = {"pairs_fitted": int(compared.found.sum()), "pairs_not_found": int((~compared.found).sum()),
             "true_pairs_fitted": int(truth[compared.found].sum()), "run_min_probability": run_min,
             "level_weights": level_weights(model)}
    return model, frame, facts
