"""Learns a record similarity from labelled pairs, on top of the default embedder: ``corpus-match train``.

What it does, in order:

1. **Preprocess** the training corpora exactly as the match job does (``ReadCorpus`` ->
   ``ValidateRecords`` -> ``AnalyzeAndTransformFeatures``, on Beam's in-process FnApiRunner): the
   tf.Transform analysis runs once over the training corpora (or ``--transform_fn_dir`` is reused), and
   the transform_fn is written to ``MODEL_DIR/transform_fn`` so the match job can embed new data with the
   same statistics (``--transform_fn_dir MODEL_DIR/transform_fn``).
2. **Read the labels** (``--truth``: ``query_id,candidate_id`` pairs or an id + cluster/entity column, as
   :func:`transforms.learn.evaluate.load_truth` reads them). Bad labels never stop training: pairs naming an
   id
   that is not in the data (or that validation rejected), duplicate pairs and, in dedup mode, pairs of a
   record with itself are counted, logged and skipped. (In link mode the two corpora have their own id
   spaces, so ``query_id == candidate_id`` is an ordinary pair.)
3. **Split by entity**: records are grouped into entities, the connected components of the true pairs
   (an unlabelled record is an entity of its own), and a seeded share of entities (``--validation_fraction``,
   drawn separately among labelled and unlabelled entities) is held out, so no entity has records on
   both sides.
4. **Train a tower** on the default embedder's vector (:mod:`transforms.features.default_embedder`, frozen).
The
   tower (a Keras model) scales each block of that vector (one per text field, the pooled block, one per
   numeric field) by a learned positive weight, adds a learned linear residual ``x W`` and L2-normalises:
   ``normalize(x*w + (x*w) W)``. With ``w = 1`` and ``W = 0`` at the start, epoch 0 *is* the default
   embedder; ``W`` has an L2 penalty (``--residual_l2``) that pulls it back towards the default. Adam with
   a cosine-decayed learning rate. The epoch with the best validation average precision is exported
   (epoch 0 included), so the result is not worse than the default on the held-out entities by that
   measure.

   Loss: **multi-similarity** (Wang et al., CVPR 2019) over every pair in a batch, labels being entity ids.
   It was picked over a triplet loss because the match job cuts pairs with one global ``--max_distance``:
   a triplet loss only orders each anchor's positive before its negatives (good for recall@1, silent
   about where a threshold falls), while multi-similarity also pulls positives above and pushes negatives
   below one absolute similarity ``lambda`` (set to the default embedder's best-F1 similarity on the
   training entities), weighting each pair by how hard it is. Its pair-mining step keeps only the
   informative pairs of a batch.

   Mining: a batch holds ``--batch_pairs`` true pairs, both records of each, plus ``--hard_negatives``
   hard negatives per anchor, drawn from the anchor's ``--mine_k`` nearest records of other entities under
   the *current* model, found with the project's own index
   (:func:`transforms.index.neighbor_index.build_index`, exact
   kind) over the training records and refreshed every epoch; the other pairs of the batch act as random
   negatives. With ``--negatives labelled`` only records that appear in a label are used as negatives
   (for partially labelled corpora); the default ``all`` treats every pair not in the truth as a
   non-match, as ``corpus-match evaluate`` does.
5. **Export** ``MODEL_DIR`` as a SavedModel with the default embedder's serving contract
   (``serving_default``: the preprocessed features by name -> ``embedding``, float32 [batch, dim], unit
   length, the zero vector for a record with nothing in any field), so the match job's ``--model_dir``
   serves it unchanged through :class:`transforms.features.embed.TFSavedModelHandler`. Also
   ``MODEL_DIR/training_report.json`` (labels, split, loss and validation recall@1/@10, top-1 F1 and
   pairwise F1 per epoch, epoch 0 being the default embedder) and ``MODEL_DIR/training_report.png``.

6. **Count the pairwise scorer** from the labels (:func:`fit_scorer`): the training records' top-k
   pairs under the trained model are compared from the raw inputs exactly as the job compares them
   (:mod:`transforms.scoring.comparisons`), true where both records are one entity, and the
   Fellegi-Sunter m/u and prior are counted from them
   (:func:`transforms.scoring.labelled.fit_supervised`), the embedding distance cut where the true
   and false pairs' distances overlap. Written as ``MODEL_DIR/scoring_model.json`` for the job's
   ``--scoring_model``; the report's ``scorer`` gives its validation figures beside the trained
   distance's.

Validation metrics are those of :func:`transforms.learn.evaluate.evaluate` on the held-out entities matched
among themselves (dedup) or held-out queries against held-out candidates (link), top ``--top_k``
neighbours by cosine: ``recall_at_1``/``recall_at_10``, ``top1_f1`` (rank-1 pairs) and
``pairwise_f1`` (best F1 over a distance threshold on all top-K pairs, with that threshold) and
``average_precision`` (area under the precision-recall curve of that threshold, every true pair in the
denominator; it selects the exported epoch).

What it does not do: learn new token or gram representations (the default embedder's hashed TF-IDF
projections stay fixed; nicknames, for one, are not learnt), train on a cluster, or stream corpora
larger than memory (the transformed features of the training corpora are held in memory, as numpy).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import pickle
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

from transforms.common.artifacts import join_path, write_bytes, write_text
from transforms.common.dead_letters import DeadLetter
from transforms.common.flags import DEFAULTS
from transforms.common.schema import INPUT_FORMATS, Role
from transforms.features.default_embedder import build_default_model, default_dims, embedding_dim
from transforms.features.preprocess import AnalyzeAndTransformFeatures
from transforms.index.neighbor_index import build_index
from transforms.io.read_corpus import ReadCorpus
from transforms.io.validate import ValidateRecords
from transforms.learn.evaluate import evaluate, load_truth
from transforms.learn.negatives import NEGATIVES as _NEGATIVES
from transforms.run.plots import figure_png

__all__ = [
    "TRANSFORM_FN_DIRNAME",
    "REPORT_JSON",
    "REPORT_PNG",
    "TrainConfig",
    "TransformedCorpus",
    "Labels",
    "preprocess_corpora",
    "read_labels",
    "split_by_entity",
    "default_vectors",
    "train",
]

_LOGGER = logging.getLogger(__name__)

TRANSFORM_FN_DIRNAME = "transform_fn"
REPORT_JSON = "training_report.json"
REPORT_PNG = "training_report.png"
SCORING_MODEL_JSON = "scoring_model.json"  # the pairwise scorer counted from the labels (--scoring_model)
# Block sizes of the default embedder's vector: its defaults, which the match job exports.
_NUMERIC_DIM = 16
# Multi-similarity loss: alpha (positives) and beta (negatives) set how sharply hard pairs are weighted,
# epsilon the pair-mining margin. alpha=2 and epsilon=0.1 are the paper's; beta=10 rather than 50
# because cosine similarities of records spread over a narrower range than image embeddings'.
_MS_ALPHA, _MS_BETA, _MS_EPSILON = 2.0, 10.0, 0.1
_EMBED_ROWS = 4096  # rows per default-embedder call when embedding the training corpora
# Model selection: average precision of a global threshold is pairwise F1's smooth cousin (it integrates
# over thresholds instead of taking the max of a noisy curve); on small validation sets best-F1 picked
# epoch 0 by a pair or two of noise while every trained epoch was better on held-out entities.
_SELECT_METRIC = "average_precision"
_LR_DECAY = True  # cosine decay of the learning rate to 10 % over the run: steadier last epochs


# ---------------------------------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (the CLI flags, parsed and checked).

    Attributes:
        model_dir: where the SavedModel, the transform_fn and the reports are written.
        truth: CSV of labels (pairs or clusters, see :func:`transforms.learn.evaluate.load_truth`).
        text_fields: text fields to embed.
        numeric_fields: numeric fields to embed.
        queries: link mode: glob of the query corpus.
        candidates: link mode: glob of the candidate corpus.
        input: dedup mode: glob of the one corpus.
        id_field: the id column of the corpora.
        input_format: one of ``INPUT_FORMATS``.
        transform_fn_dir: reuse this transform_fn (a directory written by the match job or a previous
            training run) instead of analysing the training corpora.
        epochs: passes over the training pairs (0 exports the default embedder with a report).
        batch_pairs: true pairs per batch.
        hard_negatives: mined hard negatives added per anchor.
        mine_k: nearest non-matching records kept per anchor when mining.
        learning_rate: Adam learning rate.
        residual_l2: L2 penalty on the residual projection.
        validation_fraction: share of entities held out for validation, in [0, 0.9].
        seed: seeds the split, the batches, the mining draws and TensorFlow.
        top_k: neighbours per query in the validation matching.
        negatives: 'all' (any pair not in the truth is a non-match) or 'labelled' (only records that
            appear in a label are used as negatives).
        temp_dir: tf.Transform's scratch directory; default: a fresh temporary directory, deleted after.
    """

    model_dir: str
    truth: str
    text_fields: tuple[str, ...] = ()
    numeric_fields: tuple[str, ...] = ()
    queries: str | None = None
    candidates: str | None = None
    input: str | None = None
    id_field: str = DEFAULTS["id_field"]
    input_format: str = DEFAULTS["input_format"]
    transform_fn_dir: str | None = None
    epochs: int = 5
    batch_pairs: int = 64
    hard_negatives: int = 3
    mine_k: int = 10
    learning_rate: float = 0.05
    residual_l2: float = 0.1
    validation_fraction: float = 0.2
    seed: int = 0
    top_k: int = DEFAULTS["top_k"]
    negatives: str = "all"
    temp_dir: str | None = None

    def __post_init__(self) -> None:  # noqa: C901 - one check per flag rule
        if bool(self.input) == bool(self.queries or self.candidates):
            raise ValueError("give --input (dedup) or --queries and --candidates (link), not both")
        if not self.input and not (self.queries and self.candidates):
            raise ValueError("link mode needs both --queries and --candidates")
        if not self.model_dir:
            raise ValueError("--model_dir is required")
        if not self.truth:
            raise ValueError("--truth is required")
        if not self.text_fields and not self.numeric_fields:
            raise ValueError("give --text_fields and/or --numeric_fields")
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"--input_format must be one of {INPUT_FORMATS}, got {self.input_format!r}")
        if self.negatives not in _NEGATIVES:
            raise ValueError(f"--negatives must be one of {_NEGATIVES}, got {self.negatives!r}")
        for name in ("batch_pairs", "mine_k", "top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("epochs", "hard_negatives"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"--learning_rate must be > 0, got {self.learning_rate}")
        if not self.residual_l2 >= 0:
            raise ValueError(f"--residual_l2 must be >= 0, got {self.residual_l2}")
        if not 0.0 <= self.validation_fraction <= 0.9:
            raise ValueError(f"--validation_fraction must be in [0, 0.9], got {self.validation_fraction}")

    @property
    def mode(self) -> str:
        """'dedup' with --input, else 'link'."""
        return "dedup" if self.input else "link"


# ---------------------------------------------------------------------------------------------------
# Preprocessing: the match job's own read -> validate -> preprocess steps, collected into memory.


class TransformedCorpus(NamedTuple):
    """One corpus after preprocessing, rows sorted by id (first occurrence of a duplicate id kept).

    Attributes:
        ids: object array of str, shape [n].
        table: ``pyarrow.Table`` of the transformed features, row-aligned with ``ids``.
    """

    ids: np.ndarray
    table: pa.Table

    def __len__(self) -> int:
        return len(self.ids)


class _SpoolFn(beam.DoFn):
    """Pickles each element to its own file under a local directory (collects a local run's output)."""

    def __init__(self, directory: str, prefix: str):
        self._directory = directory
        self._prefix = prefix

    def process(self, element: Any) -> None:
        path = os.path.join(self._directory, f"{self._prefix}-{uuid.uuid4().hex}.pkl")
        with open(path, "wb") as fh:
            pickle.dump(element, fh, protocol=pickle.HIGHEST_PROTOCOL)


def _load_spooled(directory: str, prefix: str) -> list[Any]:
    out = []
    for path in sorted(glob.glob(os.path.join(directory, f"{prefix}-*.pkl"))):
        with open(path, "rb") as fh:
            out.append(pickle.load(fh))
    return out


def _collect(batches: list[Any], role: str) -> tuple[TransformedCorpus, int]:
    """Concatenates TransformedBatches, sorts rows by (id, origin) and drops repeated ids."""
    if not batches:
        raise ValueError(f"no valid {role} records to train on")
    ids = np.concatenate([b.ids for b in batches]).astype(object)
    origins = np.concatenate([b.origins for b in batches]).astype(object)
    table = pa.Table.from_batches([b.table for b in batches])
    from transforms.common.sharding import id_sort_keys

    order = np.lexsort((id_sort_keys(origins)[0], id_sort_keys(ids)[0]))
    ids = ids[order]
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    keep = order[first]
    repeated = int((~first).sum())
    if repeated:
        _LOGGER.warning("%d %s records repeat an id seen before; the first occurrence is kept",
                        repeated, role)
    return TransformedCorpus(ids=ids[first], table=table.take(pa.array(keep))), repeated


def preprocess_corpora(corpora: dict[str, str], *, text_fields: tuple[str, ...],  # noqa: PLR0913 - keyword-only settings
                       numeric_fields: tuple[str, ...] = (), id_field: str = DEFAULTS["id_field"],
                       input_format: str = DEFAULTS["input_format"], transform_fn_dir_in: str | None = None,
                       transform_fn_dir_out: str | None = None, temp_dir: str | None = None,
                       batch_size: int = DEFAULTS["batch_size"]
                       ) -> tuple[dict[str, TransformedCorpus], dict[str, Any]]:
    """Reads, validates and preprocesses corpora on the local runner, as the match job does.

    Args:
        corpora: role (``Role.QUERIES``/``CANDIDATES`` or ``Role.INPUT``) -> file glob.
        text_fields: text fields to preprocess.
        numeric_fields: numeric fields to preprocess.
        id_field: the id column.
        input_format: one of ``INPUT_FORMATS``.
        transform_fn_dir_in: reuse this transform_fn instead of analysing the corpora.
        transform_fn_dir_out: write the transform_fn here (``<dir>/transform_fn``,
            ``<dir>/transformed_metadata``).
        temp_dir: scratch directory (tf.Transform's and the collected output); default: a fresh one,
            deleted afterwards.
        batch_size: rows per batch read.

    Returns:
        (role -> TransformedCorpus, stats) where stats counts ``rejected_records`` (dead letters of any
        stage, with ``rejected_examples``: up to 5 of their errors) and ``repeated_ids`` per role.

    Raises:
        ValueError: a corpus has no valid record, or bad fields / transform_fn.
        OSError: a glob matches nothing or a file cannot be read.
    """
    own_temp = temp_dir is None
    scratch = tempfile.mkdtemp(prefix="corpus-match-train-") if own_temp else temp_dir
    spool = os.path.join(scratch, f"spool-{uuid.uuid4().hex}")
    os.makedirs(spool)
    try:
        # FnApiRunner: in-process, no runner binary to fetch; tests and the e2e suite use it too.
        options = PipelineOptions(["--runner", "FnApiRunner"])
        with beam.Pipeline(options=options) as p:
            valid, dead = {}, []
            for role, pattern in corpora.items():
                label = role.capitalize()
                read = p | f"Read{label}" >> ReadCorpus(file_pattern=pattern, input_format=input_format,
                                                        role=role, batch_size=batch_size)
                checked = read.batches | f"Validate{label}" >> ValidateRecords(
                    role=role, id_field=id_field, text_fields=tuple(text_fields),
                    numeric_fields=tuple(numeric_fields))
                valid[role] = checked.batches
                dead += [read.dead_letters, checked.dead_letters]
            result = valid | "Preprocess" >> AnalyzeAndTransformFeatures(
                text_fields=tuple(text_fields), numeric_fields=tuple(numeric_fields),
                transform_fn_dir_in=transform_fn_dir_in, transform_fn_dir_out=transform_fn_dir_out,
                temp_dir=os.path.join(scratch, "tft"))
            dead.append(result.dead_letters)
            for role in corpora:
                _ = getattr(result, role) | f"Spool{role.capitalize()}" >> beam.ParDo(_SpoolFn(spool, role))
            _ = (tuple(dead) | "FlattenDeadLetters" >> beam.Flatten()
                 | "SpoolDeadLetters" >> beam.ParDo(_SpoolFn(spool, "dead")))
        out, stats = {}, {"rejected_records": 0, "rejected_examples": [], "repeated_ids": {}}
        letters: list[DeadLetter] = _load_spooled(spool, "dead")
        stats["rejected_records"] = len(letters)
        stats["rejected_examples"] = [f"{d.stage}: {d.record_id}: {d.error}" for d in letters[:5]]
        if letters:
            _LOGGER.warning("%d records were rejected while reading/preprocessing (e.g. %s); labels "
                            "naming them are skipped", len(letters), stats["rejected_examples"][0])
        for role in corpora:
            out[role], stats["repeated_ids"][role] = _collect(_load_spooled(spool, role), role)
        return out, stats
    finally:
        shutil.rmtree(spool, ignore_errors=True)
        if own_temp:
            shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# Labels and the split by entity.


class Labels(NamedTuple):
    """Usable true pairs as positions in the record space, and what was skipped.

    The record space is the one corpus (dedup) or the queries followed by the candidates (link:
    candidate ``j`` is position ``n_queries + j``).

    Attributes:
        pairs: int64 [m, 2] (query or smaller position first), unique.
        counts: ``pairs_read``, ``usable_pairs``, ``unknown_ids`` (pairs skipped for an id not in the
            data), ``duplicate_pairs``, ``self_pairs`` (dedup only), ``empty_ids``,
            ``same_corpus_pairs`` (link mode, cluster file: two queries or two candidates).
        examples: a few skipped labels per reason, for the log and the report.
    """

    pairs: np.ndarray
    counts: dict[str, int]
    examples: dict[str, list[list[str]]]


def _raw_pairs(path: str, mode: str) -> tuple[list[tuple[str, str]], bool]:
    """Label rows as written (duplicates and self pairs kept, so they can be counted), and whether the
    file is in the cluster layout (whose pairs have no query/candidate order)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if {"query_id", "candidate_id"} <= set(frame.columns):
        return list(zip(frame["query_id"].tolist(), frame["candidate_id"].tolist(), strict=True)), False
    # Cluster layout: every two records of a cluster; load_truth checks the columns.
    return sorted(load_truth(path, mode=mode)), True


def read_labels(path: str, *, mode: str, query_ids: np.ndarray,  # noqa: C901 - one count per way a label is unusable
                candidate_ids: np.ndarray | None = None) -> Labels:
    """Reads the truth file and keeps the pairs that can be trained on (see :class:`Labels`).

    Args:
        path: CSV of pairs (``query_id,candidate_id``) or clusters (id + ``cluster_id``/``entity_id``).
        mode: 'dedup' or 'link'.
        query_ids: ids of the queries (link) or of the one corpus (dedup), sorted as the corpus is.
        candidate_ids: ids of the candidates (link only).

    Returns:
        The usable pairs and the counts of skipped ones (each reason logged once with examples).
    """
    rows, clusters = _raw_pairs(path, mode)
    q_pos = {str(r): i for i, r in enumerate(query_ids.tolist())}
    if mode == "link":
        if candidate_ids is None:
            raise ValueError("link mode needs candidate_ids")
        offset = len(query_ids)
        c_pos = {str(r): offset + i for i, r in enumerate(candidate_ids.tolist())}
    else:
        c_pos = q_pos
    counts = {"pairs_read": len(rows), "usable_pairs": 0, "unknown_ids": 0, "duplicate_pairs": 0,
              "self_pairs": 0, "empty_ids": 0, "same_corpus_pairs": 0}
    examples: dict[str, list[list[str]]] = {}
    seen: set[tuple[int, int]] = set()
    pairs = []
    for a, b in rows:
        reason = None
        if not a or not b:
            reason = "empty_ids"
        elif mode == "dedup" and a == b:
            reason = "self_pairs"
        elif clusters and mode == "link" and not (a in q_pos and b in c_pos):
            # A cluster pair has no order: orient it query -> candidate; two records of one corpus
            # are no link.
            if b in q_pos and a in c_pos:
                a, b = b, a
            elif (a in q_pos and b in q_pos) or (a in c_pos and b in c_pos):
                reason = "same_corpus_pairs"
            else:
                reason = "unknown_ids"
        elif a not in q_pos or b not in c_pos:
            reason = "unknown_ids"
        if reason is None:
            i, j = q_pos[a], c_pos[b]
            key = (min(i, j), max(i, j)) if mode == "dedup" else (i, j)
            if key in seen:
                reason = "duplicate_pairs"
            else:
                seen.add(key)
                pairs.append(key)
        if reason is not None:
            counts[reason] += 1
            examples.setdefault(reason, [])
            if len(examples[reason]) < 3:
                examples[reason].append([a, b])
    counts["usable_pairs"] = len(pairs)
    for reason, found in examples.items():
        _LOGGER.warning("skipped %d labels (%s), e.g. %s", counts[reason], reason.replace("_", " "), found)
    array = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    return Labels(pairs=array, counts=counts, examples=examples)


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected component (entity) of each of n records; ids are deterministic for a given input."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def split_by_entity(entity: np.ndarray, labelled: np.ndarray, validation_fraction: float,
                    seed: int) -> np.ndarray:
    """Holds out a seeded share of entities; returns the validation mask over records.

    Labelled entities (with a true pair) and unlabelled ones are drawn separately, each at
    ``validation_fraction`` (rounded), so the held-out set gets its share of pairs and of
    unmatched records alike.

    Args:
        entity: int [n], the entity of each record (:func:`_components`).
        labelled: bool [n], records that appear in a usable true pair.
        validation_fraction: share of entities held out.
        seed: the draw's seed.

    Returns:
        bool [n]: True for held-out records.
    """
    rng = np.random.default_rng(seed)
    held = np.zeros(entity.max() + 1 if len(entity) else 0, dtype=bool)
    for flag in (True, False):
        group = np.unique(entity[labelled == flag])
        count = int(round(validation_fraction * len(group)))
        held[rng.permutation(group)[:count]] = True
    return held[entity]


# ---------------------------------------------------------------------------------------------------
# The default embedder's vectors and the trainable tower.


def _block_sizes(text_fields: tuple[str, ...], numeric_fields: tuple[str, ...]) -> list[tuple[str, int]]:
    """(name, size) of each block of the default embedder's vector, in order."""
    field_dim, pooled_dim = default_dims(len(text_fields))
    blocks = [(f, field_dim) for f in text_fields]
    if len(text_fields) > 1:
        blocks.append(("<pooled>", pooled_dim))
    blocks += [(f, _NUMERIC_DIM) for f in numeric_fields]
    total = embedding_dim(text_fields, numeric_fields, field_dim=field_dim, pooled_dim=pooled_dim,
                          numeric_dim=_NUMERIC_DIM)
    if sum(size for _, size in blocks) != total:
        raise AssertionError("block layout out of step with transforms.features.default_embedder")
    return blocks


def default_vectors(model: Any, table: pa.Table, rows_per_call: int = _EMBED_ROWS) -> np.ndarray:
    """Embeds a table of transformed features with a model's ``serve`` function (float32 [n, dim])."""
    from transforms.features.embed import features_to_numpy

    specs = model.serve.input_signature[0]
    chunks = []
    for start in range(0, table.num_rows, rows_per_call):
        feed = features_to_numpy(table.slice(start, rows_per_call), specs)
        chunks.append(model.serve({k: tf.constant(v) for k, v in feed.items()})["embedding"].numpy())
    if not chunks:
        return np.zeros((0, model.dim), np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


class _FieldWeightedResidual(tf.keras.layers.Layer):
    """``normalize(x*w + (x*w) W)``: per-block weights ``w = exp(log_w)`` and a residual ``W`` (zeros)."""

    def __init__(self, block_sizes: list[int], residual_l2: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.block_sizes = [int(s) for s in block_sizes]
        self.residual_l2 = float(residual_l2)

    def build(self, input_shape: Any) -> None:
        dim = sum(self.block_sizes)
        self.log_weights = self.add_weight(name="log_field_weights", shape=(len(self.block_sizes),),
                                           initializer="zeros", trainable=True)
        self.residual = self.add_weight(name="residual", shape=(dim, dim), initializer="zeros",
                                        trainable=True)
        self._repeats = tf.constant(self.block_sizes, tf.int32)
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        weighted = inputs * tf.repeat(tf.exp(self.log_weights), self._repeats)
        out = weighted + tf.matmul(weighted, self.residual)
        # epsilon as the default embedder's: a zero input (record with nothing) stays the zero vector.
        return tf.math.l2_normalize(out, axis=1, epsilon=1e-12)

    def penalty(self) -> tf.Tensor:
        return self.residual_l2 * tf.reduce_sum(tf.square(self.residual))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "block_sizes": self.block_sizes, "residual_l2": self.residual_l2}


def _build_tower(block_sizes: list[int], residual_l2: float) -> tuple[Any, _FieldWeightedResidual]:
    dim = sum(block_sizes)
    inputs = tf.keras.Input(shape=(dim,), dtype=tf.float32, name="default_embedding")
    layer = _FieldWeightedResidual(block_sizes, residual_l2, name="field_weighted_residual")
    return tf.keras.Model(inputs, layer(inputs), name="similarity_tower"), layer


def _multi_similarity_loss(vectors: tf.Tensor, labels: tf.Tensor, lam: tf.Tensor) -> tf.Tensor:
    """Multi-similarity loss of a batch of unit vectors with entity labels (mean over anchors)."""
    sim = tf.matmul(vectors, vectors, transpose_b=True)
    same = tf.equal(labels[:, None], labels[None, :])
    positive = tf.logical_and(same, tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool)))
    negative = tf.logical_not(same)
    hardest_pos = tf.reduce_min(tf.where(positive, sim, 2.0), axis=1, keepdims=True)
    hardest_neg = tf.reduce_max(tf.where(negative, sim, -2.0), axis=1, keepdims=True)
    # Pair mining: negatives closer than the farthest positive (+eps), positives farther than the
    # closest negative (-eps); the others teach nothing.
    negative = tf.logical_and(negative, sim + _MS_EPSILON > hardest_pos)
    positive = tf.logical_and(positive, sim - _MS_EPSILON < hardest_neg)
    pos_term = tf.math.log1p(tf.reduce_sum(tf.where(positive, tf.exp(-_MS_ALPHA * (sim - lam)), 0.0), 1))
    neg_term = tf.math.log1p(tf.reduce_sum(tf.where(negative, tf.exp(_MS_BETA * (sim - lam)), 0.0), 1))
    anchors = tf.cast(tf.reduce_any(tf.logical_and(same, tf.logical_not(
        tf.eye(tf.shape(labels)[0], dtype=tf.bool))), axis=1), tf.float32)
    per_anchor = pos_term / _MS_ALPHA + neg_term / _MS_BETA
    return tf.reduce_sum(per_anchor * anchors) / tf.maximum(tf.reduce_sum(anchors), 1.0)


