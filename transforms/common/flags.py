"""The one typed table of the match job's flags (``JOB_FLAGS``), and the :class:`Flag` spec it is made of.

Each :class:`Flag` carries its name, type, default, choices, range, help, ``--help`` group and how the
Flex Template declares it (template kind). Everything else is generated from it: the Beam options
(``beam_jobs.options.MatchOptions``), ``corpus-match --help``, the README flag table, the template's
metadata.json (``beam_jobs.commands.template``), the parsing of each value in ``beam_jobs.config``
(which keeps only the cross-field rules), and the flags ``corpus-match train`` shares with the job
(:meth:`Flag.add_to`).
A help text never states its default: "Default X." is generated from the spec, so the two cannot disagree
(tests/beam_jobs/test_flags.py). Composites that keep a keyword default for library use take it from
:data:`DEFAULTS`, the same value the flag has.

A default that depends on other flags or on the data (ScaNN leaves from the shard size) is a
:class:`Derived` naming what it is derived from; the config resolves it.

This module lives in ``transforms/common`` because the train CLI (``transforms.learn``, which must not
import ``beam_jobs``) reuses the specs. It imports neither Beam nor TensorFlow: ``--help`` reads it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any, NamedTuple

from transforms.common.errors import ConfigError
from transforms.common.schema import DISTANCES, INPUT_FORMATS, OUTPUT_FORMATS

__all__ = ["Flag", "Derived", "JOB_FLAGS", "FLAGS", "DEFAULTS", "GROUPS", "FLAG_GROUPS", "TYPES",
           "TEMPLATE_KINDS", "EMBEDDED_TARGET_RECALL", "EMBEDDED_SOAR_LAMBDA", "SCANN_REORDER",
           "SCANN_REORDER_SQUARED_L2",
           "SCANN_LEAVES_TO_SEARCH_RANGE", "DEFAULT_MIN_PROBABILITY", "add_to_argparse", "parse_flags"]

TYPES = ("str", "int", "float", "bool", "list", "choice")
# The job's --min_probability when a scorer runs: a pair is kept as a match from even odds on.
DEFAULT_MIN_PROBABILITY = 0.5
# How metadata.json declares a flag (beam_jobs.commands.template): free text, a number, one of the choices,
# true/false, a gs:// file glob to read, a gs:// folder to read, a gs:// folder to write, or a number or
# the word none.
TEMPLATE_KINDS = ("text", "number", "enum", "boolean", "gcs_glob", "gcs_dir", "gcs_output", "none_or_number")
_BOOLEAN = ("true", "false")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


class Derived(NamedTuple):
    """A default computed from other flags or the data; ``what`` says from what (shown in the help)."""

    what: str


@dataclasses.dataclass(frozen=True)
class Flag:
    """One flag: ``--name``, parsed as ``type`` (one of :data:`TYPES`), with its real default.

    Attributes:
        name: the flag without ``--`` (snake_case).
        type: 'str', 'int', 'float', 'bool', 'list' (comma list of distinct names) or 'choice'.
        default: the parsed default; None for unset (``unset`` says what that means), or a
            :class:`Derived`.
        help: what the flag does and its format, without the default (that is generated).
        choices: the values of a 'choice' flag.
        min, max: the inclusive range of a number (``min_exclusive``: the minimum itself is refused).
        group: the ``corpus-match --help`` section (one of :data:`GROUPS`).
        template: how metadata.json declares it (:data:`TEMPLATE_KINDS`); None: from the type.
        note: said right after the default value ("Default 4; 0 disables.").
        unset: what a None default means ("Default: no limit.").
        shown: the default as the help writes it, when not the value itself ("one space").
        required: the job cannot run without it.
        strip: surrounding spaces are dropped (not for a separator, whose spaces are the point).
        none_word: a number flag that also takes the word none (parsed as None).
    """

    name: str
    type: str
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    group: str = "Other"
    template: str | None = None
    note: str = ""
    unset: str = "unset"
    shown: str | None = None
    required: bool = False
    strip: bool = True
    none_word: bool = False

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise TypeError(f"--{self.name}: type {self.type!r} is not one of {TYPES}")
        if (self.type == "choice") != bool(self.choices):
            raise TypeError(f"--{self.name}: a 'choice' flag, and only one, has choices")
        if self.template is not None and self.template not in TEMPLATE_KINDS:
            raise TypeError(f"--{self.name}: template {self.template!r} is not one of {TEMPLATE_KINDS}")

    # ------------------------------------------------------------------------------ derived views

    @property
    def values(self) -> tuple[str, ...] | None:
        """The strings the flag accepts when it has a fixed set (choices; true/false); else None."""
        return _BOOLEAN if self.type == "bool" else self.choices

    @property
    def derived(self) -> bool:
        return isinstance(self.default, Derived)

    @property
    def template_kind(self) -> str:
        """How metadata.json declares the flag (:data:`TEMPLATE_KINDS`)."""
        if self.template:
            return self.template
        if self.type in ("int", "float"):
            return "none_or_number" if self.none_word else "number"
        return {"choice": "enum", "bool": "boolean"}.get(self.type, "text")

    def format_value(self, value: Any) -> str:
        """A parsed value as a user writes it on the command line (``--help``, errors)."""
        if self.type == "bool":
            return "true" if value else "false"
        if self.type == "float":
            return f"{value:g}"
        if self.type == "list":
            return ",".join(value)
        if self.type == "str":
            return repr(value)
        return str(value)

    @property
    def default_text(self) -> str:
        """The generated sentence stating the default: 'Default 10.', 'Default: unset.', 'Required.'."""
        if self.required:
            return "Required."
        if self.derived:
            return f"Default: {self.default.what}."
        if self.default is None or self.default == ():
            return f"Default: {self.unset}."
        return f"Default {self.shown or self.format_value(self.default)}{self.note}."

    @property
    def full_help(self) -> str:
        """The help as every surface shows it: the flag's text, then its default."""
        return f"{self.help} {self.default_text}"

    # ---------------------------------------------------------------------------------- parsing

    def given(self, raw: Any) -> bool:
        """Whether ``raw`` (from a command line, a template or a dict) sets the flag at all."""
        if raw is None:
            return False
        return bool(str(raw).strip()) if self.strip else str(raw) != ""

    def parse(self, raw: Any) -> Any:
        """The value of the flag from ``raw``: a string ('10', 'false', from Flex Templates) or a
        Python value; the default when not given (None for a :class:`Derived` default).

        Raises:
            ConfigError: naming the flag, when ``raw`` is not of its type or out of its range.
        """
        if not self.given(raw):
            return None if self.derived else self.default
        if self.type == "bool":
            return _parse_bool(self.name, raw)
        text = str(raw).strip() if self.strip else str(raw)
        if self.type == "str":
            return text
        if self.type == "list":
            items = tuple(v.strip() for v in text.split(",") if v.strip())
            if len(set(items)) != len(items):
                raise ConfigError(f"--{self.name} lists a field twice: {raw!r}")
            return items
        if self.type == "choice":
            value = text.lower()
            if value not in self.choices:
                raise ConfigError(f"--{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        if self.none_word and text.lower() == "none":
            return None
        if self.type == "int":
            return self._parse_int(raw, text)
        return self._parse_float(raw, text)

    def _parse_int(self, raw: Any, text: str) -> int:
        if isinstance(raw, float) and not raw.is_integer():
            raise ConfigError(f"--{self.name} must be an integer, got {raw!r}")
        try:
            value = int(raw) if isinstance(raw, float) else int(text)
        except ValueError:
            raise ConfigError(f"--{self.name} must be an integer, got {raw!r}") from None
        if not self._in_range(value):
            raise ConfigError(f"--{self.name} must be {self._bounds()}, got {value}")
        return value

    def _parse_float(self, raw: Any, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"--{self.name} must be a number, got {raw!r}") from None
        if not math.isfinite(value) or not self._in_range(value):
            bounds = self._bounds()
            raise ConfigError(f"--{self.name} must be a finite number{' ' + bounds if bounds else ''}, "
                              f"got {raw!r}")
        return value

    def _in_range(self, value: float) -> bool:
        if self.min is not None and (value <= self.min if self.min_exclusive else value < self.min):
            return False
        return self.max is None or value <= self.max

    def _bounds(self) -> str:
        """The range in words: '>= 1', '<= 2', 'in [0, 1]', 'in (0, 1]'."""
        lo, hi = self.min, self.max
        if lo is not None and hi is not None:
            return f"in {'(' if self.min_exclusive else '['}{lo:g}, {hi:g}]"
        if lo is not None:
            return f"{'>' if self.min_exclusive else '>='} {lo:g}"
        return f"<= {hi:g}" if hi is not None else ""

    # --------------------------------------------------------------------------------- argparse

    def add_to(self, parser, *, typed: bool = True, dest: str | None = None, **overrides) -> None:
        """Declares ``--name`` on an argparse parser (or argument group) from the spec.

        ``typed``: the parsed value lands in the namespace (a bad value is argparse's usage error,
        naming the flag); else the raw string does, with None when not given and nothing required (the
        job's Beam options: ``beam_jobs.config`` parses them and says what is missing). ``overrides``
        replace spec fields (e.g. ``help`` worded for another command, ``required``).
        """
        flag = dataclasses.replace(self, **overrides) if overrides else self
        kwargs: dict[str, Any] = {"help": flag.full_help.replace("%", "%%")}
        if dest:
            kwargs["dest"] = dest
        if typed:
            kwargs["required"] = flag.required
            kwargs["type"] = flag._argparse_type
            kwargs["default"] = None if flag.derived else flag.default
            if flag.values:
                kwargs["metavar"] = "{" + ",".join(flag.values) + "}"
        else:
            kwargs["default"] = None
            kwargs["choices"] = flag.values
        if flag.type == "bool":  # a bare --overwrite means --overwrite true
            kwargs.update(nargs="?", const=True if typed else "true")
        parser.add_argument(f"--{flag.name}", **kwargs)

    def _argparse_type(self, raw: str) -> Any:
        try:
            return self.parse(raw)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(f"--{self.name} ")) from None


