"""The command line of ``corpus-match train`` (transforms/learn/train.py), apart from the training code so
that ``corpus-match train --help`` answers without importing TensorFlow or Beam."""

from __future__ import annotations

import argparse

from transforms.common.schema import INPUT_FORMATS

__all__ = ["train_parser", "NEGATIVES"]

NEGATIVES = ("all", "labelled")


def train_parser() -> argparse.ArgumentParser:
    """The flags of ``corpus-match train``."""
    parser = argparse.ArgumentParser(
        prog="corpus-match train",
        description="Learn a record similarity from labelled pairs on top of the default embedder; "
                    "writes a SavedModel for --model_dir, its transform_fn and a training report.")
    add = parser.add_argument
    add("--queries", help="Link mode: glob of the query corpus files.")
    add("--candidates", help="Link mode: glob of the candidate corpus files.")
    add("--input", help="Dedup mode: glob of the one corpus.")
    add("--truth", required=True, help="CSV of labels: query_id,candidate_id pairs, or an id column "
        "(id/rec_id/record_id) with a cluster column (cluster_id/entity_id).")
    add("--text_fields", default="", help="Comma list of text fields to embed.")
    add("--numeric_fields", default="", help="Comma list of numeric fields to embed.")
    add("--id_field", default="id", help="Field holding each record's id. Default 'id'.")
    add("--input_format", default="auto", choices=INPUT_FORMATS, help="Corpus file format. Default auto.")
    add("--model_dir", required=True, help="Output directory: SavedModel, transform_fn/, "
        "training_report.json/.png.")
    add("--transform_fn_dir", default=None, help="Reuse this tf.Transform transform_fn instead of "
        "analysing the training corpora (it is copied to MODEL_DIR/transform_fn).")
    add("--epochs", type=int, default=5, help="Passes over the training pairs. Default 5.")
    add("--batch_pairs", type=int, default=64, help="True pairs per batch. Default 64.")
    add("--hard_negatives", type=int, default=3, help="Mined hard negatives per anchor. Default 3.")
    add("--mine_k", type=int, default=10, help="Nearest non-matches kept per anchor when mining, "
        "refreshed each epoch. Default 10.")
    add("--learning_rate", type=float, default=0.05, help="Adam learning rate. Default 0.05.")
    add("--residual_l2", type=float, default=0.1, help="L2 penalty on the residual projection. "
        "Default 0.1.")
    add("--validation_fraction", type=float, default=0.2, help="Share of entities held out for "
        "validation and model selection. Default 0.2.")
    add("--seed", type=int, default=0, help="Seed of the split, batches and initialisation. Default 0.")
    add("--top_k", type=int, default=10, help="Neighbours per query in validation. Default 10.")
    add("--negatives", default="all", choices=NEGATIVES, help="all: every pair not in --truth is a "
        "non-match; labelled: only records named in --truth serve as negatives. Default all.")
    add("--temp_dir", default=None, help="Scratch directory. Default: a temporary directory.")
    return parser