class _TrainedEmbedder(tf.Module):
    """The exported model: default embedder (frozen) -> tower; same signature as the default's."""

    def __init__(self, default: Any, tower: Any):
        super().__init__(name="trained_embedder")
        self.default = default
        self.tower = tower
        self.dim = default.dim
        self.serve = tf.function(self._embed, input_signature=[default.serve.input_signature[0]])

    def _embed(self, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        base = self.default.serve(features)["embedding"]
        return {"embedding": self.tower(base, training=False)}


# ---------------------------------------------------------------------------------------------------
# Matching, mining and validation on in-memory vectors.


class _Space(NamedTuple):
    """The record space: which positions are queries and candidates, per split."""

    mode: str
    ids: np.ndarray  # object [n]
    queries: np.ndarray  # int64 positions
    candidates: np.ndarray  # int64 positions


def _neighbours(vectors: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int,
                exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
    """Top-k candidate positions (record space, -1 = none) and cosine distances for each query."""
    index = build_index(vectors[candidates], distance="cosine", kind="exact", params={})
    fetch = min(k + int(exclude_self), len(candidates))
    positions, distances = index.search(vectors[queries], max(fetch, 1))
    found = np.where(positions >= 0, candidates[np.maximum(positions, 0)], -1)
    if exclude_self:
        keep = found != queries[:, None]
        order = np.argsort(~keep, axis=1, kind="stable")  # kept slots first, order unchanged
        found = np.take_along_axis(found, order, 1)
        distances = np.take_along_axis(np.where(keep, distances, np.inf), order, 1)
        found[~np.isfinite(distances)] = -1
    return found[:, :k], distances[:, :k]


def _match_frame(space: _Space, found: np.ndarray, distances: np.ndarray,
                 queries: np.ndarray) -> pd.DataFrame:
    ok = found >= 0
    ranks = np.cumsum(ok, axis=1)
    rows = np.broadcast_to(queries[:, None], found.shape)
    return pd.DataFrame({
        "query_id": space.ids[rows[ok]].astype(str),
        "candidate_id": space.ids[found[ok]].astype(str),
        "rank": ranks[ok].astype(np.int64),
        "distance": distances[ok].astype(np.float64),
    })


def _average_precision(matches: pd.DataFrame, truth: list[tuple[str, str]], mode: str) -> float:
    """Area under the precision-recall curve of a global distance threshold over the emitted pairs.

    Every true pair counts in the denominator (one never emitted adds nothing), so it rewards both
    finding the true pairs within the top K and ranking them before the false ones across queries.
    """
    a, b = matches["query_id"].to_numpy(str), matches["candidate_id"].to_numpy(str)
    if mode == "dedup":
        a, b = np.where(a <= b, a, b), np.where(a <= b, b, a)
        truth = [(min(x, y), max(x, y)) for x, y in truth]
    pairs = (pd.DataFrame({"a": a, "b": b, "d": matches["distance"].to_numpy(np.float64)})
             .groupby(["a", "b"], as_index=False)["d"].min().sort_values(["d", "a", "b"]))
    keys = pd.Index([x + "\x1f" + y for x, y in set(truth)])
    hit = (pairs["a"] + "\x1f" + pairs["b"]).isin(keys).to_numpy()
    if not len(keys):
        return 0.0
    precision_at_hits = np.cumsum(hit)[hit] / (np.flatnonzero(hit) + 1)
    return float(precision_at_hits.sum() / len(keys))


def _metrics(space: _Space, vectors: np.ndarray, pairs: np.ndarray, mask: np.ndarray,
             top_k: int) -> dict[str, Any]:
    """Validation metrics (see the module docstring) of the records under ``mask``."""
    queries = space.queries[mask[space.queries]]
    candidates = space.candidates[mask[space.candidates]]
    inside = mask[pairs[:, 0]] & mask[pairs[:, 1]] if len(pairs) else np.zeros(0, bool)
    truth = [(str(space.ids[a]), str(space.ids[b])) for a, b in pairs[inside].tolist()]
    if len(queries) == 0 or len(candidates) < 1 + (space.mode == "dedup") or not truth:
        return {"records": int(mask.sum()), "true_pairs": len(truth)}
    found, distances = _neighbours(vectors, queries, candidates, top_k, space.mode == "dedup")
    matches = _match_frame(space, found, distances, queries)
    report = evaluate(matches, truth, mode=space.mode, k=top_k)
    if space.mode == "link":
        top1 = report["top1"]
    else:
        top1 = evaluate(matches[matches["rank"] == 1], truth, mode="dedup", k=1)["pairs"]
    best = report["threshold_sweep"]["best"] or {}
    recall_at = report["recall_at"]
    return {
        "average_precision": _average_precision(matches, truth, space.mode),
        "records": int(mask.sum()),
        "true_pairs": len(truth),
        "recall_at_1": recall_at.get("1"),
        "recall_at_10": recall_at.get("10", recall_at.get(str(report["k"]))),
        "top1_f1": top1["f1"],
        "pairwise_f1": best.get("f1"),
        "pairwise_precision": best.get("precision"),
        "pairwise_recall": best.get("recall"),
        "pairwise_max_distance": best.get("threshold"),
    }


def _mine(space: _Space, vectors: np.ndarray, anchors: np.ndarray, pool: np.ndarray, entity: np.ndarray,
          mine_k: int, largest_entity: int) -> np.ndarray:
    """int64 [len(anchors), mine_k]: each anchor's nearest records of other entities (-1 = none)."""
    if len(anchors) == 0 or len(pool) == 0:
        return np.full((len(anchors), mine_k), -1, dtype=np.int64)
    fetch = min(len(pool), mine_k + largest_entity)
    found, _ = _neighbours(vectors, anchors, pool, fetch, exclude_self=False)
    other = (found >= 0) & (entity[np.maximum(found, 0)] != entity[anchors][:, None])
    order = np.argsort(~other, axis=1, kind="stable")
    found = np.where(np.take_along_axis(other, order, 1), np.take_along_axis(found, order, 1), -1)
    out = np.full((len(anchors), mine_k), -1, dtype=np.int64)
    width = min(mine_k, found.shape[1])
    out[:, :width] = found[:, :width]
    return out


def _batches(pairs: np.ndarray, hard: np.ndarray, anchor_row: np.ndarray, config: TrainConfig,
             rng: np.random.Generator, dedup: bool) -> Iterator[np.ndarray]:
    """Record positions of each batch: shuffled true pairs, both ends, and hard negatives per anchor."""
    order = rng.permutation(len(pairs))
    for start in range(0, len(order), config.batch_pairs):
        chunk = pairs[order[start:start + config.batch_pairs]]
        if dedup:  # either record of a dedup pair may be the anchor
            flip = rng.random(len(chunk)) < 0.5
            chunk = np.where(flip[:, None], chunk[:, ::-1], chunk)
        rows = [chunk.ravel()]
        if config.hard_negatives:
            mined = hard[anchor_row[chunk[:, 0]]]  # [b, mine_k]
            scores = np.where(mined >= 0, rng.random(mined.shape), -1.0)
            pick = np.argsort(-scores, axis=1)[:, :config.hard_negatives]
            chosen = np.take_along_axis(mined, pick, 1)
            rows.append(chosen[chosen >= 0])
        yield np.unique(np.concatenate(rows))


# ---------------------------------------------------------------------------------------------------
# The training run.


def _gpu_memory_growth() -> list[str]:
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: growth is fixed for this process
            _LOGGER.debug("memory growth not changed for %s", gpu.name)
    return [g.name for g in gpus]


def _best_threshold_similarity(space: _Space, vectors: np.ndarray, pairs: np.ndarray, mask: np.ndarray,
                               top_k: int) -> float:
    """1 - the best-F1 distance threshold on the training records (the loss' lambda)."""
    metrics = _metrics(space, vectors, pairs, mask, top_k)
    threshold = metrics.get("pairwise_max_distance")
    return 0.5 if threshold is None else float(np.clip(1.0 - threshold, 0.05, 0.95))


def _fit(space: _Space, x: np.ndarray, pairs: np.ndarray, entity: np.ndarray, val: np.ndarray,
         block_sizes: list[int], config: TrainConfig, on_epoch: Any = None,
         ) -> tuple[Any, _FieldWeightedResidual, dict[str, Any]]:
    """Trains the tower on default vectors ``x``; returns (model, layer, history) with the best weights."""
    tf.random.set_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model, layer = _build_tower(block_sizes, config.residual_l2)
    train = ~val
    train_pairs = pairs[train[pairs[:, 0]] & train[pairs[:, 1]]] if len(pairs) else pairs
    steps = max(1, config.epochs * -(-len(train_pairs) // config.batch_pairs))
    rate = config.learning_rate
    if _LR_DECAY:
        rate = tf.keras.optimizers.schedules.CosineDecay(config.learning_rate, steps, alpha=0.1)
    optimizer = tf.keras.optimizers.Adam(rate)
    dedup = space.mode == "dedup"
    labelled = np.zeros(len(space.ids), dtype=bool)
    labelled[pairs.ravel()] = True
    anchors = np.unique(train_pairs.ravel()) if dedup else np.unique(train_pairs[:, 0])
    anchor_row = np.full(len(space.ids), -1, dtype=np.int64)
    anchor_row[anchors] = np.arange(len(anchors))
    pool = space.candidates[train[space.candidates]]
    if config.negatives == "labelled":
        pool = pool[labelled[pool]]
    largest = int(np.bincount(entity).max()) if len(entity) else 1
    lam = tf.constant(_best_threshold_similarity(space, x, pairs, train, config.top_k), tf.float32)
    dim = x.shape[1]

    @tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32), tf.TensorSpec([None], tf.int64)])
    def train_step(batch: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = _multi_similarity_loss(model(batch, training=True), labels, lam)
            total = loss + layer.penalty()
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32), tf.TensorSpec([None], tf.int64)])
    def eval_step(batch: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        return _multi_similarity_loss(model(batch, training=False), labels, lam)

    def embed_all() -> np.ndarray:
        return model.predict(x, batch_size=_EMBED_ROWS, verbose=0).astype(np.float32)

    def epoch_pass(step: Any, vectors: np.ndarray) -> tuple[float | None, float]:
        started = time.perf_counter()
        hard = _mine(space, vectors, anchors, pool, entity, config.mine_k, largest)
        losses = [float(step(tf.constant(x[rows]), tf.constant(entity[rows])))
                  for rows in _batches(train_pairs, hard, anchor_row, config, rng, dedup)]
        return (float(np.mean(losses)) if losses else None), time.perf_counter() - started

    history: list[dict[str, Any]] = []
    vectors = embed_all()
    if not np.allclose(vectors, x, atol=1e-5):
        raise AssertionError("the untrained tower must reproduce the default embedder")
    loss0, _ = epoch_pass(eval_step, vectors)
    history.append({"epoch": 0, "loss": loss0, "seconds": 0.0,
                    "validation": _metrics(space, vectors, pairs, val, config.top_k)})
    best_epoch, best_weights = 0, model.get_weights()
    best_score = history[0]["validation"].get(_SELECT_METRIC)
    for epoch in range(1, config.epochs + 1):
        loss, seconds = epoch_pass(train_step, vectors)
        vectors = embed_all()
        row = {"epoch": epoch, "loss": loss, "seconds": round(seconds, 3),
               "validation": _metrics(space, vectors, pairs, val, config.top_k)}
        history.append(row)
        score = row["validation"].get(_SELECT_METRIC)
        # Without a validation set (or metric) the last epoch wins; ties keep the earlier epoch.
        if score is None or best_score is None or score > best_score:
            best_epoch, best_weights, best_score = epoch, model.get_weights(), score
        _LOGGER.info("epoch %d: loss %s, validation %s", epoch, loss, row["validation"])
        if on_epoch is not None:
            on_epoch(epoch, model)
    model.set_weights(best_weights)
    info = {
        "epochs": history,
        "best_epoch": best_epoch,
        "selected_by": f"validation {_SELECT_METRIC}",
        "loss": {"name": "multi_similarity", "alpha": _MS_ALPHA, "beta": _MS_BETA,
                 "epsilon": _MS_EPSILON, "lambda": float(lam.numpy())},
        "training_pairs": int(len(train_pairs)),
        "anchors": int(len(anchors)),
        "negative_pool": int(len(pool)),
    }
    return model, layer, info


def _plot(report: dict[str, Any]) -> bytes | None:
    """The loss curve and validation metrics per epoch as PNG bytes (None without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _LOGGER.warning("matplotlib is not installed: %s not written", REPORT_PNG)
        return None
    epochs = report["training"]["epochs"]
    xs = [e["epoch"] for e in epochs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(xs, [np.nan if e["loss"] is None else e["loss"] for e in epochs], marker="o")
    left.set_title("multi-similarity loss (epoch 0: default embedder)")
    left.set_xlabel("epoch")
    for key, label in (("recall_at_1", "recall@1"), ("recall_at_10", "recall@10"),
                       ("top1_f1", "top-1 F1"), ("pairwise_f1", "pairwise F1 (best threshold)"),
                       ("average_precision", "average precision (selects)")):
        right.plot(xs, [np.nan if e["validation"].get(key) is None else e["validation"][key]
                        for e in epochs], marker="o", label=label)
    best = report["training"]["best_epoch"]
    right.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"exported (epoch {best})")
    right.set_title("validation (held-out entities)")
    right.set_xlabel("epoch")
    right.legend(loc="center right", fontsize=8)
    return figure_png(fig)


def _raw_fields(config: TrainConfig, roles: dict[str, str], space: _Space) -> Any:
    """RecordFields of every record of the space, in its order, read from the raw inputs (the
    scorer compares raw values, normalised as the job does, not the transformed features)."""
    from transforms.common.sharding import str_array
    from transforms.scoring.comparisons import concat_fields
    from transforms.scoring.explain import find_records

    flags = {"text_fields": list(config.text_fields), "numeric_fields": list(config.numeric_fields),
             "input_format": config.input_format, "id_field": config.id_field}
    ids = str_array(space.ids)
    if config.mode == "dedup":
        parts = [(find_records(roles[Role.INPUT], flags, set(ids.tolist())), ids)]
    else:
        q, c = ids[space.queries], ids[space.candidates]
        parts = [(find_records(roles[Role.QUERIES], flags, set(q.tolist())), q),
                 (find_records(roles[Role.CANDIDATES], flags, set(c.tolist())), c)]
    for found, wanted in parts:
        missing = [i for i in wanted.tolist() if i not in found]
        if missing:
            raise ValueError(f"{len(missing)} trained records not found again in the inputs, "
                             f"e.g. {missing[0]!r}")
    return concat_fields([found[i] for found, wanted in parts for i in wanted.tolist()])


def _candidate_pairs(space: _Space, vectors: np.ndarray, mask: np.ndarray,
                     top_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The top-k pairs of the records under ``mask`` as the job finds them: (query positions,
    candidate positions, distances, ranks); in dedup mode each unordered pair once, at its
    lower rank."""
    queries = space.queries[mask[space.queries]]
    candidates = space.candidates[mask[space.candidates]]
    empty = np.zeros(0, dtype=np.int64)
    if not len(queries) or len(candidates) < 1 + (space.mode == "dedup"):
        return empty, empty, np.zeros(0), empty
    found, distances = _neighbours(vectors, queries, candidates, top_k, space.mode == "dedup")
    ok = found >= 0
    ranks = np.cumsum(ok, axis=1)[ok]
    a, b, d = np.broadcast_to(queries[:, None], found.shape)[ok], found[ok], distances[ok]
    if space.mode == "dedup":
        a, b = np.minimum(a, b), np.maximum(a, b)
        order = np.lexsort((d, ranks, b, a))
        first = np.r_[True, (a[order][1:] != a[order][:-1]) | (b[order][1:] != b[order][:-1])]
        keep = np.sort(order[first])
        a, b, d, ranks = a[keep], b[keep], d[keep], ranks[keep]
    return a, b, d.astype(np.float64), ranks


def _best_f1(score: np.ndarray, is_true: np.ndarray, n_true: int) -> float:
    """Best F1 over thresholds on ``score`` (higher = more alike), every true pair counted."""
    if not len(score) or not n_true:
        return 0.0
    order = np.argsort(-score, kind="stable")
    tp = np.cumsum(is_true[order])
    precision, recall = tp / np.arange(1, len(tp) + 1), tp / n_true
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(f1.max())


def fit_scorer(config: TrainConfig, roles: dict[str, str], space: _Space, vectors: np.ndarray,
               entity: np.ndarray, labelled: np.ndarray, val: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """The pairwise scorer counted from the labels (:func:`transforms.scoring.labelled.fit_supervised`):
    the training records' top-k pairs under the trained model, compared as the job compares them,
    true where both records are one entity. Returns the model and its validation figures (best
    pairwise F1 by match probability and by distance on the held-out records' pairs, and the
    pairwise F1 at the job's default ``--min_probability``)."""
    from transforms.scoring.comparisons import take_rows
    from transforms.scoring.fellegi_sunter import DEFAULT_MIN_PROBABILITY, term_sketch
    from transforms.scoring.labelled import (
        LabelledLevels,
        compare_pairs,
        fit_supervised,
        label_cuts,
        model_template,
        rescore,
    )

    fields = _raw_fields(config, roles, space)
    sketch = term_sketch(fields.hashes) if fields.text.shape[1] else None
    n_true = {}
    picked = {}
    for name, mask in (("training", ~val), ("validation", val)):
        a, b, d, ranks = _candidate_pairs(space, vectors, mask, config.top_k)
        is_true = entity[a] == entity[b]
        if config.negatives == "labelled":
            keep = is_true | (labelled[a] & labelled[b])
            a, b, d, ranks, is_true = a[keep], b[keep], d[keep], ranks[keep], is_true[keep]
        picked[name] = (a, b, d, ranks, is_true)
        inside = mask & labelled
        sizes = np.bincount(entity[inside], minlength=entity.max() + 1)
        if space.mode == "dedup":
            n_true[name] = int((sizes * (sizes - 1) // 2).sum())
        else:
            is_q = np.zeros(len(entity), bool)
            is_q[space.queries] = True
            qs = np.bincount(entity[inside & is_q], minlength=len(sizes))
            n_true[name] = int((qs * (sizes - qs)).sum())
    a, b, d, ranks, is_true = picked["training"]
    cuts = label_cuts(d, is_true)
    template = model_template(tuple(config.text_fields), tuple(config.numeric_fields), cuts, sketch,
                              len(fields))
    levels, _ = compare_pairs(take_rows(fields, a), take_rows(fields, b), d, cuts, sketch)
    model = fit_supervised(levels, is_true, template)
    facts: dict[str, Any] = {"training_pairs": int(len(a)), "training_true_pairs": int(is_true.sum())}
    a, b, d, ranks, is_true = picked["validation"]
    if len(a) and n_true["validation"]:
        levels, freq = compare_pairs(take_rows(fields, a), take_rows(fields, b), d, cuts, sketch)
        _, prob = rescore(model, LabelledLevels(levels, freq, np.ones(len(a), bool), model))
        kept = prob >= DEFAULT_MIN_PROBABILITY
        tp = int(is_true[kept].sum())
        precision, recall = tp / max(int(kept.sum()), 1), tp / n_true["validation"]
        facts["validation"] = {
            "pairs": int(len(a)), "true_pairs": n_true["validation"],
            "best_pairwise_f1_by_probability": _best_f1(prob, is_true, n_true["validation"]),
            "best_pairwise_f1_by_distance": _best_f1(-d, is_true, n_true["validation"]),
            "pairwise_f1_at_default_min_probability": (
                2 * precision * recall / (precision + recall) if precision + recall else 0.0)}
    return model, facts


def train(config: TrainConfig) -> dict[str, Any]:
    """Runs a training (see the module docstring) and returns the report it writes.

    Raises:
        ValueError: bad configuration, no valid record, or no usable label.
        OSError: unreadable inputs.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    gpus = _gpu_memory_growth()
    text_fields, numeric_fields = tuple(config.text_fields), tuple(config.numeric_fields)
    roles = ({Role.INPUT: config.input} if config.mode == "dedup"
             else {Role.QUERIES: config.queries, Role.CANDIDATES: config.candidates})
    transform_dir = join_path(config.model_dir, TRANSFORM_FN_DIRNAME)
    corpora, read_stats = preprocess_corpora(
        roles, text_fields=text_fields, numeric_fields=numeric_fields, id_field=config.id_field,
        input_format=config.input_format, transform_fn_dir_in=config.transform_fn_dir,
        transform_fn_dir_out=transform_dir, temp_dir=config.temp_dir)
    timings["preprocess_seconds"] = time.perf_counter() - started

    if config.mode == "dedup":
        corpus = corpora[Role.INPUT]
        ids, tables = corpus.ids, [corpus.table]
        queries = candidates = np.arange(len(corpus), dtype=np.int64)
        labels = read_labels(config.truth, mode="dedup", query_ids=corpus.ids)
    else:
        q, c = corpora[Role.QUERIES], corpora[Role.CANDIDATES]
        ids, tables = np.concatenate([q.ids, c.ids]), [q.table, c.table]
        queries = np.arange(len(q), dtype=np.int64)
        candidates = np.arange(len(q), len(q) + len(c), dtype=np.int64)
        labels = read_labels(config.truth, mode="link", query_ids=q.ids, candidate_ids=c.ids)
    if not len(labels.pairs):
        raise ValueError(f"--truth {config.truth!r}: no usable pair (counts: {labels.counts})")
    space = _Space(config.mode, ids, queries, candidates)
    entity = _components(len(ids), labels.pairs)
    labelled = np.zeros(len(ids), dtype=bool)
    labelled[labels.pairs.ravel()] = True
    val = split_by_entity(entity, labelled, config.validation_fraction, config.seed)

    embed_started = time.perf_counter()
    default = build_default_model(text_fields, numeric_fields)
    x = np.concatenate([default_vectors(default, t) for t in tables])
    timings["default_embedding_seconds"] = time.perf_counter() - embed_started

    fit_started = time.perf_counter()
    blocks = _block_sizes(text_fields, numeric_fields)
    model, layer, info = _fit(space, x, labels.pairs, entity, val, [s for _, s in blocks], config)
    timings["training_seconds"] = time.perf_counter() - fit_started

    export = _TrainedEmbedder(default, model)
    tf.saved_model.save(export, config.model_dir,
                        signatures={"serving_default": export.serve.get_concrete_function()})

    scorer_started = time.perf_counter()
    trained = model.predict(x, batch_size=_EMBED_ROWS, verbose=0).astype(np.float32)
    scorer, scorer_facts = fit_scorer(config, roles, space, trained, entity, labelled, val)
    write_text(join_path(config.model_dir, SCORING_MODEL_JSON), scorer.to_json() + "\n")
    timings["scorer_seconds"] = time.perf_counter() - scorer_started
    timings["total_seconds"] = time.perf_counter() - started
    weights = np.exp(layer.log_weights.numpy())
    report = {
        "mode": config.mode,
        "model_dir": config.model_dir,
        "transform_fn_dir": transform_dir,
        "text_fields": list(text_fields),
        "numeric_fields": list(numeric_fields),
        "embedding_dim": int(x.shape[1]),
        "records": {"total": int(len(ids)), "queries": int(len(queries)),
                    "candidates": int(len(candidates)), **read_stats},
        "labels": {**labels.counts,
                   "skipped": int(labels.counts["pairs_read"] - labels.counts["usable_pairs"]),
                   "examples": labels.examples},
        "split": {"entities": int(entity.max() + 1), "validation_entities": int(len(np.unique(entity[val]))),
                  "validation_records": int(val.sum()), "training_records": int((~val).sum()),
                  "validation_fraction": config.validation_fraction, "seed": config.seed},
        "training": info,
        "field_weights": {name: round(float(w), 4) for (name, _), w in zip(blocks, weights, strict=True)},
        "residual_norm": float(np.linalg.norm(layer.residual.numpy())),
        "config": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in dataclasses.asdict(config).items()},
        "gpus": gpus,
        "scorer": {"scoring_model": join_path(config.model_dir, SCORING_MODEL_JSON), **scorer_facts},
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    write_text(join_path(config.model_dir, REPORT_JSON), json.dumps(report, indent=2))
    png = _plot(report)
    if png is not None:
        write_bytes(join_path(config.model_dir, REPORT_PNG), png)
    _LOGGER.info("trained model written to %s (best epoch %d) in %.1f s", config.model_dir,
                 info["best_epoch"], timings["total_seconds"])
    return report

