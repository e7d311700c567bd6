"""Which model an index was built with: a fingerprint of the model's content, not its path.

A kept index (``--index_dir``) may only be searched with vectors from the same model. Paths prove
nothing (a nightly export can overwrite ``gs://models/latest/`` with new weights; a copied model has a
new path and the same weights), so the index manifest records a fingerprint:

* a user SavedModel: SHA-256 of ``saved_model.pb`` (graph and signatures) and
  ``variables/variables.index`` (TF's tensor-bundle index, which holds the CRC32C of every variable's
  data, so a change of any weight changes it). Read through Beam FileSystems (local or gs://). A
  re-export of unchanged weights may serialise the graph differently and count as a new model: the
  check errs on the safe side;
* a Keras model file (``--model_dir model.keras``): SHA-256 of the whole file (config and weights
  are in the one zip, so a change of any weight changes it). A copy keeps the fingerprint; saving
  the same model again makes a new one (the file records its save date): safe side again;
* the built-in embedder (no ``--model_dir``): its code version and the embedded fields, since it is
  built deterministically from code. ``DEFAULT_EMBEDDER_VERSION`` must change whenever
  ``transforms/features/default_embedder.py`` changes what it outputs.
"""

from __future__ import annotations

import hashlib
import json

__all__ = ["model_fingerprint", "is_keras_file", "DEFAULT_EMBEDDER_VERSION", "ModelNotFoundError"]

DEFAULT_EMBEDDER_VERSION = 2  # 2: field dims from the text field count (default_dims)
_FILES = ("saved_model.pb", "variables/variables.index")
_CHUNK = 1 << 20


class ModelNotFoundError(ValueError):
    """--model_dir is not a readable SavedModel directory or Keras model file."""


def is_keras_file(model_dir: str | None) -> bool:
    """True when ``--model_dir`` names a Keras 3 model file (``.keras``) rather than a SavedModel."""
    return bool(model_dir) and model_dir.rstrip("/").lower().endswith(".keras")


def _hash_file(digest, path: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)


def model_fingerprint(model_dir: str | None, text_fields: tuple[str, ...] = (),
                      numeric_fields: tuple[str, ...] = ()) -> str:
    """``sha256:<hex>`` of a SavedModel's graph and weights index (of a ``.keras`` file: of the file),
    or ``builtin:...`` for the default."""
    if model_dir is None:
        payload = json.dumps({"model": "default_embedder", "version": DEFAULT_EMBEDDER_VERSION,
                              "text_fields": list(text_fields), "numeric_fields": list(numeric_fields)},
                             sort_keys=True)
        return f"builtin:default_embedder-v{DEFAULT_EMBEDDER_VERSION}:" + \
            hashlib.sha256(payload.encode()).hexdigest()[:16]
    from apache_beam.io.filesystems import FileSystems

    digest = hashlib.sha256()
    root = model_dir.rstrip("/")
    if is_keras_file(root):
        if not FileSystems.exists(root):
            raise ModelNotFoundError(f"--model_dir {model_dir}: no such Keras model file")
        digest.update(b"keras\0")
        _hash_file(digest, root)
        return "sha256:" + digest.hexdigest()
    for rel in _FILES:
        path = f"{root}/{rel}"
        if not FileSystems.exists(path):
            if rel == "saved_model.pb":
                raise ModelNotFoundError(f"--model_dir {model_dir} is not a SavedModel: no {path}")
            continue  # a model without variables
        digest.update(rel.encode() + b"\0")
        _hash_file(digest, path)
    return "sha256:" + digest.hexdigest()
