"""The ``corpus-match`` console script: the match job by default, plus subcommands.

``corpus-match [job flags]`` runs the match job (flags: transforms/common/flags.py);
``corpus-match evaluate ...`` scores a run's matches against truth pairs;
``corpus-match explain --run DIR --query_id A --candidate_id B`` prints one pair's match weight, field
by field (transforms/scoring/explain.py);
``corpus-match template ...`` prints (or runs) the Dataflow Flex Template commands;
``corpus-match report DIR`` (re)writes DIR/report.html, e.g. after a Dataflow run has finished;
``corpus-match train ...`` learns a model from labelled pairs (transforms/learn/train.py);
``corpus-match calibrate ...`` picks --max_distance for a target precision (transforms/learn/calibrate.py).
Each subcommand's command line is ``beam_jobs/commands/<name>.py``; this module dispatches to them.

This module imports nothing heavy at import time: ``--help`` of the job and of every subcommand
answers without TensorFlow or Beam, and the quiet-console settings (beam_jobs/console.py) are in place
before either is imported. ``--verbose`` (anywhere on the command line) keeps every library's log
lines and prints tracebacks. Exit codes: 0 done, 1 the run failed, 2 a configuration error.
"""

from __future__ import annotations

import shutil
import sys

from beam_jobs import console

__all__ = ["main", "job_main", "job_help", "SUBCOMMANDS"]

# One line each for `corpus-match --help`; `corpus-match SUBCOMMAND --help` has the flags.
SUBCOMMANDS: dict[str, str] = {
    "train": "learn a record similarity (a --model_dir) from labelled pairs",
    "calibrate": "choose --max_distance for a target precision or recall from labelled pairs",
    "evaluate": "score a run's matches against true pairs (precision, recall, F1, recall@K)",
    "explain": "print one scored pair's match weight, field by field",
    "template": "print or run the Dataflow Flex Template build / run / schedule commands",
    "report": "(re)write a finished run's DIR/report.html",
}
_SUBCOMMANDS = tuple(SUBCOMMANDS)
_CLI_FLAGS = ("--verbose",)  # the console's own flags: never passed on to Beam or a subcommand
_HELP = ("-h", "--help")


def main(argv: list[str] | None = None) -> int:
    """``corpus-match``: a subcommand, or the match job. Returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = "--verbose" in argv
    argv = [a for a in argv if a not in _CLI_FLAGS]
    console.quiet_environment(verbose)  # before TensorFlow or gRPC is imported
    console.configure_logging(verbose)
    with console.filter_native_stderr(enabled=not verbose):
        if argv and argv[0] in _SUBCOMMANDS:
            try:
                return _subcommand(argv[0], argv[1:], verbose)
            except (OSError, ValueError) as e:  # a file or value the user gave; the commands' own
                if verbose:  # checks print their line and return 2 themselves
                    raise
                print(f"corpus-match {argv[0]}: {e}", file=sys.stderr)
                return 2
        return _job(argv, verbose)


def job_main(argv: list[str] | None = None) -> int:
    """``python -m beam_jobs.match_corpora``: the match job alone, with the same console handling."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = "--verbose" in argv
    argv = [a for a in argv if a not in _CLI_FLAGS]
    console.quiet_environment(verbose)
    console.configure_logging(verbose)
    with console.filter_native_stderr(enabled=not verbose):
        return _job(argv, verbose)


def _job(argv: list[str], verbose: bool) -> int:
    if any(a in _HELP for a in argv):
        print(job_help())
        return 0
    if "--help_beam" in argv:
        print(beam_help())
        return 0
    from beam_jobs.match_corpora import main as match_main

    return match_main(argv, verbose=verbose)


def _subcommand(command: str, rest: list[str], verbose: bool) -> int:
    # Each command parses its flags before importing anything heavy: --help stays light.
    if command == "report":
        from beam_jobs.commands.report import report_main

        return report_main(rest)
    if command == "train":
        from beam_jobs.commands.train import train_main

        return train_main(rest)
    if command == "calibrate":
        from beam_jobs.commands.calibrate import calibrate_main

        return calibrate_main(rest)
    if command == "explain":
        from beam_jobs.commands.explain import explain_main

        return explain_main(rest)
    if command == "evaluate":
        from beam_jobs.commands.evaluate import evaluate_main

        return evaluate_main(rest)
    from beam_jobs.commands.template import template_main

    return template_main(rest)

def job_help(width: int | None = None) -> str:
    """``corpus-match --help``: usage, an example, the job's flags by group (with defaults and
    choices, from ``JOB_FLAGS``), the subcommands, and where Beam's own flags are described."""
    from beam_jobs.options import flags_help

    width = width or max(60, min(100, shutil.get_terminal_size((100, 24)).columns))
    subcommands = "\n".join(f"  {name:<10s} {text}" for name, text in SUBCOMMANDS.items())
    return f"""usage: corpus-match [job flags] [Beam pipeline flags] [--verbose]
       corpus-match SUBCOMMAND [flags]        (corpus-match SUBCOMMAND --help)

Top-K nearest records between two corpora (link mode: --queries and --candidates) or within one
(dedup mode: --input), written under --output.

example:
  corpus-match --queries 'data/a/*.parquet' --candidates 'data/b/*.parquet' --output out/ --top_k 10

{flags_help(width)}

Console:
  --verbose
      Show every library's log lines (TensorFlow, absl, gRPC, Beam) and Python tracebacks.
  --help_beam
      List Beam's own pipeline flags (--runner, --project, --region, --temp_location, ...); they are
      passed through to Beam unchanged.

subcommands:
{subcommands}

exit codes: 0 done; 1 the run failed (e.g. --max_bad_record_ratio exceeded, --min_recall not met);
2 a configuration error (a flag's value, an input glob, --output, --index_dir), found before the
pipeline runs."""


def beam_help() -> str:
    """Beam's PipelineOptions help (every registered options class but the job's)."""
    import argparse

    from apache_beam.options import pipeline_options
    from apache_beam.options.pipeline_options import PipelineOptions

    parser_class = getattr(pipeline_options, "_BeamArgumentParser", argparse.ArgumentParser)
    parser = parser_class(prog="corpus-match", add_help=False,
                          description="Beam pipeline flags, passed through to Beam unchanged.")
    seen = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        if cls.__module__ != "beam_jobs.options":
            cls._add_argparse_args(parser)  # noqa: SLF001 - Beam's extension point
    return parser.format_help()


if __name__ == "__main__":
    sys.exit(main())
