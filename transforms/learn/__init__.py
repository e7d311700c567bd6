"""Subcommands beside the job: train an embedder, calibrate the scorer, evaluate matches against truth."""
