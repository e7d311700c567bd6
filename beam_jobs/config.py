"""Turns :class:`beam_jobs.options.MatchOptions` into one frozen, validated :class:`MatchConfig`.

All string parsing (Flex Templates pass ``'false'``, ``'10'``) and cross-field rules live here, and every
error is a ``ValueError`` naming the flag, raised before any pipeline is built. DoFns receive the
config (or parts of it), never PipelineOptions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from transforms.common.errors import ConfigError
from transforms.common.schema import DISTANCES, INPUT_FORMATS, OUTPUT_FORMATS
from transforms.features.model_signature import ModelInput
from transforms.scoring.fellegi_sunter import DEFAULT_MIN_PROBABILITY

__all__ = ["MatchConfig", "ConfigError", "config_from_options", "scann_params_for", "TREE_TRAINING"]


def _int(flags: dict, name: str, default: int | None, minimum: int | None = None) -> int | None:
    value = flags.get(name)
    if value is None or value == "":
        return default
    try:
        parsed = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"--{name} must be an integer, got {value!r}") from None
    if minimum is not None and parsed < minimum:
        raise ConfigError(f"--{name} must be >= {minimum}, got {parsed}")
    return parsed


def _float(flags: dict, name: str, default: float | None, lo: float | None = None,
           hi: float | None = None) -> float | None:
    value = flags.get(name)
    if value is None or value == "":
        return default
    try:
        parsed = float(str(value).strip())
    except ValueError:
        raise ConfigError(f"--{name} must be a number, got {value!r}") from None
    if not math.isfinite(parsed) or (lo is not None and parsed < lo) or (hi is not None and parsed > hi):
        bounds = (f"in [{lo:g}, {hi:g}]" if lo is not None and hi is not None
                  else f">= {lo:g}" if lo is not None else f"<= {hi:g}" if hi is not None else "")
        raise ConfigError(f"--{name} must be a finite number {bounds}, got {value!r}".replace("  ", " "))
    return parsed


def _choice(flags: dict, name: str, choices: tuple[str, ...], default: str) -> str:
    value = flags.get(name)
    if value is None or value == "":
        return default
    value = str(value).strip().lower()
    if value not in choices:
        raise ConfigError(f"--{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _str(flags: dict, name: str, default: str | None = None) -> str | None:
    value = flags.get(name)
    if value is None or str(value).strip() == "":
        return default
    return str(value).strip()


def _bool(flags: dict, name: str, default: bool) -> bool:
    value = flags.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ConfigError(f"--{name} must be true or false, got {value!r}")


def _list(flags: dict, name: str) -> tuple[str, ...]:
    value = _str(flags, name)
    if value is None:
        return ()
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if len(set(items)) != len(items):
        raise ConfigError(f"--{name} lists a field twice: {value!r}")
    return items


@dataclasses.dataclass(frozen=True)
class MatchConfig:
    """Validated settings of one match run. See beam_jobs/options.py for each flag's meaning."""

    mode: str  # 'link' or 'dedup'
    queries: str | None
    candidates: str | None
    input: str | None
    output: str
    overwrite: bool = False
    input_format: str = "auto"
    id_field: str = "id"
    vector_field: str = "embedding"
    text_fields: tuple[str, ...] = ()
    numeric_fields: tuple[str, ...] = ()
    model_dir: str | None = None
    image_field: str | None = None
    text_pooling: str | None = None  # None: not given (join)
    text_separator: str | None = None  # None: not given (one space)
    # What --model_dir takes (transforms.model_signature), read from the model at launch; None for
    # the built-in embedder or before launch has read it.
    model_input: ModelInput | None = None
    transform_fn_dir: str | None = None
    embed_batch_size: int = 4096
    embed_min_batch_size: int = 64
    embed_max_batch_size: int = 4096
    top_k: int = 10
    distance: str = "cosine"
    max_distance: float | None = None
    calibration: str | None = None
    index: str = "auto"
    num_shards: int | None = None
    max_shard_vectors: int = 1_000_000
    worker_memory_gb: float = 4.0
    routing: str = "auto"
    probe_shards: int = 4
    scann_num_leaves: int | None = None
    scann_leaves_to_search: int | None = None
    scann_quantization: str = "ah"
    scann_anisotropic_threshold: float = 0.2
    scann_reorder: int | None = None
    scann_training_sample: int = 250_000
    scann_training_threads: int = 0
    audit_sample: int = 1000
    min_recall: float | None = None
    target_recall: float | None = None
    rescore: str = "exact"
    scorer: str = "none"
    min_probability: float | None = None
    scoring_model: str | None = None
    collapse_duplicates: bool = True
    max_cluster_size: int = 1000
    cluster_max_rounds: int = 40
    index_dir: str | None = None
    append: bool = False
    output_format: str = "parquet"
    num_output_shards: int | None = None
    max_bad_record_ratio: float = 0.01
    max_bad_files: int = 0
    max_id_length: int = 1024
    batch_size: int = 4096
    spill_min_mb: float = 1.0

    @property
    def embeds(self) -> bool:
        """True when records are embedded in the pipeline rather than carrying vectors."""
        return bool(self.text_fields or self.numeric_fields or self.image_field)

    @property
    def preprocesses(self) -> bool:
        """True when the records go through tf.Transform before the model: the built-in embedder and
        models taking preprocessed features; False for raw-text and image models."""
        return self.embeds and not self.image_field and (
            self.model_input is None or self.model_input.kind == "features")

    @property
    def text_feed(self) -> tuple[str | None, str | None]:
        """How a raw-text model gets the text: (pooling, separator) with the defaults filled in (the
        separator None under mean pooling); (None, None) for any other model."""
        if self.model_input is None or self.model_input.kind != "text":
            return None, None
        pooling = self.text_pooling or "join"
        if pooling != "join":
            return pooling, None
        return pooling, " " if self.text_separator is None else self.text_separator

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model_input"] = self.model_input._asdict() if self.model_input else None
        return out


