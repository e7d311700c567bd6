"""Benchmark: the match pipeline vs raw ScaNN, faiss and numpy exact, on the same vectors, one run.

Every method runs on the same arrays in this one process run (the pipeline in a child process, so
its peak RSS is its own); ratios compare runs made minutes apart, never figures from other runs:
    pipeline / raw ScaNN stock builder, same leaves searched   (target <= 1.3 at the same recall)
    pipeline / raw ScaNN stock builder at L=5                  (reported)
    pipeline / faiss IVF-Flat, IVF-PQ fast-scan (+ refine)      (target: below IVF-Flat's total at
                                                                 recall@10 >= 0.95)
    pipeline peak RSS / the candidate vectors' bytes             (target <= 2.5)
    exact / pipeline search-stage time per query                 (target >= 100)
With ``--repeats N`` the stock ScaNN build at the pipeline's settings and the pipeline alternate N
times; every ratio is printed and the pair with the median ratio supplies the other figures.
``--compare_shards 4`` runs the pipeline once more with 4 shards and prints its time over the
one-shard run's (target <= 1 on 2 cores). ``--pinned`` adds raw ScaNN with the job's pre-#14
config (k-means++ tree initialisation).

Data (``--data``): ``skewed`` (default) is independent of the project's generator: 1,000 clusters
of log-normal sizes with anisotropic noise (``make_skewed_link_vectors``); ``uniform`` is the
project's own equal-size spherical mixture (``make_link_vectors``). Both L2-normalised.

The pipeline runs end to end on the local runner from parquet files (read, validate, shard, build,
search, merge, exact rescore, audit, write). Raw ScaNN is one process: build + search_batched on
the same arrays. faiss (``pip install faiss-cpu``, bench only) builds on all cores and searches
single-threaded like ScaNN's search_batched. Exact is blocked float32 BLAS matmul + argpartition on
a sample, which is also the ground truth for every recall@10.

Defaults are the brief's 1,000,000 candidates x 100,000 queries x 128 dims; scale with flags, e.g.
``python -m bench.ann_join --candidates 200000 --queries 20000``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from beam_jobs.config import config_from_flags, scann_params_for
from transforms.placement.sizing import bytes_per_vector
from transforms.testing.clustered import make_link_vectors, make_skewed_link_vectors, write_vector_corpus


def exact_topk(queries: np.ndarray, cands: np.ndarray, k: int, block: int = 128) -> np.ndarray:
    """Indices of the k largest dot products per query (vectors are L2-normalised: cosine).

    Blocks of 128 queries: at 1M candidates a block's scores, their negation and argpartition's
    int64 positions take 2 GB (blocks of 1024 took 16 GB, and the OOM killer ended a run)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), block):
        scores = queries[s:s + block] @ cands.T
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        out[s:s + block] = np.take_along_axis(part, order, axis=1)
    return out


