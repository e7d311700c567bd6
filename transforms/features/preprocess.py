"""tf.Transform preprocessing of record fields: analyse once, apply the same transform_fn to every corpus.

What it does, per record (all in TF ops, so the exported ``transform_fn`` reproduces it exactly):

* **Text fields** are normalised by ``transforms.features.normalize`` (accents folded, lower case,
  apostrophes deleted, other punctuation and whitespace runs to one space, dates to numbers; see
  there), and common street-type and company-suffix words abbreviated (``street`` -> ``st``,
  ``limited`` -> ``ltd``).
* The normalised text is cut into word tokens and into character 2- and 3-grams of each word padded
  with a boundary marker (``#smith#``), so a gram bag ignores word order (``3 7 1985`` = ``1985 3 7``).
  A value that is a whole date also gets two date tokens (``1985_3_7``, ``1985_7_3``), equal for every
  writing of the date, so a model can weigh the full date rather than its common day/month numbers.
* Tokens and grams are hashed (FarmHash) into ``HASH_BUCKETS`` ids and weighted by their inverse
  document frequency over the analysed corpora, ``log((N + 1) / (df + 1))`` (a term in every record
  weighs ~0). Document frequencies are one fixed-size ``tft.sum`` over hashed ids (the approach of
  ``tft.experimental.document_frequency``), so analysis scales to hundreds of millions of records
  without a vocabulary file, and the IDF is one table lookup, so equal terms get bit-equal weights.
  IDF is per field: the same gram hashes to the same id in every field (so a model can pool fields)
  but its document frequency is counted per field. All text fields go through one chain of ops
  (stacked as one column), which keeps the traced graph small.
  An empty or null value gives no tokens and ``<field>__missing = 1``.
* **Numeric fields** are z-scored with ``tft.scale_to_z_score`` over the present values; a null (or
  NaN) value becomes 0 with ``<field>__missing = 1``.

Which corpus the analysers see: in link mode the queries and candidates *together*, in dedup mode the one
corpus. Matching compares records of both corpora in one feature space, so the weights must be the same
for both sides (identical records -> identical features); estimating them on the union uses every
record, keeps a small candidate or query set from producing noisy IDF/z-scores, and treats a term that
is rare overall as informative whichever side it comes from. Pass ``transform_fn_dir_in`` to skip
analysis and reuse the statistics of an earlier run (e.g. to embed new records consistently).

Output features (see :func:`output_feature_keys`), per text field ``f``: ``f__grams`` / ``f__words``
(int64 hashed ids, variable length, at most ``MAX_TERMS_PER_FIELD``), ``f__gram_weights`` /
``f__word_weights`` (float32 IDF per id, aligned), ``f__missing`` (float32 0/1); per numeric field
``g``: ``g__z`` and ``g__missing`` (float32). Records keep their ids and origins through tf.Transform as
passthrough columns of the Arrow RecordBatches and come out as :class:`TransformedBatch` elements.

Bad records: a row whose numeric value is infinite (or too large to z-score) becomes a dead letter with
stage 'preprocess'; nothing in the TF graph can fail on a valid row (invalid UTF-8 is replaced).

What it does not do: embed (``transforms.features.embed``), phonetic coding, nicknames, or transliteration of
non-Latin scripts beyond NFKD.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.tfxio import tensor_adapter

from transforms.common.dead_letters import DEAD_LETTER_TAG, DeadLetter, make_dead_letter
from transforms.common.schema import FeatureBatch, Role
from transforms.features.normalize import (
    abbreviate_tokens,
    abbreviation_table,
    fold_table,
    lookup_tables,
    normalize_text,
)

__all__ = [
    "HASH_BUCKETS",
    "MAX_TERMS_PER_FIELD",
    "NGRAM_WIDTHS",
    "TEXT_KINDS",
    "NUMERIC_KINDS",
    "feature_key",
    "output_feature_keys",
    "make_preprocessing_fn",
    "feature_batch_to_arrow",
    "TransformedBatch",
    "TransformedBatchCoder",
    "PreprocessResult",
    "AnalyzeAndTransformFeatures",
]

_LOGGER = logging.getLogger(__name__)
STAGE = "preprocess"

# Hashed id space of tokens and grams. 2**20 keeps hash collisions rare for the distinct grams and
# tokens of a field while the per-field document-frequency accumulator stays a 4 MB array.
HASH_BUCKETS = 2**20
NGRAM_WIDTHS = (2, 3)
# Bounds the terms kept per field and kind: record fields are short, and a 10,000-character value
# must not make a whole batch pad to 10,000 columns downstream.
MAX_TERMS_PER_FIELD = 256
TEXT_KINDS = ("grams", "gram_weights", "words", "word_weights", "missing")
NUMERIC_KINDS = ("z", "missing")

# Passthrough columns (not features): they ride along the Arrow batches through tf.Transform.
_ID_COLUMN = "__record_id__"
_ORIGIN_COLUMN = "__record_origin__"
_BOUNDARY = "#"  # cannot occur in normalised text (only letters, digits and spaces survive)
_WORD_PREFIX = "$"  # keeps a word's hash apart from a gram with the same characters
_SAFE_KEY = re.compile(r"[^0-9A-Za-z_]")
# A whole value that is a date, once normalised: year first, or year last.
_YMD = r"((?:19|20)\d\d) (\d{1,2}) (\d{1,2})"
_DMY = r"(\d{1,2}) (\d{1,2}) ((?:19|20)\d\d)"


def feature_key(field: str, kind: str) -> str:
    """The output feature name for one field and kind (``TEXT_KINDS`` or ``NUMERIC_KINDS``)."""
    if kind not in TEXT_KINDS and kind not in NUMERIC_KINDS:
        raise ValueError(f"unknown feature kind {kind!r}")
    return f"{_SAFE_KEY.sub('_', field)}__{kind}"


def output_feature_keys(text_fields: tuple[str, ...], numeric_fields: tuple[str, ...]) -> tuple[str, ...]:
    """Every feature the preprocessing_fn outputs for these fields, in a stable order."""
    keys = [feature_key(f, k) for f in text_fields for k in TEXT_KINDS]
    keys += [feature_key(f, k) for f in numeric_fields for k in NUMERIC_KINDS]
    return tuple(keys)


def _check_fields(text_fields: tuple[str, ...], numeric_fields: tuple[str, ...]) -> None:
    if not text_fields and not numeric_fields:
        raise ValueError("give at least one text or numeric field")
    fields = list(text_fields) + list(numeric_fields)
    if len(set(fields)) != len(fields):
        raise ValueError(f"a field is listed twice: {fields}")
    if any(not f for f in fields):
        raise ValueError("field names must be non-empty")
    keys = output_feature_keys(text_fields, numeric_fields)
    if len(set(keys)) != len(keys):
        raise ValueError(f"fields {fields} map to clashing feature names once non [A-Za-z0-9_] "
                         "characters become '_'; rename one")


def _tables() -> tuple[tf.lookup.StaticHashTable, tf.lookup.StaticHashTable]:
    """The (accent folding, abbreviation) lookup tables.

    Inside tf.Transform's tracing, ``tft.make_and_track_object`` builds them in the init scope and
    saves them with the transform_fn, so they are not re-imported on every batch; elsewhere (eager
    code, a plain tf.function) they are built in the init scope too.
    """
    if tf.inside_function():
        try:
            return (tft.make_and_track_object(fold_table, name="corpus_matcher_fold_table"),
                    tft.make_and_track_object(abbreviation_table, name="corpus_matcher_abbreviations"))
        except RuntimeError:  # a tf.function outside tf.Transform: nothing to track them with
            _LOGGER.debug("lookup tables built outside tf.Transform")
    return lookup_tables()


def _salt(field: str, kind: str) -> tuple[int, int]:
    """Odd multiplier and offset that move a field's ids to its own place in the IDF id space."""
    digest = hashlib.sha256(f"{field}\x00{kind}".encode()).digest()
    return int.from_bytes(digest[:4], "little") | 1, int.from_bytes(digest[4:8], "little")