_CALIBRATED = ("max_distance", "min_probability", "scoring_model")


def _beside(calibration: str, model: str) -> str:
    """The scoring model a calibration file names: a relative name is beside the file (calibrate
    writes it so); an absolute path or URI as it is."""
    import posixpath

    if "://" in model or posixpath.isabs(model):
        return model
    return posixpath.join(posixpath.dirname(calibration), model)


def _apply_calibration(flags: dict) -> dict:
    """The flags with a --calibration file's choices filled in: its max_distance (a distance
    calibration) or min_probability and, when `calibrate --fit_scorer` refitted the scorer, its
    scoring_model. Giving one of those flags as well is an error (the file is the decision)."""
    path = _str(flags, "calibration")
    if path is None:
        return flags
    import json

    from transforms.common.artifacts import read_text

    try:
        data = json.loads(read_text(path))
        found = {k: data[k] for k in _CALIBRATED if data.get(k) is not None}
        if "max_distance" not in found and "min_probability" not in found:
            raise KeyError("max_distance")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"--calibration {path}: not a calibration file with max_distance or "
                          f"min_probability ({e})") from None
    for name in found:
        if _str(flags, name) is not None:
            raise ConfigError(f"give --{name} or --calibration, not both")
    if isinstance(found.get("scoring_model"), str):
        found["scoring_model"] = _beside(path, found["scoring_model"])
    _float({"calibration": found.get("max_distance")}, "calibration", None)
    _float({"calibration": found.get("min_probability")}, "calibration", None, 0.0, 1.0)
    return {**flags, **{k: str(v) for k, v in found.items()}}


