"""Every flag of the match job, declared once as data (``JOB_FLAGS``) and as a Beam ``PipelineOptions``
subclass (``MatchOptions``).

Defaults here are raw strings/None where the real default depends on other flags or on the data
(e.g. ScaNN leaves from shard size); :mod:`beam_jobs.config` resolves them and checks cross-field rules.
Flex Templates pass every value as a string (``'false'``, ``'10'``), so types are parsed in config too.

Importing this module does not import Beam: ``--help``, the template commands and the README table
read ``JOB_FLAGS`` only. ``MatchOptions`` (a ``PipelineOptions`` subclass) is defined on first use, and
:func:`check_known_flags` (which parses a command line the way Beam does) imports Beam when called.
"""

from __future__ import annotations

import textwrap
from typing import NamedTuple

from transforms.common.schema import DISTANCES, INPUT_FORMATS, OUTPUT_FORMATS

__all__ = ["MatchOptions", "JOB_FLAGS", "Flag", "FLAG_GROUPS", "check_known_flags", "flags_help",
           "flags_markdown", "suggest_flag"]


class Flag(NamedTuple):
    """One job flag: ``--name``, its help text (format and default) and its choices (None: free)."""

    name: str
    help: str
    choices: tuple[str, ...] | None

    @property
    def group(self) -> str:
        """The ``--help`` section the flag is listed under (``FLAG_GROUPS``; 'Other' if unlisted)."""
        return _GROUP_OF.get(self.name, "Other")


