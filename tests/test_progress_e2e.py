"""End to end: a local run whose stderr is not a terminal logs progress lines naming the stages, with
counts that match the manifest's, and the summary still follows (transforms/common/progress.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from transforms.common.progress import PROGRESS_SECONDS_ENV
from transforms.testing.people import MATCH_FIELDS, make_link_corpora, write_records

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PROGRESS = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ INFO transforms\.common\.progress: (.+)$")


def _counts(line: str) -> dict[str, tuple[int, int | None]]:
    """``records read 1,000/~1,002 (75/s); shards built 1/4`` -> {"records read": (1000, 1002), ...}
    (a ``~`` total is a launch-time bound)."""
    out = {}
    for part in line.split("; "):
        m = re.match(r"^([a-z ]+?) ([\d,]+)(?:/~?([\d,]+))?(?: \(.*\))?$", part)
        assert m, line
        out[m[1]] = (int(m[2].replace(",", "")), int(m[3].replace(",", "")) if m[3] else None)
    return out


def test_a_local_run_logs_progress_per_stage_then_the_summary(tmp_path):
    a, b, _ = make_link_corpora(300, overlap=0.8, seed=3)
    write_records(a, str(tmp_path / "a.csv"), "csv")
    write_records(b, str(tmp_path / "b.csv"), "csv")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="", **{PROGRESS_SECONDS_ENV: "0.5"})
    done = subprocess.run(
        [sys.executable, "-m", "beam_jobs.cli", "--queries", str(tmp_path / "a.csv"),
         "--candidates", str(tmp_path / "b.csv"), "--id_field", "rec_id",
         "--text_fields", ",".join(MATCH_FIELDS), "--output", str(out), "--runner", "FnApiRunner"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = [m[1] for m in map(_PROGRESS.match, done.stderr.splitlines()) if m]
    assert len(lines) >= 2, done.stderr  # one per stage start at least, then the final counts
    assert "\r" not in done.stderr  # not a terminal: log lines, no redrawn line
    final = _counts(lines[-1])
    manifest = json.loads((out / "manifest.json").read_text())
    counts, metrics = manifest["counts"], manifest["metrics"]
    # Read and embedded totals are the launch's line-count bounds: one header line per csv file.
    bound = len(a) + len(b) + 2
    assert manifest["input_records_at_most"] == {"queries_at_most": len(a) + 1,
                                                 "candidates_at_most": len(b) + 1}
    assert final["records read"] == (counts["queries_read"] + counts["candidates_read"], bound)
    assert final["embedded"] == (metrics["queries_valid"] + metrics["candidates_valid"], bound)
    assert any("records read" in ln and f"/~{bound:,}" in ln for ln in lines), lines
    assert final["shards built"] == (len(manifest["shards"]),) * 2
    assert final["queries searched"] == (metrics["queries_merged"], metrics["queries_valid"])
    assert final["pairs scored"] == (metrics["scoring_pairs_scored"], None)
    assert final["pairs written"] == (counts["pairs_written"], None)
    # Stages appear in the order the data reaches them, each line adding to the one before.
    assert list(final) == ["records read", "embedded", "shards built", "queries searched",
                           "pairs scored", "pairs written"]
    earlier = _counts(lines[0])
    assert all(earlier[s][0] <= final[s][0] for s in earlier)
    # The reporter stopped before the run was marked finished; the summary follows on stdout.
    err = done.stderr.splitlines()
    last_progress = max(i for i, line in enumerate(err) if _PROGRESS.match(line))
    assert any("_SUCCESS" in line for line in err[last_progress:]), done.stderr
    assert "corpus-match link run: succeeded" in done.stdout
    assert "pairs:" in done.stdout
