"""Embeds records with a TF SavedModel or Keras model through RunInference, one model call per batch.

:class:`TFSavedModelHandler` is a Beam ``ModelHandler`` for any SavedModel whose serving signature takes
(some of) the preprocessed features by name and returns a float [batch, dim] tensor: the built-in
embedder (:mod:`transforms.features.default_embedder`) and user models exported with Keras' ``model.export()``
or ``tf.saved_model.save`` alike. The same handler serves models that take raw text or images
(:mod:`transforms.features.model_signature`): their elements are
:class:`~transforms.features.raw_inputs.ModelInputBatch`
(dense arrays already), stacked and called the same way, and with ``segments`` (``--text_pooling
mean``) a row's vector is the mean of its inputs' vectors. A Keras model file (``.keras``) is loaded
with ``keras.saving.load_model`` and called through one ``tf.function``.
It loads the model once per worker process with
``tf.saved_model.load`` (RunInference shares it between the process' threads), turns on GPU memory
growth when there are GPUs, and for every batch of elements stacks the rows of all of them into one
dense array per signature input, calls the signature once per at most ``max_batch_size`` rows (bounded
GPU memory) and converts the result with one ``.numpy()``. Elements stay batches of rows end to end:
RunInference's ``BatchElements`` counts rows (``element_size_fn=len``), not elements.

Feature columns become dense inputs as the signature's TensorSpecs ask: a rank-1 spec takes one value per
row; a rank-2 spec takes the row's list, right-padded with zeros to the longest list in the call (ids
padded with 0 and weights padded with 0 add nothing to a weighted bag).

Each element comes back as an :class:`EmbeddedBatch` (ids, origins, vectors, features), a type with its
own coder so Beam can size it without encoding it. :class:`EmbedRecords` wraps the handler:
TransformedBatch -> VectorBatch, with rows whose vector is non-finite or zero sent to dead letters
(stage 'embed'). Without ``model_dir`` it first exports the default embedder
into ``<run_dir>/default_model`` (a pipeline step, so launching writes nothing) and serves that export
through the same handler.

This module does not preprocess (``transforms.features.preprocess``) or normalise vectors for a distance (the
pipeline does that where vectors from files are prepared too).
"""

from __future__ import annotations

import logging
import pickle
import posixpath
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.ml.inference.base import ModelHandler, ModelMetadata, RunInference

from transforms.common import progress
from transforms.common.dead_letters import DEAD_LETTER_TAG, make_dead_letter
from transforms.common.flags import DEFAULTS
from transforms.common.schema import VectorBatch

__all__ = ["TFSavedModelHandler", "EmbeddedBatch", "EmbeddedBatchCoder", "EmbedRecords", "EmbedResult",
           "features_to_numpy", "enable_gpu_memory_growth", "DEFAULT_MODEL_DIRNAME"]

_LOGGER = logging.getLogger(__name__)
STAGE = "embed"
DEFAULT_MODEL_DIRNAME = "default_model"
_ZERO_NORM = 1e-12


