"""A shard index's files beside the index itself: its ids (saved and loaded without pickles) and the
shard directory's name.

What it does not do: build or load the index (:mod:`transforms.index.neighbor_index`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["IDS_UTF8_FILE", "IDS_OFFSETS_FILE", "IDS_FILE", "save_ids", "load_ids", "shard_dir_name",
           "read_shard_ids"]

# A shard's id map: the ids' UTF-8 bytes (uint8) and int64 offsets [n + 1] into them, both loaded
# without pickle; each row costs its own id's bytes. Indexes written before hold ``ids.npy``, a
# fixed-width unicode array (every row as wide as the longest id), still read.
IDS_UTF8_FILE = "ids_utf8.npy"
IDS_OFFSETS_FILE = "ids_offsets.npy"
IDS_FILE = "ids.npy"


def save_ids(local_dir: str, ids: np.ndarray) -> None:
    """Writes an id map (``IDS_UTF8_FILE`` + ``IDS_OFFSETS_FILE``) to a local directory."""
    import pyarrow as pa

    arr = pa.array(np.asarray(ids, dtype=object), type=pa.large_string())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[:len(arr) + 1]
    data = arr.buffers()[2]
    data = (np.frombuffer(data, dtype=np.uint8)[:int(offsets[-1])] if data is not None
            else np.zeros(0, dtype=np.uint8))
    np.save(os.path.join(local_dir, IDS_UTF8_FILE), data, allow_pickle=False)
    np.save(os.path.join(local_dir, IDS_OFFSETS_FILE), offsets, allow_pickle=False)


def load_ids(read: Any) -> np.ndarray:
    """An id map as an object array of str. ``read(name)`` returns a file of the shard's directory
    as bytes, or None when it has no such file (then the older ``ids.npy`` is read)."""
    import io

    import pyarrow as pa

    offsets = read(IDS_OFFSETS_FILE)
    if offsets is None:
        return np.load(io.BytesIO(read(IDS_FILE)), allow_pickle=False).astype(object)
    offsets = np.load(io.BytesIO(offsets), allow_pickle=False)
    data = np.load(io.BytesIO(read(IDS_UTF8_FILE)), allow_pickle=False)
    n = len(offsets) - 1
    arr = pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    return arr.to_numpy(zero_copy_only=False).astype(object, copy=False)


def shard_dir_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}"


def read_shard_ids(path: str) -> np.ndarray:
    """A published shard's id map (object array of str), without loading its index; local or remote."""
    from apache_beam.io.filesystems import FileSystems

    def read(name: str) -> bytes | None:
        if name == IDS_OFFSETS_FILE and not FileSystems.exists(f"{path}/{name}"):
            return None
        with FileSystems.open(f"{path}/{name}") as fh:
            return fh.read()

    return load_ids(read)