# (name, help, choices or None). Kept as data so the template metadata parity test and the README
# table can be checked against one list.
_FLAG_ENTRIES: list[tuple[str, str, tuple[str, ...] | None]] = [
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
    ("model_dir", "The model that embeds records: a TF SavedModel directory or a Keras .keras file. "
     "Its serving signature is read at launch and decides how it is fed: the preprocessed features "
     "of --text_fields/--numeric_fields by name (tf.Transform first), one tf.string [batch] input "
     "(the raw --text_fields, no tf.Transform; see --text_pooling), or with --image_field one image "
     "input. Default: the built-in embedder.", None),
    ("image_field", "Field holding each record's image, for an image --model_dir (instead of "
     "--text_fields/--numeric_fields): encoded JPEG/PNG/GIF/BMP bytes (a parquet binary column, a "
     "tf.Example bytes feature) or a path/URI read through Beam FileSystems. Images "
     "are decoded and resized to the model's [height, width, channels] and fed as pixel values in "
     "[0, 255]; a model taking tf.string gets the encoded bytes.", None),
    ("text_pooling", "A raw-text --model_dir (one tf.string input): join (one string per record, its "
     "non-empty --text_fields joined by --text_separator) or mean (each non-empty field embedded "
     "alone; the record's vector is the mean of its fields' vectors). Default join.",
     ("join", "mean")),
    ("text_separator", "With --text_pooling join: the text between the joined fields, taken as given "
     "(spaces kept). Default one space.", None),
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
    ("scann_training_sample", "Most vectors sampled to train each shard's tree (its k-means takes at "
     "most 50 per leaf: 100000 at 2000 leaves). Default 250000.", None),
    ("scann_training_threads", "Threads ScaNN trains a shard's codebook on when the shard has no tree "
     "(one leaf); 0 = all cores. Trees come from a seeded k-means and ScaNN completes those indexes "
     "on one thread, so builds are byte-identical either way. Default 0.", None),
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
     "dedup: a pair with the representative at the distance of identical vectors, 0 or -|v|^2 "
     "under dot). Default true.", ("true", "false")),
    ("max_cluster_size", "Dedup mode: clusters larger than this are flagged as suspicious giants in "
     "the manifest. Default 1000.", None),
    ("cluster_max_rounds", "Dedup mode: most Large-Star/Small-Star rounds of the connected-components "
     "step before what is left is finished in one place. Default 40.", None),
    ("rescore", "Final distance of emitted pairs: exact (the chosen distance on the float vectors) or "
     "wasserstein (1-D Wasserstein distance of the vectors' values). Default exact.",
     ("exact", "wasserstein")),
    ("scorer", "Pairwise scoring of the candidate pairs after the merge: fields (compare the "
     "records' --text_fields/--numeric_fields: exact, Jaro-Winkler/token-sort/character-gram, date-aware and "
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

JOB_FLAGS: list[Flag] = [Flag(*entry) for entry in _FLAG_ENTRIES]

# The sections of ``corpus-match --help``, in order; each flag is in one (tests check).
FLAG_GROUPS: dict[str, tuple[str, ...]] = {
    "Inputs": ("queries", "candidates", "input", "input_format", "id_field", "vector_field"),
    "Embedding": ("text_fields", "numeric_fields", "model_dir", "image_field", "text_pooling",
                  "text_separator", "transform_fn_dir", "embed_batch_size", "embed_min_batch_size",
                  "embed_max_batch_size"),
    "Matching": ("top_k", "distance", "max_distance", "calibration", "rescore", "collapse_duplicates",
                 "scorer", "scoring_model", "min_probability"),
    "Index and routing": ("index", "num_shards", "max_shard_vectors", "worker_memory_gb", "routing",
                          "probe_shards", "scann_num_leaves", "scann_leaves_to_search",
                          "scann_quantization", "scann_anisotropic_threshold", "scann_reorder",
                          "scann_training_sample", "scann_training_threads", "index_dir", "append"),
    "Audit": ("audit_sample", "min_recall", "target_recall"),
    "Outputs": ("output", "overwrite", "output_format", "num_output_shards", "max_cluster_size",
                "cluster_max_rounds"),
    "Bad input": ("max_bad_record_ratio", "max_bad_files", "max_id_length"),
    "Performance": ("batch_size", "spill_min_mb"),
}
_GROUP_OF = {name: group for group, names in FLAG_GROUPS.items() for name in names}
# Flags the job cannot run without (the corpus flags depend on the mode; config says which).
_REQUIRED = ("output",)


def _define_match_options():
    from apache_beam.options.pipeline_options import PipelineOptions

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

    MatchOptions.__module__, MatchOptions.__qualname__ = __name__, "MatchOptions"  # picklable by name
    return MatchOptions


MatchOptions: type  # made by _match_options on first use (an annotation binds no name: PEP 562)


def _match_options():
    """MatchOptions, made once: a module global from then on, found among Beam's option classes."""
    cls = globals().get("MatchOptions")
    if cls is None:
        cls = globals()["MatchOptions"] = _define_match_options()
    return cls


def __getattr__(name: str):
    # PEP 562: MatchOptions subclasses Beam's PipelineOptions, so it is made on first use.
    if name == "MatchOptions":
        return _match_options()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _default_text(flag: Flag) -> str:
    """The flag's help with its default stated: the help's own 'Default ...', else unset/required."""
    if "default" in flag.help.lower():
        return flag.help
    return flag.help + (" Required." if flag.name in _REQUIRED else " Default: unset.")


def flags_help(width: int = 100) -> str:
    """The job flags for ``corpus-match --help``: by group, each with its choices and default."""
    lines = []
    for group in [*FLAG_GROUPS, "Other"]:
        flags = [f for f in JOB_FLAGS if f.group == group]
        if not flags:
            continue
        lines += ["", f"{group}:"]
        for flag in flags:
            head = f"  --{flag.name}" + (f" {{{','.join(flag.choices)}}}" if flag.choices else "")
            lines.append(head)
            lines += textwrap.wrap(_default_text(flag), width=width, initial_indent=" " * 6,
                                   subsequent_indent=" " * 6)
    return "\n".join(lines[1:])


def suggest_flag(name: str, known: list[str]) -> str | None:
    """The known flag ``name`` (``--x``) was most likely meant to be: the job's flags first, then
    ``known`` (every Beam flag); '-' for '_' counts as the same flag. None when nothing is close."""
    import difflib

    job = [f"--{f.name}" for f in JOB_FLAGS]
    normalised = "--" + name.lstrip("-").replace("-", "_")
    for pool in (job, known):
        if normalised in pool:
            return normalised
        close = difflib.get_close_matches(normalised, pool, n=1, cutoff=0.75)
        if close:
            return close[0]
    return None


def _runner_of(argv: list[str]) -> str | None:
    runner = None
    for i, arg in enumerate(argv):
        if arg == "--runner" and i + 1 < len(argv):
            runner = argv[i + 1]
        elif arg.startswith("--runner="):
            runner = arg.split("=", 1)[1]
    return runner


def check_known_flags(argv: list[str]) -> None:
    """Parses ``argv`` as Beam will (every registered PipelineOptions class, the job's included) and
    raises ConfigError naming the first problem: a flag no options class declares (with the likely
    intended flag), a stray value, or a value argparse rejects (a choice, a type, a missing value).

    Beam itself only logs a warning for unknown flags and runs with defaults; a misspelled job flag
    must not do that. A runner named by ``--runner`` is loaded first, so its own flags are known.
    """
    import argparse

    from apache_beam.options import pipeline_options
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_jobs.config import ConfigError

    _match_options()  # registered with Beam's option classes
    base = getattr(pipeline_options, "_BeamArgumentParser", argparse.ArgumentParser)

    class _StrictParser(base):
        def error(self, message):  # argparse would print its usage and exit
            raise ConfigError(message)

    runner = _runner_of(argv)
    if runner:
        from apache_beam.runners.runner import create_runner

        try:
            create_runner(runner)  # imports the runner's module, which declares its options
        except ValueError as e:
            raise ConfigError(f"--runner {runner}: {e}") from None
    parser = _StrictParser(allow_abbrev=False, add_help=False)
    classes = {}
    for cls in PipelineOptions.__subclasses__():  # as PipelineOptions.get_all_options does
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # noqa: SLF001 - Beam's documented extension point
    _, unknown = parser.parse_known_args(argv)
    known = sorted(s for action in parser._actions for s in action.option_strings)  # noqa: SLF001
    problems = []
    after_flag = False
    for arg in unknown:
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            hint = suggest_flag(name, known)
            problems.append(f"unknown flag {name}" + (f" (did you mean {hint}?)" if hint else ""))
            after_flag = "=" not in arg
        elif after_flag:  # the value of the unknown flag before it
            after_flag = False
        else:
            problems.append(f"unexpected argument {arg!r} (flags are --name value)")
    if problems:
        raise ConfigError("; ".join(problems) + " (corpus-match --help lists the job's flags)")


def flags_markdown() -> str:
    """The README's flag table rows, from JOB_FLAGS (``python -m beam_jobs.options``)."""
    rows = []
    for name, help_text, choices in JOB_FLAGS:
        choice_text = f" One of: {', '.join(choices)}." if choices else ""
        rows.append(f"| `--{name}` | {help_text}{choice_text} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(flags_markdown())