def _column_values(column: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """A column as (flat values, row lengths); lengths is None for a non-list column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or (
            pa.types.is_fixed_size_list(column.type)):
        if column.null_count:
            column = column.fill_null(pa.scalar([], type=column.type))
        lengths = column.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
        values = column.flatten()
    else:
        lengths, values = None, column
    if pa.types.is_binary(values.type) or pa.types.is_string(values.type) or (
            pa.types.is_large_binary(values.type) or pa.types.is_large_string(values.type)):
        flat = np.array(values.to_pylist(), dtype=object)
    else:
        flat = values.to_numpy(zero_copy_only=False)
    return flat, lengths


def _dense(column: pa.Array, name: str, rank: int, width: int | None, dtype: np.dtype) -> np.ndarray:
    values, lengths = _column_values(column)
    n = len(column)
    if rank == 1:
        if lengths is not None and not (lengths == 1).all():
            raise ValueError(f"model input {name!r} takes one value per row; the feature has rows with "
                             f"{sorted(set(lengths.tolist()))[:5]} values")
        return values.astype(dtype, copy=False)
    if lengths is None:
        lengths = np.ones(n, dtype=np.int64)
    longest = int(lengths.max()) if n else 0
    width = width if width is not None else longest
    if longest > width:
        raise ValueError(f"model input {name!r} takes at most {width} values per row, got {longest}")
    pad = b"" if dtype is object else 0
    out = np.full((n, width), pad, dtype=dtype)
    if len(values):
        rows = np.repeat(np.arange(n), lengths)
        starts = np.cumsum(lengths) - lengths
        cols = np.arange(len(values)) - np.repeat(starts, lengths)
        out[rows, cols] = values
    return out


def features_to_numpy(table: pa.RecordBatch | pa.Table, input_specs: dict[str, Any]) -> dict[str, np.ndarray]:
    """The dense arrays a signature takes, built from a RecordBatch of transformed features.

    Args:
        table: the features (RecordBatch or Table), one column per feature (list or plain columns).
        input_specs: signature input name -> ``tf.TensorSpec`` (rank 1 or 2, batch first).

    Returns:
        input name -> numpy array of the spec's dtype: [n] for rank 1, [n, width] for rank 2 (width =
        the spec's if fixed, else the longest row; shorter rows padded with zeros).

    Raises:
        ValueError: a signature input is not a column, or has a rank other than 1 or 2, or the rows do
            not fit it.
    """
    names = table.schema.names
    out = {}
    for name, spec in input_specs.items():
        if name not in names:
            raise ValueError(f"the model's serving signature takes {name!r}, which is not a "
                             f"preprocessed feature; features: {sorted(names)}")
        shape = spec.shape
        if shape.rank not in (1, 2):
            raise ValueError(f"model input {name!r} has shape {shape}; only [batch] and "
                             "[batch, width] inputs are supported")
        width = shape[1] if shape.rank == 2 else None
        dtype = object if spec.dtype.name == "string" else np.dtype(spec.dtype.as_numpy_dtype)
        out[name] = _dense(table.column(names.index(name)), name, shape.rank, width, dtype)
    return out


def enable_gpu_memory_growth() -> None:
    """GPU memory growth on for every GPU of the process (no-op without GPUs). Called by whatever
    touches TF first in a worker process (the model's load, the image decoder's setup): growth
    cannot be changed once a GPU is initialised."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # the GPU was initialised already: growth is fixed for the process
            _LOGGER.debug("memory growth not changed for %s", gpu.name)


class EmbeddedBatch(NamedTuple):
    """One batch element after the model: its rows' ids, origins, features and vectors (aligned)."""

    ids: np.ndarray
    origins: np.ndarray
    vectors: np.ndarray  # float32 [n, dim], straight from the model (not checked yet)
    table: Any  # the features (pyarrow.RecordBatch), kept for dead-letter payloads

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def inference(self) -> np.ndarray:
        """The vectors, under the name Beam's ``PredictionResult`` gives a model's output."""
        return self.vectors


class EmbeddedBatchCoder(beam.coders.Coder):
    """Pickles an EmbeddedBatch (protocol 5); sizes it from its buffers without encoding it."""

    def encode(self, value: EmbeddedBatch) -> bytes:
        return pickle.dumps(tuple(value), protocol=5)

    def decode(self, encoded: bytes) -> EmbeddedBatch:
        return EmbeddedBatch(*pickle.loads(encoded))

    def estimate_size(self, value: EmbeddedBatch) -> int:
        return int(value.vectors.nbytes + value.table.nbytes) + 48 * 2 * len(value.ids)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> type:
        return EmbeddedBatch


beam.coders.registry.register_coder(EmbeddedBatch, EmbeddedBatchCoder)


class TFSavedModelHandler(ModelHandler[Any, EmbeddedBatch, Any]):
    """RunInference handler for TF SavedModels and Keras files (see the module docstring).

    Examples are batch elements with ``ids``, ``origins`` and ``table`` (``TransformedBatch``), or
    with ``inputs`` too (``ModelInputBatch``, raw text or images); each gets one
    :class:`EmbeddedBatch` carrying its float32 [rows, dim] vectors. (Not Beam's
    ``PredictionResult``: a type of our own has a coder that sizes it without encoding it, which Beam
    otherwise does for sampled elements of every PCollection.)
    """

    def __init__(self, model_dir: str | None = None, *, signature_name: str = "serving_default",
                 output_key: str | None = None, min_batch_size: int = DEFAULTS["embed_min_batch_size"],
                 max_batch_size: int = DEFAULTS["embed_max_batch_size"],
                 large_model: bool = False, call_rows: int | None = None):
        """Initialises the handler.

        Args:
            model_dir: the SavedModel directory (local or any TF filesystem), or a ``.keras`` file
                (any Beam filesystem). May be None when the path arrives through RunInference's
                model metadata side input.
            signature_name: the serving signature to call; 'serve' is tried when the name is absent.
            output_key: the signature output holding the vectors; default: 'embedding' if present, else
                the only output.
            min_batch_size: fewest rows BatchElements aims to put in one RunInference batch.
            max_batch_size: most rows per batch and per model call (bounds accelerator memory).
            large_model: share one model between the worker's processes (off by default: this model
                is small and a copy per process avoids cross-process calls).
            call_rows: most rows per model call (``--embed_batch_size``); default max_batch_size.
        """
        if min_batch_size < 1 or max_batch_size < min_batch_size:
            raise ValueError(f"need 1 <= min_batch_size <= max_batch_size, got {min_batch_size}, "
                             f"{max_batch_size}")
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size,
                         element_size_fn=len, large_model=large_model)
        self._model_dir = model_dir
        self._signature_name = signature_name
        self._output_key = output_key
        if call_rows is not None and call_rows < 1:
            raise ValueError(f"call_rows must be >= 1, got {call_rows}")
        self._max_rows = min(call_rows or max_batch_size, max_batch_size)
        from transforms.common.metrics import StageTimer

        self._timer = StageTimer("embed")

    def update_model_path(self, model_path: str | None = None) -> None:
        if model_path:
            self._model_dir = model_path

    def load_model(self) -> Any:
        """Loads the model (once per process; RunInference caches it) and picks its signature."""
        import tensorflow as tf  # deferred: keeps the launcher and pure tests free of TF

        from transforms.features.model_ref import is_keras_file

        if not self._model_dir:
            raise ValueError("TFSavedModelHandler has no model_dir")
        enable_gpu_memory_growth()
        if is_keras_file(self._model_dir):
            loaded = _load_keras(self._model_dir)
            loaded.warm_up()
            return loaded
        model = tf.saved_model.load(self._model_dir)
        signatures = model.signatures
        name = self._signature_name
        if name not in signatures and "serve" in signatures:
            name = "serve"
        if name not in signatures:
            raise ValueError(f"SavedModel {self._model_dir!r} has no signature {self._signature_name!r}; "
                             f"it has {sorted(signatures)}")
        fn = signatures[name]
        outputs = fn.structured_outputs
        key = self._output_key
        if key is None:
            key = "embedding" if "embedding" in outputs else (next(iter(outputs)) if len(outputs) == 1
                                                             else None)
        if key not in outputs:
            raise ValueError(f"pick the output holding the vectors with output_key; signature {name!r} "
                             f"returns {sorted(outputs)}")
        _LOGGER.info("loaded %s (signature %s, output %s)", self._model_dir, name, key)
        loaded = _LoadedModel(model, fn, dict(fn.structured_input_signature[1]), key)
        loaded.warm_up()
        return loaded

    def run_inference(self, batch: Sequence[Any], model: Any,
                      inference_args: dict[str, Any] | None = None) -> Iterable[EmbeddedBatch]:
        """Embeds all rows of all elements with one model call per ``max_batch_size`` rows."""
        tables = [e.table for e in batch if len(e)]
        if tables and hasattr(batch[0], "inputs"):  # ModelInputBatch: raw text or images
            with self._timer:
                vectors = model.embed_inputs([e for e in batch if len(e)], self._max_rows)
        elif tables:
            with self._timer:
                table = tables[0] if len(tables) == 1 else pa.Table.from_batches(tables)
                vectors = model.embed(table, self._max_rows)
        else:
            vectors = np.zeros((0, 0), np.float32)
        results, start = [], 0
        for element in batch:
            rows = len(element)
            results.append(EmbeddedBatch(element.ids, element.origins, vectors[start:start + rows],
                                         element.table))
            start += rows
        return results

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        return sum(e.table.nbytes + sum(a.nbytes for a in getattr(e, "inputs", {}).values())
                   for e in batch)

    def get_metrics_namespace(self) -> str:
        return "corpus_matcher_embed"

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        if inference_args:
            raise ValueError("TFSavedModelHandler takes no inference_args")


