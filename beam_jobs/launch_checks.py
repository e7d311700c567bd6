"""Launch-time checks of the files and directories the flags name, before any pipeline exists.

Each raises ConfigError (a ValueError naming the flag) or, for a corpus glob, ValueError naming the
flag and the file: a bad path found by the pipeline would fail the run after it started. It also
reads ``--model_dir``'s inputs (:func:`resolve_model_input`) and the ``--scoring_model`` file
(:func:`read_scoring_model`). Remote paths are left to the pipeline's reads (one request per file).
Nothing here builds a graph.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os

from beam_jobs.config import MatchConfig
from transforms.common.errors import ConfigError

__all__ = ["check_readable_files", "check_output_path", "check_output_dir", "read_scoring_model",
           "resolve_model_input"]

_LOGGER = logging.getLogger(__name__)


def _is_local(path: str) -> bool:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.get_scheme(path) in (None, "file")


def check_readable_files(pattern: str, flag: str) -> None:
    """Every local file a corpus glob matches can be opened for reading (else ValueError naming the
    flag and the file): a directory or an unreadable file found at the pipeline's read step would
    fail the run after it started. Remote globs are left to the read (one request per file)."""
    if not _is_local(pattern):
        return
    from apache_beam.io.filesystems import FileSystems

    if os.path.islink(pattern) and not os.path.exists(pattern):
        raise ValueError(f"--{flag}: {pattern} is a broken symlink (to {os.readlink(pattern)})")
    for found in FileSystems.match([pattern])[0].metadata_list:
        path = found.path
        if os.path.isdir(path):
            raise ValueError(f"--{flag}: {path} is a directory, not a corpus file")
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise ValueError(f"--{flag}: cannot read {path}: {e.strerror or e}") from None


def check_output_path(output: str) -> None:
    """A local --output must be a directory or creatable as one, in a writable place (else
    ConfigError naming --output), so that the run does not fail at its first write."""
    if not _is_local(output):
        return
    path = os.path.abspath(output.removeprefix("file://"))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"--output {output}: exists and is not a directory")
    existing = path
    while not os.path.exists(existing):  # the nearest ancestor that exists is where mkdir starts
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"--output {output}: cannot be created, {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--output {output}: {existing} is not writable")


def check_output_dir(cfg: MatchConfig) -> None:
    """--output must be empty or new, or hold a run that --overwrite replaces; a kept index must come
    from a run that is not still running (else ConfigError; see transforms.common.run_dir)."""
    from transforms.common.run_dir import check_output_dir as check_dir
    from transforms.common.run_dir import inspect_output_dir, kept_index_run_dir

    check_dir(cfg.output, overwrite=cfg.overwrite, inputs={
        flag: getattr(cfg, flag) for flag in ("queries", "candidates", "input", "index_dir",
                                              "transform_fn_dir", "model_dir", "scoring_model",
                                              "calibration")})
    if cfg.index_dir:
        kept_run = inspect_output_dir(kept_index_run_dir(cfg.index_dir))
        if kept_run.exit_state == "running" and not kept_run.finished:
            raise ConfigError(f"--index_dir {cfg.index_dir}: the run that wrote it has not finished "
                              "(exit_state running: still running, or killed)")


@functools.lru_cache(maxsize=4)
def read_scoring_model(cfg: MatchConfig) -> str:
    """The --scoring_model file's text, checked against this job's fields (else ConfigError); read
    once per config (prepare checks it, the scoring stage passes it on)."""
    from transforms.common.artifacts import read_text
    from transforms.scoring.fellegi_sunter import FellegiSunterModel
    from transforms.scoring.score_pairs import DISTANCE_FIELD

    try:
        text = read_text(cfg.scoring_model)
        model = FellegiSunterModel.from_json(text)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"--scoring_model {cfg.scoring_model}: not a scoring model ({e})") from None
    want = tuple(cfg.text_fields) + tuple(cfg.numeric_fields) + (DISTANCE_FIELD,)
    if model.fields != want or not model.fit.get("distance_cuts"):
        raise ConfigError(f"--scoring_model {cfg.scoring_model} compares {list(model.fields)}; this job "
                          f"compares {list(want)} (--text_fields, --numeric_fields)")
    return text


def resolve_model_input(cfg: MatchConfig) -> MatchConfig:
    """The config with ``model_input`` read from ``--model_dir``'s serving signature (or Keras
    inputs), and the flags that depend on it checked: else ConfigError naming the flag and the
    signature's inputs. The built-in embedder and precomputed vectors have nothing to read."""
    if not cfg.model_dir or not cfg.embeds or cfg.model_input is not None:
        return cfg
    from transforms.features.model_ref import ModelNotFoundError
    from transforms.features.model_signature import read_model_inputs
    from transforms.features.model_signature import resolve_model_input as resolve

    features = ()
    if cfg.text_fields or cfg.numeric_fields:
        from transforms.features.preprocess import output_feature_keys

        features = output_feature_keys(cfg.text_fields, cfg.numeric_fields)
    try:
        found = resolve(read_model_inputs(cfg.model_dir), model_dir=cfg.model_dir,
                        text_fields=cfg.text_fields, numeric_fields=cfg.numeric_fields,
                        image_field=cfg.image_field, feature_names=features)
    except (ModelNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from None
    if found.kind != "text":
        for name in ("text_pooling", "text_separator"):
            if getattr(cfg, name) is not None:
                raise ConfigError(f"--{name}: --model_dir {cfg.model_dir} takes {found.kind}, not one "
                                  "tf.string input of raw text")
    if found.kind == "text" and cfg.transform_fn_dir:
        raise ConfigError(f"--transform_fn_dir: --model_dir {cfg.model_dir} takes raw text; nothing is "
                          "preprocessed")
    _LOGGER.info("--model_dir %s takes %s", cfg.model_dir, found)
    return dataclasses.replace(cfg, model_input=found)
