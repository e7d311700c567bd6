"""Raw model inputs: the text or images of validated records, ready for a model of the user's own.

A ``--model_dir`` that takes raw text or images (:mod:`transforms.features.model_signature`) skips
tf.Transform.
:class:`PrepareModelInputs` turns each validated :class:`~transforms.common.schema.FeatureBatch` into one
:class:`ModelInputBatch` (the dense arrays the model's one input takes, for all of the batch's rows),
which :class:`transforms.features.embed.EmbedRecords` embeds through the same RunInference handler as
preprocessed features.

Text (``kind='text'``), per record, from the ``--text_fields`` in their order:

* ``--text_pooling join`` (default): the non-empty fields joined with ``--text_separator`` (default
  one space) into one string; the model is called once per record.
* ``--text_pooling mean``: every non-empty field is one string of its own; the record's vector is the
  mean of its fields' vectors (each field embedded alone, so a model trained on single sentences
  sees single values; a missing field neither adds nor dilutes).

Images (``kind='image'``), from ``--image_field``: a value that begins with a JPEG, PNG, GIF or BMP
signature is the encoded image itself (a parquet binary column, say); any other value (every text
value) is a path or URI, read through Beam FileSystems (local, gs://, ...). In tf.Example files the
image feature is read as bytes (``ReadCorpus(binary_fields=...)``). Images are decoded and resized
to the model's [height, width, channels] in TF ops (``tf.io.decode_image``; bilinear
``tf.image.resize``, which does not keep the aspect ratio; 1 or 3 channels, converted as TF
decodes), and fed as pixel values in [0, 255] in the input's dtype: scaling or normalising belongs
in the model. A model whose one input is a ``tf.string`` batch gets the encoded bytes as they are,
after the same decoding check.

Dead letters (stage ``'embed'``): a record with every text field empty (or blank), a record without
an image, an image TF cannot decode, a path that names no file. A read of an existing file that fails
raises (transient: the runner retries the bundle).

This module does not call the model (``transforms.features.embed``) or validate ids
(``transforms.io.validate``).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa

from transforms.common.dead_letters import DEAD_LETTER_TAG, make_dead_letter
from transforms.common.flags import DEFAULTS
from transforms.common.schema import FeatureBatch
from transforms.features.model_signature import ModelInput

__all__ = ["ModelInputBatch", "ModelInputBatchCoder", "PrepareModelInputs", "PreparedInputs",
           "TEXT_POOLINGS", "image_kind", "text_inputs"]

_LOGGER = logging.getLogger(__name__)
STAGE = "embed"
TEXT_POOLINGS = ("join", "mean")
# Leading bytes of the encodings tf.io.decode_image reads.
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"),
               (b"GIF89a", "GIF"))


class ModelInputBatch(NamedTuple):
    """Rows ready for a raw-input model.

    Attributes:
        ids, origins: object arrays [n].
        inputs: the model's input name -> numpy array whose first dimension is the model's batch:
            [n] strings, [m] strings with ``segments``, or [n, height, width, channels] pixels.
        segments: None, or int64 [m]: the row each of the m inputs belongs to (``--text_pooling
            mean``: a row's vector is the mean of its inputs' vectors).
        table: the rows' fields (pyarrow.RecordBatch; images as their path or a size note), kept for
            dead-letter payloads.
    """

    ids: np.ndarray
    origins: np.ndarray
    inputs: dict[str, np.ndarray]
    segments: np.ndarray | None
    table: Any

    def __len__(self) -> int:
        return len(self.ids)


class ModelInputBatchCoder(beam.coders.Coder):
    """Pickles a ModelInputBatch (protocol 5); sizes it from its buffers without encoding it."""

    def encode(self, value: ModelInputBatch) -> bytes:
        return pickle.dumps(tuple(value), protocol=5)

    def decode(self, encoded: bytes) -> ModelInputBatch:
        return ModelInputBatch(*pickle.loads(encoded))

    def estimate_size(self, value: ModelInputBatch) -> int:
        size = int(value.table.nbytes) + 48 * 2 * len(value.ids)
        for array in value.inputs.values():
            size += int(array.nbytes) if array.dtype != object else 64 * len(array)
        return size

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> type:
        return ModelInputBatch


beam.coders.registry.register_coder(ModelInputBatch, ModelInputBatchCoder)


def image_kind(value: bytes) -> str | None:
    """'JPEG', 'PNG', 'GIF' or 'BMP' when ``value`` begins with that encoding's signature, else None."""
    for magic, name in _SIGNATURES:
        if value.startswith(magic):
            return name
    # 'BM', the file size, then 4 reserved bytes, zero in practice: no path starts like that.
    if value.startswith(b"BM") and value[6:10] == b"\0\0\0\0":
        return "BMP"
    return None