class _LoadedModel:
    """A loaded SavedModel and the signature to call (kept referenced together: the signature's
    variables live in the loaded object)."""

    def __init__(self, model: Any, fn: Any, input_specs: dict[str, Any], output_key: str):
        self.model = model
        self.fn = fn
        self.input_specs = input_specs
        self.output_key = output_key

    def warm_up(self) -> None:
        """Calls the model once on one all-zero row, so its one-off graph optimisation happens at
        load time rather than on the first batch."""
        import tensorflow as tf

        feed = {}
        for name, spec in self.input_specs.items():
            shape = [1 if d is None else d for d in spec.shape.as_list()]
            feed[name] = tf.zeros(shape, spec.dtype)
        try:
            self.call(feed)
        except (tf.errors.OpError, ValueError, TypeError) as e:  # warm-up is optional
            _LOGGER.info("warm-up call skipped: %s", e)

    def call(self, feed: dict[str, Any]) -> np.ndarray:
        """One model call on dense inputs (numpy arrays or tensors) -> numpy [rows, dim]."""
        import tensorflow as tf

        return self.fn(**{k: tf.constant(v) for k, v in feed.items()})[self.output_key].numpy()

    def embed(self, table: pa.RecordBatch | pa.Table, max_rows: int) -> np.ndarray:
        chunks = []
        for start in range(0, table.num_rows, max_rows):
            part = table.slice(start, max_rows) if table.num_rows > max_rows else table
            chunks.append(self.call(features_to_numpy(part, self.input_specs)))
        vectors = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        return vectors.astype(np.float32, copy=False)

    def embed_inputs(self, elements: Sequence[Any], max_rows: int) -> np.ndarray:
        """Vectors of the rows of ModelInputBatch elements: their inputs stacked, one call per
        ``max_rows`` inputs; with segments, a row's vector is the mean of its inputs' vectors."""
        names = sorted(elements[0].inputs)
        ours = sorted(self.input_specs)
        if names != ours and not (len(names) == len(ours) == 1):  # one input: its name is not needed
            raise ValueError(f"the model takes {ours}; the batch has {names}")
        arrays = {ours[i]: np.concatenate([e.inputs[k] for e in elements]) if len(elements) > 1
                  else elements[0].inputs[k] for i, k in enumerate(names)}
        total = len(next(iter(arrays.values())))
        chunks = [self.call({k: v[start:start + max_rows] for k, v in arrays.items()})
                  for start in range(0, total, max_rows)]
        vectors = (chunks[0] if len(chunks) == 1 else np.concatenate(chunks)).astype(np.float32,
                                                                                      copy=False)
        if elements[0].segments is None:
            return vectors
        segments, offset = [], 0
        for e in elements:  # each element's segments count its own rows
            segments.append(e.segments + offset)
            offset += len(e)
        segments = np.concatenate(segments)
        # Segments are sorted and every row has one input at least: sum each row's run, divide.
        starts = np.flatnonzero(np.r_[True, segments[1:] != segments[:-1]])
        counts = np.diff(np.r_[starts, len(segments)])
        if len(starts) != offset:
            raise ValueError(f"{offset} rows but {len(starts)} have inputs")
        return (np.add.reduceat(vectors, starts, axis=0) / counts[:, None]).astype(np.float32)


