"""Every flag of the match job, declared once as a Beam ``PipelineOptions`` subclass.

Defaults here are raw strings/None where the real default depends on other flags or on the data
(e.g. ScaNN leaves from shard size); :mod:`beam_jobs.config` resolves them and checks cross-field rules.
Flex Templates pass every value as a string (``'false'``, ``'10'``), so types are parsed in config too.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.schema import DISTANCES, INPUT_FORMATS, OUTPUT_FORMATS

__all__ = ["MatchOptions", "JOB_FLAGS"]

# (name, help, choices or None). Kept as data so the template metadata parity test and the README
# table can be checked against one list.
JOB_FLAGS: list[tuple[str, str, tuple[str, ...] | None]] = [
    # --- inputs
    ("queries", "Link mode: glob of the query corpus files (local path or gs://).", None),
    ("candidates", "Link mode: glob of the candidate corpus files.", None),
    ("input", "Dedup mode: glob of the one corpus matched against itself.", None),
    ("input_format", "File format of the corpora; 'auto' picks by file extension. Default auto.",
     INPUT_FORMATS),
    ("id_field", "Field holding each record's unique id (read as a string). Default 'id'.", None),
    ("max_id_length", "Ids longer than this many characters go to dead letters (stage validate). "
     "Default 1024.", None),
    ("vector_field", "Field holding a precomputed float vector (list column; JSON array string in csv; "
     "float_list feature in tf.Example). Default 'embedding'.", None),
    ("text_fields", "Comma list of text fields to embed with the model (instead of --vector_field).",
     None),
    ("numeric_fields", "Comma list of numeric fields to embed with the model.", None),
    ("model_dir", "TF SavedModel directory used to embed records; default: the built-in embedder.",
     None),
    ("transform_fn_dir", "Reuse a saved tf.Transform transform_fn instead of analysing the data.", None),
    ("embed_batch_size", "Most rows per model call when embedding (bounds GPU memory; capped by "
     "--embed_max_batch_size). Default 4096.", None),
    ("embed_min_batch_size", "RunInference min_batch_size. Default 64.", None),
    ("embed_max_batch_size", "RunInference max_batch_size (bounds GPU memory). Default 4096.", None),
    # --- matching
    ("top_k", "Neighbours kept per query. Default 10.", None),
    ("distance", "Distance: cosine (1 - cos), dot (-dot) or squared_l2. Default cosine.", DISTANCES),
    ("max_distance", "Drop pairs farther than this distance. Default: no limit.", None),
    ("calibration", "A calibration.json from `corpus-match calibrate`: its max_distance is used as "
     "--max_distance, or its min_probability as --min_probability and its scoring_model (from "
     "--fit_scorer) as --scoring_model (give the file or those flags, not both).", None),
    ("index", "Index per shard: scann (approximate), exact (brute force), or auto (exact while "
     "queries x shard vectors x dims is at most 3e10, about 2-3 s of brute force on a 2-core worker "
     "and the measured crossover with ScaNN; else scann). Default auto.", ("auto", "scann", "exact")),
    ("num_shards", "Candidate shards (one index each). Default: ceil(candidates / max_shard_vectors).",
     None),
    ("max_shard_vectors", "Most vectors in one shard. Default 1000000 (and no more than fits "
     "--worker_memory_gb).", None),
    ("worker_memory_gb", "Memory one worker may spend on one shard's index (build and search); "
     "bounds the shard size from the vector count and dims. Default 4.", None),
    ("routing", "How queries reach shards: all (every shard), centroids (train k-means centroids "
     "once, place candidates by nearest centroid, search only the shards of each query's "
     "--probe_shards nearest partitions), or auto (centroids placement; routing once there are "
     "more than 4 shards). Default auto.", ("auto", "all", "centroids")),
    ("probe_shards", "Partitions probed per query with centroid routing (4 partitions per shard). "
     "Default 4; with --target_recall, the fewest that reach it on the tuning sample.", None),
    ("scann_num_leaves", "ScaNN tree leaves per shard. Default: 2*sqrt(shard size).", None),
    ("scann_leaves_to_search", "ScaNN leaves searched per query. Default: 1.5*sqrt(leaves), "
     "between 8 and 30.",
     None),
    ("scann_quantization", "ScaNN scoring: ah (anisotropic hashing) or brute (exact float scoring in "
     "the tree). Default ah.", ("ah", "brute")),
    ("scann_anisotropic_threshold", "Anisotropic quantization threshold (dot/cosine). Default 0.2.",
     None),
    ("scann_reorder", "ScaNN exact reorder depth (0 disables). Default 100 (200 for squared_l2).",
     None),
    ("scann_training_sample", "Vectors sampled to train each shard's tree. Default 250000.", None),
    ("scann_training_threads", "Threads that train each shard's tree and codebooks; 0 = all cores. "
     "Builds are reproducible either way (k-means++ initialisation with pinned seeds). Default 0.",
     None),
    ("audit_sample", "Queries searched exactly (brute force over all candidates) to measure the "
     "run's recall, written to the manifest and metrics: of the relevant neighbours (within "
     "--max_distance, else rank 1 and those within a distance derived from the sample) and recall@K "
     "of every exact top-K neighbour. Deterministic sample. Default 1000; 0 disables.", None),
    ("min_recall", "Fail the run (after writing the manifest) when the audited recall of the "
     "relevant neighbours is below this. Default: no minimum.", None),
    ("target_recall", "Tune the search effort (the routing probe, and per ScaNN shard the leaves to "
     "search and reorder depth) on a separate query sample before the main search, to reach this "
     "recall of the relevant neighbours (as --audit_sample counts them), or none. Default: 0.98 when "
     "the job embeds records (hashed text embeddings have little cluster structure), none for "
     "precomputed vectors.", None),
    ("collapse_duplicates", "Index records with identical prepared content once: the smallest id "
     "represents them, the others are matched through it (link: same neighbours and distance; "
     "dedup: a distance-0 pair with the representative). Default true.", ("true", "false")),
    ("max_cluster_size", "Dedup mode: clusters larger than this are flagged as suspicious giants in "
     "the manifest. Default 1000.", None),
    ("cluster_max_rounds", "Dedup mode: most Large-Star/Small-Star rounds of the connected-components "
     "step before what is left is finished in one place. Default 40.", None),
    ("rescore", "Final distance of emitted pairs: exact (the chosen distance on the float vectors) or "
     "wasserstein (1-D Wasserstein distance of the vectors' values). Default exact.",
     ("exact", "wasserstein")),
    ("scorer", "Pairwise scoring of the candidate pairs after the merge: fields (compare the "
     "records' --text_fields/--numeric_fields: exact, Jaro-Winkler/token-sort, date-aware and "
     "relative-difference levels, combined by a Fellegi-Sunter model fitted by EM on the run's own "
     "candidate pairs, u from random pairs, term-frequency adjusted) adds match_weight and "
     "match_probability columns and (link mode) ranks each query's pairs by them; none keeps the "
     "distance only. "
     "model scores with a fitted model given by --scoring_model instead of fitting one. Default fields "
     "when the job embeds records (model when --scoring_model is given), none for precomputed "
     "vectors.", ("none", "fields", "model")),
    ("scoring_model", "A fitted scoring model (an earlier run's DIR/scoring/model.json, same fields) "
     "for --scorer model: scheduled runs score alike, with no EM; the distance levels are the "
     "model's, term frequencies this run's.", None),
    ("min_probability", "With a scorer: drop pairs whose match_probability is below this (0 keeps "
     "every candidate pair). Default 0.5.", None),
    ("index_dir", "Reuse the shard indices (and routing centroids) of an earlier run's output "
     "directory: --queries are matched against them without rebuilding; --candidates then only "
     "with --append.", None),
    ("append", "With --index_dir: add --candidates to the kept index; only the shards they land in "
     "are rebuilt (under --output), the others are used in place. Default false.", ("true", "false")),
    # --- outputs
    ("output", "Output directory (local path or gs://). It must be empty or new unless --overwrite.",
     None),
    ("overwrite", "Replace the run already in --output (finished, failed or killed): its outputs "
     "are deleted before this run starts. A directory holding other files, or an input of this "
     "run, is refused even so. Default false.", ("true", "false")),
    ("output_format", "Match file format. Default parquet.", OUTPUT_FORMATS),
    ("num_output_shards", "Number of match files. Default: sized from the query count.", None),
    ("max_bad_record_ratio", "Fail the run when dead letters / records read exceeds this. "
     "Default 0.01.", None),
    ("max_bad_files", "Input files that cannot be read to their end and whose row count is unknown "
     "(not parquet, parquet without a readable footer, a truncated or corrupt gzip stream, lost "
     "TFRecord framing, an unknown extension) the run tolerates; more fail it, naming the files. "
     "Each counts as one rejected row. Default 0.", None),
    ("batch_size", "Rows per batch moved between stages. Default 4096.", None),
    ("spill_min_mb", "A batch's candidate rows of one shard holding at least this many MB of vectors "
     "reach the shard through a spill file (under --temp_location, else the output) instead of "
     "the shuffle; smaller pieces take the shuffle. 0 turns spilling off. Default 1.", None),
]


_BOOLEAN = ("true", "false")


class MatchOptions(PipelineOptions):
    """Flags of the match job (see ``JOB_FLAGS``; the README lists them too)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        for name, help_text, choices in JOB_FLAGS:
            if choices == _BOOLEAN:  # a bare --overwrite means --overwrite true
                parser.add_argument(f"--{name}", default=None, choices=choices, help=help_text,
                                    nargs="?", const="true")
            else:
                parser.add_argument(f"--{name}", default=None, choices=choices, help=help_text)


def flags_markdown() -> str:
    """The README's flag table rows, from JOB_FLAGS (``python -m beam_jobs.options``)."""
    rows = []
    for name, help_text, choices in JOB_FLAGS:
        choice_text = f" One of: {', '.join(choices)}." if choices else ""
        rows.append(f"| `--{name}` | {help_text}{choice_text} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(flags_markdown())
