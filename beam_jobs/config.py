"""Turns :class:`beam_jobs.options.MatchOptions` into one frozen, validated :class:`MatchConfig`.

Each value is parsed by its flag's spec (``transforms.common.flags``: type, range, choices; Flex
Templates pass ``'false'``, ``'10'``); the cross-field rules live here, in :func:`config_from_flags`.
Every error is a ``ValueError`` naming the flag, raised before any pipeline is built. DoFns receive
the config (or parts of it), never PipelineOptions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from transforms.common.errors import ConfigError
from transforms.common.flags import (
    DEFAULTS,
    EMBEDDED_SOAR_LAMBDA,
    EMBEDDED_TARGET_RECALL,
    FLAGS,
    JOB_FLAGS,
    SCANN_LEAVES_TO_SEARCH_RANGE,
    SCANN_REORDER,
    SCANN_REORDER_SQUARED_L2,
    parse_flags,
)
from transforms.features.model_signature import ModelInput
from transforms.index.params import TREE_TRAINING_SAMPLED, ScannParams

__all__ = ["MatchConfig", "ConfigError", "config_from_flags", "config_from_options", "scann_params",
           "scann_params_for", "ScannParams", "TREE_TRAINING", "EMBEDDED_TARGET_RECALL"]


def _given(flags: dict, name: str) -> bool:
    """Whether the user set the flag (not None, not empty)."""
    return FLAGS[name].given(flags.get(name))


def _str(flags: dict, name: str) -> str | None:
    """A string flag's value as given (stripped), None when not given: for checks before parsing."""
    return FLAGS[name].parse(flags.get(name)) if _given(flags, name) else None


_D = DEFAULTS  # each field's default is its flag's (transforms.common.flags), not a second literal


@dataclasses.dataclass(frozen=True)
class MatchConfig:
    """Validated settings of one match run. See transforms/common/flags.py for each flag's meaning."""

    mode: str  # 'link' or 'dedup'
    queries: str | None
    candidates: str | None
    input: str | None
    output: str
    overwrite: bool = _D["overwrite"]
    input_format: str = _D["input_format"]
    id_field: str = _D["id_field"]
    vector_field: str = _D["vector_field"]
    text_fields: tuple[str, ...] = _D["text_fields"]
    numeric_fields: tuple[str, ...] = _D["numeric_fields"]
    model_dir: str | None = None
    image_field: str | None = None
    text_pooling: str | None = None  # None: not given (join)
    text_separator: str | None = None  # None: not given (one space)
    # What --model_dir takes (transforms.model_signature), read from the model at launch; None for
    # the built-in embedder or before launch has read it.
    model_input: ModelInput | None = None
    transform_fn_dir: str | None = None
    embed_batch_size: int = _D["embed_batch_size"]
    embed_min_batch_size: int = _D["embed_min_batch_size"]
    embed_max_batch_size: int = _D["embed_max_batch_size"]
    top_k: int = _D["top_k"]
    distance: str = _D["distance"]
    max_distance: float | None = None
    calibration: str | None = None
    index: str = _D["index"]
    num_shards: int | None = None
    max_shard_vectors: int = _D["max_shard_vectors"]
    worker_memory_gb: float = _D["worker_memory_gb"]
    routing: str = _D["routing"]
    probe_shards: int = _D["probe_shards"]
    scann_num_leaves: int | None = None
    scann_leaves_to_search: int | None = None
    scann_quantization: str = _D["scann_quantization"]
    scann_anisotropic_threshold: float = _D["scann_anisotropic_threshold"]
    scann_reorder: int | None = None
    scann_training_sample: int = _D["scann_training_sample"]
    scann_training_threads: int = _D["scann_training_threads"]
    scann_soar_lambda: float | None = None  # derived: config_from_flags resolves it; None: off
    audit_sample: int = _D["audit_sample"]
    min_recall: float | None = None
    target_recall: float | None = None
    rescore: str = _D["rescore"]
    scorer: str = "none"
    min_probability: float | None = None
    scoring_model: str | None = None
    collapse_duplicates: bool = _D["collapse_duplicates"]
    max_cluster_size: int = _D["max_cluster_size"]
    cluster_max_rounds: int = _D["cluster_max_rounds"]
    index_dir: str | None = None
    append: bool = _D["append"]
    output_format: str = _D["output_format"]
    num_output_shards: int | None = None
    max_bad_record_ratio: float = _D["max_bad_record_ratio"]
    max_bad_files: int = _D["max_bad_files"]
    max_id_length: int = _D["max_id_length"]
    batch_size: int = _D["batch_size"]
    spill_min_mb: float = _D["spill_min_mb"]

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
        pooling = self.text_pooling or _D["text_pooling"]
        if pooling != "join":
            return pooling, None
        return pooling, _D["text_separator"] if self.text_separator is None else self.text_separator

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
        if _given(flags, name):
            raise ConfigError(f"give --{name} or --calibration, not both")
    if isinstance(found.get("scoring_model"), str):
        found["scoring_model"] = _beside(path, found["scoring_model"])
    for name in ("max_distance", "min_probability"):  # the file's values, checked as the flags would be
        try:
            FLAGS[name].parse(found.get(name))
        except ConfigError as e:
            raise ConfigError(f"--calibration {path}: {e}") from None
    return {**flags, **{k: str(v) for k, v in found.items()}}