def _date_tokens(texts: tf.Tensor) -> tf.RaggedTensor:
    """Two extra word tokens for a value that is a whole date, the same for any field order.

    The day/month components alone are common numbers (low IDF); the whole date is rare. A date
    ``y m d`` gets the tokens ``y_m_d`` and ``y_d_m``, so yyyy-mm-dd, dd/mm/yyyy and mm/dd/yyyy writings
    of one date share both (and 03/12 vs 12/03 ambiguity costs nothing).
    """
    is_ymd = tf.strings.regex_full_match(texts, _YMD)
    is_dmy = tf.strings.regex_full_match(texts, _DMY)
    first = tf.where(is_ymd, tf.strings.regex_replace(texts, _YMD, r"\1_\2_\3"),
                     tf.strings.regex_replace(texts, _DMY, r"\3_\2_\1"))
    second = tf.where(is_ymd, tf.strings.regex_replace(texts, _YMD, r"\1_\3_\2"),
                      tf.strings.regex_replace(texts, _DMY, r"\3_\1_\2"))
    is_date = tf.logical_or(is_ymd, is_dmy)
    return tf.ragged.boolean_mask(tf.stack([first, second], axis=1), tf.stack([is_date, is_date], axis=1))


def _tokens(texts: tf.Tensor, abbreviations: tf.lookup.StaticHashTable) -> tuple[tf.RaggedTensor,
                                                                                  tf.RaggedTensor]:
    """Normalised text -> (hashed gram ids, hashed word ids), ragged [n, None] int64 each."""
    words = tf.strings.split(texts)  # ragged [n, words]; '' -> no words
    words = words.with_flat_values(abbreviate_tokens(words.flat_values, abbreviations))
    padded = words.with_flat_values(tf.strings.join([_BOUNDARY, words.flat_values, _BOUNDARY]))
    words = tf.concat([words, _date_tokens(texts)], axis=1)
    chars = tf.strings.unicode_split(padded, "UTF-8", errors="replace")  # [n, words, chars]
    grams = tf.strings.ngrams(chars, ngram_width=NGRAM_WIDTHS, separator="").merge_dims(1, 2)
    grams = grams[:, :MAX_TERMS_PER_FIELD]
    words = words[:, :MAX_TERMS_PER_FIELD]
    gram_ids = tf.ragged.map_flat_values(tf.strings.to_hash_bucket_fast, grams, HASH_BUCKETS)
    word_ids = tf.ragged.map_flat_values(
        tf.strings.to_hash_bucket_fast, tf.strings.join([_WORD_PREFIX, words.flat_values]),
        HASH_BUCKETS)
    return gram_ids, words.with_flat_values(word_ids)


