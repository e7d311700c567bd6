"""Validation: turns raw rows into clean batches, sending every bad record to dead letters.

``ValidateRecords`` checks ids (present, non-empty, finite when numeric, at most ``max_id_length``
characters, valid Unicode) and either the precomputed vector (numeric, finite, non-zero under cosine)
or, when the job embeds, the text/numeric fields to embed (or the image field: bytes kept as they are,
text as its UTF-8 bytes, a path; see ``transforms.features.raw_inputs``). Vectors of a length other than the
corpus' dimension are rejected by ``CheckDims`` once the dimension is known (the most common length over
both corpora, computed in the pipeline). Duplicate ids are found later, where records are grouped by id
hash (``transforms.common.sharding.ShardRecords``), since no single batch can see them.

Vectors leave this module already prepared for the chosen distance (L2-normalised for cosine).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from transforms.common import metrics
from transforms.common.dead_letters import DEAD_LETTER_TAG, DeadLetter, make_dead_letter
from transforms.common.flags import DEFAULTS
from transforms.common.schema import MAX_TEXT_CHARS, FeatureBatch, RawBatch, VectorBatch

__all__ = ["ValidateRecords", "ValidateResult", "CheckDims", "CheckDimsResult", "validate_vectors",
           "validate_features"]

_LOGGER = logging.getLogger(__name__)
STAGE = "validate"
_ZERO_NORM = 1e-30


class ValidateResult(NamedTuple):
    batches: beam.PCollection
    dead_letters: beam.PCollection


def _origin(raw: RawBatch, row: int) -> str:
    """Where row ``row`` of ``raw`` was read: ``"<file>#<row in file>"``."""
    return f"{raw.source}#{raw.first_row + row}"


def _origins(raw: RawBatch, rows: np.ndarray) -> np.ndarray:
    """``"<file>#<row>"`` for each row (built by Arrow in C, not one f-string per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(rows):
        return np.empty(0, dtype=object)
    try:
        prefix = pa.scalar(f"{raw.source}#")
    except UnicodeEncodeError:  # a file name UTF-8 cannot encode (lone surrogates)
        return np.array([_origin(raw, int(r)) for r in rows], dtype=object)
    numbers = pc.cast(pa.array(np.asarray(rows, dtype=np.int64) + raw.first_row), pa.string())
    return pc.binary_join_element_wise(prefix, numbers, "").to_numpy(zero_copy_only=False)


def _row_payload(raw: RawBatch, i: int) -> Any:
    if raw.rows is not None:
        return raw.rows[i]
    return raw.table.slice(i, 1).to_pylist()[0]


def _scalar(value: Any) -> Any:
    """Unwraps length-1 lists (tf.Example features are lists) for scalar fields."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return value[0]
    return value


DEFAULT_MAX_ID_LENGTH = DEFAULTS["max_id_length"]  # the --max_id_length default


def _string_ids(col: pa.Array) -> list[str | None] | None:
    """Fast path for Arrow string id columns: stripped text, None for null or blank (vectorised)."""
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return None
    text = pc.utf8_trim_whitespace(col)
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, text.type), text)
    return text.to_numpy(zero_copy_only=False).tolist()


def _encodable(text: str) -> bool:
    """True when UTF-8 can encode ``text`` (it holds no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _id_text(v: Any) -> tuple[str | None, str]:
    """One raw id value as text, or (None, why it is not an id)."""
    if v is None or isinstance(v, (list, tuple, dict)):
        return None, ""
    if isinstance(v, bytes):  # a binary id column: replacing bytes could merge two ids
        try:
            v = v.decode("utf-8")
        except UnicodeDecodeError:
            return None, "id is not valid UTF-8"
    if isinstance(v, float):
        if not math.isfinite(v):  # JSON NaN/Infinity (and csv/parquet floats): no id
            return None, f"invalid id {v!r}: not a finite number"
        if v.is_integer():  # csv/json numbers: 12.0 -> '12'
            v = int(v)
    text = str(v).strip()
    return text or None, ""


def _read_ids(raw: RawBatch, id_field: str,
              max_id_length: int = DEFAULT_MAX_ID_LENGTH) -> tuple[list[str | None], list[str]]:
    """Each row's id (None when it has none) and why a row has none ('' for a usable id).

    Ids are rejected when missing or blank, non-finite numbers, longer than ``max_id_length``
    characters, or not valid Unicode (a lone surrogate, which only a JSON ``\\ud800`` escape can
    give): every id that passes can be hashed, sorted and written as UTF-8 exactly as read.
    """
    missing = f"missing or empty id field {id_field!r}"
    if raw.table is not None and id_field not in raw.table.schema.names:
        return [None] * raw.table.num_rows, [missing] * raw.table.num_rows
    fast = _string_ids(raw.table.column(id_field)) if raw.table is not None else None
    if fast is not None:  # Arrow strings are valid UTF-8: only their length can be wrong
        ids, reasons = fast, ["" if v is not None else missing for v in fast]
    else:
        if raw.table is not None:
            values = raw.table.column(id_field).to_pylist()
        else:
            values = [_scalar(row.get(id_field)) if isinstance(row, dict) else None for row in raw.rows]
        ids, reasons = [], []
        for v in values:
            text, why = _id_text(v)
            if text is not None and not _encodable(text):
                text, why = None, (f"id field {id_field!r} is not valid Unicode (a lone surrogate, "
                                   "which UTF-8 cannot encode)")
            ids.append(text)
            reasons.append("" if text is not None else (why or missing))
    for i, text in enumerate(ids):
        if text is not None and len(text) > max_id_length:
            ids[i] = None
            reasons[i] = (f"id field {id_field!r} is {len(text)} characters long "
                          f"(--max_id_length {max_id_length})")
    return ids, reasons


def _parse_vector(value: Any) -> np.ndarray:
    """One row's vector from a list, tuple, numpy array or JSON array string. Raises ValueError."""
    if isinstance(value, (bytes, str)):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"vector is not a JSON array: {e}") from None
    if value is None:
        raise ValueError("vector is missing")
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise ValueError(f"vector must be a list of numbers, got {type(value).__name__}")
    if any(isinstance(x, (bool, str, bytes, list, dict)) or x is None for x in value):
        raise ValueError("vector has non-numeric values")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"vector has non-numeric values: {e}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("vector must be a non-empty flat list")
    return arr


def _table_groups(table: pa.RecordBatch, field: str, usable: np.ndarray,
                  errors: list[str]) -> dict[int, tuple[np.ndarray, np.ndarray]] | None:
    """Fast path for Arrow list<number> columns: {length: (rows, float [rows, length])}, vectorised.

    Float32 and float64 values keep their type (no float64 copy of a float32 column); integers become
    float64.

    Rows that are not ``usable`` are skipped; missing or empty vectors get their error in ``errors``.
    Returns None when the column is not a list of numbers (the caller parses row by row).
    """
    col = table.column(field)
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        return None
    if not (pa.types.is_floating(col.type.value_type) or pa.types.is_integer(col.type.value_type)):
        return None
    lengths = pc.fill_null(pc.list_value_length(col), -1).to_numpy(zero_copy_only=False).astype(np.int64)
    # list_flatten drops null lists, so a row's values start after all earlier non-null rows' values.
    flat = pc.list_flatten(col).to_numpy(zero_copy_only=False)
    if flat.dtype not in (np.float32, np.float64):
        flat = flat.astype(np.float64)
    starts = np.concatenate([[0], np.cumsum(np.maximum(lengths, 0))[:-1]])
    for i in np.flatnonzero(usable & (lengths <= 0)):
        errors[i] = "vector is missing" if lengths[i] < 0 else "vector must be a non-empty flat list"
    if len(lengths) and usable.all() and (lengths == lengths[0]).all() and lengths[0] > 0:
        # The usual batch: every row has a vector of one length; no gather needed.
        return {int(lengths[0]): (np.arange(len(lengths)), flat.reshape(len(lengths), lengths[0]))}
    groups = {}
    for length in np.unique(lengths[usable & (lengths > 0)]):
        rows = np.flatnonzero(usable & (lengths == length))
        groups[int(length)] = (rows, flat[starts[rows, None] + np.arange(length)[None, :]])
    return groups


def _row_groups(values: list, usable: np.ndarray,
                errors: list[str]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Slow path: parses each usable row's vector; groups them by length like ``_table_groups``."""
    by_len: dict[int, tuple[list[int], list[np.ndarray]]] = {}
    for i in np.flatnonzero(usable):
        try:
            vec = _parse_vector(values[i])
        except ValueError as e:
            errors[i] = str(e)
            continue
        rows, vecs = by_len.setdefault(len(vec), ([], []))
        rows.append(int(i))
        vecs.append(vec)
    return {n: (np.array(rows, dtype=np.int64), np.stack(vecs)) for n, (rows, vecs) in by_len.items()}


def validate_vectors(raw: RawBatch, *, role: str, id_field: str, vector_field: str,  # noqa: C901 - one check per way a row is bad
                     distance: str, max_id_length: int = DEFAULT_MAX_ID_LENGTH
                     ) -> tuple[list[VectorBatch], list[DeadLetter]]:
    """Validates ids and vectors of one raw batch.

    Returns one VectorBatch per distinct vector length present (usually one) and the dead letters.
    Vectors are float32, finite, L2-normalised when ``distance == 'cosine'``. Parquet list columns
    are checked as matrices; other inputs are parsed row by row.
    """
    from transforms.common.vectors import prepare_vectors

    n = len(raw)
    ids, errors = _read_ids(raw, id_field, max_id_length)
    id_array = np.array(ids, dtype=object)
    usable = np.not_equal(id_array, None) if n else np.zeros(0, dtype=bool)
    groups = None
    if raw.table is not None and vector_field in raw.table.schema.names:
        groups = _table_groups(raw.table, vector_field, usable, errors)
        if groups is None:  # strings or mixed types: parse row by row
            groups = _row_groups(raw.table.column(vector_field).to_pylist(), usable, errors)
    elif raw.table is not None:
        groups = _row_groups([None] * n, usable, errors)
    else:
        values = [_scalar(row.get(vector_field)) for row in raw.rows]
        # tf.Example float_list of length 1 was unwrapped by _scalar; a vector of length 1 stays a list.
        values = [v if not isinstance(v, (int, float)) or isinstance(v, bool) else [v] for v in values]
        groups = _row_groups(values, usable, errors)

    batches: list[VectorBatch] = []
    for _, (rows, mat) in sorted(groups.items()):
        bad = ~np.isfinite(mat).all(axis=1)
        for i in rows[bad]:
            errors[i] = "vector has NaN or infinite values"
        if distance == "cosine":
            with np.errstate(over="ignore", invalid="ignore"):  # rows already marked bad
                zero = ~bad & (np.einsum("ij,ij->i", mat, mat, dtype=np.float64) <= _ZERO_NORM)
            for i in rows[zero]:
                errors[i] = "zero vector has no cosine distance"
            bad |= zero
        if bad.any():  # else no copy: the usual batch keeps every row
            rows, mat = rows[~bad], mat[~bad]
        if not len(rows):
            continue
        prepared, ok = prepare_vectors(mat, distance)
        for i in rows[~ok]:  # float32 overflow or underflow after the float64 checks
            errors[i] = "vector is not representable as float32"
        if not ok.all():
            rows, prepared = rows[ok], np.ascontiguousarray(prepared[ok])
        if len(rows):
            batches.append(VectorBatch(ids=id_array[rows], vectors=prepared,
                                       origins=_origins(raw, rows)))
    dead = []
    for i, err in enumerate(errors):
        if err:
            if usable[i]:
                err = f"{err} (field {vector_field!r})"
            dead.append(make_dead_letter(STAGE, ids[i], err, _row_payload(raw, i),
                                         _origin(raw, i)))
    return batches, dead


def _text_value(value: Any) -> tuple[str | None, str]:
    """A text field's value as str (None = missing) and an error ('' if fine)."""
    value = _scalar(value)
    if value is None:
        return None, ""
    if isinstance(value, float) and math.isnan(value):
        return None, ""
    if isinstance(value, bytes):  # a binary column: documented, invalid bytes become U+FFFD, counted
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            Metrics.counter(metrics.NAMESPACE, "utf8_replaced_values").inc()
            value = value.decode("utf-8", errors="replace")
    elif isinstance(value, (list, tuple, dict)):
        return None, f"expected a text value, got {type(value).__name__}"
    text = str(value)
    if not _encodable(text):  # carried exactly or not at all: a lone surrogate is not text
        return None, "not valid Unicode (a lone surrogate, which UTF-8 cannot encode)"
    if len(text) > MAX_TEXT_CHARS:  # documented: very long values are truncated, not rejected
        text = text[:MAX_TEXT_CHARS]
    return (text if text.strip() else None), ""


def _numeric_value(value: Any) -> tuple[float | None, str]:
    value = _scalar(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, ""
    if isinstance(value, bool) or isinstance(value, (list, tuple, dict)):
        return None, f"expected a number, got {value!r:.50}"
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None, f"expected a number, got {value!r:.50}"
    if math.isnan(number):
        return None, ""  # NaN in a numeric field means missing, like an empty cell
    if not math.isfinite(number):
        return None, f"numeric value is infinite: {value!r:.50}"
    return number, ""


def _image_value(value: Any) -> tuple[bytes | None, str]:
    """An image field's value as bytes (None = missing) and an error ('' if fine): bytes as they
    are, text (a path or URI) as its UTF-8."""
    value = _scalar(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return (bytes(value) or None), ""
    if isinstance(value, str):
        if not _encodable(value):
            return None, "not valid Unicode (a lone surrogate, which UTF-8 cannot encode)"
        return (value.strip().encode("utf-8") or None), ""
    return None, f"expected image bytes or a path, got {type(value).__name__}"


def validate_features(raw: RawBatch, *, role: str, id_field: str, text_fields: tuple[str, ...],
                      numeric_fields: tuple[str, ...], max_id_length: int = DEFAULT_MAX_ID_LENGTH,
                      image_field: str | None = None, allow_empty: bool = False
                      ) -> tuple[list[FeatureBatch], list[DeadLetter]]:
    """Validates ids and the fields to embed; bad numeric values go to dead letters (stage 'preprocess').

    Missing text or numeric values are kept as nulls (the preprocessing handles them); a record with
    every embedded field missing has nothing to match on and is rejected, unless ``allow_empty``
    (a model of the user's own, whose embed step rejects such records: stage 'embed'). The
    ``image_field`` column is binary (``_image_value``).
    """
    n = len(raw)
    ids, id_errors = _read_ids(raw, id_field, max_id_length)
    image_fields = (image_field,) if image_field else ()
    fields = list(text_fields) + list(numeric_fields) + list(image_fields)
    if raw.table is not None:
        names = set(raw.table.schema.names)
        columns = {f: raw.table.column(f).to_pylist() if f in names else [None] * n for f in fields}
    else:
        columns = {f: [row.get(f) for row in raw.rows] for f in fields}
    dead: list[DeadLetter] = []
    keep: list[int] = []
    out: dict[str, list] = {f: [] for f in fields}
    for i in range(n):
        origin = _origin(raw, i)
        if ids[i] is None:
            dead.append(make_dead_letter(STAGE, None, id_errors[i], _row_payload(raw, i), origin))
            continue
        row: dict[str, Any] = {}
        error = ""
        for f in text_fields:
            row[f], err = _text_value(columns[f][i])
            error = error or (err and f"field {f!r}: {err}")
        for f in numeric_fields:
            row[f], err = _numeric_value(columns[f][i])
            error = error or (err and f"field {f!r}: {err}")
        for f in image_fields:
            row[f], err = _image_value(columns[f][i])
            error = error or (err and f"field {f!r}: {err}")
        if not error and not allow_empty and all(row[f] is None for f in fields):
            error = f"every embedded field is missing ({', '.join(fields)})"
        if error:
            dead.append(make_dead_letter("preprocess", ids[i], error, _row_payload(raw, i), origin))
            continue
        keep.append(i)
        for f in fields:
            out[f].append(row[f])
    if not keep:
        return [], dead
    arrays = [pa.array(out[f], type=pa.string()) for f in text_fields]
    arrays += [pa.array(out[f], type=pa.float64()) for f in numeric_fields]
    arrays += [pa.array(out[f], type=pa.binary()) for f in image_fields]
    table = pa.RecordBatch.from_arrays(arrays, names=fields)
    rows = np.array(keep, dtype=np.int64)
    batch = FeatureBatch(ids=np.array([ids[i] for i in keep], dtype=object),
                         origins=_origins(raw, rows), table=table)
    return [batch], dead


class _ValidateFn(beam.DoFn):
    def __init__(self, role: str, id_field: str, vector_field: str, text_fields: tuple[str, ...],  # noqa: PLR0913 - the composite's settings
                 numeric_fields: tuple[str, ...], distance: str,
                 max_id_length: int = DEFAULT_MAX_ID_LENGTH, image_field: str | None = None,
                 allow_empty: bool = False):
        self._role = role
        self._image_field = image_field
        self._allow_empty = allow_empty
        self._max_id_length = max_id_length
        self._id_field = id_field
        self._vector_field = vector_field
        self._text_fields = text_fields
        self._numeric_fields = numeric_fields
        self._distance = distance
        self._valid = Metrics.counter(metrics.NAMESPACE, f"{role}_valid")
        self._timer = metrics.StageTimer("validate")

    def process(self, raw: RawBatch) -> Iterator[Any]:
        with self._timer:
            if self._text_fields or self._numeric_fields or self._image_field:
                batches, dead = validate_features(raw, role=self._role, id_field=self._id_field,
                                                  text_fields=self._text_fields,
                                                  numeric_fields=self._numeric_fields,
                                                  max_id_length=self._max_id_length,
                                                  image_field=self._image_field,
                                                  allow_empty=self._allow_empty)
            else:
                batches, dead = validate_vectors(raw, role=self._role, id_field=self._id_field,
                                                 vector_field=self._vector_field,
                                                 distance=self._distance,
                                                 max_id_length=self._max_id_length)
        for batch in batches:
            self._valid.inc(len(batch))
            yield batch
        for letter in dead:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, letter)


class ValidateRecords(beam.PTransform):
    """RawBatch -> VectorBatch (or FeatureBatch when embedding) + dead letters."""

    def __init__(self, *, role: str, id_field: str, vector_field: str = DEFAULTS["vector_field"],  # noqa: PLR0913 - keyword-only composite settings
                 text_fields: tuple[str, ...] = (), numeric_fields: tuple[str, ...] = (),
                 distance: str = DEFAULTS["distance"], max_id_length: int = DEFAULT_MAX_ID_LENGTH,
                 image_field: str | None = None, allow_empty: bool = False):
        """``image_field`` and ``allow_empty``: see :func:`validate_features`."""
        super().__init__()
        if not id_field:
            raise ValueError("id_field must be non-empty")
        if isinstance(max_id_length, bool) or not isinstance(max_id_length, int) or max_id_length < 1:
            raise ValueError(f"max_id_length must be a positive int, got {max_id_length!r}")
        if not (text_fields or numeric_fields or image_field) and not vector_field:
            raise ValueError("give vector_field, or text_fields/numeric_fields/image_field to embed")
        self._fn = _ValidateFn(role, id_field, vector_field, tuple(text_fields),
                               tuple(numeric_fields), distance, max_id_length, image_field or None,
                               allow_empty)

    def expand(self, raw_batches):
        out = raw_batches | "Validate" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER_TAG,
                                                                           main="batches")
        return ValidateResult(batches=out.batches, dead_letters=out[DEAD_LETTER_TAG])


class _SumHistogramFn(beam.CombineFn):
    """Sums {length: rows} counts."""

    def create_accumulator(self) -> dict[int, int]:
        return {}

    def add_input(self, acc: dict[int, int], counts: dict[int, int]) -> dict[int, int]:
        for k, v in counts.items():
            acc[k] = acc.get(k, 0) + v
        return acc

    def merge_accumulators(self, accs: Iterable[dict[int, int]]) -> dict[int, int]:
        out: dict[int, int] = {}
        for acc in accs:
            self.add_input(out, acc)
        return out

    def extract_output(self, acc: dict[int, int]) -> dict[int, int]:
        return acc


class _MostCommonLengthFn(_SumHistogramFn):
    """Sums {length: rows} counts; the output is the length with most rows (ties: the smaller)."""

    def extract_output(self, acc: dict[int, int]) -> int:
        return min(acc, key=lambda k: (-acc[k], k)) if acc else 0


class _CheckDimsFn(beam.DoFn):
    def process(self, batch: VectorBatch, dims: int) -> Iterator[Any]:
        if batch.vectors.shape[1] == dims:
            yield batch
            return
        for rid, origin, vec in zip(batch.ids, batch.origins, batch.vectors, strict=True):
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, make_dead_letter(
                STAGE, rid, f"vector has length {len(vec)}, expected {dims}",
                vec, origin))


class CheckDimsResult(NamedTuple):
    """What :class:`CheckDims` returns."""

    batches: tuple  # one filtered VectorBatch PCollection per input corpus, in input order
    dead_letters: beam.PCollection
    dims: beam.PCollection  # singleton int: the job's vector length
    passing: tuple  # one singleton int PCollection per corpus: its rows of that length


class CheckDims(beam.PTransform):
    """Rejects vectors whose length differs from the most common length across all given corpora
    (or from ``expected``, e.g. a kept index's dimension).

    Input: a tuple of VectorBatch PCollections (one per corpus). Output: a :class:`CheckDimsResult`
    (the filtered corpora, the dead letters, the dimension, each corpus's count of rows that pass).

    The counts come from the per-batch length histogram, not from counting the filtered batches, so
    steps sized by them (shard count, routing plan, id buckets) do not wait for the filtering: the
    filter can run fused with the step that consumes its output.
    """

    def __init__(self, *, expected: int | None = None):
        super().__init__()
        self._expected = expected

    def expand(self, corpora):
        lengths = [
            c | f"Lengths{i}" >> beam.Map(lambda b: {int(b.vectors.shape[1]): len(b)})
            for i, c in enumerate(corpora)
        ]
        dims = (lengths | "FlattenLengths" >> beam.Flatten()
                | "MostCommonLength" >> beam.CombineGlobally(_MostCommonLengthFn()))
        if self._expected is not None:
            dims = dims | "ExpectedLength" >> beam.Map(lambda _, d: d, self._expected)
        outs, dead = [], []
        for i, c in enumerate(corpora):
            res = c | f"CheckDims{i}" >> beam.ParDo(
                _CheckDimsFn(), dims=beam.pvalue.AsSingleton(dims)).with_outputs(
                    DEAD_LETTER_TAG, main="ok")
            outs.append(res.ok)
            dead.append(res[DEAD_LETTER_TAG])
        dead_letters = dead | "FlattenDimDeadLetters" >> beam.Flatten()
        counts = tuple(
            lens | f"Histogram{i}" >> beam.CombineGlobally(_SumHistogramFn())
            | f"PassingCount{i}" >> beam.Map(lambda hist, d: int(hist.get(d, 0)),
                                             d=beam.pvalue.AsSingleton(dims))
            for i, lens in enumerate(lengths))
        return CheckDimsResult(batches=tuple(outs), dead_letters=dead_letters, dims=dims, passing=counts)