def config_from_flags(flags: dict[str, Any]) -> MatchConfig:
    """Builds a MatchConfig from a dict of raw flag values (strings, numbers or None)."""
    flags = _apply_calibration(flags)
    queries, candidates, input_glob = (_str(flags, n) for n in ("queries", "candidates", "input"))
    index_dir, append = _str(flags, "index_dir"), _bool(flags, "append", False)
    if input_glob and (queries or candidates):
        raise ConfigError("give either --input (dedup mode) or --queries with --candidates (link "
                          "mode), not both")
    if append and not index_dir:
        raise ConfigError("--append adds candidates to a kept index: give --index_dir too")
    if index_dir and input_glob:
        raise ConfigError("--index_dir is for link mode (--queries against a kept index); dedup "
                          "mode (--input) builds its own index")
    if index_dir and append and not candidates:
        raise ConfigError("--append needs --candidates (the new candidates to add)")
    if index_dir and candidates and not append:
        raise ConfigError("with --index_dir, --candidates are only read with --append")
    if input_glob:
        mode = "dedup"
    elif queries and index_dir:
        mode = "link"
    elif queries and candidates:
        mode = "link"
    elif queries or candidates:
        missing = "--candidates" if queries else "--queries"
        raise ConfigError(f"link mode needs both --queries and --candidates; {missing} is missing")
    else:
        raise ConfigError("no input: give --input GLOB (dedup mode) or --queries GLOB and "
                          "--candidates GLOB (link mode)")
    output = _str(flags, "output")
    if not output:
        raise ConfigError("--output DIR is required")

    text_fields, numeric_fields = _list(flags, "text_fields"), _list(flags, "numeric_fields")
    both = set(text_fields) & set(numeric_fields)
    if both:
        raise ConfigError(f"--text_fields and --numeric_fields both list {sorted(both)}")
    id_field = _str(flags, "id_field", "id")
    if id_field in text_fields or id_field in numeric_fields:
        raise ConfigError(f"--id_field {id_field!r} cannot also be embedded (--text_fields / "
                          "--numeric_fields)")
    image_field = _str(flags, "image_field")
    if image_field and (text_fields or numeric_fields):
        raise ConfigError("--image_field feeds an image model: give it or --text_fields/--numeric_fields, "
                          "not both")
    if image_field and not _str(flags, "model_dir"):
        raise ConfigError("--image_field needs --model_dir (an image model); the built-in embedder "
                          "reads --text_fields/--numeric_fields")
    if image_field and image_field == id_field:
        raise ConfigError(f"--image_field {image_field!r} is the --id_field")
    if image_field and _str(flags, "transform_fn_dir"):
        raise ConfigError("--transform_fn_dir: an image model (--image_field) takes no preprocessed "
                          "features")
    text_separator = flags.get("text_separator")  # not stripped: spaces are the point
    text_separator = None if text_separator is None or text_separator == "" else str(text_separator)
    for name in ("text_pooling", "text_separator"):
        if flags.get(name) not in (None, "") and (not _str(flags, "model_dir") or not text_fields):
            raise ConfigError(f"--{name} is for a --model_dir taking raw text (one tf.string input) "
                              "with --text_fields")
    if text_separator is not None and _str(flags, "text_pooling") == "mean":
        raise ConfigError("--text_separator joins fields (--text_pooling join); --text_pooling mean "
                          "embeds each field alone")
    embeds = bool(text_fields or numeric_fields or image_field)
    compares = bool(text_fields or numeric_fields)  # what the pairwise scorer compares
    for name in ("model_dir", "transform_fn_dir"):
        if _str(flags, name) and not embeds:
            raise ConfigError(f"--{name} needs --text_fields, --numeric_fields or --image_field")

    cfg = MatchConfig(
        mode=mode,
        queries=queries,
        candidates=candidates,
        input=input_glob,
        output=output.rstrip("/"),
        overwrite=_bool(flags, "overwrite", False),
        input_format=_choice(flags, "input_format", INPUT_FORMATS, "auto"),
        id_field=id_field,
        vector_field=_str(flags, "vector_field", "embedding"),
        text_fields=text_fields,
        numeric_fields=numeric_fields,
        model_dir=_str(flags, "model_dir"),
        image_field=image_field,
        text_pooling=(_choice(flags, "text_pooling", TEXT_POOLINGS, "join")
                      if _str(flags, "text_pooling") else None),
        text_separator=text_separator,
        transform_fn_dir=_str(flags, "transform_fn_dir"),
        embed_batch_size=_int(flags, "embed_batch_size", 4096, 1),
        embed_min_batch_size=_int(flags, "embed_min_batch_size", 64, 1),
        embed_max_batch_size=_int(flags, "embed_max_batch_size", 4096, 1),
        top_k=_int(flags, "top_k", 10, 1),
        distance=_choice(flags, "distance", DISTANCES, "cosine"),
        max_distance=_float(flags, "max_distance", None),
        calibration=_str(flags, "calibration"),
        index=_choice(flags, "index", INDEX_CHOICES, "auto"),
        num_shards=_int(flags, "num_shards", None, 1),
        max_shard_vectors=_int(flags, "max_shard_vectors", 1_000_000, 1),
        worker_memory_gb=_float(flags, "worker_memory_gb", 4.0, 0.01),
        routing=_choice(flags, "routing", ("auto", "all", "centroids"), "auto"),
        probe_shards=_int(flags, "probe_shards", 4, 1),
        scann_num_leaves=_int(flags, "scann_num_leaves", None, 1),
        scann_leaves_to_search=_int(flags, "scann_leaves_to_search", None, 1),
        scann_quantization=_choice(flags, "scann_quantization", ("ah", "brute"), "ah"),
        scann_anisotropic_threshold=_float(flags, "scann_anisotropic_threshold", 0.2, 0.0),
        scann_reorder=_int(flags, "scann_reorder", None, 0),
        scann_training_sample=_int(flags, "scann_training_sample", 250_000, 100),
        scann_training_threads=_int(flags, "scann_training_threads", 0, 0),
        audit_sample=_int(flags, "audit_sample", 1000, 0),
        min_recall=_float(flags, "min_recall", None, 0.0, 1.0),
        target_recall=_target_recall(flags, embeds),
        collapse_duplicates=_bool(flags, "collapse_duplicates", True),
        max_cluster_size=_int(flags, "max_cluster_size", 1000, 1),
        cluster_max_rounds=_int(flags, "cluster_max_rounds", 40, 1),
        index_dir=index_dir.rstrip("/") if index_dir else None,
        append=append,
        rescore=_choice(flags, "rescore", ("exact", "wasserstein"), "exact"),
        scorer=_scorer(flags, compares),
        min_probability=_min_probability(flags, compares),
        scoring_model=_str(flags, "scoring_model"),
        output_format=_choice(flags, "output_format", OUTPUT_FORMATS, "parquet"),
        num_output_shards=_int(flags, "num_output_shards", None, 1),
        max_bad_record_ratio=_float(flags, "max_bad_record_ratio", 0.01, 0.0, 1.0),
        max_bad_files=_int(flags, "max_bad_files", 0, 0),
        max_id_length=_int(flags, "max_id_length", 1024, 1),
        batch_size=_int(flags, "batch_size", 4096, 1),
        spill_min_mb=_float(flags, "spill_min_mb", 1.0, lo=0.0),
    )
    for name in ("min_recall", "target_recall"):
        if getattr(cfg, name) is not None and cfg.audit_sample == 0:
            raise ConfigError(f"--{name} needs the recall audit: set --audit_sample > 0")
    if cfg.target_recall is not None and cfg.index == "exact" and cfg.routing == "all":
        raise ConfigError("--target_recall tunes ScaNN search effort and the routing probe; with "
                          "--index exact and --routing all there is nothing to tune")
    if cfg.scorer != "none" and not compares:
        raise ConfigError(f"--scorer {cfg.scorer} compares the records' --text_fields/--numeric_fields: "
                          "give them, or --scorer none for precomputed vectors and images")
    if cfg.scorer == "model" and not cfg.scoring_model:
        raise ConfigError("--scorer model needs --scoring_model (a fitted DIR/scoring/model.json)")
    if cfg.scoring_model and cfg.scorer != "model":
        raise ConfigError("--scoring_model is used by --scorer model only")
    if cfg.scorer != "none" and cfg.index_dir:
        if _str(flags, "scorer") or cfg.scoring_model:
            raise ConfigError(f"--scorer {cfg.scorer} compares both records of a pair, and a kept index "
                              "(--index_dir) does not keep the candidates' records: use --scorer none")
        cfg = dataclasses.replace(cfg, scorer="none", min_probability=None)
    if cfg.scorer == "none" and _str(flags, "min_probability") is not None:
        raise ConfigError("--min_probability needs a scorer (--scorer fields or model)")
    if cfg.target_recall == 0:
        raise ConfigError("--target_recall must be > 0")
    _check_max_distance(cfg)
    if cfg.embed_min_batch_size > cfg.embed_max_batch_size:
        raise ConfigError("--embed_min_batch_size must be <= --embed_max_batch_size")
    if cfg.scann_num_leaves and cfg.scann_training_sample < cfg.scann_num_leaves:
        raise ConfigError("--scann_training_sample must be >= --scann_num_leaves (each leaf needs "
                          "training points)")
    if (cfg.scann_num_leaves and cfg.scann_leaves_to_search
            and cfg.scann_leaves_to_search > cfg.scann_num_leaves):
        raise ConfigError("--scann_leaves_to_search must be <= --scann_num_leaves")
    return cfg


