"""The flags of the options class, the README and the template metadata stay in step."""

from __future__ import annotations

import os

from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs.config import config_from_options
from beam_jobs.options import JOB_FLAGS, MatchOptions, flags_markdown

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_readme_lists_every_flag_as_generated():
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert flags_markdown() in readme, "regenerate the README table: python -m beam_jobs.options"


def test_beam_flags_pass_through_and_job_flags_parse():
    options = PipelineOptions(["--queries", "q*", "--candidates", "c*", "--output", "o",
                               "--runner", "DataflowRunner", "--project", "p", "--region", "r",
                               "--top_k", "7"])
    cfg = config_from_options(options)
    assert cfg.top_k == 7 and cfg.mode == "link"
    assert options.get_all_options()["project"] == "p"
    view = options.view_as(MatchOptions).get_all_options()
    assert {flag.name for flag in JOB_FLAGS} <= set(view)


def test_flags_are_read_without_beam_and_match_options_is_made_once():
    import subprocess
    import sys

    code = ("import sys; import beam_jobs.options as o; assert o.JOB_FLAGS; "
            "assert 'apache_beam' not in sys.modules; a = o.MatchOptions; o.check_known_flags([]); "
            "assert o.MatchOptions is a; from beam_jobs.options import MatchOptions; "
            "assert MatchOptions is a; print(a.__qualname__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "MatchOptions"
