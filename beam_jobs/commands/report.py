"""``corpus-match report DIR``: (re)write a finished run's DIR/report.html, e.g. after a Dataflow run.

The command line only; the report is ``transforms.run.report``.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["report_main"]


def report_main(argv: list[str]) -> int:
    """Writes DIR/report.html and prints the run's summary; 0, or 2 when the run has not finished."""
    ap = argparse.ArgumentParser(prog="corpus-match report", description="Write DIR/report.html.")
    ap.add_argument("output_dir", help="a finished run's --output directory")
    args = ap.parse_args(argv)  # before the imports below: --help needs no Beam
    from transforms.io.results import read_manifest
    from transforms.run.report import summary_text, write_report

    try:
        path = write_report(args.output_dir)
    except FileNotFoundError as e:  # transforms.common.run_dir.IncompleteRunError: the run has not finished
        print(f"corpus-match report: {e}", file=sys.stderr)
        return 2
    print(summary_text(read_manifest(args.output_dir)) + f"\n  report:      {path}")
    return 0


if __name__ == "__main__":
    sys.exit(report_main(sys.argv[1:]))
