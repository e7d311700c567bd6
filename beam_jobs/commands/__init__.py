"""The ``corpus-match`` subcommands, one module each: train, calibrate, evaluate, explain, report, template.

Each module holds a subcommand's command line (flags, printed output, exit codes) and imports the
library code it drives (``transforms/``) only after its flags are parsed, so ``--help`` answers
without TensorFlow or Beam. ``beam_jobs/cli.py`` dispatches to them.
"""
