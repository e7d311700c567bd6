"""``corpus-match train``: learn a record similarity (a --model_dir) from labelled pairs.

The command line only, apart from the training code (``transforms.learn.train``) so that
``corpus-match train --help`` answers without importing TensorFlow or Beam: the flags, the printed
per-epoch table and exit codes.

The flags that mean what the match job's flags mean (the corpora, their fields and format, a kept
transform_fn, top_k) are declared from the job's specs (``transforms.common.flags``): same type, default,
range and help. The training flags are specs of the same :class:`~transforms.common.flags.Flag` type,
local to train.
"""

from __future__ import annotations

import argparse
import logging
import sys

from transforms.common.flags import Flag, add_to_argparse
from transforms.learn.negatives import NEGATIVES

__all__ = ["train_main", "train_parser", "TRAIN_FLAGS"]

_LOGGER = logging.getLogger(__name__)

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


def train_main(argv: list[str]) -> int:
    """``corpus-match train``: trains, prints the per-epoch table, returns 0 (2 on unusable input)."""
    args = train_parser().parse_args(argv)  # before the imports below: --help needs no TensorFlow
    from transforms.learn.train import TrainConfig, train

    try:
        config = TrainConfig(
            model_dir=args.model_dir, truth=args.truth, text_fields=args.text_fields,
            numeric_fields=args.numeric_fields, queries=args.queries, candidates=args.candidates,
            input=args.input, id_field=args.id_field, input_format=args.input_format,
            transform_fn_dir=args.transform_fn_dir, epochs=args.epochs, batch_pairs=args.batch_pairs,
            hard_negatives=args.hard_negatives, mine_k=args.mine_k, learning_rate=args.learning_rate,
            residual_l2=args.residual_l2, validation_fraction=args.validation_fraction, seed=args.seed,
            top_k=args.top_k, negatives=args.negatives, temp_dir=args.temp_dir)
        report = train(config)
    except (OSError, ValueError) as err:
        print(f"corpus-match train: {err}", file=sys.stderr)
        return 2
    labels = report["labels"]
    print(f"labels: {labels['usable_pairs']} usable of {labels['pairs_read']} (skipped: "
          f"{labels['unknown_ids']} unknown ids, {labels['duplicate_pairs']} duplicates, "
          f"{labels['self_pairs']} self pairs, {labels['empty_ids']} empty ids)")
    print(f"{'epoch':>5s} {'loss':>8s} {'recall@1':>9s} {'recall@10':>10s} {'top1 F1':>8s} {'pair F1':>8s} "
          f"{'AP':>7s}")

    def fmt(value: float | None, width: int) -> str:
        return f"{'-':>{width}s}" if value is None else f"{value:{width}.4f}"

    for row in report["training"]["epochs"]:
        v = row["validation"]
        print(f"{row['epoch']:5d} {fmt(row['loss'], 8)} {fmt(v.get('recall_at_1'), 9)} "
              f"{fmt(v.get('recall_at_10'), 10)} {fmt(v.get('top1_f1'), 8)} {fmt(v.get('pairwise_f1'), 8)} "
              f"{fmt(v.get('average_precision'), 7)}")
    print(f"exported epoch {report['training']['best_epoch']} to {report['model_dir']} "
          f"(match with --model_dir {report['model_dir']} --transform_fn_dir {report['transform_fn_dir']}); "
          f"{report['timings']['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(train_main(sys.argv[1:]))