def config_from_flags(flags: dict[str, Any]) -> MatchConfig:  # noqa: C901 - one flat list of cross-flag rules
    """Builds a MatchConfig from a dict of raw flag values (strings, numbers or None).

    Each value is parsed by its spec (``transforms.common.flags``), defaults included; what is left here are
    the rules between flags and the defaults derived from other flags.
    """
    flags = _apply_calibration(flags)
    v = parse_flags(flags)  # every flag's value or default; a malformed one fails here, named
    queries, candidates, input_glob = v["queries"], v["candidates"], v["input"]
    index_dir, append = v["index_dir"], v["append"]
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
    if not v["output"]:
        raise ConfigError("--output DIR is required")

    text_fields, numeric_fields = v["text_fields"], v["numeric_fields"]
    both = set(text_fields) & set(numeric_fields)
    if both:
        raise ConfigError(f"--text_fields and --numeric_fields both list {sorted(both)}")
    id_field = v["id_field"]
    if id_field in text_fields or id_field in numeric_fields:
        raise ConfigError(f"--id_field {id_field!r} cannot also be embedded (--text_fields / "
                          "--numeric_fields)")
    image_field = v["image_field"]
    if image_field and (text_fields or numeric_fields):
        raise ConfigError("--image_field feeds an image model: give it or --text_fields/--numeric_fields, "
                          "not both")
    if image_field and not v["model_dir"]:
        raise ConfigError("--image_field needs --model_dir (an image model); the built-in embedder "
                          "reads --text_fields/--numeric_fields")
    if image_field and image_field == id_field:
        raise ConfigError(f"--image_field {image_field!r} is the --id_field")
    if image_field and v["transform_fn_dir"]:
        raise ConfigError("--transform_fn_dir: an image model (--image_field) takes no preprocessed "
                          "features")
    for name in ("text_pooling", "text_separator"):
        if _given(flags, name) and (not v["model_dir"] or not text_fields):
            raise ConfigError(f"--{name} is for a --model_dir taking raw text (one tf.string input) "
                              "with --text_fields")
    if _given(flags, "text_separator") and v["text_pooling"] == "mean":
        raise ConfigError("--text_separator joins fields (--text_pooling join); --text_pooling mean "
                          "embeds each field alone")
    embeds = bool(text_fields or numeric_fields or image_field)
    compares = bool(text_fields or numeric_fields)  # what the pairwise scorer compares
    for name in ("model_dir", "transform_fn_dir"):
        if v[name] and not embeds:
            raise ConfigError(f"--{name} needs --text_fields, --numeric_fields or --image_field")

    fields = {f.name for f in dataclasses.fields(MatchConfig)}
    cfg = MatchConfig(**{
        **{name: value for name, value in v.items() if name in fields},
        "mode": mode,
        "output": v["output"].rstrip("/"),
        "index_dir": index_dir.rstrip("/") if index_dir else None,
        # None when not given: the model decides whether they apply (text_feed fills them in)
        "text_pooling": v["text_pooling"] if _given(flags, "text_pooling") else None,
        "text_separator": v["text_separator"] if _given(flags, "text_separator") else None,
        "target_recall": _target_recall(flags, v, embeds),
        "scann_soar_lambda": (v["scann_soar_lambda"] if _given(flags, "scann_soar_lambda")
                              else EMBEDDED_SOAR_LAMBDA if embeds else 0.0),
        "scorer": _scorer(flags, v, compares),
        "min_probability": _min_probability(flags, v, compares),
    })
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
        if _given(flags, "scorer") or cfg.scoring_model:
            raise ConfigError(f"--scorer {cfg.scorer} compares both records of a pair, and a kept index "
                              "(--index_dir) does not keep the candidates' records: use --scorer none")
        cfg = dataclasses.replace(cfg, scorer="none", min_probability=None)
    if cfg.scorer == "none" and _given(flags, "min_probability"):
        raise ConfigError("--min_probability needs a scorer (--scorer fields or model)")
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