INDEX_CHOICES = ("auto", "scann", "exact")
TEXT_POOLINGS = ("join", "mean")  # as transforms.raw_inputs.TEXT_POOLINGS (kept Beam-free here)
# The smallest distance each --distance can report (dot, -dot, has none): a --max_distance below it
# would drop every pair. Cosine (1 - cos) lies in [0, 2]; squared L2 and the Wasserstein rescore are >= 0.
_LOWEST_DISTANCE = {"cosine": 0.0, "squared_l2": 0.0}


def _check_max_distance(cfg: MatchConfig) -> None:
    if cfg.max_distance is None:
        return
    source = f"--calibration {cfg.calibration}'s max_distance" if cfg.calibration else "--max_distance"
    lowest = 0.0 if cfg.rescore == "wasserstein" else _LOWEST_DISTANCE.get(cfg.distance)
    if lowest is not None and cfg.max_distance < lowest:
        measure = ("--rescore wasserstein distances are" if cfg.rescore == "wasserstein"
                   else "cosine distance (1 - cos) is in [0, 2]" if cfg.distance == "cosine"
                   else "squared L2 distances are")
        raise ConfigError(f"{source} {cfg.max_distance:g} would drop every pair: {measure}"
                          f"{'' if cfg.distance == 'cosine' and cfg.rescore != 'wasserstein' else ' >= 0'}")


