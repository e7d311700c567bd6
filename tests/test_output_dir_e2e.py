"""End to end: what the job does with an --output that already holds a run, and with a run killed
half way (transforms/common/run_dir.py). The job runs as a subprocess, the way a user runs it, so it can
be killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from beam_jobs.commands.evaluate import evaluate_main
from beam_jobs.match_corpora import run_job
from transforms.common.run_dir import IncompleteRunError
from transforms.index.build import PAUSE_BUILD_ENV
from transforms.io.results import read_manifest, read_matches
from transforms.run.report import write_report
from transforms.testing.clustered import make_link_vectors, write_vector_corpus

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Documented as run-specific (README, outputs): timings in the manifest and the report.
RUN_SPECIFIC_KEYS = ("wall_seconds", "stage_busy_seconds", "python_heap_peak_mib")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    # Two shards of ~3,000 vectors: large enough for ScaNN trees (not the exact fallback).
    cands, queries = make_link_vectors(6_000, 200, 16, clusters=30, seed=11)
    write_vector_corpus(str(root / "cands"), np.array([f"c{i:05d}" for i in range(len(cands))], dtype=object),
                        cands, fmt="parquet", files=2)
    write_vector_corpus(str(root / "queries"), np.array([f"q{i:04d}" for i in range(len(queries))],
                                                        dtype=object), queries, fmt="parquet", files=1)
    with open(root / "truth.csv", "w") as fh:
        fh.write("query_id,candidate_id\nq0000,c00000\n")
    return root


def _args(corpus, out, *extra) -> list[str]:
    return ["--queries", str(corpus / "queries" / "*.parquet"),
            "--candidates", str(corpus / "cands" / "*.parquet"), "--output", str(out),
            "--index", "scann", "--num_shards", "2", "--num_output_shards", "3",
            "--runner", "FnApiRunner", *extra]


def _env(**extra) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    env.pop(PAUSE_BUILD_ENV, None)
    env.update(extra)
    return env


def _cli(args, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "beam_jobs.cli", *args], env=_env(**env), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def _job_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("corpus-match:")]


def _files(out) -> dict[str, bytes]:
    found = {}
    for dirpath, _, names in os.walk(out):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                found[os.path.relpath(path, out)] = fh.read()
    return found


def _comparable_manifest(data: bytes, out) -> dict:
    manifest = json.loads(data.decode().replace(str(out), "<OUT>"))
    for key in RUN_SPECIFIC_KEYS:
        manifest.pop(key, None)
    return manifest


def _running(out) -> bool:
    try:
        with open(os.path.join(out, "manifest.json")) as fh:
            return json.load(fh).get("exit_state") == "running"
    except (OSError, ValueError):  # not there yet, or being replaced
        return False


def _kill_during_build(args, out, marker_glob_dir) -> None:
    """Starts the job with every shard build paused 5 s; kills it once one shard is published (after
    the old run's outputs were deleted: the manifest says running)."""
    proc = subprocess.Popen([sys.executable, "-m", "beam_jobs.cli", *args], cwd=ROOT,
                            env=_env(**{PAUSE_BUILD_ENV: "5"}), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if _running(out) and os.path.isdir(marker_glob_dir) and any(
                    os.path.exists(os.path.join(marker_glob_dir, d, "_SUCCESS"))
                    for d in os.listdir(marker_glob_dir) if d.startswith("shard-")):
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the job ended before it could be killed during the build"
        assert time.time() < deadline, "no shard was published"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


def test_rerun_after_a_killed_overwrite_equals_a_clean_run(corpus, tmp_path):
    clean, rerun = tmp_path / "clean", tmp_path / "rerun"  # same length: sizes of path-holding files agree
    # --overwrite into a new directory changes nothing but the flag the manifest records.
    done = _cli(_args(corpus, clean, "--overwrite"))
    assert done.returncode == 0, done.stderr[-3000:]

    # An earlier run with another shape sits in the directory the user reruns into.
    old = _cli(_args(corpus, rerun, "--num_output_shards", "5", "--top_k", "5"))
    assert old.returncode == 0, old.stderr[-3000:]
    assert len(read_matches(str(rerun))) == 200 * 5

    # Refused before the pipeline runs: exit 2, one line naming --overwrite, nothing touched.
    before = _files(rerun)
    refused = _cli(_args(corpus, rerun))
    assert refused.returncode == 2
    errors = _job_errors(refused.stderr)
    assert len(errors) == 1 and "--overwrite" in errors[0] and "a finished run" in errors[0], errors
    assert _files(rerun) == before

    # --overwrite, killed while the index is being built.
    _kill_during_build(_args(corpus, rerun, "--overwrite"), rerun, rerun / "indexes")
    left = _files(rerun)
    assert "_SUCCESS" not in left
    assert read_manifest(str(rerun))["exit_state"] == "running"
    assert not any(name.startswith(("matches", "dead_letters", "report.html")) for name in left), sorted(left)
    assert any(name.startswith("indexes/shard-") for name in left)  # what the killed run got to write
    # Readers refuse it, naming the directory.
    with pytest.raises(IncompleteRunError, match=f"{rerun}: the run did not finish .exit_state running"):
        read_matches(str(rerun))
    with pytest.raises(IncompleteRunError, match=str(rerun)):
        write_report(str(rerun))
    assert evaluate_main(["--matches", str(rerun), "--truth", str(corpus / "truth.csv")]) == 2
    report = _cli(["report", str(rerun)])
    assert report.returncode == 2 and "has not finished" in report.stderr

    # An unfinished run is a run: replacing it needs --overwrite too (it may still be running).
    refused = _cli(_args(corpus, rerun))
    assert refused.returncode == 2
    unfinished = "an unfinished run (exit_state running: still running, or killed)"
    assert unfinished in _job_errors(refused.stderr)[0]
    again = _cli(_args(corpus, rerun, "--overwrite"))
    assert again.returncode == 0, again.stderr[-3000:]

    # Every output file equals the clean run's, byte for byte (paths of the directory aside), except
    # the report and the manifest's timings.
    want, got = _files(clean), _files(rerun)
    assert sorted(got) == sorted(want)
    assert {n for n in got if n.startswith("indexes/shard-") and n.endswith("scann_config.pb")}, sorted(got)
    for name in sorted(want):
        if name == "report.html":
            continue
        if name == "manifest.json":
            assert _comparable_manifest(got[name], rerun) == _comparable_manifest(want[name], clean)
            continue
        assert got[name].replace(str(rerun).encode(), b"<OUT>") == \
            want[name].replace(str(clean).encode(), b"<OUT>"), name
    assert read_manifest(str(rerun))["exit_state"] == "succeeded"
    assert len(read_matches(str(rerun))) == 200 * 10


def test_a_launch_that_does_not_wait_gets_its_success_marker_from_the_pipeline(corpus, tmp_path):
    out = tmp_path / "out"
    # wait=False is what a Dataflow launch does; FnApiRunner still runs the pipeline inside run().
    run_job(_args(corpus, out, "--index", "exact"), wait=False)
    manifest = read_manifest(str(out))
    assert manifest["exit_state"] == "pipeline_completed"
    assert os.path.exists(out / "_SUCCESS")
    listed = json.loads((out / "_SUCCESS").read_text())["files"]
    assert {f"matches/matches-{i:05d}-of-00003.parquet" for i in range(3)} <= set(listed)
    assert "indexes/index_manifest.json" in listed and "manifest.json" not in listed
    assert len(read_matches(str(out))) == 200 * 10
