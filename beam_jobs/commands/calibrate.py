"""``corpus-match calibrate``: choose --max_distance (or --min_probability) for a target precision or
recall from a run's matches and labelled pairs.

The command line only: flags, reading the run, writing the calibration JSON and PNG, the printed
lines and exit codes. The calibration itself is ``transforms.learn.calibrate``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import posixpath
import sys
from collections.abc import Iterable

from transforms.learn.calibrate import (
    CALIBRATION_KEY,
    MODES,
    PROBABILITY_KEY,
    THRESHOLDS,
    UNLABELLED,
    TargetNotReachedError,
    calibrate,
    label_pairs,
    plot_calibration,
    read_calibration_labels,
    refit_scorer,
)

__all__ = ["calibrate_main"]

_LOGGER = logging.getLogger(__name__)


def _run_mode(out_dir: str) -> str | None:
    from transforms.io.results import read_manifest

    try:
        mode = read_manifest(out_dir).get("mode")
    except (OSError, ValueError, AttributeError) as err:
        _LOGGER.info("no mode from %s's manifest (%s)", out_dir, err)
        return None
    return mode if mode in MODES else None


def _png_path(json_path: str) -> str:
    root, _ = os.path.splitext(json_path)
    return root + ".png"


def calibrate_main(argv: Iterable[str]) -> int:
    """``corpus-match calibrate``: writes the calibration JSON (+ PNG) and prints the choice.

    Returns:
        0 on success, 1 when no threshold reaches the target (nothing written), 2 on unusable input.
    """
    parser = argparse.ArgumentParser(
        prog="corpus-match calibrate",
        description="Choose --max_distance for a target precision (or recall) from a run's matches and "
                    "labelled pairs.")
    parser.add_argument("--matches", required=True,
                        help="Output directory of a run (reads OUT_DIR/matches/).")
    parser.add_argument("--truth", required=True, help="CSV of labels: query_id,candidate_id pairs, or an "
                        "id column (id/rec_id/record_id) with cluster_id/entity_id.")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--target_precision", type=float, help="Wanted precision in (0, 1].")
    target.add_argument("--target_recall", type=float, help="Wanted recall in (0, 1].")
    parser.add_argument("--mode", choices=MODES, default=None,
                        help="link or dedup. Default: 'mode' of OUT_DIR/manifest.json, else link.")
    parser.add_argument("--unlabelled", choices=UNLABELLED, default="ignore",
                        help="ignore: only pairs whose query (link) or either record (dedup) is named in "
                             "--truth count; negative: every pair not in --truth is false. Default ignore.")
    parser.add_argument("--threshold", choices=THRESHOLDS, default="auto",
                        help="distance: choose --max_distance; probability: choose --min_probability "
                             "(a scored run); auto: probability when the matches carry "
                             "match_probability. Default auto.")
    parser.add_argument("--fit_scorer", action="store_true",
                        help="Refit the scorer's m/u and prior to the labelled pairs (same comparisons "
                             "as the job), rescore them, then choose --min_probability; writes "
                             "scoring_model.json beside the calibration, which --calibration applies. "
                             "Best on a run with --min_probability 0.")
    parser.add_argument("--output", default=None, help="Calibration JSON to write. Default "
                        "OUT_DIR/calibration.json; the PNG goes beside it.")
    parser.add_argument("--allow_incomplete", action="store_true",
                        help="Read the matches of a run that did not finish (no DIR/_SUCCESS) as "
                             "they are. Default: such a run is refused.")
    args = parser.parse_args(list(argv))
    from transforms.common.artifacts import join_path, write_bytes, write_text
    from transforms.io.results import read_matches

    mode = args.mode or _run_mode(args.matches) or "link"
    out = args.output or join_path(args.matches, "calibration.json")
    model = facts = None
    try:
        matches = read_matches(args.matches, allow_incomplete=args.allow_incomplete)
        labels = read_calibration_labels(args.truth, mode=mode)
        threshold = args.threshold
        if threshold == "auto":
            scored = "match_probability" in matches.columns or args.fit_scorer
            threshold = "probability" if scored else "distance"
        if args.fit_scorer:
            if threshold != "probability":
                raise ValueError("--fit_scorer chooses --min_probability: drop --threshold distance")
            _, emitted = label_pairs(matches, labels, mode=mode, unlabelled=args.unlabelled)
            model, matches, facts = refit_scorer(args.matches, matches, labels, mode=mode,
                                                 unlabelled=args.unlabelled)
        result = calibrate(matches, labels, mode=mode, target_precision=args.target_precision,
                           target_recall=args.target_recall, unlabelled=args.unlabelled,
                           threshold=threshold)
        if facts is not None:
            for name in ("emitted_rows", "empty_slots_dropped", "self_pairs_dropped", "distinct_pairs",
                         "unlabelled_pairs_ignored"):
                result["counts"][name] = emitted[name]
    except TargetNotReachedError as err:
        print(f"corpus-match calibrate: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        print(f"corpus-match calibrate: {err}", file=sys.stderr)
        return 2
    result["matches"] = args.matches
    result["truth"] = args.truth
    if model is not None:
        model_out = os.path.splitext(out)[0] + ".scoring_model.json"
        write_text(model_out, model.to_json() + "\n")
        # Beside the calibration file, named relative to it: the pair can be moved or read from
        # any working directory (--calibration resolves it against the file's own directory).
        result["scoring_model"] = posixpath.basename(model_out)
        result["scorer_fit"] = facts
    write_text(out, json.dumps(result, indent=2))
    png = plot_calibration(result)
    if png is not None:
        write_bytes(_png_path(out), png)
    c = result["counts"]
    print(f"mode {mode}: {c['labelled_pairs']} labelled pairs of {c['distinct_pairs']} emitted "
          f"({c['unlabelled_pairs_ignored']} unlabelled ignored), {c['true_pairs']} true pairs "
          f"({c['true_pairs_not_emitted']} never emitted)")
    key = PROBABILITY_KEY if threshold == "probability" else CALIBRATION_KEY
    if model is not None:
        print(f"scorer refitted to {facts['pairs_fitted']} labelled pairs "
              f"({facts['true_pairs_fitted']} true): {result['scoring_model']}")
    print(f"{key} {result[key]:.6g}: precision {result['achieved_precision']:.4f} "
          f"(95% lower bound {result['precision_lower_95']:.4f}), recall {result['recall']:.4f}, "
          f"F1 {result['f1']:.4f} over {result['pairs_at_threshold']} labelled pairs")
    print(f"calibration written to {out} (match job: --calibration {out})")
    return 0


if __name__ == "__main__":
    sys.exit(calibrate_main(sys.argv[1:]))