def _scorer(flags: dict, compares: bool) -> str:
    """--scorer; default fields when the job embeds text/numeric fields (model with
    --scoring_model), else none (precomputed vectors, images)."""
    default = ("model" if _str(flags, "scoring_model") else "fields") if compares else "none"
    return _choice(flags, "scorer", ("none", "fields", "model"), default)


def _min_probability(flags: dict, compares: bool) -> float | None:
    """--min_probability in [0, 1]; default 0.5 when a scorer runs (0 keeps every pair)."""
    scorer = _scorer(flags, compares)
    value = _float(flags, "min_probability", None, 0.0, 1.0)
    if scorer == "none":
        return None
    return DEFAULT_MIN_PROBABILITY if value is None else (value or None)

# --target_recall when the job embeds records and the flag is not given. Hashed text embeddings have
# little cluster structure: on generated people a fixed 15 of 89 leaves found 0.64 of the exact
# top-10 (true-link recall@10 0.979); tuning on the audit sample fixes that where it is needed. The
# target counts the relevant neighbours (rank 1 and those within the audit's derived cutoff): at
# 100k generated people 0.95 of them kept 0.976 of the true links exact search finds, 0.98 about
# the 0.987 of the old all-slots target at the same cost, 0.99 kept 0.997 at 1.5x the leaves.
EMBEDDED_TARGET_RECALL = 0.98