class _LoadedKerasModel(_LoadedModel):
    """A Keras model file, called through one tf.function over its inputs (in their declared order)."""

    def __init__(self, model: Any, input_specs: dict[str, Any]):
        import tensorflow as tf

        names = list(input_specs)
        # A fixed signature (batch dimension None): one trace for every batch size.
        if len(names) == 1:
            fn = tf.function(lambda x: model(x, training=False),
                             input_signature=[input_specs[names[0]]])
        else:
            fn = tf.function(lambda feed: model(feed, training=False), input_signature=[input_specs])
        super().__init__(model, fn, input_specs, "")
        self._names = names

    def call(self, feed: dict[str, Any]) -> np.ndarray:
        import tensorflow as tf

        tensors = {k: tf.convert_to_tensor(v, dtype=self.input_specs[k].dtype) for k, v in feed.items()}
        out = self.fn(tensors[self._names[0]]) if len(self._names) == 1 else self.fn(tensors)
        if isinstance(out, dict):
            out = next(iter(out.values())) if len(out) == 1 else out.get("embedding")
        elif isinstance(out, (list, tuple)):
            out = out[0] if len(out) == 1 else None
        if out is None:
            raise ValueError("the Keras model has several outputs; export one returning the vectors "
                             "(or a dict with 'embedding')")
        return out.numpy()


