"""What a ``--model_dir`` model takes, read at launch without loading it, and how the job feeds it.

:func:`read_model_inputs` lists the inputs of a model's serving signature: of a SavedModel from its
``saved_model.pb`` (the ``serving_default`` signature, else ``serve``; no variables are read), of a
Keras model file (``.keras``) from the ``config.json`` in its zip (the model's ``Input`` layers).
Both are read through Beam FileSystems, so gs:// works. :func:`resolve_model_input` decides from
them which of three kinds of model it is:

* ``features``: every input is a feature :mod:`transforms.features.preprocess` makes for ``--text_fields`` /
  ``--numeric_fields`` (tf.Transform runs first; the built-in embedder is one);
* ``text``: one ``tf.string`` input of shape ``[batch]`` (a sentence encoder): the job feeds it the
  raw text of ``--text_fields`` and skips tf.Transform (``transforms.features.raw_inputs``);
* ``image`` (with ``--image_field``): one input ``[batch, height, width, channels]`` of numbers with a
  fixed height and width and 1 or 3 channels, fed decoded pixels resized to that shape; or one
  ``tf.string`` ``[batch]`` input, fed the encoded image bytes as they are (the model decodes).

Anything else is a configuration error whose message lists the signature's inputs. This module does
not load models (``transforms.features.embed`` does, once per worker process) and imports TensorFlow only to
parse a SavedModel's protocol buffer.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Collection
from typing import NamedTuple

from transforms.features.model_ref import ModelNotFoundError, is_keras_file

__all__ = ["InputSpec", "ModelInput", "read_model_inputs", "resolve_model_input", "describe_inputs",
           "MODEL_KINDS", "IMAGE_DTYPES", "SIGNATURE_NAMES"]

_LOGGER = logging.getLogger(__name__)
MODEL_KINDS = ("features", "text", "image")
# Pixel dtypes an image input may have; pixels are fed as values in [0, 255] cast to it.
IMAGE_DTYPES = ("uint8", "float16", "float32", "float64", "int32")
# Serving signatures tried in order (Keras' model.export() writes both names).
SIGNATURE_NAMES = ("serving_default", "serve")


class InputSpec(NamedTuple):
    """One signature input: dtype name ('string', 'float32', ...) and shape (None: unknown rank)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None


class ModelInput(NamedTuple):
    """How the job feeds a model (hashable, so it can sit in the frozen MatchConfig).

    Attributes:
        kind: 'features', 'text' or 'image' (see the module docstring).
        input_name: the one input of a text or image model ('' for features).
        dtype: that input's dtype name ('string' for text and encoded images).
        height, width, channels: the pixel shape an image is resized to (0 for encoded-bytes inputs
            and other kinds).
    """

    kind: str
    input_name: str = ""
    dtype: str = ""
    height: int = 0
    width: int = 0
    channels: int = 0

    @property
    def encoded_images(self) -> bool:
        """An image model that takes the encoded bytes (a tf.string input) rather than pixels."""
        return self.kind == "image" and self.dtype == "string"


def describe_inputs(specs: Collection[InputSpec]) -> str:
    """``{name: dtype[shape], ...}`` for messages; shapes with ``None`` for any size."""
    def shape(s: InputSpec) -> str:
        return "[?]" if s.shape is None else "[" + ", ".join("None" if d is None else str(d)
                                                             for d in s.shape) + "]"
    return "{" + ", ".join(f"{s.name}: {s.dtype}{shape(s)}" for s in specs) + "}"


def _read_bytes(path: str) -> bytes:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as fh:
        return fh.read()


