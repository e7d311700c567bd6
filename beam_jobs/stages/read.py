"""Stage 1: read -> validate -> (preprocess -> embed) -> check dims, for each corpus the job reads."""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam

from beam_jobs.config import MatchConfig
from transforms.common.flags import DEFAULTS
from transforms.common.schema import Role
from transforms.common.vectors import prepare_embedded
from transforms.io.read_corpus import ReadCorpus
from transforms.io.validate import CheckDims, ValidateRecords

__all__ = ["Corpora", "read_corpora", "roles_read"]


class Corpora(NamedTuple):
    """The corpora read, by role (``transforms.common.schema.Role``)."""

    roles: tuple[str, ...]  # in read order
    vectors: dict  # role -> VectorBatch of the job's length (after the dims check)
    unchecked: dict  # role -> VectorBatch before the dims check (duplicate ids are found on these)
    passing: dict  # role -> singleton int: rows of the job's length
    dims: beam.PCollection  # singleton int: the job's vector length
    rows_read: dict  # role -> singleton int: rows read
    records: dict  # role -> validated FeatureBatch ({} unless the job embeds: the scorer compares them)
    written: tuple  # steps that write outputs (a fresh tf.Transform's transform_fn)
    dead_letters: tuple  # DeadLetter PCollections


def _label(role: str) -> str:
    return role.capitalize()


def roles_read(cfg: MatchConfig, *, reuses_index: bool) -> tuple[str, ...]:
    """The corpora the job reads: the one dedup corpus; link queries, and candidates unless a kept
    index is searched as it is."""
    if cfg.mode == "dedup":
        return (Role.INPUT,)
    return (Role.QUERIES,) if reuses_index else (Role.QUERIES, Role.CANDIDATES)


def read_corpora(p: beam.Pipeline, cfg: MatchConfig, *, roles: tuple[str, ...],
                 expected_dims: int | None) -> Corpora:
    """Reads, validates (and embeds) each role's corpus, then checks every vector's length against
    the job's (``expected_dims``, a kept index's, or the most common length read)."""
    globs = {Role.QUERIES: cfg.queries, Role.CANDIDATES: cfg.candidates, Role.INPUT: cfg.input}
    rows_read, features, dead = {}, {}, []
    for role in roles:
        label = _label(role)
        read = p | f"Read{label}" >> ReadCorpus(file_pattern=globs[role], input_format=cfg.input_format,
                                                role=role, batch_size=cfg.batch_size,
                                                binary_fields=(cfg.image_field,) if cfg.image_field
                                                else ())
        valid = read.batches | f"Validate{label}" >> ValidateRecords(
            role=role, id_field=cfg.id_field, vector_field=cfg.vector_field,
            text_fields=cfg.text_fields, numeric_fields=cfg.numeric_fields, distance=cfg.distance,
            max_id_length=cfg.max_id_length, image_field=cfg.image_field,
            # a raw-text or image model's embed step rejects records with nothing to embed
            allow_empty=cfg.embeds and not cfg.preprocesses)
        rows_read[role] = read.rows_read
        features[role] = valid.batches
        dead += [read.dead_letters, valid.dead_letters]
    written: tuple = ()
    if not cfg.embeds:
        vectors = features
    elif cfg.preprocesses:
        vectors, written = _preprocess_and_embed(cfg, features, dead)
    else:
        vectors = _embed_raw(cfg, features, dead)
    checked = tuple(vectors[r] for r in roles) | "CheckDims" >> CheckDims(expected=expected_dims)
    dead.append(checked.dead_letters)
    return Corpora(roles=roles, vectors=dict(zip(roles, checked.batches, strict=True)), unchecked=vectors,
                   passing=dict(zip(roles, checked.passing, strict=True)), dims=checked.dims,
                   rows_read=rows_read, records=dict(features) if cfg.embeds else {},
                   written=written, dead_letters=tuple(dead))


def _preprocess_and_embed(cfg: MatchConfig, features: dict, dead: list) -> tuple[dict, tuple]:
    """FeatureBatch per role -> tf.Transform (analysed once over all corpora, or a saved
    transform_fn) -> the model (RunInference, batched) -> prepared VectorBatch per role."""
    from transforms.features.embed import EmbedRecords
    from transforms.features.preprocess import AnalyzeAndTransformFeatures

    pre = features | "Preprocess" >> AnalyzeAndTransformFeatures(
        text_fields=cfg.text_fields, numeric_fields=cfg.numeric_fields,
        transform_fn_dir_out=f"{cfg.output}/transform_fn", transform_fn_dir_in=cfg.transform_fn_dir,
        temp_dir=f"{cfg.output}/tmp/tft")
    dead.append(pre.dead_letters)
    vectors = {}
    for role in features:
        label = _label(role)
        embedded = getattr(pre, role) | f"Embed{label}" >> EmbedRecords(
            model_dir=cfg.model_dir, run_dir=cfg.output, text_fields=cfg.text_fields,
            numeric_fields=cfg.numeric_fields, min_batch_size=cfg.embed_min_batch_size,
            max_batch_size=cfg.embed_max_batch_size, call_rows=cfg.embed_batch_size)
        dead.append(embedded.dead_letters)
        vectors[role] = embedded.vectors | f"PrepareVectors{label}" >> beam.Map(
            prepare_embedded, cfg.distance)
    return vectors, (() if pre.written is None else (pre.written,))


def _embed_raw(cfg: MatchConfig, features: dict, dead: list) -> dict:
    """FeatureBatch per role -> raw text or images (transforms.features.raw_inputs) -> a model of the
    user's own (the same RunInference handler) -> VectorBatch."""
    from transforms.features.embed import EmbedRecords
    from transforms.features.raw_inputs import PrepareModelInputs

    pooling, separator = cfg.text_feed
    vectors = {}
    for role in features:
        label = _label(role)
        prepared = features[role] | f"PrepareModelInputs{label}" >> PrepareModelInputs(
            model_input=cfg.model_input, text_fields=cfg.text_fields, image_field=cfg.image_field,
            text_pooling=pooling or DEFAULTS["text_pooling"], text_separator=separator or "")
        dead.append(prepared.dead_letters)
        embedded = prepared.batches | f"Embed{label}" >> EmbedRecords(
            model_dir=cfg.model_dir, min_batch_size=cfg.embed_min_batch_size,
            max_batch_size=cfg.embed_max_batch_size, call_rows=cfg.embed_batch_size)
        dead.append(embedded.dead_letters)
        vectors[role] = embedded.vectors | f"PrepareVectors{label}" >> beam.Map(
            prepare_embedded, cfg.distance)
    return vectors
