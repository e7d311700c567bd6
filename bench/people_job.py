"""Benchmark: the whole job on generated person records (default embedder, link mode), time per stage.

Generates a link pair with ``transforms.testing.people`` (corpus A: ``--entities`` records, corpus B:
as many, a corrupted duplicate of an ``--overlap`` share of A's people plus unrelated people), writes
each corpus as 8 parquet files (Arrow batches straight from the row groups: the cheapest input the
job reads, and 8 read units per corpus), runs the job end to end on the in-process ``FnApiRunner``
with the built-in embedder and default flags, and scores the matches against the generated truth.

Prints records per corpus, the time to generate and to write them, the job's wall time, the busy
seconds per stage from the run's manifest with rows/s, the audited ANN recall@10, and recall@1/@10,
top-1 F1 (rank-1 pairs, no threshold) and top-1 F1 at the best distance threshold. With ``--overlap``
below 1 a share of A's records has no partner, so top-1 F1 without a threshold is capped well below
1 (about 0.89 at 0.8); the best-threshold F1 is the figure to read there. Busy time is reported
per stage (read, validate, embed, place, build, search, merge, write, the recall audit and the
tuning searches); tf.Transform's analysis and transform run inside TFT's own transforms and are not
timed separately: they are most of the wall time not covered by the stages, with the shuffles.

Defaults are the issue's 1,000,000 records (500,000 per corpus); scale with flags, e.g.
``python -m bench.people_job --entities 20000``. Any flag this script does not know is passed on to
the job, e.g. ``--target_recall 0.99`` or ``--index exact``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU numbers, like the other benches
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from transforms.testing.people import MATCH_FIELDS, make_link_corpora, write_records, write_truth  # noqa: E402

_FILES_PER_CORPUS = 8


def _write_corpus(records: list[dict], directory: str, files: int) -> str:
    """Writes ``records`` as ``files`` parquet files under ``directory``; returns their glob."""
    os.makedirs(directory, exist_ok=True)
    step = -(-len(records) // files)
    for i in range(files):
        chunk = records[i * step:(i + 1) * step]
        if chunk:
            write_records(chunk, os.path.join(directory, f"part-{i:05d}-of-{files:05d}.parquet"), "parquet")
    return os.path.join(directory, "*.parquet")


def _stage_rows(manifest: dict) -> dict[str, int]:
    """Rows each timed stage handles: candidates indexed, queries searched, audit queries."""
    counts = manifest.get("counts") or {}
    return {"build": counts.get("candidates_indexed", 0), "search": counts.get("queries_read", 0),
            "audit_exact_search": (manifest.get("audit") or {}).get("sample_size", 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--entities", type=int, default=500_000, help="records per corpus (default 500000)")
    ap.add_argument("--overlap", type=float, default=0.8,
                    help="share of A's people with a duplicate in B (default 0.8)")
    ap.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    ap.add_argument("--work_dir", default="bench_out/people_job",
                    help="corpora and job output go here; emptied first (default bench_out/people_job)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args, job_flags = ap.parse_known_args()
    logging.basicConfig(level=logging.WARNING)

    shutil.rmtree(args.work_dir, ignore_errors=True)
    t0 = time.perf_counter()
    a, b, links = make_link_corpora(args.entities, overlap=args.overlap, seed=args.seed)
    t_generate = time.perf_counter() - t0
    t0 = time.perf_counter()
    queries = _write_corpus(a, os.path.join(args.work_dir, "a"), _FILES_PER_CORPUS)
    candidates = _write_corpus(b, os.path.join(args.work_dir, "b"), _FILES_PER_CORPUS)
    truth_path = os.path.join(args.work_dir, "true_pairs.csv")
    write_truth(links, truth_path)
    t_write = time.perf_counter() - t0
    n_a, n_b, n_links = len(a), len(b), len(links)
    del a, b, links  # the job should not share the process with a second copy of the corpora
    print(f"data: {n_a} records in A, {n_b} in B, {n_links} true links (overlap {args.overlap}, seed "
          f"{args.seed}); generated in {t_generate:.1f} s ({(n_a + n_b) / max(t_generate, 1e-9):,.0f} "
          f"records/s), written in {t_write:.1f} s", flush=True)

    from beam_jobs.match_corpora import run_job
    from transforms.io.results import read_manifest, read_matches
    from transforms.learn.evaluate import evaluate, load_truth

    out = os.path.join(args.work_dir, "out")
    t0 = time.perf_counter()
    run_job(["--queries", queries, "--candidates", candidates, "--output", out, "--overwrite",
             "--top_k", "10", "--id_field", "rec_id", "--text_fields", ",".join(MATCH_FIELDS),
             "--runner", "FnApiRunner", *job_flags])
    t_job = time.perf_counter() - t0
    manifest = read_manifest(out)
    t0 = time.perf_counter()
    # k=10: with the pairwise scorer's --min_probability a query may keep fewer than 10 pairs.
    report = evaluate(read_matches(out), load_truth(truth_path), mode="link", k=10)
    t_evaluate = time.perf_counter() - t0

    busy = manifest.get("stage_busy_seconds") or {}
    rows = _stage_rows(manifest)
    stages = {name: {"busy_s": seconds, "rows": rows.get(name),
                     "rows_per_s": round(rows[name] / seconds, 1) if rows.get(name) and seconds else None}
              for name, seconds in busy.items()}
    best = report["threshold_sweep_top1"]["best"]
    figures = {
        "entities": args.entities, "overlap": args.overlap, "seed": args.seed, "job_flags": job_flags,
        "records_a": n_a, "records_b": n_b, "true_links": n_links,
        "generate_seconds": round(t_generate, 2), "write_seconds": round(t_write, 2),
        "job_wall_seconds": round(t_job, 2), "manifest_wall_seconds": manifest.get("wall_seconds"),
        "stages": stages, "audit_recall_at_10": (manifest.get("audit") or {}).get("recall_at_k"),
        "audit_recall_relevant": (manifest.get("audit") or {}).get("recall_relevant"),
        "scorer": (manifest.get("flags") or {}).get("scorer"),
        "scann_params": [s.get("params") for s in manifest.get("shards", [])],
        "search_tuning": manifest.get("search_tuning"),
        "recall_at_1": report["recall_at"]["1"], "recall_at_10": report["recall_at"]["10"],
        "top1_f1": report["top1"]["f1"], "top1_best_threshold": best["threshold"],
        "top1_best_threshold_f1": best["f1"], "evaluate_seconds": round(t_evaluate, 2),
    }
    print(f"job: {t_job:.1f} s wall ({(n_a + n_b) / t_job:,.0f} records/s end to end; manifest "
          f"{manifest.get('wall_seconds')} s), exit state {manifest.get('exit_state')}")
    for name, s in stages.items():
        rate = f", {s['rows']} rows, {s['rows_per_s']:,.0f} rows/s" if s["rows_per_s"] else ""
        print(f"  {name:20s} {s['busy_s']:8.1f} s busy{rate}")
    timed = sum(busy.values())
    print(f"  {'(other stages)':20s} {t_job - timed:8.1f} s: job wall time minus the busy seconds above")
    print(f"audited ANN recall@10 (vs exact search): {figures['audit_recall_at_10']}, of the relevant "
          f"neighbours: {figures['audit_recall_relevant']}")
    print(f"scorer {figures['scorer']}: top-1 F1 is at its --min_probability when it ran, the best "
          "threshold is over the distances of the pairs it kept")
    print(f"recall@1 {figures['recall_at_1']:.4f}  recall@10 {figures['recall_at_10']:.4f}  top-1 F1 "
          f"{figures['top1_f1']:.4f}  top-1 F1 at the best threshold ({best['threshold']:.3f}) "
          f"{best['f1']:.4f}  (evaluated in {t_evaluate:.1f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)


if __name__ == "__main__":
    main()
