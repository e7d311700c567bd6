"""``corpus-match evaluate``: score a run's matches against true pairs (precision, recall, F1,
recall@K), print the table and write the JSON report.

The command line only: flags, reading the run's match files, the printed table and exit codes. The
scoring itself is ``transforms.learn.evaluate``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import pandas as pd

from transforms.learn.evaluate import MODES, evaluate, format_table, load_truth

__all__ = ["evaluate_main"]

_LOGGER = logging.getLogger(__name__)


def _read_matches(out_dir: str, allow_incomplete: bool = False) -> pd.DataFrame:
    from transforms.io.results import read_matches  # the one reader of a run's outputs (imports Beam)

    return read_matches(out_dir, allow_incomplete=allow_incomplete)


def _mode_from_manifest(out_dir: str) -> str | None:
    path = os.path.join(out_dir, "manifest.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        try:
            mode = json.load(fh).get("mode")
        except (json.JSONDecodeError, AttributeError) as err:
            _LOGGER.warning("cannot read mode from %s: %s", path, err)
            return None
    return mode if mode in MODES else None


def evaluate_main(argv: list[str]) -> int:
    """``corpus-match evaluate``: scores OUT_DIR/matches/ against a truth file.

    Prints the table, writes the full report as JSON and returns the exit code (0 on success, 2 on
    unusable input).
    """
    parser = argparse.ArgumentParser(
        prog="corpus-match evaluate",
        description="Score a run's matches against ground truth (precision, recall, F1, recall@K).")
    parser.add_argument("--matches", required=True,
                        help="Output directory of a run (reads OUT_DIR/matches/; local path).")
    parser.add_argument("--truth", required=True,
                        help="CSV of true pairs (query_id,candidate_id) or of clusters (id,cluster_id).")
    parser.add_argument("--mode", choices=MODES, default=None,
                        help="link or dedup. Default: 'mode' of OUT_DIR/manifest.json, else link.")
    parser.add_argument("--k", type=int, default=None,
                        help="K of recall@K. Default: the largest rank in the matches.")
    parser.add_argument("--json", default=None,
                        help="Where to write the JSON report. Default OUT_DIR/evaluation.json.")
    parser.add_argument("--allow_incomplete", action="store_true",
                        help="Read the matches of a run that did not finish (no OUT_DIR/_SUCCESS) as "
                             "they are. Default: such a run is refused.")
    args = parser.parse_args(argv)
    if args.k is not None and args.k < 1:
        parser.error("--k must be >= 1")
    mode = args.mode or _mode_from_manifest(args.matches) or "link"
    try:
        matches = _read_matches(args.matches, args.allow_incomplete)
        truth = load_truth(args.truth, mode=mode)
        report = evaluate(matches, truth, mode=mode, k=args.k)
    except (OSError, ValueError) as err:  # missing files, bad columns or values: say so, exit 2
        print(f"corpus-match evaluate: {err}", file=sys.stderr)
        return 2
    report["matches"] = os.path.abspath(args.matches)
    report["truth"] = os.path.abspath(args.truth)
    out = args.json or os.path.join(args.matches, "evaluation.json")
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
    print(format_table(report))
    print(f"report written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(evaluate_main(sys.argv[1:]))
