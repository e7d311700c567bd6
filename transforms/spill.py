"""Candidate vectors move to their shard through files, not through the runner's shuffle.

Placement (``routing.PlaceCandidates``) writes each batch's rows of a shard as one ``.npy`` file
under a spill directory and sends only ``SpilledRows`` (ids, origins, the file's path) through the
GroupByKey; the shard's assembly reads the files straight into one preallocated array.

Why: a shuffle encodes, copies and decodes every value several times (pickling, the data channel,
the runner's grouping buffer), and the vectors are nearly all of a candidate corpus's bytes. On the
1M x 128 benchmark (``bench/ann_join.py``) the shuffle of 512 MB cost several seconds more than
writing and reading the same bytes as files; the assembly also no longer holds the grouped pieces
and their concatenation at once. Files work on every runner: the spill directory is under
``--temp_location`` when given (``gs://`` on Dataflow), else under the output directory, and is
deleted once every shard's index is built (:func:`delete_spill_dir`). A run that fails before then
leaves it behind; it holds nothing but these files.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.artifacts import is_local_path, join_path
from transforms.schema import VectorBatch

__all__ = ["SpilledRows", "spill_rows", "assemble_spilled", "delete_spill_dir", "new_spill_dir"]

_LOGGER = logging.getLogger(__name__)
# Read remote spill files in pieces of this many bytes (a GCS reader returns what it is asked for).
_READ_CHUNK = 64 << 20


class SpilledRows(NamedTuple):
    """Rows of one shard whose vectors wait in a spill file (float32 ``.npy``, rows in this order)."""

    ids: np.ndarray  # object [n]
    origins: np.ndarray  # object [n]
    path: str
    dims: int

    def __len__(self) -> int:
        return len(self.ids)

    def __reduce__(self):  # one buffer of raw columns (see transforms.batch_pickle)
        from transforms.batch_pickle import reduce_columns

        return reduce_columns(self)


def new_spill_dir(temp_location: str | None, output_dir: str) -> str:
    """A directory of its own for one run's spill files."""
    root = temp_location or join_path(output_dir, ".spill")
    return join_path(root, f"corpus-match-spill-{uuid.uuid4().hex}")


def spill_rows(batch: VectorBatch, spill_dir: str, shard: int) -> SpilledRows:
    """Writes ``batch``'s vectors to a new file under ``spill_dir``; returns what stays in memory."""
    vectors = np.ascontiguousarray(batch.vectors, dtype=np.float32)
    # A retried bundle writes new files; the directory is deleted as a whole at the end.
    path = join_path(spill_dir, f"shard-{shard:05d}-{uuid.uuid4().hex}.npy")
    if is_local_path(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, vectors, allow_pickle=False)
    else:
        with FileSystems.create(path, mime_type="application/octet-stream",
                                compression_type=CompressionTypes.UNCOMPRESSED) as f:
            np.save(f, vectors, allow_pickle=False)
    return SpilledRows(batch.ids, batch.origins, path, int(vectors.shape[1]))


def _read_into(path: str, out: np.ndarray) -> None:
    """Reads the float32 ``.npy`` at ``path`` into ``out`` (its exact shape), with no extra copy."""
    opener = (lambda: open(path, "rb")) if is_local_path(path) else (
        lambda: FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED))
    with opener() as f:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"{path}: .npy format version {version} is not one np.save writes here")
        shape, fortran, dtype = read_header(f)
        if tuple(shape) != out.shape or fortran or dtype != np.float32:
            raise ValueError(f"{path}: spill file holds {dtype} {shape}, expected float32 {out.shape}")
        view = memoryview(out.reshape(-1).view(np.uint8))
        pos = 0
        while pos < len(view):
            if hasattr(f, "readinto"):
                got = f.readinto(view[pos:])
            else:
                chunk = f.read(min(_READ_CHUNK, len(view) - pos))
                got = len(chunk)
                view[pos:pos + got] = chunk
            if not got:
                raise ValueError(f"{path}: spill file ends after {pos} of {len(view)} bytes")
            pos += got


def assemble_spilled(parts: Iterable[SpilledRows]) -> VectorBatch | None:
    """One shard's rows, in part order, with the vectors read from the parts' spill files."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return None
    dims = {p.dims for p in parts}
    if len(dims) != 1:
        raise ValueError(f"spilled parts of one shard have different vector lengths: {sorted(dims)}")
    vectors = np.empty((sum(len(p) for p in parts), dims.pop()), dtype=np.float32)
    pos = 0
    for p in parts:
        _read_into(p.path, vectors[pos:pos + len(p)])
        pos += len(p)
    return VectorBatch(np.concatenate([p.ids for p in parts]), vectors,
                       np.concatenate([p.origins for p in parts]))


def delete_spill_dir(spill_dir: str) -> None:
    """Deletes a run's spill directory (all its files); a missing directory is fine."""
    try:
        if is_local_path(spill_dir):
            import shutil

            shutil.rmtree(spill_dir, ignore_errors=True)
            parent = os.path.dirname(spill_dir.rstrip("/"))
            if os.path.basename(parent) == ".spill" and os.path.isdir(parent) and not os.listdir(parent):
                os.rmdir(parent)
        else:  # a trailing '/' deletes everything under the prefix (gs://)
            FileSystems.delete([spill_dir.rstrip("/") + "/"])
    except (BeamIOError, OSError) as e:  # cleanup only
        _LOGGER.warning("could not delete spill directory %s: %s", spill_dir, e)