def _scorer(flags: dict, v: dict, compares: bool) -> str:
    """--scorer; default fields when the job embeds text/numeric fields (model with
    --scoring_model), else none (precomputed vectors, images)."""
    if _given(flags, "scorer"):
        return v["scorer"]
    return ("model" if v["scoring_model"] else "fields") if compares else "none"


def _min_probability(flags: dict, v: dict, compares: bool) -> float | None:
    """--min_probability when a scorer runs (0 keeps every pair: None); None without a scorer."""
    if _scorer(flags, v, compares) == "none":
        return None
    return v["min_probability"] or None


def _target_recall(flags: dict, v: dict, embeds: bool) -> float | None:
    """--target_recall: a number, 'none' (no tuning), or unset (EMBEDDED_TARGET_RECALL when the job
    embeds records with ScaNN and audits; no tuning for precomputed vectors, whose defaults come from
    measured operating points)."""
    if _given(flags, "target_recall"):
        return v["target_recall"]  # None for 'none'
    tunable = v["index"] != "exact" and v["audit_sample"] > 0
    return EMBEDDED_TARGET_RECALL if embeds and tunable else None


def config_from_options(options) -> MatchConfig:
    """Builds the config from a PipelineOptions carrying MatchOptions' flags."""
    from beam_jobs.options import MatchOptions

    view = options.view_as(MatchOptions).get_all_options(drop_default=False)
    return config_from_flags({flag.name: view.get(flag.name) for flag in JOB_FLAGS})


# How the job trains ScaNN shards' trees (a seeded k-means sample). Recorded in the index manifest.
TREE_TRAINING = TREE_TRAINING_SAMPLED


def scann_params(cfg: MatchConfig, shard_size: int) -> ScannParams:
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
    lo, hi = SCANN_LEAVES_TO_SEARCH_RANGE
    to_search = cfg.scann_leaves_to_search or min(hi, max(lo, math.ceil(1.5 * math.sqrt(num_leaves))))
    return ScannParams(
        num_leaves=num_leaves,
        num_leaves_to_search=min(to_search, num_leaves),
        training_sample_size=min(cfg.scann_training_sample, shard_size),
        quantization=cfg.scann_quantization,
        anisotropic_quantization_threshold=cfg.scann_anisotropic_threshold,
        reorder=(cfg.scann_reorder if cfg.scann_reorder is not None
                 else SCANN_REORDER_SQUARED_L2 if cfg.distance == "squared_l2" else SCANN_REORDER),
        spherical=cfg.distance == "cosine",
        training_threads=cfg.scann_training_threads,
        # SOAR's second leaf per vector (dot-product measures only; None: off).
        soar_lambda=(cfg.scann_soar_lambda if (cfg.scann_soar_lambda or 0) > 0
                     and cfg.distance != "squared_l2" else None),
        # The tree's centres from a seeded k-means sample (transforms.kmeans), not ScaNN's k-means++:
        # byte-identical builds at about half the build time (issue #14).
        tree_training=TREE_TRAINING,
    )


def scann_params_for(cfg: MatchConfig, shard_size: int) -> dict[str, Any]:
    """:func:`scann_params` as the dict an index keeps (``index.params``, ``index_config.json``)."""
    return scann_params(cfg, shard_size).to_dict()
