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
    assert {name for name, _, _ in JOB_FLAGS} <= set(view)