def _load_keras(path: str) -> _LoadedKerasModel:
    """Loads a .keras file (copied to a local temporary file first when it is not local)."""
    import os
    import tempfile

    import keras  # Keras 3: .keras files are its format (TF_USE_LEGACY_KERAS affects tf.keras only)
    import tensorflow as tf
    from apache_beam.io.filesystems import FileSystems

    local = path.removeprefix("file://")
    temp = None
    if FileSystems.get_scheme(path) not in (None, "file"):
        with FileSystems.open(path, compression_type="uncompressed") as src, tempfile.NamedTemporaryFile(
                suffix=".keras", delete=False) as dst:
            while chunk := src.read(1 << 24):
                dst.write(chunk)
        local = temp = dst.name
    try:
        model = keras.saving.load_model(local, compile=False)
    finally:
        if temp:
            os.unlink(temp)
    specs = {}
    for tensor in model.inputs:
        name = getattr(tensor, "name", None) or f"input_{len(specs)}"
        specs[name] = tf.TensorSpec(tuple(tensor.shape), tf.as_dtype(tensor.dtype), name=name)
    _LOGGER.info("loaded Keras model %s (inputs %s)", path, sorted(specs))
    return _LoadedKerasModel(model, specs)


class EmbedResult(NamedTuple):
    vectors: beam.PCollection  # VectorBatch
    dead_letters: beam.PCollection  # DeadLetter, stage 'embed'


class _ToVectorBatchFn(beam.DoFn):
    """EmbeddedBatch -> VectorBatch of the good rows + dead letters."""

    def process(self, element: EmbeddedBatch) -> Iterator[Any]:
        vectors = element.vectors
        n = len(element)
        if n == 0:
            return
        progress.add("embedded", n)
        if vectors.ndim != 2 or vectors.shape[0] != n:
            raise ValueError(f"model returned shape {vectors.shape} for {n} rows; expected [rows, dim]")
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows are the ones we look for
            norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
        good = np.isfinite(norms) & (norms > _ZERO_NORM)
        if good.all():  # the common case: no copies
            yield VectorBatch(ids=element.ids, vectors=np.ascontiguousarray(vectors),
                              origins=element.origins)
            return
        finite = np.isfinite(vectors).all(axis=1)
        for i in np.flatnonzero(~good).tolist():
            error = "embedding is not finite" if not finite[i] else "embedding is the zero vector"
            payload = element.table.slice(i, 1).to_pylist()[0]
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, make_dead_letter(
                STAGE, element.ids[i], error, payload, element.origins[i]))
        if good.any():
            yield VectorBatch(ids=element.ids[good], vectors=np.ascontiguousarray(vectors[good]),
                              origins=element.origins[good])


