"""Writes the demo corpora for ``make demo``: clustered vectors in parquet, link mode.

50,000 candidates and 5,000 queries of 64 dims by default, generated from a seed (nothing downloaded).
"""

from __future__ import annotations

import argparse
import os

from transforms.testing.clustered import make_link_vectors, write_vector_corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="demo_data")
    ap.add_argument("--candidates", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=5_000)
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cands, queries = make_link_vectors(args.candidates, args.queries, args.dims, seed=args.seed)
    write_vector_corpus(os.path.join(args.out, "candidates"),
                        [f"c{i:07d}" for i in range(len(cands))], cands, files=4)
    write_vector_corpus(os.path.join(args.out, "queries"),
                        [f"q{i:07d}" for i in range(len(queries))], queries, files=2)
    print(f"demo data: {args.candidates} candidates, {args.queries} queries, {args.dims} dims "
          f"under {args.out}/")


if __name__ == "__main__":
    main()