def _parse_bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"--{name} must be true or false, got {raw!r}")


# The sections of ``corpus-match --help``, in order.
GROUPS = ("Inputs", "Embedding", "Matching", "Index and routing", "Audit", "Outputs", "Bad input",
          "Performance")
_IN, _EMB, _MATCH, _INDEX, _AUDIT, _OUT, _BAD, _PERF = GROUPS

# --target_recall when the job embeds records and the flag is not given. Hashed text embeddings have
# little cluster structure: on generated people a fixed 15 of 89 leaves found 0.64 of the exact
# top-10 (true-link recall@10 0.979); tuning on the audit sample fixes that where it is needed. The
# target counts the relevant neighbours (rank 1 and those within the audit's derived cutoff): at
# 100k generated people 0.95 of them kept 0.976 of the true links exact search finds, 0.98 about
# the 0.987 of the old all-slots target at the same cost, 0.99 kept 0.997 at 1.5x the leaves.
EMBEDDED_TARGET_RECALL = 0.98
# SOAR's spilling weight when the job embeds records (ScaNN's own default lambda).
EMBEDDED_SOAR_LAMBDA = 1.5
# ScaNN's exact reorder depth when --scann_reorder is not given (beam_jobs.config.scann_params_for).
SCANN_REORDER, SCANN_REORDER_SQUARED_L2 = 100, 200
# ScaNN leaves searched per query when --scann_leaves_to_search is not given: 1.5*sqrt(leaves) in this range.
SCANN_LEAVES_TO_SEARCH_RANGE = (8, 30)