def _salt_table(text_fields: tuple[str, ...], kind: str) -> tuple[tf.Tensor, tf.Tensor]:
    pairs = [_salt(f, kind) for f in text_fields]
    return (tf.constant([m for m, _ in pairs], tf.int64), tf.constant([a for _, a in pairs], tf.int64))


def _idf(ids: tf.RaggedTensor, field_of_row: tf.Tensor, salts: tuple[tf.Tensor, tf.Tensor],
         num_records: tf.Tensor, name: str) -> tf.RaggedTensor:
    """IDF of each id, with document frequencies counted per field (rows are (field, record) pairs)."""
    field_of_value = tf.gather(field_of_row, ids.value_rowids())
    salted = tf.math.floormod(ids.flat_values * tf.gather(salts[0], field_of_value)
                              + tf.gather(salts[1], field_of_value), HASH_BUCKETS)
    # Document frequencies of all fields in one fixed-size (HASH_BUCKETS) sum: salting moves each
    # field's ids to its own place in the id space. A term counts once per (record, field).
    pairs, _ = tf.unique(ids.value_rowids() * HASH_BUCKETS + salted)
    counts = tf.math.bincount(tf.math.floormod(pairs, HASH_BUCKETS), minlength=HASH_BUCKETS,
                              maxlength=HASH_BUCKETS, dtype=tf.int64)
    df = tft.sum(counts[None, :], reduce_instance_dims=False, name=name)  # [HASH_BUCKETS]
    # One IDF table looked up per id (not log() per occurrence): equal ids get bit-equal weights
    # in every batch and corpus, and the table is a constant of the transform graph.
    table = tf.math.log((num_records + 1.0) / (tf.cast(df, tf.float32) + 1.0))
    return ids.with_flat_values(tf.reshape(tf.gather(table, salted), [-1]))  # gather loses the rank


