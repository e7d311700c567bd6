"""The ``corpus-match`` console script: the match job by default, plus subcommands.

``corpus-match [job flags]`` runs the match job (see beam_jobs/options.py);
``corpus-match evaluate ...`` scores a run's matches against truth pairs;
``corpus-match explain --run DIR --query_id A --candidate_id B`` prints one pair's match weight, field
by field (transforms/scoring/explain.py);
``corpus-match template ...`` prints (or runs) the Dataflow Flex Template commands;
``corpus-match report DIR`` (re)writes DIR/report.html, e.g. after a Dataflow run has finished;
``corpus-match train ...`` learns a model from labelled pairs (transforms/train.py);
``corpus-match calibrate ...`` picks --max_distance for a target precision (transforms/calibrate.py).
"""

from __future__ import annotations

import sys

__all__ = ["main"]

_SUBCOMMANDS = ("evaluate", "explain", "template", "report", "train", "calibrate")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _SUBCOMMANDS:
        command, rest = argv[0], argv[1:]
        if command == "report":
            return _report_main(rest)
        if command == "train":
            from transforms.train import train_main

            return train_main(rest)
        if command == "calibrate":
            from transforms.calibrate import calibrate_main

            return calibrate_main(rest)
        if command == "explain":
            from transforms.scoring.explain import explain_main

            return explain_main(rest)
        if command == "evaluate":
            from transforms.evaluate import evaluate_main

            return evaluate_main(rest)
        from beam_jobs.template_cli import template_main

        return template_main(rest)
    from beam_jobs.match_corpora import main as match_main

    return match_main(argv)


def _report_main(argv: list[str]) -> int:
    import argparse

    from transforms.manifest import read_manifest
    from transforms.report import summary_text, write_report

    ap = argparse.ArgumentParser(prog="corpus-match report", description="Write DIR/report.html.")
    ap.add_argument("output_dir", help="a finished run's --output directory")
    args = ap.parse_args(argv)
    try:
        path = write_report(args.output_dir)
    except FileNotFoundError as e:  # transforms.run_dir.IncompleteRunError: the run has not finished
        print(f"corpus-match report: {e}", file=sys.stderr)
        return 2
    print(summary_text(read_manifest(args.output_dir)) + f"\n  report:      {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