def recall(found: list[set], truth: np.ndarray) -> float:
    hits = sum(len(f & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def raw_scann(cands: np.ndarray, queries: np.ndarray, params: dict, k: int, *, pinned: bool,
              leaves: list[int]) -> tuple[dict[int, np.ndarray], float, dict[int, float]]:
    """Build once + search_batched at each of ``leaves``, with the pybind API directly.

    ``pinned=False``: ScaNN's stock builder (random tree init, training on all cores).
    ``pinned=True``: the config the pipeline built before issue #14 (k-means++ init, seeds pinned,
    training on ``params['training_threads']`` threads).
    Returns ({L: neighbour indices}, build seconds, {L: search seconds}).
    """
    from transforms.index.scann import scann_config
    from transforms.index.scann_lib import load_scann_pybind

    pybind = load_scann_pybind()
    t0 = time.perf_counter()
    if pinned:
        searcher = pybind.create_searcher(cands, scann_config(cands, "cosine", params, 0),
                                          int(params["training_threads"]))
    else:
        b = pybind.builder(cands, k, "dot_product").tree(
            num_leaves=params["num_leaves"], num_leaves_to_search=params["num_leaves_to_search"],
            training_sample_size=params["training_sample_size"], spherical=params["spherical"])
        b = b.score_ah(2, anisotropic_quantization_threshold=params["anisotropic_quantization_threshold"])
        searcher = b.reorder(params["reorder"]).build()
    t_build = time.perf_counter() - t0
    found, t_search = {}, {}
    for leaf in leaves:
        t0 = time.perf_counter()
        found[leaf], _ = searcher.search_batched(queries, final_num_neighbors=k, leaves_to_search=leaf,
                                                 pre_reorder_num_neighbors=params["reorder"])
        t_search[leaf] = time.perf_counter() - t0
    return found, t_build, t_search


def faiss_ivf(cands: np.ndarray, queries: np.ndarray, k: int, *, nlist: int, nprobe: int,
              pq: bool, k_factor: int = 10) -> tuple[np.ndarray, float, float]:
    """faiss IVF-Flat, or IVF-PQ fast-scan (4-bit, 2 dims per code) with exact float refinement;
    inner product on unit vectors. Trains and adds on all cores, searches on one (as ScaNN's
    search_batched and the pipeline's search do)."""
    import faiss

    d = cands.shape[1]
    spec = f"IVF{nlist},PQ{d // 2}x4fs,RFlat" if pq else f"IVF{nlist},Flat"
    t0 = time.perf_counter()
    index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
    index.train(cands)
    index.add(cands)
    t_build = time.perf_counter() - t0
    if pq:
        faiss.extract_index_ivf(index).nprobe = nprobe
        index.k_factor = k_factor
    else:
        index.nprobe = nprobe
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        t0 = time.perf_counter()
        _, idx = index.search(queries, k)
        t_search = time.perf_counter() - t0
    finally:
        faiss.omp_set_num_threads(threads)
    return idx, t_build, t_search


# Runs the job in the child and prints its own peak RSS (VmHWM) at exit: the rusage of a child also
# counts the pages it shared with the parent before exec (the bench process holds every array).
_CHILD = """
import atexit, runpy, sys
def _peak():
    with open('/proc/self/status') as fh:
        kib = next(line.split()[1] for line in fh if line.startswith('VmHWM:'))
    sys.stderr.write(f'PEAK_RSS_KIB {kib}\\n')
    sys.stderr.flush()
atexit.register(_peak)
sys.argv = ['match_corpora', *sys.argv[1:]]
runpy.run_module('beam_jobs.match_corpora', run_name='__main__', alter_sys=True)
"""


def run_pipeline(args: argparse.Namespace, out: str, num_shards: int | None = None) -> dict:
    """The job end to end in a child process: wall seconds and the child's peak RSS (MiB)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-c", _CHILD,
           "--queries", os.path.join(args.work, "q", "*.parquet"),
           "--candidates", os.path.join(args.work, "c", "*.parquet"), "--output", out,
           "--top_k", str(args.k), "--num_shards", str(num_shards or args.num_shards),
           "--runner", "DirectRunner",
           *args.pipeline_flags]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    log = os.path.join(args.work, os.path.basename(out) + ".log")
    with open(log, "wb") as fh:
        t0 = time.perf_counter()
        code = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=fh).returncode
        wall = time.perf_counter() - t0
    with open(log) as fh:
        text = fh.read()
    if code:
        raise RuntimeError(f"pipeline failed ({code}): {text[-3000:]}")
    peak = [int(line.split()[1]) for line in text.splitlines() if line.startswith("PEAK_RSS_KIB")]
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(peak[-1] / 1024), "out": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--candidates", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=128)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--data", choices=("skewed", "uniform"), default="skewed",
                    help="skewed: log-normal cluster sizes, anisotropic noise (independent of the "
                         "project's generator); uniform: the project's equal spherical clusters")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--num_shards", type=int, default=1)
    ap.add_argument("--compare_shards", type=int, nargs="*", default=[],
                    help="also run the pipeline once with each of these shard counts, right after the "
                         "median pair, and print its time / the --num_shards run's (e.g. 4)")
    ap.add_argument("--exact_sample", type=int, default=2000, help="queries searched exactly")
    ap.add_argument("--faiss_nprobe", type=int, default=4, help="IVF-Flat lists probed (default 4)")
    ap.add_argument("--faiss_pq_nprobe", type=int, default=8, help="IVF-PQ lists probed (default 8)")
    ap.add_argument("--faiss_pq_k_factor", type=int, default=100,
                    help="IVF-PQ candidates refined exactly per neighbour (default 100: on the skewed "
                         "1M data 10 gave recall@10 0.54, 40 gave 0.81, more lists probed did not help)")
    ap.add_argument("--skip_faiss", action="store_true", help="no faiss runs")
    ap.add_argument("--pinned", action="store_true",
                    help="also build raw ScaNN with the pre-#14 pinned k-means++ config")
    ap.add_argument("--pipeline_flags", nargs="*", default=[],
                    help="extra job flags, e.g. --pipeline_flags=--scann_leaves_to_search=10")
    ap.add_argument("--work", default="bench_out/ann_join")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--repeats", type=int, default=1,
                    help="alternate raw ScaNN (stock) and the pipeline this many times and report "
                         "the pair with the median ratio (all ratios are printed)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    shutil.rmtree(args.work, ignore_errors=True)
    t0 = time.perf_counter()
    make = make_skewed_link_vectors if args.data == "skewed" else make_link_vectors
    cands, queries = make(args.candidates, args.queries, args.dims, clusters=args.clusters, seed=0)
    cand_ids = np.array([f"c{i:08d}" for i in range(len(cands))], dtype=object)
    query_ids = np.array([f"q{i:08d}" for i in range(len(queries))], dtype=object)
    write_vector_corpus(os.path.join(args.work, "c"), cand_ids, cands, files=8)
    write_vector_corpus(os.path.join(args.work, "q"), query_ids, queries, files=4)
    print(f"data ({args.data}): {args.candidates} candidates x {args.queries} queries x {args.dims} "
          f"dims ({time.perf_counter() - t0:.1f} s to generate and write)", flush=True)

    # Exact on a sample: ground truth for recall, and the per-query cost of brute force.
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(queries), size=min(args.exact_sample, len(queries)), replace=False))
    t0 = time.perf_counter()
    truth = exact_topk(queries[sample], cands, args.k)
    exact_per_query = (time.perf_counter() - t0) / len(sample)

    def recall_of(idx: np.ndarray) -> float:
        return round(recall([set(r.tolist()) for r in idx[sample]], truth), 4)

    cfg = config_from_flags({"queries": "q", "candidates": "c", "output": "o"})
    shard_size = -(-args.candidates // args.num_shards)
    params = scann_params_for(cfg, shard_size)
    one_shard = scann_params_for(cfg, args.candidates)  # raw ScaNN indexes everything at once
    job_leaves = one_shard["num_leaves_to_search"]
    leaves = sorted({5, job_leaves})
    methods: dict[str, dict] = {}

    def measure_stock() -> dict[str, dict]:
        found, t_build, t_search = raw_scann(cands, queries, one_shard, args.k, pinned=False,
                                             leaves=leaves)
        return {f"scann_stock_L{leaf}": {"build_s": round(t_build, 2),
                                         "search_s": round(t_search[leaf], 2),
                                         "total_s": round(t_build + t_search[leaf], 2),
                                         "recall": recall_of(found[leaf])} for leaf in leaves}

    if not args.skip_faiss:
        nlist = one_shard["num_leaves"]
        for name, pq, nprobe in (("faiss_ivf_flat", False, args.faiss_nprobe),
                                 ("faiss_ivfpq_fastscan", True, args.faiss_pq_nprobe)):
            idx, t_build, t_search = faiss_ivf(cands, queries, args.k, nlist=nlist, nprobe=nprobe, pq=pq,
                                               k_factor=args.faiss_pq_k_factor)
            methods[name] = {"build_s": round(t_build, 2), "search_s": round(t_search, 2),
                             "total_s": round(t_build + t_search, 2), "recall": recall_of(idx),
                             "spec": (f"IVF{nlist},PQ{args.dims // 2}x4fs,RFlat nprobe {nprobe} "
                                      f"k_factor {args.faiss_pq_k_factor}" if pq
                                      else f"IVF{nlist},Flat nprobe {nprobe}")}
            print(f"{name}: {methods[name]}", flush=True)
    if args.pinned:
        found, t_build, t_search = raw_scann(cands, queries, one_shard, args.k, pinned=True,
                                             leaves=[job_leaves])
        methods[f"scann_pinned_L{job_leaves}"] = {
            "build_s": round(t_build, 2), "search_s": round(t_search[job_leaves], 2),
            "total_s": round(t_build + t_search[job_leaves], 2), "recall": recall_of(found[job_leaves])}

    # Raw ScaNN's stock builder and the pipeline, alternating: on a noisy machine each ratio compares
    # runs made minutes apart, and the median of the ratios is the figure.
    pairs = []
    for i in range(args.repeats):
        stock = measure_stock()
        print(f"raw ScaNN stock: {stock}", flush=True)
        pipe = run_pipeline(args, os.path.join(args.work, f"out-{i}"))
        print(f"pipeline: {pipe['wall_s']} s", flush=True)
        pairs.append((stock, pipe))
    key = f"scann_stock_L{job_leaves}"
    ratios = [round(p["wall_s"] / s[key]["total_s"], 3) for s, p in pairs]
    middle = sorted(range(len(pairs)), key=lambda i: ratios[i])[len(pairs) // 2]
    stock, pipe = pairs[middle]
    methods.update(stock)

    from transforms.io.results import read_matches

    split = {}
    for shards in args.compare_shards:
        run = run_pipeline(args, os.path.join(args.work, f"out-shards-{shards}"), shards)
        got = read_matches(run["out"])
        by_query = got.groupby("query_id")["candidate_id"].apply(lambda s: {int(c[1:]) for c in s})
        run["recall"] = round(recall([by_query.get(query_ids[i], set()) for i in sample], truth), 4)
        run["stage_busy_seconds"] = json.load(open(os.path.join(run["out"], "manifest.json"))).get(
            "stage_busy_seconds")
        split[shards] = run
        print(f"pipeline with {shards} shards: {run['wall_s']} s, recall {run['recall']}, peak RSS "
              f"{run['peak_rss_mib']} MiB", flush=True)

    got = read_matches(pipe["out"])
    by_query = got.groupby("query_id")["candidate_id"].apply(lambda s: {int(c[1:]) for c in s})
    pipe_recall = round(recall([by_query.get(query_ids[i], set()) for i in sample], truth), 4)
    manifest = json.load(open(os.path.join(pipe["out"], "manifest.json")))
    busy = manifest.get("stage_busy_seconds") or {}
    vector_bytes = cands.nbytes
    exact_total = exact_per_query * args.queries
    figures = {
        "data": args.data, "candidates": args.candidates, "queries": args.queries, "dims": args.dims,
        "num_shards": args.num_shards, "scann_params": params, "raw_scann_params": one_shard,
        "methods": methods,
        "pipeline": {"total_s": pipe["wall_s"], "recall": pipe_recall, "peak_rss_mib": pipe["peak_rss_mib"],
                     "stage_busy_seconds": busy},
        "pipeline_seconds_each_repeat": [p["wall_s"] for _, p in pairs],
        "stock_seconds_each_repeat": [s[key]["total_s"] for s, _ in pairs],
        "exact_seconds_per_query": exact_per_query, "exact_sample": len(sample),
        "ratios": {f"pipeline_over_{name}": round(pipe["wall_s"] / m["total_s"], 3)
                   for name, m in methods.items()},
        "ratios_pipeline_over_stock_each_repeat": ratios,
        "peak_rss_over_vector_bytes": round(pipe["peak_rss_mib"] * (1 << 20) / vector_bytes, 2),
        # What --worker_memory_gb sizing assumes one shard costs (transforms.placement.sizing), against
        # the whole local job's measured peak (every stage and the runner's buffers included).
        "shard_memory_estimate_mib": round(shard_size * bytes_per_vector(args.dims) / (1 << 20)),
        "speedup_vs_exact_end_to_end": round(exact_total / pipe["wall_s"], 1),
        "other_shard_counts": {str(n): {k: v for k, v in r.items() if k != "out"} | {
            "ratio_over_main_run": round(r["wall_s"] / pipe["wall_s"], 3)} for n, r in split.items()},
    }
    if busy.get("search"):
        figures["speedup_vs_exact_per_query_search"] = round(exact_total / busy["search"], 1)
    print(f"{'method':28s} {'build s':>8s} {'search s':>9s} {'total s':>8s} {'recall@' + str(args.k):>10s}")
    for name, m in methods.items():
        print(f"{name:28s} {m['build_s']:8.1f} {m['search_s']:9.1f} {m['total_s']:8.1f} {m['recall']:10.4f}")
    print(f"{'pipeline (end to end)':28s} {'':8s} {'':9s} {pipe['wall_s']:8.1f} {pipe_recall:10.4f}"
          f"   peak RSS {pipe['peak_rss_mib']} MiB")
    print(f"  busy seconds per stage: {busy}")
    for name, ratio in figures["ratios"].items():
        print(f"ratio {name:40s} {ratio}")
    print(f"ratio pipeline / {key}, each repeat: {ratios}  (target <= 1.3)")
    for n, r in figures["other_shard_counts"].items():
        print(f"pipeline with {n} shards / with {args.num_shards}: {r['ratio_over_main_run']} "
              f"({r['wall_s']} s vs {pipe['wall_s']} s; recall {r['recall']}; "
              f"busy {r['stage_busy_seconds']})")
    print(f"peak RSS / candidate vector bytes ({vector_bytes / (1 << 20):.0f} MiB): "
          f"{figures['peak_rss_over_vector_bytes']}  (target <= 2.5)")
    print(f"per-shard memory estimate behind --worker_memory_gb: {figures['shard_memory_estimate_mib']} "
          f"MiB for {shard_size} vectors; measured peak of the whole local job "
          f"{pipe['peak_rss_mib']} MiB ({pipe['peak_rss_mib'] / figures['shard_memory_estimate_mib']:.2f}x "
          f"the estimate)")
    print(f"exact: {exact_per_query * 1e3:.3f} ms/query on {len(sample)} queries -> {exact_total:.0f} s "
          f"for all {args.queries}; speed-up of the search stage per query "
          f"{figures.get('speedup_vs_exact_per_query_search')}x (target >= 100), end to end "
          f"{figures['speedup_vs_exact_end_to_end']}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)


if __name__ == "__main__":
    main()
