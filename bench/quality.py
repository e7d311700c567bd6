"""Benchmark: match quality of the whole job on generated data, against a TF-IDF baseline in the same run.

For each dataset it generates the records into a work directory, runs the job end to end as a
subprocess (``corpus-match ... --runner FnApiRunner``, the built-in embedder and default flags; the
wall clock of the subprocess is the job's time), scores the matches with ``transforms.learn.evaluate``
against the generated truth, and does the same for a baseline: TF-IDF over character 2-4-grams
(scikit-learn ``TfidfVectorizer(analyzer='char_wb', ngram_range=(2, 4))``) of the record's
normalised fields joined into one string, fitted on all records, with exact cosine top-K by sparse
matrix products in blocks (its wall time covers vectorising and searching).

Datasets (``--datasets``, comma-separated):

* ``febrl4``: FEBRL4-like link data (``transforms.testing.people`` with the FEBRL preset
  ``Corruption.febrl(4)``: FEBRL's generator's modifications, 1-6 per duplicate, at most 2 per field;
  clean originals, no households, ``soc_sec_id`` on and matched): ``--entities`` people in A and
  one corrupted duplicate each in B (overlap 1.0);
* ``febrl3``: FEBRL3-like dedup data (``Corruption.febrl(3)``, lighter per duplicate, at most 4 per
  field; no households, ``soc_sec_id`` on): 0.4 x ``--entities`` people (2,000 at the default) in
  clusters of 1-6 records sized as FEBRL3's (``FEBRL3_CLUSTER_SIZES``: ~5,000 records, ~6,700 true
  pairs);
* ``orgs``: free-text organisation records (companies and research affiliations, fields name, city,
  country; ``transforms.testing.organisations``), ~``--entities`` records in clusters of 1-6;
* ``people_link``: people link data with this generator's own, much heavier corruption (moves,
  nicknames, name swaps, reformatted dates, households sharing surname and address; no
  ``soc_sec_id``) and overlap 0.8 (a fifth of A has no partner in B).

Reported: link data: top-1 F1 (rank-1 pairs, no threshold), top-1 F1 at the best distance threshold,
recall of the true partner at rank 1 and in the top 10; dedup data: pairwise F1 at the best distance
threshold (unordered pairs) and recall of the true pairs in the top 10. The thresholds swept are 500
quantiles of each system's own distances. When the match files have a ``match_probability`` column
(the pairwise scorer), also the F1 of the emitted pairs with ``match_probability >= 0.5``. Targets of
the issue, printed under the table: FEBRL4 top-1 F1 >= 0.999 and recall@10 >= 0.9995 (no labels);
FEBRL3 pairwise F1 >= 0.996 at match_probability >= 0.5.

Flags: ``--datasets``, ``--entities`` (5000), ``--seed`` (0), ``--out`` (keep data, job outputs and
``quality.json`` there; default a temporary directory, deleted at the end), ``--top_k`` (10); any
other flag is passed on to the job, e.g. ``--index exact`` or ``--scorer none``::

    python -m bench.quality --datasets febrl4,febrl3,orgs --entities 5000
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata

import numpy as np
import pandas as pd

from transforms.learn.evaluate import evaluate
from transforms.testing import organisations, people

_DATASETS = ("febrl4", "febrl3", "orgs", "people_link")
_DEFAULT_DATASETS = "febrl4,febrl3,orgs"
_SWEEP_POINTS = 500
_PROBABILITY = 0.5
_BLOCK = 1024  # query rows per sparse product in the baseline
# Records per entity of the dedup generators at their settings here (to aim at --entities records).
_FEBRL3_ENTITY_SHARE = 0.4  # 2,000 people -> ~5,000 records with FEBRL3's cluster sizes
# The FEBRL lookalikes carry FEBRL's identifier column, and it is matched like the other fields.
_FEBRL_FIELDS = (*people.MATCH_FIELDS, "soc_sec_id")
_ORGS_RECORDS_PER_ENTITY = 1.9


# ---------------------------------------------------------------------------------------------------
# Data.


def _write(records: list[dict], path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    people.write_records(records, path, "parquet")
    return path


def _generate(name: str, entities: int, seed: int, data_dir: str) -> dict:
    """Generates one dataset under ``data_dir``; returns what the job and the scorer need."""
    if name in ("febrl4", "people_link"):
        if name == "febrl4":
            a, b, truth = people.make_link_corpora(entities, overlap=1.0, seed=seed,
                                                   corruption=people.Corruption.febrl(4),
                                                   household_rate=0.0, soc_sec_id=True)
            fields = _FEBRL_FIELDS
        else:
            a, b, truth = people.make_link_corpora(entities, overlap=0.8, seed=seed)
            fields = people.MATCH_FIELDS
        return {"mode": "link", "queries": a, "candidates": b, "truth": truth, "id_field": "rec_id",
                "fields": fields,
                "paths": {"queries": _write(a, os.path.join(data_dir, "a.parquet")),
                          "candidates": _write(b, os.path.join(data_dir, "b.parquet"))},
                "shape": f"{len(a)} x {len(b)} records, {len(truth)} links"}
    if name == "febrl3":
        records, truth = people.make_dedup_corpus(max(1, round(entities * _FEBRL3_ENTITY_SHARE)),
                                                  seed=seed, corruption=people.Corruption.febrl(3),
                                                  cluster_weights=people.FEBRL3_CLUSTER_SIZES,
                                                  household_rate=0.0, soc_sec_id=True)
        fields, id_field = _FEBRL_FIELDS, "rec_id"
    elif name == "orgs":
        records, truth = organisations.make_dedup_corpus(
            max(1, round(entities / _ORGS_RECORDS_PER_ENTITY)), seed=seed)
        fields, id_field = organisations.MATCH_FIELDS, "id"
    else:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(_DATASETS)}")
    return {"mode": "dedup", "records": records, "truth": truth, "id_field": id_field, "fields": fields,
            "paths": {"input": _write(records, os.path.join(data_dir, "records.parquet"))},
            "shape": f"{len(records)} records, {len(truth)} true pairs"}


# ---------------------------------------------------------------------------------------------------
# The job.


def _job_command(data: dict, out_dir: str, top_k: int, job_flags: list[str]) -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "corpus-match")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "beam_jobs.cli"]
    if data["mode"] == "link":
        cmd += ["--queries", data["paths"]["queries"], "--candidates", data["paths"]["candidates"]]
    else:
        cmd += ["--input", data["paths"]["input"]]
    return [*cmd, "--output", out_dir, "--top_k", str(top_k), "--id_field", data["id_field"],
            "--text_fields", ",".join(data["fields"]), "--runner", "FnApiRunner", *job_flags]


def _run_job(cmd: list[str], log_path: str) -> tuple[float, int]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode
    return time.perf_counter() - t0, rc


def read_match_frame(out_dir: str) -> pd.DataFrame:
    """Every column of the run's match files (parquet, jsonl or csv), ``match_probability`` included.

    ``transforms.io.results.read_matches`` returns the four match columns only; the scorer's column is
    read
    here directly.
    """
    paths = sorted(p for p in glob.glob(os.path.join(out_dir, "matches", "matches-*-of-*.*"))
                   if not os.path.basename(p).startswith((".", "_")))
    frames = []
    for path in paths:
        if path.endswith(".parquet"):
            frames.append(pd.read_parquet(path))
        elif path.endswith(".jsonl"):
            frames.append(pd.read_json(path, lines=True, dtype={"query_id": str, "candidate_id": str}))
        elif path.endswith(".csv"):
            frames.append(pd.read_csv(path, dtype={"query_id": str, "candidate_id": str},
                                      keep_default_na=False))
    if not frames:
        raise FileNotFoundError(f"no readable match files under {out_dir}/matches")
    frame = pd.concat(frames, ignore_index=True)
    frame["query_id"] = frame["query_id"].astype(str)
    frame["candidate_id"] = frame["candidate_id"].fillna("").astype(str)
    return frame


# ---------------------------------------------------------------------------------------------------
# The baseline.


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower().replace("'", "")
    return re.sub(r"[\W_]+", " ", text).strip()


def _texts(records: list[dict], fields: tuple[str, ...]) -> list[str]:
    return [" ".join(_normalise(str(r.get(f, "") or "")) for f in fields) for r in records]


def _top_k(queries, candidates, k: int, exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k of L2-normalised sparse rows: (indices, similarities), best first.

    Ties are broken by candidate position (ids are sorted, so by id); in dedup mode a record is not
    its own neighbour.
    """
    n, m = queries.shape[0], candidates.shape[0]
    k = min(k, m - (1 if exclude_self else 0))
    idx = np.zeros((n, k), dtype=np.int64)
    sim = np.zeros((n, k), dtype=np.float32)
    ct = candidates.T.tocsr()
    for lo in range(0, n, _BLOCK):
        hi = min(lo + _BLOCK, n)
        block = (queries[lo:hi] @ ct).toarray()
        if exclude_self:
            block[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf
        part = np.argpartition(-block, k - 1, axis=1)[:, :k] if k < m else np.tile(np.arange(m), (hi - lo, 1))
        # Sort the k by (-similarity, position); a candidate tied with the k-th outside the partition
        # is rare and only moves an equal-score neighbour.
        vals = np.take_along_axis(block, part, axis=1)
        order = np.lexsort((part, -vals), axis=1)
        idx[lo:hi] = np.take_along_axis(part, order, axis=1)
        sim[lo:hi] = np.take_along_axis(vals, order, axis=1)
    return idx, sim


def _baseline(data: dict, top_k: int) -> tuple[pd.DataFrame, float]:
    """TF-IDF char 2-4-gram exact cosine top-K; returns (matches, wall seconds)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    t0 = time.perf_counter()
    fields, id_field = data["fields"], data["id_field"]
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), dtype=np.float32)
    if data["mode"] == "link":
        q_recs, c_recs = data["queries"], data["candidates"]
        q_text, c_text = _texts(q_recs, fields), _texts(c_recs, fields)
        vectorizer.fit(q_text + c_text)  # one feature space for both corpora, as the job's analysis
        q, c = vectorizer.transform(q_text), vectorizer.transform(c_text)
        idx, sim = _top_k(q, c, top_k, exclude_self=False)
    else:
        q_recs = c_recs = data["records"]
        q = c = vectorizer.fit_transform(_texts(q_recs, fields))
        idx, sim = _top_k(q, c, top_k, exclude_self=True)
    q_ids = np.array([r[id_field] for r in q_recs], dtype=object)
    c_ids = np.array([r[id_field] for r in c_recs], dtype=object)
    n, k = idx.shape
    matches = pd.DataFrame({
        "query_id": np.repeat(q_ids, k), "candidate_id": c_ids[idx.reshape(-1)],
        "rank": np.tile(np.arange(1, k + 1), n),
        "distance": 1.0 - sim.reshape(-1).astype(np.float64)})
    return matches, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------
# Scoring.


def _thresholds(matches: pd.DataFrame) -> list[float]:
    d = matches.loc[matches["candidate_id"] != "", "distance"].to_numpy(dtype=np.float64)
    d = d[np.isfinite(d)]
    return np.unique(np.quantile(d, np.linspace(0, 1, _SWEEP_POINTS))).tolist() if d.size else []


def score(matches: pd.DataFrame, truth: list[tuple[str, str]], mode: str, top_k: int) -> dict:
    """The figures of one system on one dataset (None where they do not apply)."""
    report = evaluate(matches, truth, mode=mode, k=top_k, thresholds=_thresholds(matches))
    recall = report["recall_at"]
    out = {"recall_at_1": recall.get("1"), "recall_at_10": recall.get(str(min(10, top_k))),
           "pairs_f1": report["pairs"]["f1"], "top1_f1": None, "top1_best_f1": None,
           "top1_best_threshold": None, "pair_best_f1": None, "pair_best_threshold": None,
           "f1_at_probability": None, "top1_f1_at_probability": None,
           "true_pairs": report["counts"]["true_pairs"]}
    if mode == "link":
        best = report["threshold_sweep_top1"]["best"] or {}
        out.update(top1_f1=report["top1"]["f1"], top1_best_f1=best.get("f1"),
                   top1_best_threshold=best.get("threshold"))
    else:
        best = report["threshold_sweep"]["best"] or {}
        out.update(pair_best_f1=best.get("f1"), pair_best_threshold=best.get("threshold"))
    if "match_probability" in matches.columns:
        p = pd.to_numeric(matches["match_probability"], errors="coerce").to_numpy()
        kept = matches[p >= _PROBABILITY]
        if len(kept):
            scored = evaluate(kept, truth, mode=mode, k=top_k)
            out["f1_at_probability"] = scored["pairs"]["f1"]
            if mode == "link":
                out["top1_f1_at_probability"] = scored["top1"]["f1"]
        else:
            out["f1_at_probability"] = 0.0
    return out


# ---------------------------------------------------------------------------------------------------
# The table.

_COLUMNS = (("wall_s", "wall s", "{:8.1f}"), ("top1_f1", "top1 F1", "{:8.4f}"),
            ("top1_best_f1", "top1 F1@best", "{:12.4f}"), ("recall_at_1", "R@1", "{:7.4f}"),
            ("recall_at_10", "R@10", "{:7.4f}"), ("pair_best_f1", "pair F1@best", "{:12.4f}"),
            ("f1_at_probability", "F1@p>=0.5", "{:9.4f}"))


def _cell(value, fmt: str) -> str:
    width = int(re.search(r"\d+", fmt).group())
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return " " * (width - 1) + "-"
    return fmt.format(value)


def format_table(rows: list[dict]) -> str:
    """Job row, baseline row and their ratio (job / baseline) per dataset."""
    head = f"{'dataset':12s} {'system':8s} " + " ".join(
        f"{label:>{int(re.search(r'[0-9]+', fmt).group())}s}" for _, label, fmt in _COLUMNS)
    lines = [head, "-" * len(head)]
    for row in rows:
        job, base = row.get("job"), row["tfidf"]
        for name, figures in (("job", job), ("tfidf", base)):
            if figures is None:
                lines.append(f"{row['dataset']:12s} {name:8s} (failed: see {row.get('log')})")
                continue
            lines.append(f"{row['dataset']:12s} {name:8s} " + " ".join(
                _cell(figures.get(key), fmt) for key, _, fmt in _COLUMNS))
        if job is not None:
            ratios = []
            for key, _, fmt in _COLUMNS:
                a, b = job.get(key), base.get(key)
                ratios.append(_cell(a / b if a is not None and b else None, fmt))
            lines.append(f"{row['dataset']:12s} {'ratio':8s} " + " ".join(ratios))
    return "\n".join(lines)


def _targets(rows: list[dict]) -> list[str]:
    out = []
    for row in rows:
        job = row.get("job") or {}
        if row["dataset"] == "febrl4" and job:
            out.append(f"febrl4 targets: top-1 F1 {job['top1_f1']:.4f} (>= 0.999), recall@10 "
                       f"{job['recall_at_10']:.4f} (>= 0.9995)")
        if row["dataset"] == "febrl3" and job:
            p = job.get("f1_at_probability")
            shown = f"{p:.4f}" if p is not None else "- (no match_probability column)"
            out.append(f"febrl3 target: pairwise F1 at match_probability >= 0.5 {shown} (>= 0.996); "
                       f"at the best distance threshold {job['pair_best_f1']:.4f}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=_DEFAULT_DATASETS,
                    help=f"comma list of {', '.join(_DATASETS)} (default {_DEFAULT_DATASETS})")
    ap.add_argument("--entities", type=int, default=5000,
                    help="febrl4/people_link: records per corpus; febrl3/orgs: about this many records "
                    "(default 5000)")
    ap.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    ap.add_argument("--out", default=None,
                    help="work directory to keep (data, job outputs, logs, quality.json); default a "
                    "temporary directory, deleted at the end")
    ap.add_argument("--top_k", type=int, default=10, help="K for the job and the baseline (default 10)")
    args, job_flags = ap.parse_known_args(argv)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in _DATASETS]
    if unknown:
        ap.error(f"unknown datasets {unknown}; choose from {', '.join(_DATASETS)}")
    work = args.out or tempfile.mkdtemp(prefix="corpus-match-quality-")
    os.makedirs(work, exist_ok=True)
    rows = []
    try:
        for name in names:
            rows.append(_one(name, args, job_flags, os.path.join(work, name)))
        print()
        print(format_table(rows))
        for line in _targets(rows):
            print(line)
        if args.out:
            with open(os.path.join(work, "quality.json"), "w") as fh:
                json.dump({"entities": args.entities, "seed": args.seed, "job_flags": job_flags,
                           "rows": rows}, fh, indent=2)
    finally:
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.get("job") is not None for r in rows) else 1


def _one(name: str, args: argparse.Namespace, job_flags: list[str], work: str) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    data = _generate(name, args.entities, args.seed, os.path.join(work, "data"))
    people.write_truth(data["truth"], os.path.join(work, "data", "true_pairs.csv"))
    print(f"[{name}] {data['mode']}: {data['shape']} (generated in {time.perf_counter() - t0:.1f} s)",
          flush=True)
    out_dir = os.path.join(work, "out")
    cmd = _job_command(data, out_dir, args.top_k, job_flags)
    log = os.path.join(work, "job.log")
    print(f"[{name}] job: {' '.join(cmd)}", flush=True)
    wall, rc = _run_job(cmd, log)
    row: dict = {"dataset": name, "mode": data["mode"], "shape": data["shape"], "log": log,
                 "command": cmd, "job": None}
    if rc != 0:
        with open(log) as fh:
            tail = fh.read()[-3000:]
        print(f"[{name}] job failed (exit {rc}) after {wall:.1f} s; log tail:\n{tail}", flush=True)
    else:
        matches = read_match_frame(out_dir)
        row["job"] = {"wall_s": wall, **score(matches, data["truth"], data["mode"], args.top_k),
                      "columns": list(matches.columns)}
        print(f"[{name}] job: {wall:.1f} s, {len(matches)} match rows (columns "
              f"{', '.join(matches.columns)})", flush=True)
    base_matches, base_wall = _baseline(data, args.top_k)
    row["tfidf"] = {"wall_s": base_wall, **score(base_matches, data["truth"], data["mode"], args.top_k)}
    print(f"[{name}] tfidf: {base_wall:.1f} s", flush=True)
    return row


if __name__ == "__main__":
    sys.exit(main())