def _per_field(row_splits: tf.Tensor, values: list[tf.Tensor], num_fields: int,
               n: tf.Tensor) -> list[list[tf.RaggedTensor]]:
    """Cuts ragged [fields * n, None] tensors (shared row_splits) into one [n, None] per field.

    Plain row_splits arithmetic: a handful of ops per field, where ragged row slicing adds dozens
    (the traced graph's size is what tf.Transform pays for on every trace).
    """
    out = []
    for index in range(num_fields):
        splits = row_splits[index * n:(index + 1) * n + 1]
        start, stop = splits[0], splits[-1]
        splits = splits - start
        out.append([tf.RaggedTensor.from_row_splits(v[start:stop], splits, validate=False)
                    for v in values])
    return out


def make_preprocessing_fn(text_fields: tuple[str, ...],
                          numeric_fields: tuple[str, ...]) -> Callable[[dict], dict]:
    """Builds the tf.Transform preprocessing_fn for these fields.

    Args:
        text_fields: fields fed as tf.string [n] ('' = missing).
        numeric_fields: fields fed as float64 SparseTensor [n, <=1] (no value = missing).

    Returns:
        ``preprocessing_fn(inputs) -> outputs`` with the features named by :func:`output_feature_keys`.

    Raises:
        ValueError: no fields, a duplicate field, or two fields whose feature names clash.
    """
    text_fields, numeric_fields = tuple(text_fields), tuple(numeric_fields)
    _check_fields(text_fields, numeric_fields)

    def preprocessing_fn(inputs: dict[str, Any]) -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        if text_fields:
            # All text fields go through one chain of ops as one [fields * n] column: a graph a
            # fraction the size of one chain per field, which tf.Transform traces several times.
            n = tf.shape(inputs[text_fields[0]], out_type=tf.int64)[0]
            tables = _tables()
            texts = normalize_text(tf.concat([inputs[f] for f in text_fields], axis=0), tables)
            missing = tf.cast(tf.equal(texts, ""), tf.float32)
            gram_ids, word_ids = _tokens(texts, tables[1])
            field_of_row = tf.repeat(tf.range(len(text_fields), dtype=tf.int64), n)
            num_records = tf.cast(tft.size(missing[:n], name="num_records"), tf.float32)
            gram_w = _idf(gram_ids, field_of_row, _salt_table(text_fields, "grams"), num_records,
                          "gram_df")
            word_w = _idf(word_ids, field_of_row, _salt_table(text_fields, "words"), num_records,
                          "word_df")
            grams = _per_field(gram_ids.row_splits, [gram_ids.flat_values, gram_w.flat_values],
                               len(text_fields), n)
            words = _per_field(word_ids.row_splits, [word_ids.flat_values, word_w.flat_values],
                               len(text_fields), n)
            for index, field in enumerate(text_fields):
                outputs[feature_key(field, "missing")] = missing[index * n:(index + 1) * n]
                outputs[feature_key(field, "grams")], outputs[feature_key(field, "gram_weights")] = (
                    grams[index])
                outputs[feature_key(field, "words")], outputs[feature_key(field, "word_weights")] = (
                    words[index])
        for field in numeric_fields:
            values = inputs[field]
            ones = tf.SparseTensor(values.indices, tf.ones_like(values.values), values.dense_shape)
            # reshape: sparse reductions lose the static rank tf.Transform needs for the schema
            present = tf.reshape(tf.sparse.reduce_sum(ones, axis=1), [-1]) > 0
            z = tft.scale_to_z_score(values, name=f"z_{_SAFE_KEY.sub('_', field)}")
            outputs[feature_key(field, "z")] = tf.cast(tf.reshape(tf.sparse.reduce_sum(z, axis=1), [-1]),
                                                       tf.float32)
            outputs[feature_key(field, "missing")] = 1.0 - tf.cast(present, tf.float32)
        return outputs

    return preprocessing_fn


