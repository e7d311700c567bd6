"""Flex Template entry point: the file the Dataflow template launcher runs (FLEX_TEMPLATE_PYTHON_PY_FILE).

The launcher calls ``python main.py --flag=value ...`` with the template parameters plus the options
Dataflow adds (runner, project, region, job name, staging/temp locations). This shim

- expands ``{date}`` placeholders in the dated path flags (``--output gs://b/runs/{date}``) to the UTC
  date of this launch, so one fixed Cloud Scheduler body writes a new directory every night;
- defaults ``--sdk_container_image`` to the image it is running in (baked in at build time as
  ``CORPUS_MATCHER_SDK_CONTAINER_IMAGE``), so the workers run exactly the launcher's image even when a
  launch does not name it; an explicit ``sdk_container_image`` parameter wins;
- calls ``beam_jobs.match_corpora.run(argv)`` and returns as soon as the job is submitted:
  ``run()`` waits only for local runners, and nothing here waits on a Dataflow job (the launcher VM
  must finish once the job exists).

Importing this file has no side effects: the job module (and TensorFlow behind it) is imported only
when :func:`main` runs.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence

__all__ = ["launch_argv", "main"]

_LOGGER = logging.getLogger(__name__)
_IMAGE_FLAGS = ("--sdk_container_image", "--worker_harness_container_image")


def launch_argv(argv: Sequence[str], environ: Mapping[str, str] | None = None, now=None) -> list[str]:
    """The job's argv for this launch: dates expanded, worker image defaulted to this image.

    Args:
        argv: the arguments the launcher passed.
        environ: environment to read the baked-in image from (default ``os.environ``).
        now: launch time for ``{date}`` (default now, UTC); for tests.
    """
    from beam_jobs.commands.template import SDK_IMAGE_ENV
    from beam_jobs.dated_paths import expand_date_flags

    args = expand_date_flags(argv, now)
    image = (os.environ if environ is None else environ).get(SDK_IMAGE_ENV, "").strip()
    named = any(a == f or a.startswith(f + "=") for a in args for f in _IMAGE_FLAGS)
    if image and not named:
        args.append(f"--sdk_container_image={image}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Submits the match job and returns 0 without waiting for a Dataflow job to finish."""
    logging.basicConfig(level=logging.INFO)
    args = launch_argv(sys.argv[1:] if argv is None else argv)
    _LOGGER.info("launching beam_jobs.match_corpora with %s", args)
    from beam_jobs.match_corpora import run

    run(args, wait=False)  # returns once submitted; never wait_until_finish() on the launcher VM
    _LOGGER.info("job submitted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