def text_inputs(table: pa.RecordBatch, text_fields: tuple[str, ...], pooling: str,
                separator: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The strings a raw-text model gets for a batch's rows.

    Returns:
        (strings, segments, empty): ``join``: [n] strings and segments None; ``mean``: the m non-empty
        field values row by row and the int64 [m] row of each. ``empty`` is bool [n]: rows with no
        text at all (their string is '' under ``join``; they have no values under ``mean``).
    """
    values = [table.column(f).to_pylist() for f in text_fields]
    present = np.array([[v is not None for v in column] for column in values], dtype=bool).T
    present = present.reshape(table.num_rows, len(text_fields))
    empty = ~present.any(axis=1)
    rows_values = list(zip(*values, strict=True))
    if pooling == "join":
        # Python's join: pyarrow 25's binary_join_element_wise (null_handling='skip') drops
        # trailing all-null rows instead of giving them ''.
        joined = [separator.join(v for v in row if v is not None) for row in rows_values]
        return np.array(joined, dtype=object), None, empty
    rows, cols = np.nonzero(present)  # row-major: each row's fields in --text_fields order
    strings = np.array([rows_values[r][c] for r, c in zip(rows.tolist(), cols.tolist(), strict=True)],
                       dtype=object)
    return strings, rows.astype(np.int64), empty


class _TextInputsFn(beam.DoFn):
    """FeatureBatch -> ModelInputBatch of raw text (+ dead letters for rows with no text)."""

    def __init__(self, model_input: ModelInput, text_fields: tuple[str, ...], pooling: str,
                 separator: str):
        self._name = model_input.input_name
        self._fields = text_fields
        self._pooling = pooling
        self._separator = separator

    def process(self, batch: FeatureBatch) -> Iterator[Any]:
        table = batch.table
        strings, segments, empty = text_inputs(table, self._fields, self._pooling, self._separator)
        for i in np.flatnonzero(empty).tolist():
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, make_dead_letter(
                STAGE, batch.ids[i], f"no text to embed: --text_fields {', '.join(self._fields)} are "
                "all empty", table.slice(i, 1).to_pylist()[0], batch.origins[i]))
        if empty.all():
            return
        keep = ~empty
        if segments is None:
            strings = strings[keep]
        else:  # renumber the rows that stay
            segments = (np.cumsum(keep) - 1)[segments]
        if not keep.all():
            table = table.filter(pa.array(keep))
        yield ModelInputBatch(batch.ids[keep], batch.origins[keep], {self._name: strings}, segments,
                              table)


class _ImageInputsFn(beam.DoFn):
    """FeatureBatch -> ModelInputBatch of decoded pixels (or checked encoded bytes) + dead letters."""

    def __init__(self, model_input: ModelInput, image_field: str):
        self._input = model_input
        self._field = image_field
        self._decode = None

    def setup(self) -> None:
        import tensorflow as tf  # deferred: the launcher never decodes images

        from transforms.features.embed import enable_gpu_memory_growth

        enable_gpu_memory_growth()  # this may be the process' first TF use, before the model's load
        mi = self._input
        channels = mi.channels or 0
        if mi.encoded_images:
            @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
            def decode(data):  # only checks that TF can decode it
                with tf.device("/CPU:0"):
                    return tf.shape(tf.io.decode_image(data, expand_animations=False))
        else:
            dtype = tf.as_dtype(mi.dtype)

            @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
            def decode(data):
                with tf.device("/CPU:0"):  # one small image: not worth a trip to an accelerator
                    image = tf.io.decode_image(data, channels=channels, expand_animations=False)
                    image = tf.image.resize(image, [mi.height, mi.width])  # float32 in [0, 255]
                    if dtype.is_integer:
                        return tf.saturate_cast(tf.round(image), dtype)
                    return tf.cast(image, dtype)
        self._decode = decode
        self._errors = (tf.errors.InvalidArgumentError,)
        missing: list[type] = [OSError]  # Beam's BeamIOError is an OSError too
        try:  # GCS reports a missing object with google's NotFound, at the first read
            from google.api_core.exceptions import NotFound

            missing.append(NotFound)
        except ImportError:
            _LOGGER.debug("google-api-core not installed: no gs:// NotFound to catch")
        self._missing = tuple(missing)

    def _read(self, value: bytes) -> tuple[bytes | None, str, str]:
        """(encoded image, payload note, error) of one value: the bytes themselves or the file's."""
        kind = image_kind(value)
        if kind:
            return value, f"<{len(value)} bytes of {kind}>", ""
        from apache_beam.io.filesystems import FileSystems

        try:
            path = value.decode("utf-8").strip()
        except UnicodeDecodeError:
            return None, f"<{len(value)} bytes>", ("neither an image (no JPEG/PNG/GIF/BMP signature) "
                                                   "nor a path")
        if not path:
            return None, "", f"no image in field {self._field!r}"
        try:
            with FileSystems.open(path, compression_type="uncompressed") as fh:
                return fh.read(), path, ""
        except self._missing as e:
            if isinstance(e, IsADirectoryError) or not FileSystems.exists(path):
                return None, path, f"image path {path!r} is not a readable file ({type(e).__name__})"
            raise  # the file is there: a transient failure, retried with the bundle

    def _check(self, data: bytes) -> tuple[Any, str]:
        """(pixels, or the bytes themselves for an encoded-image model; error)."""
        try:
            decoded = self._decode(data)
        except self._errors as e:
            lines = [line for line in str(e.message).splitlines() if line.strip()]
            return None, f"cannot decode the image: {lines[-1] if lines else type(e).__name__}"
        return (data if self._input.encoded_images else decoded.numpy()), ""

    def process(self, batch: FeatureBatch) -> Iterator[Any]:
        values = batch.table.column(self._field).to_pylist()
        arrays, keep, notes = [], [], []
        for i, value in enumerate(values):
            data, note, error = (None, "", f"no image in field {self._field!r}") if not value else (
                self._read(value))
            if data is not None:
                array, error = self._check(data)
            if error:
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, make_dead_letter(
                    STAGE, batch.ids[i], error, {"id": batch.ids[i], self._field: note},
                    batch.origins[i]))
                continue
            keep.append(i)
            arrays.append(array)
            notes.append(note)
        if not keep:
            return
        rows = np.array(keep, dtype=np.int64)
        stacked = np.array(arrays, dtype=object) if self._input.encoded_images else np.stack(arrays)
        table = pa.RecordBatch.from_arrays([pa.array(notes, pa.string())], names=[self._field])
        yield ModelInputBatch(batch.ids[rows], batch.origins[rows], {self._input.input_name: stacked},
                              None, table)


