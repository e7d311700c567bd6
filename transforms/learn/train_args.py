"""The command line of ``corpus-match train`` (transforms/learn/train.py), apart from the training code so
that ``corpus-match train --help`` answers without importing TensorFlow or Beam.

The flags that mean what the match job's flags mean (the corpora, their fields and format, a kept
transform_fn, top_k) are declared from the job's specs (``transforms.common.flags``): same type, default,
range and help. The training flags are specs of the same :class:`~transforms.common.flags.Flag` type,
local to train.
"""

from __future__ import annotations

import argparse

from transforms.common.flags import Flag, add_to_argparse

__all__ = ["train_parser", "NEGATIVES", "TRAIN_FLAGS"]

NEGATIVES = ("all", "labelled")

# The job's flags train shares (help worded for train where it says more).
_SHARED = ("queries", "candidates", "input")
_SHARED_FIELDS = ("text_fields", "numeric_fields", "id_field", "input_format")
_SHARED_HELP = {
    "transform_fn_dir": "Reuse this tf.Transform transform_fn instead of analysing the training corpora "
                        "(it is copied to MODEL_DIR/transform_fn).",
    "top_k": "Neighbours per query in validation.",
    "text_fields": "Comma list of text fields to embed.",
}

TRAIN_FLAGS: list[Flag] = [
    Flag("epochs", "int", 5, "Passes over the training pairs."),
    Flag("batch_pairs", "int", 64, "True pairs per batch."),
    Flag("hard_negatives", "int", 3, "Mined hard negatives per anchor."),
    Flag("mine_k", "int", 10, "Nearest non-matches kept per anchor when mining, refreshed each epoch."),
    Flag("learning_rate", "float", 0.05, "Adam learning rate."),
    Flag("residual_l2", "float", 0.1, "L2 penalty on the residual projection."),
    Flag("validation_fraction", "float", 0.2, "Share of entities held out for validation and model "
         "selection."),
    Flag("seed", "int", 0, "Seed of the split, batches and initialisation."),
    Flag("negatives", "choice", "all", "all: every pair not in --truth is a non-match; labelled: only "
         "records named in --truth serve as negatives.", choices=NEGATIVES),
    Flag("temp_dir", "str", None, "Scratch directory.", unset="a temporary directory"),
]


def train_parser() -> argparse.ArgumentParser:
    """The flags of ``corpus-match train``."""
    parser = argparse.ArgumentParser(
        prog="corpus-match train",
        description="Learn a record similarity from labelled pairs on top of the default embedder; "
                    "writes a SavedModel for --model_dir, its transform_fn and a training report.")
    add_to_argparse(parser, _SHARED)
    parser.add_argument("--truth", required=True, help="CSV of labels: query_id,candidate_id pairs, or "
                        "an id column (id/rec_id/record_id) with a cluster column (cluster_id/entity_id).")
    add_to_argparse(parser, _SHARED_FIELDS, **_SHARED_HELP)
    # Not the job's --model_dir (a model to read): where train writes the model.
    parser.add_argument("--model_dir", required=True, help="Output directory: SavedModel, transform_fn/, "
                        "training_report.json/.png.")
    add_to_argparse(parser, ("transform_fn_dir",), **_SHARED_HELP)
    for flag in TRAIN_FLAGS:
        flag.add_to(parser)
    add_to_argparse(parser, ("top_k",), **_SHARED_HELP)
    return parser