def _tensor_adapter_config(text_fields: tuple[str, ...],
                           numeric_fields: tuple[str, ...]) -> tensor_adapter.TensorAdapterConfig:
    """Arrow schema + tensor representations of the batches :func:`feature_batch_to_arrow` makes."""
    fields = [pa.field(f, pa.list_(pa.binary())) for f in text_fields]
    fields += [pa.field(f, pa.list_(pa.float64())) for f in numeric_fields]
    fields += [pa.field(_ID_COLUMN, pa.list_(pa.binary())), pa.field(_ORIGIN_COLUMN, pa.list_(pa.binary()))]
    representations = {}
    for f in text_fields:
        rep = schema_pb2.TensorRepresentation()
        rep.dense_tensor.column_name = f  # exactly one value per row, shape [] -> tf.string [n]
        representations[f] = rep
    for f in numeric_fields:
        rep = schema_pb2.TensorRepresentation()
        rep.varlen_sparse_tensor.column_name = f
        representations[f] = rep
    return tensor_adapter.TensorAdapterConfig(pa.schema(fields), representations)


def _single_value_lists(values: pa.Array) -> pa.Array:
    offsets = pa.array(np.arange(len(values) + 1, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values)


def _strings_as_binary(values: np.ndarray) -> pa.Array:
    return pa.array(values.tolist(), type=pa.string()).view(pa.binary())


def feature_batch_to_arrow(batch: FeatureBatch, text_fields: tuple[str, ...],
                           numeric_fields: tuple[str, ...]) -> tuple[pa.RecordBatch | None, list[DeadLetter]]:
    """Turns a FeatureBatch into the Arrow batch tf.Transform reads, rejecting bad rows.

    Rows with an infinite (or too large to z-score) numeric value become dead letters (stage
    'preprocess'); NaN and null mean missing.

    Returns:
        The RecordBatch of the good rows (None when there are none) and the dead letters.

    Raises:
        ValueError: the batch lacks a field or has a column of the wrong type (a wiring bug, not
            bad data).
    """
    table = batch.table
    n = len(batch.ids)
    if table.num_rows != n:
        raise ValueError(f"FeatureBatch has {n} ids but {table.num_rows} rows")
    names = set(table.schema.names)
    missing = [f for f in (*text_fields, *numeric_fields) if f not in names]
    if missing:
        raise ValueError(f"FeatureBatch lacks fields {missing}; it has {sorted(names)}")
    errors: dict[int, str] = {}
    numbers: dict[str, np.ndarray] = {}
    for f in numeric_fields:
        column = table.column(f)
        if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)
                or pa.types.is_null(column.type)):
            raise ValueError(f"numeric field {f!r} has Arrow type {column.type}")
        x = column.cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
        with np.errstate(invalid="ignore"):
            bad = ~np.isnan(x) & ~(np.abs(x) < 1e150)  # squares must stay finite in the variance
        for i in np.flatnonzero(bad):
            errors.setdefault(int(i), f"field {f!r}: numeric value {x[i]!r} is infinite or too large")
        numbers[f] = x
    for f in text_fields:
        column_type = table.column(f).type
        if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)
                or pa.types.is_null(column_type)):
            raise ValueError(f"text field {f!r} has Arrow type {column_type}")
    dead = []
    if errors:
        for i, error in sorted(errors.items()):
            payload = {"id": batch.ids[i], **{f: table.column(f)[i].as_py() for f in table.schema.names}}
            dead.append(make_dead_letter(STAGE, batch.ids[i], error, payload, batch.origins[i]))
    keep = np.ones(n, dtype=bool)
    keep[list(errors)] = False
    if not keep.any():
        return None, dead
    arrays = []
    for f in text_fields:
        column = table.column(f)
        if errors:
            column = column.filter(pa.array(keep))
        if pa.types.is_null(column.type):
            column = pa.array([""] * len(column), type=pa.string())
        column = column.cast(pa.string()).fill_null("")
        arrays.append(_single_value_lists(column.view(pa.binary())))
    for f in numeric_fields:
        x = numbers[f][keep]
        present = ~np.isnan(x)
        offsets = np.zeros(len(x) + 1, dtype=np.int32)
        np.cumsum(present, out=offsets[1:])
        arrays.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(x[present])))
    arrays.append(_single_value_lists(_strings_as_binary(batch.ids[keep])))
    arrays.append(_single_value_lists(_strings_as_binary(batch.origins[keep])))
    schema = _tensor_adapter_config(text_fields, numeric_fields).arrow_schema
    return pa.RecordBatch.from_arrays(arrays, schema=schema), dead