def _saved_model_inputs(model_dir: str) -> tuple[str, list[InputSpec]]:
    from apache_beam.io.filesystems import FileSystems

    path = f"{model_dir.rstrip('/')}/saved_model.pb"
    if not FileSystems.exists(path):
        raise ModelNotFoundError(f"--model_dir {model_dir} is not a SavedModel: no {path}")
    # Deferred: TensorFlow's protos are only needed when a --model_dir is given.
    import tensorflow as tf
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(_read_bytes(path))
    except DecodeError as e:
        raise ModelNotFoundError(f"--model_dir {model_dir}: {path} is not a SavedModel ({e})") from None
    signatures = {}
    for graph in proto.meta_graphs:
        signatures.update(graph.signature_def)
    name = next((n for n in SIGNATURE_NAMES if n in signatures), None)
    if name is None:
        found = sorted(n for n in signatures if not n.startswith("__"))
        raise ModelNotFoundError(f"--model_dir {model_dir} has no serving signature "
                                 f"({' or '.join(SIGNATURE_NAMES)}); it has {found}")
    specs = []
    for key, info in sorted(signatures[name].inputs.items()):
        dtype = tf.dtypes.as_dtype(info.dtype).name
        shape = None if info.tensor_shape.unknown_rank else tuple(
            None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
        specs.append(InputSpec(key, dtype, shape))
    return name, specs


def _keras_inputs(path: str) -> list[InputSpec]:
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        raise ModelNotFoundError(f"--model_dir {path}: no such Keras model file")
    try:
        with zipfile.ZipFile(io.BytesIO(_read_bytes(path))) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        raise ModelNotFoundError(f"--model_dir {path} is not a Keras model file ({e})") from None
    layers = (config.get("config") or {}).get("layers") or []
    inputs = {layer["config"]["name"]: layer["config"] for layer in layers
              if layer.get("class_name") == "InputLayer" and "name" in layer.get("config", {})}
    order = (config.get("config") or {}).get("input_layers")
    if order and isinstance(order[0], str):  # one input: [name, node, tensor]
        order = [order]
    names = [entry[0] for entry in order] if order else list(inputs)
    specs = []
    for name in names:
        layer = inputs.get(name)
        if layer is None:
            continue
        shape = layer.get("batch_shape") or layer.get("batch_input_shape")
        dtype = layer.get("dtype")
        if isinstance(dtype, dict):  # a dtype policy
            dtype = (dtype.get("config") or {}).get("name", "float32")
        specs.append(InputSpec(name, str(dtype or "float32"),
                               tuple(None if d is None else int(d) for d in shape) if shape else None))
    if not specs:
        raise ModelNotFoundError(f"--model_dir {path}: the Keras model declares no Input layer (build "
                                 "it with keras.Input(shape=..., dtype=...) so its inputs are known)")
    return specs


def read_model_inputs(model_dir: str) -> list[InputSpec]:
    """The inputs of the model's serving signature (a SavedModel) or of the Keras model (``.keras``).

    Raises:
        ModelNotFoundError: not a readable SavedModel / Keras file, or no serving signature.
    """
    if is_keras_file(model_dir):
        return _keras_inputs(model_dir.rstrip("/"))
    return _saved_model_inputs(model_dir)[1]


def _is_image_spec(spec: InputSpec) -> bool:
    return (spec.dtype in IMAGE_DTYPES and spec.shape is not None and len(spec.shape) == 4
            and spec.shape[1] is not None and spec.shape[2] is not None and spec.shape[3] in (1, 3))


def _is_string_batch(spec: InputSpec) -> bool:
    return spec.dtype == "string" and spec.shape is not None and len(spec.shape) == 1


def resolve_model_input(specs: list[InputSpec], *, model_dir: str, text_fields: tuple[str, ...],
                        numeric_fields: tuple[str, ...], image_field: str | None,
                        feature_names: Collection[str]) -> ModelInput:
    """Which kind of model ``specs`` describe, given the job's fields (see the module docstring).

    Args:
        specs: :func:`read_model_inputs` of ``model_dir``.
        model_dir: for messages.
        text_fields, numeric_fields, image_field: the job's flags.
        feature_names: the features tf.Transform makes for those fields.

    Raises:
        ValueError: the model takes something the job cannot feed it with these flags; the message
            names the flag and the signature's inputs.
    """
    listed = describe_inputs(specs)
    if image_field:
        if len(specs) == 1 and _is_string_batch(specs[0]):
            return ModelInput("image", specs[0].name, "string")
        if len(specs) == 1 and _is_image_spec(specs[0]):
            _, height, width, channels = specs[0].shape
            return ModelInput("image", specs[0].name, specs[0].dtype, height, width, channels)
        raise ValueError(
            f"--image_field {image_field}: --model_dir {model_dir} must take one image input, "
            "[batch, height, width, channels] numbers (fixed height and width, 1 or 3 channels) "
            f"or a tf.string [batch] of encoded images; its serving signature takes {listed}")
    if len(specs) == 1 and specs[0].dtype == "string":
        if not _is_string_batch(specs[0]):
            raise ValueError(f"--model_dir {model_dir}: a raw-text model must take one tf.string "
                             f"input of shape [batch]; its serving signature takes {listed}")
        if numeric_fields:
            raise ValueError(f"--numeric_fields: --model_dir {model_dir} takes raw text only "
                             f"(serving signature {listed}); give --text_fields alone")
        if not text_fields:
            raise ValueError(f"--text_fields: --model_dir {model_dir} takes raw text ({listed}): "
                             "name the fields to feed it")
        return ModelInput("text", specs[0].name, "string")
    unknown = [s.name for s in specs if s.name not in feature_names]
    if not specs or unknown:
        fields = "--text_fields/--numeric_fields"
        if len(specs) == 1 and _is_image_spec(specs[0]):
            hint = "; for an image model give --image_field"
        else:
            hint = ("; a model of your own takes either those features by name, one tf.string [batch] "
                    "input (raw text), or one image input (with --image_field)")
        raise ValueError(f"--model_dir {model_dir}: its serving signature takes {listed}, which are not "
                         f"features preprocessed from {fields} (those are {sorted(feature_names)})"
                         f"{hint}")
    return ModelInput("features")