def _export_default(export_dir: str, text_fields: tuple[str, ...], numeric_fields: tuple[str, ...]) -> str:
    """Exports the default embedder to ``export_dir`` once; returns the directory to serve.

    Several EmbedRecords (one per corpus) export the same deterministic model to the same directory, so
    an existing export is reused, and a new one is written aside and renamed into place (atomic on
    local filesystems) so no reader sees half a model. Where the rename fails and nobody else has
    published, the aside copy is served.
    """
    import tensorflow as tf  # deferred: keeps the launcher free of TF

    from transforms.features.default_embedder import export_default_model

    marker = posixpath.join(export_dir, "saved_model.pb")
    if tf.io.gfile.exists(marker):
        return export_dir
    aside = f"{export_dir}.tmp-{uuid.uuid4().hex}"
    export_default_model(aside, text_fields, numeric_fields)
    try:
        tf.io.gfile.rename(aside, export_dir)
    except tf.errors.OpError as e:  # published meanwhile, or a filesystem without directory renames
        if tf.io.gfile.exists(marker):
            tf.io.gfile.rmtree(aside)
            return export_dir
        _LOGGER.warning("serving the default embedder from %s (rename failed: %s)", aside, e)
        return aside
    return export_dir


class EmbedRecords(beam.PTransform):
    """PCollection[TransformedBatch] -> EmbedResult(vectors=PCollection[VectorBatch], dead_letters).

    PCollection[ModelInputBatch] (``transforms.features.raw_inputs``) for a model taking raw text or images.
    """

    def __init__(self, *, model_dir: str | None = None, run_dir: str | None = None,
                 text_fields: tuple[str, ...] = (), numeric_fields: tuple[str, ...] = (),
                 min_batch_size: int = DEFAULTS["embed_min_batch_size"],
                 max_batch_size: int = DEFAULTS["embed_max_batch_size"], output_key: str | None = None,
                 call_rows: int | None = None):
        """Initialises the transform.

        Args:
            model_dir: a SavedModel or .keras file taking the preprocessed features (or, for
                ModelInputBatch elements, raw text or images); None = the default embedder.
            run_dir: the run's output directory; the default embedder is exported to
                ``<run_dir>/default_model``. Required when model_dir is None.
            text_fields: the text fields preprocessed (the default embedder needs them).
            numeric_fields: the numeric fields preprocessed.
            min_batch_size: ``--embed_min_batch_size`` (rows).
            max_batch_size: ``--embed_max_batch_size`` (rows per model call).
            output_key: the signature output holding the vectors (see TFSavedModelHandler).
        """
        super().__init__()
        if model_dir is None:
            if not run_dir:
                raise ValueError("EmbedRecords needs run_dir to export the default embedder "
                                 "(or give --model_dir)")
            if not text_fields and not numeric_fields:
                raise ValueError("the default embedder needs the --text_fields/--numeric_fields")
        if min_batch_size < 1 or max_batch_size < min_batch_size:
            raise ValueError("need 1 <= --embed_min_batch_size <= --embed_max_batch_size, got "
                             f"{min_batch_size} and {max_batch_size}")
        self._model_dir = model_dir
        self._run_dir = run_dir
        self._text_fields = tuple(text_fields)
        self._numeric_fields = tuple(numeric_fields)
        self._handler = TFSavedModelHandler(model_dir, min_batch_size=min_batch_size,
                                            max_batch_size=max_batch_size, output_key=output_key,
                                            call_rows=call_rows)

    def expand(self, batches: beam.PCollection) -> EmbedResult:
        metadata = None
        if self._model_dir is None:
            export_dir = posixpath.join(self._run_dir, DEFAULT_MODEL_DIRNAME)
            metadata = (
                batches.pipeline
                | "CreateDefaultModelDir" >> beam.Create([export_dir])
                | "ExportDefaultModel" >> beam.Map(_export_default, self._text_fields,
                                                   self._numeric_fields)
                | "ToModelMetadata" >> beam.Map(
                    lambda path: ModelMetadata(model_id=path, model_name="default_embedder")))
        predictions = batches | "RunInference" >> RunInference(
            self._handler, model_metadata_pcoll=metadata).with_output_types(EmbeddedBatch)
        out = predictions | "ToVectorBatches" >> beam.ParDo(_ToVectorBatchFn()).with_outputs(
            DEAD_LETTER_TAG, main="vectors")
        return EmbedResult(vectors=out.vectors, dead_letters=out[DEAD_LETTER_TAG])