class TransformedBatch(NamedTuple):
    """Records after preprocessing, ready to embed.

    Attributes:
        ids: object array of str, shape [n].
        origins: object array of str, shape [n] (``"<file>#<row>"``).
        table: ``pyarrow.RecordBatch`` of the transformed features (:func:`output_feature_keys`):
            variable-length features as list<int64> / list<float>, scalar ones as one-value lists.
    """

    ids: np.ndarray
    origins: np.ndarray
    table: Any

    def __len__(self) -> int:
        return len(self.ids)


class TransformedBatchCoder(beam.coders.Coder):
    """Encodes a TransformedBatch as one Arrow IPC stream (features + id and origin columns).

    Compact and fast for the largest elements between preprocessing and embedding, and its size
    estimate (Beam samples element sizes) reads the Arrow buffer sizes instead of encoding.
    """

    def encode(self, value: TransformedBatch) -> bytes:
        table = value.table
        columns = list(table.columns) + [pa.array(value.ids.tolist(), pa.string()),
                                         pa.array(value.origins.tolist(), pa.string())]
        batch = pa.RecordBatch.from_arrays(columns, names=table.schema.names + [_ID_COLUMN, _ORIGIN_COLUMN])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        return sink.getvalue().to_pybytes()

    def decode(self, encoded: bytes) -> TransformedBatch:
        batch = pa.ipc.open_stream(encoded).read_next_batch()
        n = batch.num_columns - 2
        table = pa.RecordBatch.from_arrays(batch.columns[:n], names=batch.schema.names[:n])
        return TransformedBatch(ids=batch.column(n).to_numpy(zero_copy_only=False).astype(object),
                                origins=batch.column(n + 1).to_numpy(zero_copy_only=False).astype(object),
                                table=table)

    def estimate_size(self, value: TransformedBatch) -> int:
        return int(value.table.nbytes) + 48 * 2 * len(value.ids)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> type:
        return TransformedBatch


beam.coders.registry.register_coder(TransformedBatch, TransformedBatchCoder)


class PreprocessResult(NamedTuple):
    """Transformed batches per role (None for a role not given) and the 'preprocess' dead letters."""

    queries: beam.PCollection | None
    candidates: beam.PCollection | None
    input: beam.PCollection | None
    dead_letters: beam.PCollection
    written: beam.PCollection | None = None  # one element once the transform_fn is written


class _ToArrowFn(beam.DoFn):
    def __init__(self, text_fields: tuple[str, ...], numeric_fields: tuple[str, ...]):
        self._text_fields = text_fields
        self._numeric_fields = numeric_fields

    def process(self, batch: FeatureBatch) -> Iterator[Any]:
        record_batch, dead = feature_batch_to_arrow(batch, self._text_fields, self._numeric_fields)
        if record_batch is not None:
            yield record_batch
        for letter in dead:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, letter)


def _to_transformed_batch(element: tuple[pa.RecordBatch, dict]) -> TransformedBatch:
    record_batch, _ = element  # unary passthrough data only appears for 1-row outputs of n-row inputs
    names = record_batch.schema.names
    ids = record_batch.column(names.index(_ID_COLUMN)).flatten().cast(pa.string())
    origins = record_batch.column(names.index(_ORIGIN_COLUMN)).flatten().cast(pa.string())
    keep = [i for i, name in enumerate(names) if name not in (_ID_COLUMN, _ORIGIN_COLUMN)]
    table = pa.RecordBatch.from_arrays([record_batch.column(i) for i in keep],
                                       names=[names[i] for i in keep])
    return TransformedBatch(ids=ids.to_numpy(zero_copy_only=False).astype(object),
                            origins=origins.to_numpy(zero_copy_only=False).astype(object), table=table)


def _as_roles(corpora: Any) -> dict[str, beam.PCollection]:
    if isinstance(corpora, beam.PCollection):
        return {Role.INPUT: corpora}
    if isinstance(corpora, Mapping):
        roles = dict(corpora)
    elif isinstance(corpora, tuple) and len(corpora) == 2:
        roles = {Role.QUERIES: corpora[0], Role.CANDIDATES: corpora[1]}
    elif isinstance(corpora, tuple) and len(corpora) == 1:
        roles = {Role.INPUT: corpora[0]}
    else:
        raise TypeError("expected {role: PCollection}, (queries, candidates) or (input,)")
    unknown = set(roles) - {Role.QUERIES, Role.CANDIDATES, Role.INPUT}
    if unknown or not roles:
        raise ValueError(f"roles must be among queries, candidates, input; got {sorted(roles)}")
    return roles


