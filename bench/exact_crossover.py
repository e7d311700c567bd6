"""Benchmark: where the project's exact index stops being cheaper than its ScaNN index, on this machine.

For shard sizes n (default 2k ... 200k), query counts q in {n, 10*n} (capped by ``--max_queries``),
dims 128 and 192, and two kinds of data (clustered: ``transforms.testing.clustered``, Gaussian
mixtures; random: unit vectors with no structure, like hashed text embeddings at their worst), it
times the project's own code paths, as one shard of the job runs them:

* exact: ``build_index(kind='exact')`` + ``NeighborIndex.search`` of the q queries, top-10, in
  query batches of the job's ``--batch_size`` (4096);
* scann: ``build_index(kind='scann', params=scann_params_for(default config, n))`` + the same search
  at the built params (what a run without tuning does), and its recall@10 against exact on a sample;
* scann+tune: what an embedding run pays, since ``--target_recall`` defaults to 0.95 there: the exact
  top-10 of a 1,000-query tuning sample (``ExactTuningTopK``), the ``tuning_ladder`` rungs tried the
  way ``TuneSearch`` tries them (most effort first, then cheapest upwards until the target), and the
  search at the chosen rung. Recall here counts all true top-10 neighbours (TuneSearch's relevance
  cut-off for near-ties is left out), so the rung can differ slightly from a job's.

Search time is linear in q (fixed query batches), so searches whose estimated work exceeds the
budget (``--max_pairs`` query x vector pairs for exact, ``--max_scann_queries`` for ScaNN) are
measured on a prefix of the queries and scaled up; such figures are marked ``*``. Every timing is
the minimum of ``--repeats`` runs (the spread is printed). Builds are shared by both q of a size.

Prints one row per configuration (seconds, and the ratio exact / scann: below 1 exact is cheaper),
then per data kind and dims the crossover as "exact is cheaper while q*n <= X": for each q/n series
the q*n where exact stops winning as n grows (interpolated between the measured sizes), X being the
smallest of them; and exact search's cost per query x vector pair.

    python -m bench.exact_crossover                          # the full grid (tens of minutes)
    python -m bench.exact_crossover --sizes 2000,5000,10000 --dims 128 --data clustered
    python -m bench.exact_crossover --rows_from out.json   # re-summarise a saved run
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import time

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

from beam_jobs.config import config_from_flags, scann_params_for  # noqa: E402
from transforms.common.vectors import prepare_vectors
from transforms.index.neighbor_index import build_index  # noqa: E402
from transforms.quality.tuning import tuning_ladder  # noqa: E402
from transforms.testing.clustered import make_clustered  # noqa: E402

_TOP_K = 10
_TUNE_SAMPLE = 1000
_RECALL_SAMPLE = 1000


def _vectors(kind: str, n: int, q: int, dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(candidates [n, d], queries [q, d]), prepared for cosine like the job prepares them."""
    if kind == "clustered":
        cands, centers = make_clustered(n, dims, seed=seed)
        queries, _ = make_clustered(q, dims, centers=centers, seed=seed + 1)
    else:
        rng = np.random.default_rng(seed)
        cands = rng.standard_normal((n, dims), dtype=np.float32)
        queries = rng.standard_normal((q, dims), dtype=np.float32)
    return prepare_vectors(cands, "cosine")[0], prepare_vectors(queries, "cosine")[0]


def _timed(fn, repeats: int) -> tuple[float, float, object]:
    """(min seconds, max seconds, last result) of ``repeats`` calls."""
    times, result = [], None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), max(times), result


def _search_all(index, queries: np.ndarray, batch: int, **effort) -> np.ndarray:
    """Searches in the job's query batches; returns the positions [q, k]."""
    out = []
    for start in range(0, len(queries), batch):
        out.append(index.search(queries[start:start + batch], _TOP_K, **effort)[0])
    return np.concatenate(out) if out else np.zeros((0, _TOP_K), np.int64)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = (truth[:, :, None] == found[:, None, :]).any(axis=2) & (truth >= 0)
    return float(hits.sum()) / max(1, int((truth >= 0).sum()))