class PreparedInputs(NamedTuple):
    batches: beam.PCollection  # ModelInputBatch
    dead_letters: beam.PCollection  # DeadLetter, stage 'embed'


class PrepareModelInputs(beam.PTransform):
    """PCollection[FeatureBatch] -> PreparedInputs(batches=PCollection[ModelInputBatch], dead_letters)."""

    def __init__(self, *, model_input: ModelInput, text_fields: tuple[str, ...] = (),
                 image_field: str | None = None, text_pooling: str = DEFAULTS["text_pooling"],
                 text_separator: str = DEFAULTS["text_separator"]):
        """Initialises the transform.

        Args:
            model_input: what the model takes (``transforms.features.model_signature.resolve_model_input``):
                kind 'text' or 'image'.
            text_fields: ``--text_fields`` (text models).
            image_field: ``--image_field`` (image models).
            text_pooling: ``--text_pooling``, 'join' or 'mean'.
            text_separator: ``--text_separator`` (join).
        """
        super().__init__()
        if model_input.kind == "text":
            if not text_fields:
                raise ValueError("a raw-text model needs --text_fields")
            if text_pooling not in TEXT_POOLINGS:
                raise ValueError(f"--text_pooling must be one of {TEXT_POOLINGS}, got {text_pooling!r}")
            self._fn = _TextInputsFn(model_input, tuple(text_fields), text_pooling, text_separator)
        elif model_input.kind == "image":
            if not image_field:
                raise ValueError("an image model needs --image_field")
            self._fn = _ImageInputsFn(model_input, image_field)
        else:
            raise ValueError(f"PrepareModelInputs is for raw text or image models, not {model_input.kind!r}")

    def expand(self, batches: beam.PCollection) -> PreparedInputs:
        # The main output's type picks ModelInputBatchCoder (sizes without encoding pixels).
        out = batches | "ToModelInputs" >> beam.ParDo(self._fn).with_output_types(
            ModelInputBatch).with_outputs(DEAD_LETTER_TAG, main="inputs")
        return PreparedInputs(batches=out.inputs, dead_letters=out[DEAD_LETTER_TAG])
