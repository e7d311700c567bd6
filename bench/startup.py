"""Benchmark: where the seconds of a small embedding job go, end to end, as the user runs it.

Generates a person link pair with ``transforms.testing.people`` (``--entities`` records per side,
csv, as in ``make demo``), then runs the job ``--repeats`` times, each in a fresh process exactly as
``corpus-match`` would (default embedder, default flags, ``--runner FnApiRunner`` unless
``--runner none``, which lets Beam pick the DirectRunner and try Prism first), and prints the wall
time of each run and a phase breakdown, then min / median / max per phase over the runs.

The breakdown comes from what a run shows without changing it:

* launcher phases, timed around the job's own functions in the child process (interpreter start,
  imports, ``prepare``, ``build_pipeline``, ``Pipeline.run``, the metrics/manifest update, the
  summary and report, process teardown after ``main`` returns);
* inside ``Pipeline.run`` (in-process runners only): wall time of a few functions that no stage
  timer covers (the default model export, tf.Transform's transform_fn tracing and its graph loads
  and batch calls, the embedder's model loads, index builds), the TuneSearch and exact-sample
  durations the job logs, and the manifest's ``stage_busy_seconds``; what is left is the runner
  itself (stage translation, bundle set-up, coders, shuffles) and steps nothing times;
* with ``--timeline``, the job's log events on one clock (seconds since the process was spawned).

Usage::

    python -m bench.startup                         # 5,000 x 5,000, FnApiRunner, 3 runs
    python -m bench.startup --runner none           # DirectRunner (tries Prism, falls back)
    python -m bench.startup --entities 20000 --repeats 1 --timeline
    python -m bench.startup --index exact --target_recall none   # any unknown flag goes to the job
    python -m bench.startup --help_screens          # only: seconds of each `corpus-match X --help`

Timing wrappers only measure (they call the wrapped function unchanged); a name that no longer
exists is skipped and listed. The machine is shared: read ranges, not single figures.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

_CHILD_FLAG = "--_child_times"
_FIELDS = "given_name,surname,street_number,address_1,suburb,postcode,state,date_of_birth"

# (module, attribute path, label). Patched on the module or class object, so call sites that look
# the name up at call time (function-level imports, pickled DoFns and Map functions, methods) see it.
_WRAPPED = (
    ("beam_jobs.match_corpora", "prepare", "prepare"),
    ("transforms.io.read_corpus", "check_glob_matches", "prepare: glob checks"),
    ("transforms.features.model_ref", "model_fingerprint", "prepare: model fingerprint"),
    ("beam_jobs.launch", "default_output_shards", "prepare: output shard count (globs)"),
    ("transforms.run.manifest", "stack_versions", "stack_versions (prepare + index manifest)"),
    ("beam_jobs.match_corpora", "build_pipeline", "build_pipeline"),
    ("transforms.features.preprocess", "AnalyzeAndTransformFeatures.expand",
     "build_pipeline: tf.Transform graph (traces preprocessing_fn)"),
    ("beam_jobs.summary", "finish_local_run", "finish_local_run"),
    ("apache_beam.pipeline", "Pipeline.run", "Pipeline.run"),
    ("beam_jobs.summary", "collect_metrics", "after run: collect metrics"),
    ("beam_jobs.summary", "update_manifest", "after run: update manifest"),
    ("beam_jobs.summary", "print_summary", "summary + report"),
    ("transforms.run.report", "write_report", "summary: write report.html"),
    # Inside Pipeline.run (observable on in-process runners only).
    ("transforms.features.default_embedder", "export_default_model", "in run: default model export"),
    ("tensorflow_transform.beam.impl", "_create_v2_saved_model",
     "in run: tf.Transform trace + save transform_fn"),
    ("tensorflow_transform.beam.impl", "_RunMetaGraphDoFn._make_graph_state",
     "in run: tf.Transform load graph"),
    ("tensorflow_transform.beam.impl", "_RunMetaGraphDoFn._handle_batch",
     "in run: tf.Transform run graph on batches"),
    ("transforms.features.embed", "TFSavedModelHandler.load_model", "in run: embedder load + warm-up"),
    ("transforms.index.neighbor_index", "build_index", "in run: index build (build_index)"),
    # Counted, not summed: each call is one bundle of one fused stage (its time overlaps the above).
    ("apache_beam.runners.portability.fn_api_runner.fn_runner", "FnApiRunner._run_bundle",
     "count: runner bundles"),
)
# Log lines whose "in X s" is a duration the job measured itself: label -> pattern.
_LOGGED_SECONDS = {
    "in run: TuneSearch rungs": re.compile(r"rungs tried in ([\d.]+) s"),
}
# Log events for the timeline: label -> pattern (first and last occurrence are kept).
_EVENTS = (
    ("Prism attempt", re.compile(r"Running pipeline with PrismRunner")),
    ("Prism fallback", re.compile(r"Falling back to DirectRunner")),
    ("runner executing (state cache)", re.compile(r"Creating state cache")),
    ("tft SavedModel written", re.compile(r"Assets written to .*tftransform_tmp")),
    ("default model exported", re.compile(r"exported the default embedder")),
    ("corpus read", re.compile(r"read \d+ \w+ rows from")),
    ("embedder loaded", re.compile(r"loaded .* \(signature")),
    ("embed batches done", re.compile(r"BatchElements statistics")),
    ("gate (validated)", re.compile(r"validated: \d+ records read")),
    ("index built", re.compile(r"built \w+ index for shard")),
    ("exact sample top-K", re.compile(r"exact top-\d+ of \d+ sample queries")),
    ("TuneSearch done", re.compile(r"rungs tried in")),
    ("search done", re.compile(r"searched \d+ queries in shard")),
    ("merge done", re.compile(r"merged top-\d+ of")),
    ("audit done", re.compile(r"audit: recall")),
    ("manifest written", re.compile(r"wrote .*manifest\.json")),
    ("report written", re.compile(r"wrote .*report\.html")),
)
_LOG_LINE = re.compile(r"^(\d{9,}\.\d+) (\w+) ([\w.]+): (.*)$")


# ------------------------------------------------------------------------------------------------
# Child: runs the job in this process with timing wrappers, writes the times as JSON.


def _resolve(module: str, path: str):
    import importlib

    owner = importlib.import_module(module)
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    return owner, name, getattr(owner, name)


def _install_wrappers(times: dict, missing: list) -> None:
    depth: dict[str, int] = {}

    def wrap(label: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            outer = depth.get(label, 0) == 0  # re-entrant calls count once
            depth[label] = depth.get(label, 0) + 1
            start_wall, start = time.time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[label] -= 1
                if outer:
                    entry = times.setdefault(label, {"calls": 0, "seconds": 0.0, "first": start_wall,
                                                     "last": 0.0})
                    entry["calls"] += 1
                    entry["seconds"] += time.perf_counter() - start
                    entry["last"] = time.time()
        return timed

    for module, path, label in _WRAPPED:
        try:
            owner, name, fn = _resolve(module, path)
        except (ImportError, AttributeError):
            missing.append(f"{module}.{path}")
            continue
        setattr(owner, name, wrap(label, fn))


def _child(times_path: str, job_argv: list[str]) -> int:
    import logging

    marks = {"child_start": time.time()}
    # main() calls logging.basicConfig, which does nothing once the root logger has a handler: this
    # format (epoch seconds) puts log events and timers on one clock.
    logging.basicConfig(level=logging.INFO, format="%(created).3f %(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    import apache_beam  # noqa: F401

    marks["import apache_beam"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    import beam_jobs.match_corpora as job

    marks["import launcher modules"] = time.perf_counter() - t0
    if any(a.startswith(("--text_fields", "--numeric_fields")) for a in job_argv):
        # The job imports these in build_pipeline when it embeds; timed apart from construction.
        t0 = time.perf_counter()
        import transforms.features.embed  # noqa: F401
        import transforms.features.preprocess  # noqa: F401

        marks["import tensorflow + tf.Transform"] = time.perf_counter() - t0
    times: dict = {}
    missing: list = []
    _install_wrappers(times, missing)
    marks["main_start"] = time.time()
    code = job.main(job_argv)
    marks["main_end"] = time.time()
    with open(times_path, "w") as fh:
        json.dump({"marks": marks, "times": times, "missing": missing, "exit_code": code}, fh)
    return code


# ------------------------------------------------------------------------------------------------
# Parent: generates data, spawns runs, reads logs, times and manifests, prints the breakdown.


def _parse_log(path: str) -> list[tuple[float, str]]:
    events = []
    with open(path, errors="replace") as fh:
        for line in fh:
            m = _LOG_LINE.match(line.rstrip("\n"))
            if m:
                events.append((float(m.group(1)), m.group(4)))
    return events


def _run_once(args, job_argv: list[str], run_dir: str, env: dict) -> dict:
    out = os.path.join(run_dir, "out")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    times_path, log_path = os.path.join(run_dir, "times.json"), os.path.join(run_dir, "job.log")
    cmd = [sys.executable, "-m", "bench.startup", _CHILD_FLAG, times_path, "--", *job_argv,
           "--output", out]
    with open(log_path, "w") as log:
        spawn = time.time()
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        end = time.time()
    with open(times_path) as fh:
        child = json.load(fh)
    try:
        with open(os.path.join(out, "manifest.json")) as fh:
            manifest = json.load(fh)
    except (OSError, ValueError):
        manifest = {}
    return {"spawn": spawn, "end": end, "exit": code, "child": child, "manifest": manifest,
            "events": _parse_log(log_path), "log": log_path}


def _phases(run: dict) -> list[tuple[str, float]]:
    """(label, seconds) rows; labels starting with two spaces are parts of the row above."""
    m, t = run["child"]["marks"], run["child"]["times"]
    sec = {label: v["seconds"] for label, v in t.items()}
    rows = [("interpreter start (spawn -> bench code)", m["child_start"] - run["spawn"]),
            ("import apache_beam", m["import apache_beam"]),
            ("import launcher modules (beam_jobs, transforms)", m["import launcher modules"])]
    if "import tensorflow + tf.Transform" in m:
        rows.append(("import tensorflow + tf.Transform", m["import tensorflow + tf.Transform"]))
    rows.append(("prepare (flags, config, globs, fingerprint)", sec.get("prepare", 0.0)))
    for label in ("prepare: glob checks", "prepare: model fingerprint",
                  "prepare: output shard count (globs)"):
        if label in sec:
            rows.append(("  " + label.split(": ", 1)[1], sec[label]))
    rows.append(("build_pipeline (graph construction)", sec.get("build_pipeline", 0.0)))
    key = "build_pipeline: tf.Transform graph (traces preprocessing_fn)"
    if key in sec:
        rows.append(("  tf.Transform AnalyzeDataset expand (traces preprocessing_fn)", sec[key]))
    run_s = sec.get("Pipeline.run", 0.0)
    rows.append(("Pipeline.run (the runner executing the graph)", run_s))
    inside = _inside_run(run)
    rows += [("  " + label, s) for label, s in inside]
    rows.append(("  (rest: runner overhead, shuffles, untimed steps)",
                 run_s - sum(s for _, s in inside)))
    after = sec.get("finish_local_run", 0.0) - run_s
    rows.append(("after run: metrics + manifest update", after))
    rows.append(("summary + report.html", sec.get("summary + report", 0.0)))
    accounted = (m["main_start"] - run["spawn"]) + sec.get("prepare", 0.0) + \
        sec.get("build_pipeline", 0.0) + sec.get("finish_local_run", 0.0) + sec.get("summary + report", 0.0)
    rows.append(("other launcher work (main, spill dir, options)",
                 (m["main_end"] - run["spawn"]) - accounted))
    rows.append(("process teardown (after main returns)", run["end"] - m["main_end"]))
    return rows


def _inside_run(run: dict) -> list[tuple[str, float]]:
    """Non-overlapping measured parts of Pipeline.run: wrappers, logged durations, stage timers."""
    t = run["child"]["times"]
    # build_index is inside the busy "build" stage timer, so only the timer is summed.
    out = [(label.removeprefix("in run: "), v["seconds"]) for label, v in t.items()
           if label.startswith("in run: ") and "build_index" not in label]
    for label, pattern in _LOGGED_SECONDS.items():
        total = sum(float(mm.group(1)) for _, msg in run["events"] if (mm := pattern.search(msg)))
        out.append((label.removeprefix("in run: "), total))
    busy = run["manifest"].get("stage_busy_seconds") or {}
    for stage, seconds in sorted(busy.items()):
        if stage == "audit_exact_search":
            out.append(("exact sample top-K, tuning + audit samples (busy)", float(seconds)))
            continue
        if stage == "embed":
            out.append(("embed: model calls (busy)", float(seconds)))
            continue
        out.append((f"{stage} (busy)", float(seconds)))
    return out


def _print_run(i: int, run: dict, timeline: bool) -> None:
    wall = run["end"] - run["spawn"]
    m = run["manifest"]
    print(f"\nrun {i}: wall {wall:.2f} s, exit {run['exit']}, manifest wall_seconds "
          f"{m.get('wall_seconds')}, exit_state {m.get('exit_state')}, log {run['log']}")
    for label, seconds in _phases(run):
        print(f"  {label:62s} {seconds:7.2f} s {100 * seconds / wall:5.1f} %")
    busy = m.get("stage_busy_seconds")
    if busy:
        print("  manifest stage_busy_seconds: " + ", ".join(f"{k} {v}" for k, v in sorted(busy.items())))
    tuning = m.get("search_tuning")
    if tuning:
        print("  search_tuning: " + "; ".join(
            f"shard {s}: leaves_to_search={v.get('leaves_to_search')} reorder={v.get('reorder')} "
            f"rungs={v.get('rungs_tried')}" for s, v in tuning.items()))
    shards = m.get("shards") or []
    if shards:
        print("  shards: " + "; ".join(f"{s['shard']}: {s['kind']} {s['size']} vectors, "
                                       f"{s['params'].get('num_leaves', '-')} leaves" for s in shards))
    bundles = run["child"]["times"].get("count: runner bundles")
    if bundles:
        print(f"  runner bundles executed: {bundles['calls']}")
    if run["child"]["missing"]:
        print("  not timed (names not found): " + ", ".join(run["child"]["missing"]))
    if timeline:
        print("  timeline (s since spawn; first/last occurrence):")
        marks = run["child"]["marks"]
        rows = [(marks["child_start"], "bench child code starts"), (marks["main_start"], "main() starts")]
        for label, v in run["child"]["times"].items():
            rows.append((v["first"], f"{label} starts"))
            rows.append((v["last"], f"{label} ends ({v['calls']} call(s))"))
        for label, pattern in _EVENTS:
            hits = [ts for ts, msg in run["events"] if pattern.search(msg)]
            if hits:
                rows.append((hits[0], f"log: {label}" + (f" (x{len(hits)})" if len(hits) > 1 else "")))
                if len(hits) > 1:
                    rows.append((hits[-1], f"log: {label} (last)"))
        rows.append((marks["main_end"], "main() returns"))
        rows.append((run["end"], "process exits"))
        for ts, label in sorted(rows):
            print(f"    {ts - run['spawn']:7.2f}  {label}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == _CHILD_FLAG:
        argv = sys.argv[3:]
        sys.exit(_child(sys.argv[2], argv[1:] if argv[:1] == ["--"] else argv))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--entities", type=int, default=5000, help="records per corpus (default 5000)")
    ap.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    ap.add_argument("--runner", default="FnApiRunner",
                    help="Beam runner; 'none' passes no --runner (DirectRunner; default FnApiRunner)")
    ap.add_argument("--repeats", type=int, default=3, help="job runs (default 3)")
    ap.add_argument("--work_dir", default="bench_out/startup",
                    help="data and runs go here; emptied first (default bench_out/startup)")
    ap.add_argument("--timeline", action="store_true", help="print each run's event timeline")
    ap.add_argument("--json", default=None, help="also write every run's phases here")
    ap.add_argument("--help_screens", action="store_true",
                    help="only time `corpus-match [SUBCOMMAND] --help` (the issue's bound: 2 s each)")
    args, job_flags = ap.parse_known_args()
    if args.help_screens:
        _time_help_screens(args.repeats)
        return

    shutil.rmtree(args.work_dir, ignore_errors=True)
    data = os.path.join(args.work_dir, "people")
    t0 = time.perf_counter()
    subprocess.check_call([sys.executable, "-m", "transforms.testing.people", "--mode", "link",
                           "--entities", str(args.entities), "--out", data, "--format", "csv",
                           "--seed", str(args.seed)], stdout=subprocess.DEVNULL)
    print(f"data: {args.entities} people per side under {data} in {time.perf_counter() - t0:.1f} s")
    job_argv = ["--queries", f"{data}/a.csv", "--candidates", f"{data}/b.csv", "--id_field", "rec_id",
                "--text_fields", _FIELDS, "--top_k", "10"]
    if args.runner.lower() != "none":
        job_argv += ["--runner", args.runner]
    job_argv += job_flags
    print("job: corpus-match " + " ".join(job_argv) + " --output RUN/out")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), env.get("PYTHONPATH")) if p)

    runs = []
    for i in range(1, args.repeats + 1):
        run = _run_once(args, job_argv, os.path.join(args.work_dir, f"run-{i}"), env)
        _print_run(i, run, args.timeline)
        runs.append(run)

    walls = [r["end"] - r["spawn"] for r in runs]
    print(f"\nwall time over {len(runs)} run(s): min {min(walls):.2f} s, median "
          f"{statistics.median(walls):.2f} s, max {max(walls):.2f} s")
    table = [_phases(r) for r in runs]
    print(f"  {'phase':62s} {'min':>7s} {'median':>7s} {'max':>7s}")
    for j, (label, _) in enumerate(table[0]):
        values = [rows[j][1] for rows in table if j < len(rows) and rows[j][0] == label]
        print(f"  {label:62s} {min(values):7.2f} {statistics.median(values):7.2f} {max(values):7.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([{"wall": w, "phases": rows, "manifest_busy": r["manifest"].get("stage_busy_seconds")}
                       for w, rows, r in zip(walls, table, runs, strict=True)], fh, indent=2)


def _time_help_screens(repeats: int) -> None:
    """Wall seconds of each help screen in a fresh process (best of ``repeats``), vs the 2 s bound."""
    from beam_jobs.cli import SUBCOMMANDS

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), env.get("PYTHONPATH")) if p)
    print(f"  {'command':36s} {'best s':>7s} {'/ 2 s':>6s}")
    for command in ("", *SUBCOMMANDS):
        argv = [sys.executable, "-m", "beam_jobs.cli", *([command] if command else []), "--help"]
        best = float("inf")
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
            best = min(best, time.perf_counter() - t0)
        print(f"  {('corpus-match ' + command).strip() + ' --help':36s} {best:7.2f} {best / 2.0:6.2f}")


if __name__ == "__main__":
    main()