def _tune(index, sample: np.ndarray, truth: np.ndarray, target: float, batch: int):
    """TuneSearch's walk over tuning_ladder: (chosen rung, recall, rungs tried)."""
    ladder = tuning_ladder(index.params, index.size)

    def recall_of(rung):
        return _recall(_search_all(index, sample, batch, leaves_to_search=rung[0], reorder=rung[1]), truth)

    tried = {ladder[-1]: recall_of(ladder[-1])}
    chosen = ladder[-1]
    if tried[chosen] >= target:
        for rung in ladder[:-1]:
            tried[rung] = recall_of(rung)
            if tried[rung] >= target:
                chosen = rung
                break
    return chosen, tried[chosen], len(tried)


def _scaled(fn_for, q: int, measured: int, repeats: int) -> tuple[float, float, bool]:
    """Times ``fn_for(measured)`` and scales to q queries: (min s, max s, extrapolated)."""
    lo, hi, _ = _timed(lambda: fn_for(measured), repeats)
    factor = q / measured
    return lo * factor, hi * factor, measured < q


def _one_size(kind: str, n: int, dims: int, qs: dict[int, int], args, cfg) -> list[dict]:
    """Rows for one shard size; ``qs`` maps each q/n factor to its (capped) query count."""
    q_max = max(qs.values())
    t0 = time.perf_counter()
    cands, queries = _vectors(kind, n, q_max, dims, args.seed)
    t_data = time.perf_counter() - t0
    batch = cfg.batch_size
    params = scann_params_for(cfg, n)

    ex_b_lo, ex_b_hi, exact = _timed(
        lambda: build_index(cands, distance="cosine", kind="exact", params={}), args.repeats)
    sc_b_lo, sc_b_hi, scann = _timed(
        lambda: build_index(cands, distance="cosine", kind="scann", params=params, seed=0),
        args.build_repeats)
    sample = queries[:min(_RECALL_SAMPLE, q_max)]
    truth = _search_all(exact, sample, batch)
    recall_default = _recall(_search_all(scann, sample, batch), truth)

    tune_lo = tune_hi = 0.0
    rung, tuned_recall, rungs = (None, None), None, 0
    if scann.kind == "scann":
        tune_sample = queries[-min(_TUNE_SAMPLE, q_max):]

        def tune():
            tune_truth = _search_all(exact, tune_sample, batch)  # ExactTuningTopK
            return _tune(scann, tune_sample, tune_truth, args.target_recall, batch)

        tune_lo, tune_hi, (rung, tuned_recall, rungs) = _timed(tune, args.build_repeats)
        recall_tuned = _recall(_search_all(scann, sample, batch, leaves_to_search=rung[0],
                                           reorder=rung[1]), truth)
    else:
        recall_tuned = recall_default

    rows = []
    for factor, q in sorted(qs.items()):
        m_exact = min(q, max(batch, args.max_pairs // n))
        m_scann = min(q, args.max_scann_queries)
        es_lo, es_hi, e_x = _scaled(lambda m: _search_all(exact, queries[:m], batch), q, m_exact,
                                    args.repeats)
        ss_lo, ss_hi, s_x = _scaled(lambda m: _search_all(scann, queries[:m], batch), q, m_scann,
                                    args.repeats)
        if scann.kind == "scann":
            ts_lo, ts_hi, t_x = _scaled(
                lambda m: _search_all(scann, queries[:m], batch, leaves_to_search=rung[0],
                                      reorder=rung[1]), q, m_scann, args.repeats)
        else:
            ts_lo, ts_hi, t_x = ss_lo, ss_hi, s_x
        exact_total = ex_b_lo + es_lo
        scann_total = sc_b_lo + ss_lo
        tuned_total = sc_b_lo + tune_lo + ts_lo
        row = {
            "data": kind, "dims": dims, "n": n, "q": q, "qn": q * n, "query_factor": factor,
            "scann_kind": scann.kind, "num_leaves": params["num_leaves"],
            "leaves_to_search": params["num_leaves_to_search"],
            "exact_build_s": ex_b_lo, "exact_search_s": es_lo, "exact_search_max_s": es_hi,
            "exact_measured_queries": m_exact, "exact_s": exact_total,
            "scann_build_s": sc_b_lo, "scann_build_max_s": sc_b_hi, "scann_search_s": ss_lo,
            "scann_search_max_s": ss_hi, "scann_measured_queries": m_scann, "scann_s": scann_total,
            "scann_recall": recall_default, "tune_s": tune_lo, "tune_max_s": tune_hi,
            "tuned_rung": list(rung), "tuned_rungs_tried": rungs, "tuned_search_s": ts_lo,
            "tuned_search_max_s": ts_hi,
            "scann_tuned_s": tuned_total, "scann_tuned_recall": recall_tuned,
            "ratio": exact_total / scann_total, "ratio_tuned": exact_total / tuned_total,
            "extrapolated": {"exact": e_x, "scann": s_x, "tuned": t_x}, "data_s": t_data,
        }
        rows.append(row)
        _print_row(row)
    return rows


_HEADER = (f"{'data':9s} {'d':>3s} {'n':>7s} {'q':>8s} {'q*n':>9s} | {'exact':>8s} "
           f"{'(build+search)':>15s} | {'scann':>8s} {'(build+search)':>15s} {'L/leaves':>8s} "
           f"{'rec':>5s} | {'ex/sc':>6s} | {'sc+tune':>8s} {'tune':>5s} {'rung':>9s} {'rec':>5s} "
           f"| {'ex/tuned':>8s}")


def _print_row(r: dict) -> None:
    x = r["extrapolated"]
    star = {k: "*" if v else " " for k, v in x.items()}
    if r["scann_kind"] == "scann":
        leaves = f"{r['leaves_to_search']}/{r['num_leaves']}"
        rung = f"{r['tuned_rung'][0]}/{r['tuned_rung'][1]}"
    else:
        leaves, rung = "exact", "-"
    print(f"{r['data']:9s} {r['dims']:3d} {r['n']:7d} {r['q']:8d} {r['qn']:9.2e} | "
          f"{r['exact_s']:7.2f}{star['exact']} {r['exact_build_s']:6.2f}+{r['exact_search_s']:7.2f} | "
          f"{r['scann_s']:7.2f}{star['scann']} {r['scann_build_s']:6.2f}+{r['scann_search_s']:7.2f} "
          f"{leaves:>8s} {r['scann_recall']:5.3f} | {r['ratio']:6.2f} | "
          f"{r['scann_tuned_s']:7.2f}{star['tuned']} {r['tune_s']:5.2f} {rung:>9s} "
          f"{r['scann_tuned_recall']:5.3f} | {r['ratio_tuned']:8.2f}", flush=True)


def _crossover_series(rows: list[dict], key: str) -> tuple[float | None, str]:
    """One q/n series, by growing n: (q*n where exact stops winning, description).

    The crossing is interpolated (log-log) between the last size where exact won and the first
    size after which it never wins again; None when exact wins everywhere or nowhere.
    """
    rows = sorted(rows, key=lambda r: r["n"])
    last_win = max((i for i, r in enumerate(rows) if r[key] <= 1.0), default=None)
    if last_win is None:  # the crossing lies below the smallest size measured
        return rows[0]["qn"], f"ScaNN cheaper at every size (from q*n {rows[0]['qn']:.1e})"
    if last_win == len(rows) - 1:
        return None, f"exact cheaper at every size (up to q*n {rows[-1]['qn']:.1e})"
    a, b = rows[last_win], rows[last_win + 1]
    x0, x1 = math.log(a["qn"]), math.log(b["qn"])
    y0, y1 = math.log(a[key]), math.log(b[key])
    cross = math.exp(x0 + (x1 - x0) * (0 - y0) / (y1 - y0)) if y1 != y0 else a["qn"]
    losses = [r["n"] for r in rows[:last_win] if r[key] > 1.0]
    note = f" (exact also lost at n {', '.join(map(str, losses))})" if losses else ""
    return cross, (f"crosses at q*n ~{cross:.1e} (exact wins at n={a['n']}: {a[key]:.2f}, loses at "
                   f"n={b['n']}: {b[key]:.2f}){note}")


def _factor(row: dict) -> int:
    """The q/n factor a row was asked for (q may be capped by --max_queries)."""
    return row.get("query_factor") or (1 if row["q"] == row["n"] else 10)


def _crossover(rows: list[dict], key: str) -> list[str]:
    """'exact is cheaper while q*n <= X' per q/n series and overall (the smallest X)."""
    real = [r for r in rows if r["scann_kind"] == "scann"]
    if not real:
        return ["no ScaNN shard in range (all sizes fall back to exact)"]
    lines, found = [], []
    for factor in sorted({_factor(r) for r in real}):
        series = [r for r in real if _factor(r) == factor]
        cross, text = _crossover_series(series, key)
        lines.append(f"q = {factor} x n (capped at --max_queries): {text}")
        if cross is not None:
            found.append((cross, text.startswith("ScaNN cheaper")))
    if not found:
        lines.insert(0, "exact cheaper at every size measured")
    else:
        cross, below = min(found)
        lines.insert(0, f"exact is cheaper while q*n {'<' if below else '<='} {cross:.1e}"
                        + (" (below the smallest size measured)" if below else ""))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="2000,5000,10000,20000,50000,100000,200000",
                    help="shard sizes n, comma-separated")
    ap.add_argument("--query_factors", default="1,10", help="q = factor * n, comma-separated")
    ap.add_argument("--max_queries", type=int, default=500_000, help="cap on q (default 500000)")
    ap.add_argument("--dims", default="128,192", help="dimensions, comma-separated")
    ap.add_argument("--data", default="clustered,random", help="clustered and/or random")
    ap.add_argument("--repeats", type=int, default=2, help="timings per search (min kept; default 2)")
    ap.add_argument("--build_repeats", type=int, default=1,
                    help="timings per ScaNN build and tuning (default 1)")
    ap.add_argument("--max_pairs", type=float, default=1.5e9,
                    help="exact searches above this many query x vector pairs are measured on a "
                         "prefix and scaled (default 1.5e9)")
    ap.add_argument("--max_scann_queries", type=int, default=50_000,
                    help="ScaNN searches of more queries are measured on a prefix and scaled")
    ap.add_argument("--target_recall", type=float, default=0.95, help="for scann+tune (default 0.95)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blas_threads", type=int, default=0,
                    help="limit BLAS threads (exact search's matmul; ScaNN searches on one thread): "
                         "1 compares cost per core and is steadier on a shared machine (default 0: "
                         "as the job runs)")
    ap.add_argument("--json", default=None, help="also write all rows here")
    ap.add_argument("--rows_from", default=None,
                    help="summarise the rows of an earlier --json instead of measuring")
    args = ap.parse_args()
    args.max_pairs = int(args.max_pairs)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    if args.blas_threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.blas_threads, user_api="blas")
    cfg = config_from_flags({"queries": "q", "candidates": "c", "output": "out"})
    sizes = [int(s) for s in args.sizes.split(",")]
    factors = [int(f) for f in args.query_factors.split(",")]
    print(f"exact vs ScaNN per shard, top-{_TOP_K}, cosine, query batches of {cfg.batch_size}, "
          f"{os.cpu_count()} cores, BLAS threads {args.blas_threads or 'default'}; seconds (min of "
          f"{args.repeats}); * = scaled from a prefix")
    print(_HEADER)
    rows: list[dict] = []
    if args.rows_from:
        with open(args.rows_from) as fh:
            rows = json.load(fh)
        for row in rows:
            _print_row(row)
        args.data = ",".join(dict.fromkeys(r["data"] for r in rows))
        args.dims = ",".join(dict.fromkeys(str(r["dims"]) for r in rows))
    for kind in ([] if args.rows_from else args.data.split(",")):
        for dims in (int(d) for d in args.dims.split(",")):
            for n in sizes:
                qs = {f: min(f * n, args.max_queries) for f in factors}
                rows += _one_size(kind, n, dims, qs, args, cfg)
    print()
    for kind in args.data.split(","):
        for dims in (int(d) for d in args.dims.split(",")):
            sub = [r for r in rows if r["data"] == kind and r["dims"] == dims]
            if not sub:
                continue
            per_pair = statistics.median(r["exact_search_s"] / r["qn"] for r in sub)
            print(f"{kind} d={dims}: exact search {per_pair * 1e9:.2f} ns per query x vector pair "
                  f"({per_pair * 1e9 / dims * 1000:.1f} ps per pair per dim)")
            for name, key in (("scann at default params", "ratio"),
                              (f"scann tuned to {args.target_recall}", "ratio_tuned")):
                lines = _crossover(sub, key)
                print(f"  vs {name}: {lines[0]}")
                for line in lines[1:]:
                    print(f"      {line}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
