"""Benchmark: fan-out to every shard vs centroid routing, and peak memory as the corpus grows.

Part 1, for each shard count (default 4, 16, 64) on the same clustered vectors, runs the job twice
(``--routing all`` and ``--routing centroids``) and prints shard searches per query, wall time and the
run's audited recall@10 (exact search of a 1000-query sample), with the routed/fan-out ratios.

Part 2 runs the job in a child process at 1x and 4x the candidates with a fixed shard size
(``--max_shard_vectors``) and prints peak RSS and the 4x/1x ratios, twice: in process (everything in
one process), and with the SDK workers in processes of their own (``multi_processing``), where the
largest worker's peak RSS is what a Dataflow worker needs. The local runner process keeps whole
PCollections in memory between steps (it plays the shuffle service), so its RSS grows with the data.

The local runner's workers also grow with the data, whatever the pipeline: each gets its share of a
step's input pushed over gRPC faster than it consumes it, and the received messages wait in the
worker (about 300 MB at 1M x 64 dims, allocated in grpc's channel thread; seen with tracemalloc).
So part 2 also measures (a) the *runner floor*: the largest worker of a three-step pipeline that
only reads the same candidate files and moves them through one GroupByKey, and (b) the job's Python
heap per stage (numpy arrays included; ``PYTHONTRACEMALLOC=1`` in the workers, reported by
``transforms.common.metrics.heap_watch_end`` as ``manifest.python_heap_peak_mib``).

    python -m bench.routing --candidates 200000 --queries 10000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from transforms.testing.clustered import make_link_vectors, write_vector_corpus


def _write(work: str, n_cands: int, n_queries: int, dims: int, clusters: int) -> tuple[str, str]:
    cands, queries = make_link_vectors(n_cands, n_queries, dims, clusters=clusters, seed=0)
    c_dir, q_dir = os.path.join(work, f"c{n_cands}"), os.path.join(work, f"q{n_queries}")
    write_vector_corpus(c_dir, [f"c{i:08d}" for i in range(n_cands)], cands, files=8)
    if not os.path.exists(q_dir):
        write_vector_corpus(q_dir, [f"q{i:08d}" for i in range(n_queries)], queries, files=2)
    return os.path.join(c_dir, "*.parquet"), os.path.join(q_dir, "*.parquet")


def _job_args(cands: str, queries: str, out: str, *extra: str) -> list[str]:
    return ["--queries", queries, "--candidates", cands, "--output", out, "--overwrite", "--top_k", "10",
            "--runner", "FnApiRunner", *extra]


def routing_sweep(cands: str, queries: str, work: str, shard_counts: list[int], probe: int,
                  n_queries: int) -> list[dict]:
    from beam_jobs.match_corpora import run_job
    from transforms.io.results import read_manifest

    rows = []
    for shards in shard_counts:
        row = {"shards": shards}
        for routing in ("all", "centroids"):
            out = os.path.join(work, f"out-{routing}-{shards}")
            t0 = time.perf_counter()
            run_job(_job_args(cands, queries, out, "--num_shards", str(shards), "--routing", routing,
                              "--probe_shards", str(probe)))
            wall = time.perf_counter() - t0
            m = read_manifest(out)
            row[routing] = {
                "wall_s": round(wall, 1),
                "shard_searches_per_query": round(
                    m["metrics"]["query_shard_pairs_routed"] / n_queries, 2),
                "search_busy_s": (m.get("stage_busy_seconds") or {}).get("search"),
                "recall_at_10": m["audit"]["recall_at_k"],
                "built_shards": len(m["shards"]),
            }
            shutil.rmtree(out, ignore_errors=True)
        rows.append(row)
        a, c = row["all"], row["centroids"]
        row["searches_ratio"] = round(c["shard_searches_per_query"] / a["shard_searches_per_query"], 3)
        row["search_busy_ratio"] = round((c["search_busy_s"] or 0) / max(a["search_busy_s"] or 0, 1e-9), 3)
        print(f"{shards:3d} shards | fan-out: {a['shard_searches_per_query']:5.1f} searches/query, "
              f"{a['wall_s']:6.1f} s, recall {a['recall_at_10']:.4f} | routed (probe {probe}): "
              f"{c['shard_searches_per_query']:5.2f} searches/query, {c['wall_s']:6.1f} s, recall "
              f"{c['recall_at_10']:.4f} | searches ratio {row['searches_ratio']}, "
              f"search busy ratio {row['search_busy_ratio']}",
              flush=True)
    return rows


_WATCH = """
import atexit, os, sys, threading, time