def _target_recall(flags: dict, embeds: bool) -> float | None:
    """--target_recall: a number, 'none' (no tuning), or unset (EMBEDDED_TARGET_RECALL when the job
    embeds records with ScaNN and audits; no tuning for precomputed vectors, whose defaults come from
    measured operating points)."""
    raw = flags.get("target_recall")
    if raw is not None and str(raw).strip().lower() == "none":
        return None
    if raw is None or raw == "":
        tunable = (_choice(flags, "index", INDEX_CHOICES, "auto") != "exact"
                   and _int(flags, "audit_sample", 1000, 0) > 0)
        return EMBEDDED_TARGET_RECALL if embeds and tunable else None
    return _float(flags, "target_recall", None, 0.0, 1.0)


def config_from_options(options) -> MatchConfig:
    """Builds the config from a PipelineOptions carrying MatchOptions' flags."""
    from beam_jobs.options import JOB_FLAGS, MatchOptions

    view = options.view_as(MatchOptions).get_all_options(drop_default=False)
    return config_from_flags({name: view.get(name) for name, _, _ in JOB_FLAGS})


# How the job trains ScaNN shards' trees (transforms.index.TREE_TRAINING_SAMPLED; kept here as a
# literal so this module does not import the index code). Recorded in the index manifest.
TREE_TRAINING = "sampled_kmeans"


def scann_params_for(cfg: MatchConfig, shard_size: int) -> dict[str, Any]:
    """ScaNN build/search parameters for a shard of ``shard_size`` vectors.

    Defaults follow the measured operating points in shared/FACTS.md: 2000 leaves at 1M vectors,
    600 at 100k (about 2*sqrt(n)); leaves searched about 1.5*sqrt(leaves), capped at 30 (recall@10
    ~0.97-0.99 at those sizes there); reorder 100 (200 bought nothing there), but 200 for squared_l2, where
    hashing cannot use the anisotropic loss and reorder 100 gave recall@10 0.94 in tests/transforms.
    """
    num_leaves = cfg.scann_num_leaves or max(1, min(shard_size, round(2 * math.sqrt(shard_size))))
    num_leaves = min(num_leaves, shard_size)
    # 1.5*sqrt(leaves), at least 8, at most 30: FACTS.md measured recall@10 0.967 at 30 of 600
    # leaves (100k) and 0.971-0.992 at 10-60 of 2000 (1M); more leaves cost search time for little.
    to_search = cfg.scann_leaves_to_search or min(30, max(8, math.ceil(1.5 * math.sqrt(num_leaves))))
    return {
        "num_leaves": num_leaves,
        "num_leaves_to_search": min(to_search, num_leaves),
        "training_sample_size": min(cfg.scann_training_sample, shard_size),
        "quantization": cfg.scann_quantization,
        "anisotropic_quantization_threshold": cfg.scann_anisotropic_threshold,
        "reorder": (cfg.scann_reorder if cfg.scann_reorder is not None
                    else 200 if cfg.distance == "squared_l2" else 100),
        "spherical": cfg.distance == "cosine",
        "training_threads": cfg.scann_training_threads,
        # The tree's centres from a seeded k-means sample (transforms.kmeans), not ScaNN's k-means++:
        # byte-identical builds at about half the build time (issue #14).
        "tree_training": TREE_TRAINING,
    }
