"""The built-in record embedder: a TF model built from code (no download, no training, no labels).

It reads the features of :mod:`transforms.preprocess` (per text field: hashed character 2/3-gram ids and
word ids with their IDF weights; per numeric field: z-score and missing flag) and returns one float32
[batch, dim] L2-normalised vector per record, so that the cosine of two vectors is a record similarity.
It is exported as an ordinary SavedModel (``serving_default``: named feature inputs -> ``embedding``),
exactly like a user model, and served by the same handler (``transforms.embed``).

Design, for real-world records with typos, swapped or missing fields, abbreviations and reformatted
dates:

* **Per-field TF-IDF bags, randomly projected.** A field's grams and words form a sparse TF-IDF vector
  (weight = IDF, repeated terms add up). Character grams tolerate typos (``smith``/``smyth`` share half
  their 2/3-grams), word ids reward exact words, IDF makes rare values count more than common ones
  (a shared surname ``Pemberton`` says more than a shared state). The sparse vector is projected to
  ``field_dim`` dims by a fixed, seeded random +-1 (Rademacher) matrix: a Johnson-Lindenstrauss
  projection that keeps cosines to about ``1/sqrt(field_dim)`` without storing a vocabulary. The matrix
  is a ``[2**18, 16]`` int8 table; a field's rows are a seeded permutation of the hashed ids (one
  independent permutation per 16 output dims), so fields share the table but not their projections.
* **Per-field normalisation and weights.** Each field block is L2-normalised (a long address does not
  drown a short name) and scaled by a field weight: ``sqrt`` of the IDF mass of the record's value
  (mean IDF of its terms), an unsupervised stand-in for the Fellegi-Sunter agreement weight: agreeing
  on a rare value is worth more than agreeing on a common one, and a field the two records both lack
  contributes nothing (a missing field is a zero block, not a match or a mismatch).
* **A pooled bag across fields.** The grams and words of all text fields, each field normalised, are
  also projected with one projection shared by all fields into ``pooled_dim`` dims: a given name and
  surname swapped (or a suburb typed into the street line) still agree here.
* **Numeric fields** become random Fourier features of the z-score (``cos``/``sin`` of seeded
  frequencies): their dot product approximates an RBF kernel ``exp(-dz**2 / (2 bandwidth**2))``, so
  close values are similar and far ones are not. Missing -> zero block.
* The blocks are concatenated and L2-normalised. A record with nothing in any field gets the zero
  vector, which the embed step rejects.

Dims: ``field_dim`` per text field + ``pooled_dim`` (when there are 2+ text fields) + ``numeric_dim`` per
numeric field; the defaults (16, 64, 16) give 192 for the eight fields of a person record.

What it does not do: learn anything, know nicknames or phonetics, or compare fields across records
except through the pooled bag.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import tensorflow as tf

from transforms.preprocess import feature_key

__all__ = ["DefaultEmbedder", "build_default_model", "export_default_model", "embedding_dim"]

_LOGGER = logging.getLogger(__name__)

_TABLE_ROWS = 2**18
_TABLE_WIDTH = 16
_EPS = 1e-12


def embedding_dim(text_fields: tuple[str, ...], numeric_fields: tuple[str, ...], *, field_dim: int = 16,
                  pooled_dim: int = 64, numeric_dim: int = 16) -> int:
    """The vector size the default embedder produces for these fields and dims."""
    pooled = pooled_dim if len(text_fields) > 1 else 0
    return field_dim * len(text_fields) + pooled + numeric_dim * len(numeric_fields)


def _salts(name: str, count: int, seed: int) -> np.ndarray:
    """``count`` (odd multiplier, offset) pairs for a block, derived from its name and the seed."""
    out = []
    for k in range(count):
        digest = hashlib.sha256(f"{seed}\x00{name}\x00{k}".encode()).digest()
        out.append((int.from_bytes(digest[:4], "little") | 1, int.from_bytes(digest[4:8], "little")))
    return np.array(out, dtype=np.int64)


class DefaultEmbedder(tf.Module):
    """The embedder as a ``tf.Module``; ``serve(features)`` is its serving function."""

    def __init__(self, text_fields: tuple[str, ...], numeric_fields: tuple[str, ...] = (), *,
                 field_dim: int = 16, pooled_dim: int = 64, numeric_dim: int = 16,
                 word_weight: float = 1.0, pooled_weight: float = 1.0, field_weighting: str = "idf",
                 numeric_bandwidth: float = 0.5, seed: int = 0):
        super().__init__(name="default_embedder")
        text_fields, numeric_fields = tuple(text_fields), tuple(numeric_fields)
        if not text_fields and not numeric_fields:
            raise ValueError("the default embedder needs at least one text or numeric field")
        for name, value in (("field_dim", field_dim), ("pooled_dim", pooled_dim)):
            if value < _TABLE_WIDTH or value % _TABLE_WIDTH:
                raise ValueError(f"{name} must be a positive multiple of {_TABLE_WIDTH}, got {value}")
        if numeric_dim < 2 or numeric_dim % 2:
            raise ValueError(f"numeric_dim must be even and >= 2, got {numeric_dim}")
        if field_weighting not in ("idf", "equal"):
            raise ValueError(f"field_weighting must be 'idf' or 'equal', got {field_weighting!r}")
        self.text_fields = text_fields
        self.numeric_fields = numeric_fields
        self._word_weight = float(word_weight)
        self._pooled_weight = float(pooled_weight)
        self._field_weighting = field_weighting
        self._pooled = len(text_fields) > 1
        self.dim = embedding_dim(text_fields, numeric_fields, field_dim=field_dim,
                                 pooled_dim=pooled_dim, numeric_dim=numeric_dim)
        rng = np.random.default_rng(seed)
        signs = rng.integers(0, 2, size=(_TABLE_ROWS, _TABLE_WIDTH), dtype=np.int8) * 2 - 1
        self.table = tf.Variable(signs.astype(np.int8), trainable=False, name="projection")
        self._field_k = field_dim // _TABLE_WIDTH
        self._pooled_k = pooled_dim // _TABLE_WIDTH if self._pooled else 0
        # [fields, field_k, 2] and [pooled_k, 2]: (odd multiplier, offset) of each 16-dim sub-block.
        self._field_salts = tf.constant(np.stack([_salts(f, self._field_k, seed) for f in text_fields])
                                        if text_fields else np.zeros((0, self._field_k, 2), np.int64))
        self._pooled_salts = tf.constant(_salts("\x00pooled", self._pooled_k, seed).reshape(-1, 2))
        self._frequencies = [
            tf.constant(rng.normal(0.0, 1.0 / numeric_bandwidth, size=numeric_dim // 2), tf.float32)
            for _ in numeric_fields]
        specs = {}
        for f in text_fields:
            for kind, dtype in (("grams", tf.int64), ("gram_weights", tf.float32), ("words", tf.int64),
                                ("word_weights", tf.float32)):
                key = feature_key(f, kind)
                specs[key] = tf.TensorSpec([None, None], dtype, name=key)
        for f in numeric_fields:
            for kind in ("z", "missing"):
                key = feature_key(f, kind)
                specs[key] = tf.TensorSpec([None], tf.float32, name=key)
        self.serve = tf.function(self._embed, input_signature=[specs])

    def _text_blocks(self, features: dict[str, tf.Tensor]) -> list[tf.Tensor]:
        """Field blocks and the pooled block, from one gather over every term of every text field."""
        n = tf.shape(features[feature_key(self.text_fields[0], "grams")])[0]
        num_fields = len(self.text_fields)
        ids, weights, field_of_col, scales = [], [], [], []
        for index, f in enumerate(self.text_fields):
            word_w = features[feature_key(f, "word_weights")]
            ids += [features[feature_key(f, "grams")], features[feature_key(f, "words")]]
            weights += [features[feature_key(f, "gram_weights")], self._word_weight * word_w]
            width = tf.shape(ids[-2])[1] + tf.shape(ids[-1])[1]
            field_of_col.append(tf.fill([width], tf.constant(index, tf.int64)))
            if self._field_weighting == "idf":
                scales.append(tf.sqrt(tf.reduce_sum(word_w, axis=1)))
            else:
                scales.append(tf.cast(tf.reduce_any(word_w != 0, axis=1), tf.float32))
        ids, weights = tf.concat(ids, axis=1), tf.concat(weights, axis=1)
        # Only real terms (padding has weight 0) are projected: no work on padding.
        at = tf.where(weights != 0)  # [nnz, 2]: (row, column)
        term_ids = tf.gather_nd(ids, at)
        term_w = tf.gather_nd(weights, at)
        term_field = tf.gather(tf.concat(field_of_col, axis=0), at[:, 1])
        salts = tf.concat([tf.gather(self._field_salts, term_field),
                           tf.broadcast_to(self._pooled_salts[None], [tf.shape(term_ids)[0],
                                                                       self._pooled_k, 2])], axis=1)
        rows = tf.bitwise.bitwise_and(term_ids[:, None] * salts[:, :, 0] + salts[:, :, 1],
                                      _TABLE_ROWS - 1)  # [nnz, K]
        signs = tf.cast(tf.gather(self.table, rows), tf.float32)  # [nnz, K, 16]
        segment = at[:, 0] * num_fields + term_field  # one bag per (record, field)
        bags = tf.math.unsorted_segment_sum(signs * term_w[:, None, None], segment,
                                            tf.cast(n, tf.int64) * num_fields)
        bags = tf.reshape(bags, [n, num_fields, -1, _TABLE_WIDTH])
        scale = tf.stack(scales, axis=1)[:, :, None]  # [n, fields, 1]
        field_part = tf.reshape(bags[:, :, : self._field_k], [n, num_fields, -1])
        field_part = tf.math.l2_normalize(field_part, axis=2, epsilon=_EPS) * scale
        blocks = [tf.reshape(field_part, [n, -1])]
        if self._pooled:
            pooled = tf.reshape(bags[:, :, self._field_k:], [n, num_fields, -1])
            pooled = tf.reduce_sum(tf.math.l2_normalize(pooled, axis=2, epsilon=_EPS) * scale, axis=1)
            # The pooled block weighs pooled_weight times all field blocks together.
            fields_norm = tf.norm(blocks[0], axis=1, keepdims=True)
            blocks.append(tf.math.l2_normalize(pooled, axis=1, epsilon=_EPS) * fields_norm
                          * self._pooled_weight)
        return blocks

    def _embed(self, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        blocks = self._text_blocks(features) if self.text_fields else []
        for f, frequencies in zip(self.numeric_fields, self._frequencies, strict=True):
            z = features[feature_key(f, "z")]
            present = 1.0 - features[feature_key(f, "missing")]
            angles = z[:, None] * frequencies
            scale = present[:, None] / tf.sqrt(tf.cast(tf.size(frequencies), tf.float32))
            blocks.append(tf.concat([tf.cos(angles), tf.sin(angles)], 1) * scale)
        vectors = tf.concat(blocks, axis=1)
        return {"embedding": tf.math.l2_normalize(vectors, axis=1, epsilon=_EPS)}


def build_default_model(text_fields: tuple[str, ...], numeric_fields: tuple[str, ...] = (),
                        **kwargs) -> DefaultEmbedder:
    """Builds the default embedder for these fields (kwargs: see :class:`DefaultEmbedder`)."""
    return DefaultEmbedder(tuple(text_fields), tuple(numeric_fields), **kwargs)


def export_default_model(export_dir: str, text_fields: tuple[str, ...],
                         numeric_fields: tuple[str, ...] = (), **kwargs) -> str:
    """Builds the default embedder and saves it as a SavedModel with a ``serving_default`` signature.

    Deterministic for given fields and kwargs, so exporting twice gives the same model.

    Args:
        export_dir: the SavedModel directory (local or any TF filesystem, e.g. gs://).
        text_fields: the preprocessed text fields.
        numeric_fields: the preprocessed numeric fields.
        **kwargs: options of :class:`DefaultEmbedder`.

    Returns:
        ``export_dir``.
    """
    model = build_default_model(text_fields, numeric_fields, **kwargs)
    tf.saved_model.save(model, export_dir,
                        signatures={"serving_default": model.serve.get_concrete_function()})
    _LOGGER.info("exported the default embedder (%d dims) to %s", model.dim, export_dir)
    return export_dir
