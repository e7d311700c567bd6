"""The kept index of an earlier run (``--index_dir``): read at launch, checked against this run, and
what this run records for a later one.

:func:`read_kept_index` reads the index manifest once, before any pipeline exists, into a
:class:`KeptIndex`; :func:`check_kept_index` refuses an index built with another distance, other
features or another model; :func:`index_static` is what a fresh index's manifest records so that a
later run can be checked. Nothing here builds or searches an index.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from beam_jobs.config import TREE_TRAINING, MatchConfig
from transforms.common.errors import ConfigError

__all__ = ["KeptIndex", "read_kept_index", "check_kept_index", "index_static"]


class KeptIndex(NamedTuple):
    """What a run needs of a kept index: its shards, routing plan and dims, and the manifest it was
    written with (``manifest``: the fields :func:`check_kept_index` compares)."""

    shards: tuple  # ShardIndexInfo per shard
    plan: Any  # RoutingPlan, or None for an index written before routing plans
    dims: int | None
    candidates_indexed: int
    aliases_glob: str | None  # the alias map of its collapsed exact duplicates, if it has one
    transform_fn_used: str | None  # where its preprocessing lives (a later run must embed with it)
    manifest: Mapping[str, Any]

    @property
    def num_shards(self) -> int:
        return self.plan.num_shards if self.plan is not None else len(self.shards)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> KeptIndex:
        """From ``transforms.index.index_manifest.read_index_manifest``'s dict."""
        return cls(shards=tuple(manifest["shards"]), plan=manifest.get("plan"), dims=manifest.get("dims"),
                   candidates_indexed=manifest.get("candidates_indexed", 0),
                   aliases_glob=manifest.get("aliases_glob"),
                   transform_fn_used=manifest.get("transform_fn_used"), manifest=manifest)


def read_kept_index(index_dir: str) -> KeptIndex:
    """The index manifest under ``index_dir`` (FileNotFoundError naming --index_dir when absent)."""
    from transforms.index.index_manifest import read_index_manifest

    return KeptIndex.from_manifest(read_index_manifest(index_dir))


def index_static(cfg: MatchConfig, model_fp: str | None = None) -> dict[str, Any]:
    """What a later --index_dir run must agree with."""
    from transforms.run.manifest import stack_versions

    if cfg.embeds and model_fp is None:
        from transforms.features.model_ref import model_fingerprint

        model_fp = model_fingerprint(cfg.model_dir, cfg.text_fields, cfg.numeric_fields)
    return {"format_version": 1, "distance": cfg.distance, "index": cfg.index, "id_field": cfg.id_field,
            "vector_field": None if cfg.embeds else cfg.vector_field,
            "text_fields": list(cfg.text_fields), "numeric_fields": list(cfg.numeric_fields),
            "image_field": cfg.image_field,
            "model_dir": cfg.model_dir, "model_fingerprint": model_fp if cfg.embeds else None,
            "model_input": cfg.model_input._asdict() if cfg.model_input else None,
            "text_pooling": cfg.text_feed[0], "text_separator": cfg.text_feed[1],
            "transform_fn_dir": cfg.transform_fn_dir,
            # Where this run's preprocessing lives: a later --index_dir run must embed with it.
            "transform_fn_used": (cfg.transform_fn_dir or f"{cfg.output}/transform_fn")
            if cfg.preprocesses else None,
            # How ScaNN shards' trees were trained (absent: ScaNN's k-means++, before issue #14): an
            # --append rebuilds some shards, so it must not mix schemes within one index.
            "tree_training": TREE_TRAINING,
            "versions": stack_versions()}


def check_kept_index(cfg: MatchConfig, kept: Mapping[str, Any], model_fp: str | None = None) -> None:
    """A kept index (its manifest, ``KeptIndex.manifest``) must have been built with the same
    distance, features and model (by content fingerprint, see transforms.features.model_ref): else
    ConfigError."""
    for flag, ours in (("distance", cfg.distance), ("id_field", cfg.id_field),
                       ("text_fields", list(cfg.text_fields)),
                       ("numeric_fields", list(cfg.numeric_fields)),
                       ("image_field", cfg.image_field),
                       # how raw text becomes the model's input changes the vectors too
                       ("text_pooling", cfg.text_feed[0]), ("text_separator", cfg.text_feed[1])):
        if kept.get(flag) != ours:
            raise ConfigError(f"--index_dir {cfg.index_dir} was built with --{flag} {kept.get(flag)!r}; "
                              f"this run has --{flag} {ours!r}")
    scann_shards = any(getattr(s, "kind", None) == "scann" for s in kept.get("shards", ()))
    if cfg.append and scann_shards and kept.get("tree_training", "scann_kmeans++") != TREE_TRAINING:
        raise ConfigError(f"--append: --index_dir {cfg.index_dir} was built by an older version whose "
                          f"ScaNN trees were trained by {kept.get('tree_training', 'scann_kmeans++')}; "
                          f"this version trains them by {TREE_TRAINING} and would mix the two in one "
                          "index: rebuild the index without --index_dir (searching it as it is, "
                          "without --append, is fine)")
    if cfg.embeds:
        _check_model(cfg, kept, model_fp)


def _check_model(cfg: MatchConfig, kept: Mapping[str, Any], model_fp: str | None) -> None:
    if kept.get("model_fingerprint") is None:  # an index from before fingerprints: compare paths
        if kept.get("model_dir") != cfg.model_dir:
            raise ConfigError(f"--index_dir {cfg.index_dir} was built with --model_dir "
                              f"{kept.get('model_dir')!r}; this run has --model_dir {cfg.model_dir!r}: "
                              "vectors from different models cannot be compared")
        return
    if kept["model_fingerprint"] != model_fp:
        raise ConfigError(
            f"--model_dir {cfg.model_dir or '(the built-in embedder)'} is not the model --index_dir "
            f"{cfg.index_dir} was built with ({kept.get('model_dir') or 'the built-in embedder'}): "
            f"fingerprint {model_fp} != {kept['model_fingerprint']}; vectors from different models "
            "cannot be compared (rebuild the index, or use the model it was built with)")