class AnalyzeAndTransformFeatures(beam.PTransform):
    """{role: PCollection[FeatureBatch]} -> PreprocessResult of PCollection[TransformedBatch] per role.

    Analyses the union of all given corpora once (or loads ``transform_fn_dir_in``), applies the same
    transform_fn to each corpus on tf.Transform's Arrow RecordBatch path, and writes the transform_fn
    to ``transform_fn_dir_out`` (``<dir>/transform_fn`` and ``<dir>/transformed_metadata``; any Beam
    filesystem path, e.g. gs://).
    """

    def __init__(self, *, text_fields: tuple[str, ...], numeric_fields: tuple[str, ...] = (),
                 transform_fn_dir_out: str | None = None, transform_fn_dir_in: str | None = None,
                 temp_dir: str):
        super().__init__()
        self._text_fields = tuple(text_fields)
        self._numeric_fields = tuple(numeric_fields)
        _check_fields(self._text_fields, self._numeric_fields)
        if not temp_dir:
            raise ValueError("temp_dir is required (tf.Transform writes its analysis there)")
        self._dir_out = transform_fn_dir_out or None
        self._dir_in = transform_fn_dir_in or None
        self._temp_dir = temp_dir

    def _read_transform_fn(self, pipeline: beam.Pipeline) -> Any:
        transform_fn = pipeline | "ReadTransformFn" >> tft_beam.ReadTransformFn(self._dir_in)
        expected = set(output_feature_keys(self._text_fields, self._numeric_fields))
        names = set(schema_utils.schema_as_feature_spec(transform_fn[1].schema).feature_spec)
        if names != expected:
            raise ValueError(f"--transform_fn_dir {self._dir_in!r} was made for other fields: it outputs "
                             f"{sorted(names)}, these fields need {sorted(expected)}")
        return transform_fn

    def expand(self, corpora: Any) -> PreprocessResult:
        roles = _as_roles(corpora)
        pipeline = next(iter(roles.values())).pipeline
        config = _tensor_adapter_config(self._text_fields, self._numeric_fields)
        to_arrow = _ToArrowFn(self._text_fields, self._numeric_fields)
        arrow, dead = {}, []
        for role, pcoll in roles.items():
            name = role.capitalize()
            out = pcoll | f"ToArrow{name}" >> beam.ParDo(to_arrow).with_outputs(DEAD_LETTER_TAG,
                                                                                main="batches")
            arrow[role] = out.batches
            dead.append(out[DEAD_LETTER_TAG])
        with tft_beam.Context(temp_dir=self._temp_dir, passthrough_keys={_ID_COLUMN, _ORIGIN_COLUMN}):
            if self._dir_in:
                transform_fn = self._read_transform_fn(pipeline)
            else:
                union = tuple(arrow.values()) | "UnionForAnalysis" >> beam.Flatten()
                transform_fn = (union, config) | "Analyze" >> tft_beam.AnalyzeDataset(
                    make_preprocessing_fn(self._text_fields, self._numeric_fields))
            written = None
            if self._dir_out:
                written = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(self._dir_out)
            transformed = {}
            for role, batches in arrow.items():
                name = role.capitalize()
                data, _ = ((batches, config), transform_fn) | f"Transform{name}" >> (
                    tft_beam.TransformDataset(output_record_batches=True))
                transformed[role] = data | f"ToTransformedBatches{name}" >> beam.Map(
                    _to_transformed_batch).with_output_types(TransformedBatch)
        dead_letters = tuple(dead) | "FlattenDeadLetters" >> beam.Flatten(pipeline=pipeline)
        return PreprocessResult(queries=transformed.get(Role.QUERIES),
                                candidates=transformed.get(Role.CANDIDATES),
                                input=transformed.get(Role.INPUT), dead_letters=dead_letters,
                                written=written)