_lo, _hi = SCANN_LEAVES_TO_SEARCH_RANGE

# In this order in metadata.json and the README.
JOB_FLAGS: list[Flag] = [
    # --- inputs
    Flag("queries", "str", None, "Link mode: glob of the query corpus files (local path or gs://).",
         group=_IN, template="gcs_glob"),
    Flag("candidates", "str", None, "Link mode: glob of the candidate corpus files.",
         group=_IN, template="gcs_glob"),
    Flag("input", "str", None, "Dedup mode: glob of the one corpus matched against itself.",
         group=_IN, template="gcs_glob"),
    Flag("input_format", "choice", "auto", "File format of the corpora; 'auto' picks by file extension.",
         choices=INPUT_FORMATS, group=_IN),
    Flag("id_field", "str", "id", "Field holding each record's unique id (read as a string).", group=_IN),
    Flag("max_id_length", "int", 1024, "Ids longer than this many characters go to dead letters (stage "
         "validate).", min=1, group=_BAD),
    Flag("vector_field", "str", "embedding", "Field holding a precomputed float vector (list column; "
         "JSON array string in csv; float_list feature in tf.Example).", group=_IN),
    Flag("text_fields", "list", (), "Comma list of text fields to embed with the model (instead of "
         "--vector_field).", group=_EMB),
    Flag("numeric_fields", "list", (), "Comma list of numeric fields to embed with the model.", group=_EMB),
    Flag("model_dir", "str", None, "The model that embeds records: a TF SavedModel directory or a Keras "
         ".keras file. Its serving signature is read at launch and decides how it is fed: the "
         "preprocessed features of --text_fields/--numeric_fields by name (tf.Transform first), one "
         "tf.string [batch] input (the raw --text_fields, no tf.Transform; see --text_pooling), or with "
         "--image_field one image input.", unset="the built-in embedder", group=_EMB, template="gcs_dir"),
    Flag("image_field", "str", None, "Field holding each record's image, for an image --model_dir "
         "(instead of --text_fields/--numeric_fields): encoded JPEG/PNG/GIF/BMP bytes (a parquet binary "
         "column, a tf.Example bytes feature) or a path/URI read through Beam FileSystems. Images are "
         "decoded and resized to the model's [height, width, channels] and fed as pixel values in "
         "[0, 255]; a model taking tf.string gets the encoded bytes.", group=_EMB),
    Flag("text_pooling", "choice", "join", "A raw-text --model_dir (one tf.string input): join (one string "
         "per record, its non-empty --text_fields joined by --text_separator) or mean (each non-empty "
         "field embedded alone; the record's vector is the mean of its fields' vectors).",
         choices=("join", "mean"), group=_EMB),
    Flag("text_separator", "str", " ", "With --text_pooling join: the text between the joined fields, "
         "taken as given (spaces kept).", shown="one space", strip=False, group=_EMB),
    Flag("transform_fn_dir", "str", None, "Reuse a saved tf.Transform transform_fn instead of analysing "
         "the data.", group=_EMB, template="gcs_dir"),
    Flag("embed_batch_size", "int", 4096, "Most rows per model call when embedding (bounds GPU memory; "
         "capped by --embed_max_batch_size).", min=1, group=_EMB),
    Flag("embed_min_batch_size", "int", 64, "RunInference min_batch_size.", min=1, group=_EMB),
    Flag("embed_max_batch_size", "int", 4096, "RunInference max_batch_size (bounds GPU memory).", min=1,
         group=_EMB),
    # --- matching
    Flag("top_k", "int", 10, "Neighbours kept per query.", min=1, group=_MATCH),
    Flag("distance", "choice", "cosine", "Distance: cosine (1 - cos), dot (-dot) or squared_l2.",
         choices=DISTANCES, group=_MATCH),
    Flag("max_distance", "float", None, "Drop pairs farther than this distance.", unset="no limit",
         group=_MATCH),
    Flag("calibration", "str", None, "A calibration.json from `corpus-match calibrate`: its max_distance "
         "is used as --max_distance, or its min_probability as --min_probability and its scoring_model "
         "(from --fit_scorer) as --scoring_model (give the file or those flags, not both).", group=_MATCH),
    Flag("index", "choice", "auto", "Index per shard: scann (approximate), exact (brute force), or auto "
         "(exact while queries x shard vectors x dims is at most 3e10, about 2-3 s of brute force on a "
         "2-core worker and the measured crossover with ScaNN; else scann).",
         choices=("auto", "scann", "exact"), group=_INDEX),
    Flag("num_shards", "int", Derived("ceil(candidates / max_shard_vectors)"), "Candidate shards (one index "
         "each).", min=1, group=_INDEX),
    Flag("max_shard_vectors", "int", 1_000_000, "Most vectors in one shard.", min=1,
         note=" (and no more than fits --worker_memory_gb)", group=_INDEX),
    Flag("worker_memory_gb", "float", 4.0, "Memory one worker may spend on one shard's index (build and "
         "search); bounds the shard size from the vector count and dims.", min=0.01, group=_INDEX),
    Flag("routing", "choice", "auto", "How queries reach shards: all (every shard), centroids (train "
         "k-means centroids once, place candidates by nearest centroid, search only the shards of each "
         "query's --probe_shards nearest partitions), or auto (centroids placement; routing once there "
         "are more than 4 shards).", choices=("auto", "all", "centroids"), group=_INDEX),
    Flag("probe_shards", "int", 4, "Partitions probed per query with centroid routing (4 partitions per "
         "shard).", min=1, note="; with --target_recall, the fewest that reach it on the tuning sample",
         group=_INDEX),
    Flag("scann_num_leaves", "int", Derived("2*sqrt(shard size)"), "ScaNN tree leaves per shard.", min=1,
         group=_INDEX),
    Flag("scann_leaves_to_search", "int", Derived(f"1.5*sqrt(leaves), between {_lo} and {_hi}"),
         "ScaNN leaves searched per query.", min=1, group=_INDEX),
    Flag("scann_quantization", "choice", "ah", "ScaNN scoring: ah (anisotropic hashing) or brute (exact "
         "float scoring in the tree).", choices=("ah", "brute"), group=_INDEX),
    Flag("scann_anisotropic_threshold", "float", 0.2, "Anisotropic quantization threshold (dot/cosine).",
         min=0.0, group=_INDEX),
    Flag("scann_reorder", "int", Derived(f"{SCANN_REORDER} ({SCANN_REORDER_SQUARED_L2} for squared_l2)"),
         "ScaNN exact reorder depth (0 disables).", min=0, group=_INDEX),
    Flag("scann_soar_lambda", "float", Derived(
        f"{EMBEDDED_SOAR_LAMBDA:g} when the job embeds records, 0 for precomputed vectors"),
         "SOAR spilling (cosine and dot only): each candidate is also filed in a second leaf, chosen so "
         "that the two leaves' errors are near orthogonal, with this weight; a search then finds a true "
         "match whose nearest leaf it missed. On 100k generated people, true-link recall vs exact at 30 "
         "leaves searched: 0.993 with SOAR, 0.937 without (0.987 at 345 leaves without); on clustered "
         "precomputed vectors (bench.ann_join) it bought no recall and cost 15% more time. The index "
         "holds a second code per vector.", min=0.0, note="; 0 disables", group=_INDEX),
    Flag("scann_training_sample", "int", 250_000, "Most vectors sampled to train each shard's tree (its "
         "k-means takes at most 50 per leaf: 100000 at 2000 leaves).", min=100, group=_INDEX),
    Flag("scann_training_threads", "int", 0, "Threads ScaNN trains a shard's codebook on when the shard "
         "has no tree (one leaf); 0 = all cores. Trees come from a seeded k-means and ScaNN completes "
         "those indexes on one thread, so builds are byte-identical either way.", min=0, group=_INDEX),
    Flag("audit_sample", "int", 1000, "Queries searched exactly (brute force over all candidates) to "
         "measure the run's recall, written to the manifest and metrics: of the relevant neighbours "
         "(within --max_distance, else rank 1 and those within a distance derived from the sample) and "
         "recall@K of every exact top-K neighbour. Deterministic sample.", min=0, note="; 0 disables",
         group=_AUDIT),
    Flag("min_recall", "float", None, "Fail the run (after writing the manifest) when the audited recall "
         "of the relevant neighbours is below this.", min=0.0, max=1.0, unset="no minimum", group=_AUDIT),
    Flag("target_recall", "float", Derived(
        f"{EMBEDDED_TARGET_RECALL:g} when the job embeds records (hashed text embeddings have little "
        "cluster structure), none for precomputed vectors"), "Tune the search effort (the routing probe, "
         "and per ScaNN shard the leaves to search and reorder depth) on a separate query sample before "
         "the main search, to reach this recall of the relevant neighbours (as --audit_sample counts "
         "them), or none.", min=0.0, max=1.0, min_exclusive=True, none_word=True, group=_AUDIT),
    Flag("collapse_duplicates", "bool", True, "Index records with identical prepared content once: the "
         "smallest id represents them, the others are matched through it (link: same neighbours and "
         "distance; dedup: a pair with the representative at the distance of identical vectors, 0 or "
         "-|v|^2 under dot).", group=_MATCH),
    Flag("max_cluster_size", "int", 1000, "Dedup mode: clusters larger than this are flagged as "
         "suspicious giants in the manifest.", min=1, group=_OUT),
    Flag("cluster_max_rounds", "int", 40, "Dedup mode: most Large-Star/Small-Star rounds of the "
         "connected-components step before what is left is finished in one place.", min=1, group=_OUT),
    Flag("rescore", "choice", "exact", "Final distance of emitted pairs: exact (the chosen distance on the "
         "float vectors) or wasserstein (1-D Wasserstein distance of the vectors' values).",
         choices=("exact", "wasserstein"), group=_MATCH),
    Flag("scorer", "choice", Derived("fields when the job embeds records (model when --scoring_model is "
         "given), none for precomputed vectors"), "Pairwise scoring of the candidate pairs after the "
         "merge: fields (compare the records' --text_fields/--numeric_fields: exact, "
         "Jaro-Winkler/token-sort/character-gram, date-aware and relative-difference levels, combined by "
         "a Fellegi-Sunter model fitted by EM on the run's own candidate pairs, u from random pairs, "
         "term-frequency adjusted) adds match_weight and match_probability columns and (link mode) ranks "
         "each query's pairs by them; none keeps the distance only. model scores with a fitted model "
         "given by --scoring_model instead of fitting one.", choices=("none", "fields", "model"),
         group=_MATCH),
    Flag("scoring_model", "str", None, "A fitted scoring model (an earlier run's DIR/scoring/model.json, "
         "same fields) for --scorer model: scheduled runs score alike, with no EM; the distance levels "
         "are the model's, term frequencies this run's.", group=_MATCH),
    Flag("min_probability", "float", DEFAULT_MIN_PROBABILITY, "With a scorer: drop pairs whose "
         "match_probability is below this (0 keeps every candidate pair).", min=0.0, max=1.0,
         group=_MATCH),
    Flag("index_dir", "str", None, "Reuse the shard indices (and routing centroids) of an earlier run's "
         "output directory: --queries are matched against them without rebuilding; --candidates then "
         "only with --append.", group=_INDEX),
    Flag("append", "bool", False, "With --index_dir: add --candidates to the kept index; only the shards "
         "they land in are rebuilt (under --output), the others are used in place.", group=_INDEX),
    # --- outputs
    Flag("output", "str", None, "Output directory (local path or gs://). It must be empty or new unless "
         "--overwrite.", required=True, group=_OUT, template="gcs_output"),
    Flag("overwrite", "bool", False, "Replace the run already in --output (finished, failed or killed): "
         "its outputs are deleted before this run starts. A directory holding other files, or an input "
         "of this run, is refused even so.", group=_OUT),
    Flag("output_format", "choice", "parquet", "Match file format.", choices=OUTPUT_FORMATS, group=_OUT),
    Flag("num_output_shards", "int", Derived("sized from the query count"), "Number of match files.",
         min=1, group=_OUT),
    Flag("max_bad_record_ratio", "float", 0.01, "Fail the run when dead letters / records read exceeds "
         "this.", min=0.0, max=1.0, group=_BAD),
    Flag("max_bad_files", "int", 0, "Input files that cannot be read to their end and whose row count is "
         "unknown (not parquet, parquet without a readable footer, a truncated or corrupt gzip stream, "
         "lost TFRecord framing, an unknown extension) the run tolerates; more fail it, naming the files. "
         "Each counts as one rejected row.", min=0, group=_BAD),
    Flag("batch_size", "int", 4096, "Rows per batch moved between stages.", min=1, group=_PERF),
    Flag("spill_min_mb", "float", 1.0, "A batch's candidate rows of one shard holding at least this many "
         "MB of vectors reach the shard through a spill file (under --temp_location, else the output) "
         "instead of the shuffle; smaller pieces take the shuffle. 0 turns spilling off.", min=0.0,
         group=_PERF),
]

FLAGS: dict[str, Flag] = {f.name: f for f in JOB_FLAGS}
# Every flag's default that is a value (not Derived, not unset): composites' keyword defaults use these.
DEFAULTS: dict[str, Any] = {f.name: f.default for f in JOB_FLAGS if not f.derived and f.default is not None}
# group -> its flags' names, in table order.
FLAG_GROUPS: dict[str, tuple[str, ...]] = {
    group: tuple(f.name for f in JOB_FLAGS if f.group == group) for group in GROUPS}


def parse_flags(raw: dict[str, Any]) -> dict[str, Any]:
    """Every job flag's parsed value from a dict of raw values (missing keys: not given).

    Raises:
        ConfigError: naming the first flag (in table order) whose value is malformed.
    """
    return {f.name: f.parse(raw.get(f.name)) for f in JOB_FLAGS}


def add_to_argparse(parser, names, **help_overrides: str) -> None:
    """Declares the job flags ``names`` on ``parser`` as typed arguments (another command sharing them);
    ``help_overrides`` maps a name to help worded for that command."""
    for name in names:
        overrides = {"help": help_overrides[name]} if name in help_overrides else {}
        FLAGS[name].add_to(parser, **overrides)
