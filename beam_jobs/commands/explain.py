"""``corpus-match explain --run DIR --query_id A --candidate_id B``: one scored pair's match weight,
field by field, as a table or JSON.

The command line only; the explanation is ``transforms.scoring.explain``.
"""

from __future__ import annotations

import argparse
import json
import sys

from transforms.scoring.explain import explain_pair, format_explanation

__all__ = ["explain_main"]


def explain_main(argv: list[str] | None = None) -> int:
    """Prints one pair's explanation; 0, or 2 when the run, a record or the pair cannot be read."""
    ap = argparse.ArgumentParser(prog="corpus-match explain",
                                 description="Field-by-field match weight of one pair of a scored run.")
    ap.add_argument("--run", required=True, help="the run's --output directory")
    ap.add_argument("--query_id", required=True)
    ap.add_argument("--candidate_id", required=True)
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--allow_incomplete", action="store_true",
                    help="explain a pair of a run that did not finish (no DIR/_SUCCESS) too")
    args = ap.parse_args(argv)
    try:
        explained = explain_pair(args.run, args.query_id, args.candidate_id,
                                 allow_incomplete=args.allow_incomplete)
    except (KeyError, ValueError, FileNotFoundError, OSError) as e:
        print(f"corpus-match explain: {e}", file=sys.stderr)
        return 2
    print(json.dumps(explained, indent=1, default=str) if args.json else format_explanation(explained))
    return 0



if __name__ == "__main__":
    sys.exit(explain_main(sys.argv[1:]))