peak = {"kib": 0}


def _watch_workers():  # the SDK worker processes' high-water RSS (VmHWM), polled
    me = str(os.getpid())
    while True:
        parent = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    parent[pid] = fh.read().rsplit(")", 1)[1].split()[1]
            except (OSError, IndexError):
                continue
        for pid in parent:
            up, hops = parent.get(pid), 0
            while up not in (None, me, "0", "1") and hops < 8:  # descendants, e.g. under a shell
                up, hops = parent.get(up), hops + 1
            if up != me:
                continue
            try:
                with open(f"/proc/{pid}/status") as fh:
                    for line in fh:
                        if line.startswith("VmHWM:"):
                            peak["kib"] = max(peak["kib"], int(line.split()[1]))
            except (OSError, IndexError, ValueError):
                continue
        time.sleep(0.2)


threading.Thread(target=_watch_workers, daemon=True).start()
atexit.register(lambda: print("WORKERS_MAXRSS_KIB", peak["kib"], flush=True))
"""

_CHILD = _WATCH + """
from beam_jobs.match_corpora import run_job

run_job(sys.argv[1:])
with open("/proc/self/status") as fh:  # this process alone (wait4's figure includes its children)
    print("OWN_MAXRSS_KIB", next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")))
"""


_FLOOR_CHILD = """
import sys, apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from transforms.io.read_corpus import ReadCorpus
from transforms.common.sharding import stable_hash64
import numpy as np

def shard_of(batch, n):  # a RawBatch: the rows of one file chunk, as read
    key = np.array([f"{batch.source}#{batch.first_row}"], dtype=object)
    return int(stable_hash64(key)[0] % n), batch

opts = PipelineOptions(["--runner", "FnApiRunner", "--direct_running_mode", "multi_processing",
                        "--direct_num_workers", "2"])
with beam.Pipeline(options=opts) as p:
    read = p | ReadCorpus(file_pattern=sys.argv[1], input_format="auto", role="candidates")
    _ = (read.batches | beam.Map(shard_of, int(sys.argv[2])) | beam.GroupByKey()
         | beam.Map(lambda kv: sum(b.table.num_rows for b in kv[1])) | beam.CombineGlobally(sum))
"""


def _run_child(code: str, args: list[str], env: dict | None = None) -> tuple[str, float]:
    t0 = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=env)
    stdout = child.stdout.read()
    if child.wait() != 0:
        raise RuntimeError(f"the child failed with status {child.returncode}")
    return stdout, round(time.perf_counter() - t0, 1)


def runner_floor(cands: str, shards: int) -> dict[str, float]:
    """Largest worker peak RSS (MiB) of read -> GroupByKey -> count on the same files."""
    stdout, wall = _run_child(_WATCH + _FLOOR_CHILD, [cands, str(shards)])
    kib = next(int(line.split()[1]) for line in stdout.splitlines()
               if line.startswith("WORKERS_MAXRSS_KIB"))
    return {"worker_peak_rss_mib": round(kib / 1024), "wall_s": wall}


def peak_rss(cands: str, queries: str, out: str, max_shard_vectors: int,
             workers: bool = False) -> dict[str, float]:
    """Runs the job in a child process; returns its peak RSS in MiB and wall seconds.

    ``workers=True`` runs the SDK workers as processes of their own (``--direct_running_mode
    multi_processing``), as Dataflow workers are; the child then also reports the largest peak RSS of
    its worker processes, separately from its own (the runner's, which buffers the data between steps
    as Dataflow's shuffle service would).
    """
    extra = ["--max_shard_vectors", str(max_shard_vectors), "--routing", "all"]
    env = None
    if workers:
        extra += ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
        env = dict(os.environ, PYTHONTRACEMALLOC="1")  # the workers report their heap per stage
    t0 = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", _CHILD, *_job_args(cands, queries, out, *extra)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    stdout = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not the max of all
    if status != 0:
        raise RuntimeError(f"the job failed with status {status}")
    got = {"peak_rss_mib": round(usage.ru_maxrss / 1024), "wall_s": round(time.perf_counter() - t0, 1)}
    for line in stdout.splitlines():
        if workers and line.startswith("WORKERS_MAXRSS_KIB"):
            got["worker_peak_rss_mib"] = round(int(line.split()[1]) / 1024)
        if workers and line.startswith("OWN_MAXRSS_KIB"):
            got["peak_rss_mib"] = round(int(line.split()[1]) / 1024)  # the runner alone
    if workers:
        from transforms.io.results import read_manifest

        got["python_heap_peak_mib"] = read_manifest(out).get("python_heap_peak_mib")
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--candidates", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--clusters", type=int, default=500)
    ap.add_argument("--shards", default="4,16,64")
    ap.add_argument("--probe", type=int, default=4)
    ap.add_argument("--rss_candidates", type=int, default=250_000, help="1x size for part 2")
    ap.add_argument("--rss_shard_vectors", type=int, default=125_000)
    ap.add_argument("--skip_rss", action="store_true")
    ap.add_argument("--work", default="bench_out/routing")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)

    cands, queries = _write(args.work, args.candidates, args.queries, args.dims, args.clusters)
    figures = {"routing": routing_sweep(cands, queries, args.work,
                                        [int(s) for s in args.shards.split(",") if s], args.probe,
                                        args.queries)}
    if not args.skip_rss:
        rss = {}
        for factor in (1, 4):
            n = args.rss_candidates * factor
            c, q = _write(args.work, n, args.queries, args.dims, args.clusters)
            one = peak_rss(c, q, os.path.join(args.work, f"rss-{factor}"), args.rss_shard_vectors)
            two = peak_rss(c, q, os.path.join(args.work, f"rss-{factor}-mp"), args.rss_shard_vectors,
                           workers=True)
            floor = runner_floor(c, -(-n // args.rss_shard_vectors))
            rss[f"{factor}x"] = {"candidates": n, "in_process": one, "worker_processes": two,
                                 "runner_floor": floor}
            print(f"{factor}x ({n} candidates, shards of <= {args.rss_shard_vectors}): in-process run "
                  f"peak RSS {one['peak_rss_mib']} MiB ({one['wall_s']} s); with worker processes: "
                  f"runner {two['peak_rss_mib']} MiB, largest worker {two.get('worker_peak_rss_mib')} "
                  f"MiB ({two['wall_s']} s); runner floor (read -> GroupByKey -> count): largest "
                  f"worker {floor['worker_peak_rss_mib']} MiB", flush=True)
            print(f"  job's Python heap peak per stage (MiB): {two.get('python_heap_peak_mib')}",
                  flush=True)
        for key, field in (("in_process", "peak_rss_mib"), ("worker_processes", "peak_rss_mib"),
                           ("worker_processes", "worker_peak_rss_mib"),
                           ("runner_floor", "worker_peak_rss_mib")):
            a, b = rss["1x"][key].get(field), rss["4x"][key].get(field)
            if a and b:
                rss[f"ratio_4x_over_1x_{key}_{field}"] = round(b / a, 3)
                print(f"peak RSS 4x / 1x, {key} {field}: {b / a:.3f}")
        job = [rss[f"{f}x"]["worker_processes"].get("worker_peak_rss_mib") for f in (1, 4)]
        flo = [rss[f"{f}x"]["runner_floor"]["worker_peak_rss_mib"] for f in (1, 4)]
        if all(job):
            # What the job's worker needs beyond what the local runner makes any worker hold.
            rss["worker_growth_mib"] = {"job": job[1] - job[0], "runner_floor": flo[1] - flo[0]}
            print(f"largest worker, 4x minus 1x: job +{job[1] - job[0]} MiB, runner floor "
                  f"+{flo[1] - flo[0]} MiB")
        heaps = [rss[f"{f}x"]["worker_processes"].get("python_heap_peak_mib") or {} for f in (1, 4)]
        if heaps[0] and heaps[1]:
            top = [max(h.values()) for h in heaps]
            rss["ratio_4x_over_1x_python_heap_peak"] = round(top[1] / top[0], 3)
            print(f"job's largest Python heap peak (any stage) 4x / 1x: {top[1]} / {top[0]} MiB = "
                  f"{top[1] / top[0]:.3f}")
        figures["rss"] = rss
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    np.set_printoptions()


if __name__ == "__main__":
    main()
