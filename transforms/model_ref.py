"""Which model an index was built with: a fingerprint of the model's content, not its path.

A kept index (``--index_dir``) may only be searched with vectors from the same model. Paths prove
nothing (a nightly export can overwrite ``gs://models/latest/`` with new weights; a copied model has a
new path and the same weights), so the index manifest records a fingerprint:

* a user SavedModel: SHA-256 of ``saved_model.pb`` (graph and signatures) and
  ``variables/variables.index`` (TF's tensor-bundle index, which holds the CRC32C of every variable's
  data, so a change of any weight changes it). Read through Beam FileSystems (local or gs://). A
  re-export of unchanged weights may serialise the graph differently and count as a new model: the
  check errs on the safe side;
* the built-in embedder (no ``--model_dir``): its code version and the embedded fields, since it is
  built deterministically from code. ``DEFAULT_EMBEDDER_VERSION`` must change whenever
  ``transforms/default_embedder.py`` changes what it outputs.
"""

from __future__ import annotations

import hashlib
import json

__all__ = ["model_fingerprint", "DEFAULT_EMBEDDER_VERSION", "ModelNotFoundError"]

DEFAULT_EMBEDDER_VERSION = 2  # 2: field dims from the text field count (default_dims)
_FILES = ("saved_model.pb", "variables/variables.index")
_CHUNK = 1 << 20


class ModelNotFoundError(ValueError):
    """--model_dir is not a readable SavedModel directory."""


def model_fingerprint(model_dir: str | None, text_fields: tuple[str, ...] = (),
                      numeric_fields: tuple[str, ...] = ()) -> str:
    """``sha256:<hex>`` of a SavedModel's graph and weights index, or ``builtin:...`` for the default."""
    if model_dir is None:
        payload = json.dumps({"model": "default_embedder", "version": DEFAULT_EMBEDDER_VERSION,
                              "text_fields": list(text_fields), "numeric_fields": list(numeric_fields)},
                             sort_keys=True)
        return f"builtin:default_embedder-v{DEFAULT_EMBEDDER_VERSION}:" + \
            hashlib.sha256(payload.encode()).hexdigest()[:16]
    from apache_beam.io.filesystems import FileSystems

    digest = hashlib.sha256()
    root = model_dir.rstrip("/")
    for rel in _FILES:
        path = f"{root}/{rel}"
        if not FileSystems.exists(path):
            if rel == "saved_model.pb":
                raise ModelNotFoundError(f"--model_dir {model_dir} is not a SavedModel: no {path}")
            continue  # a model without variables
        digest.update(rel.encode() + b"\0")
        with FileSystems.open(path) as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()
