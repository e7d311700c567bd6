"""Pickling of the batch types with their string arrays as Arrow buffers, not string by string.

Beam encodes the batch NamedTuples (``VectorBatch``, ``PairBatch``, ``NeighborBatch``,
``SpilledRows``) with its pickle fallback whenever they cross a stage boundary or a shuffle. Pickle
writes an object array of strings one string at a time; here such an array travels as Arrow's
offsets and UTF-8 data instead. Measured through Beam's ``FastPrimitivesCoder`` on this machine: 1M
match pairs encoded in 0.28 s (0.97 s pickled as they are) and decoded in 0.33 s (0.41 s); 1M
128-dim rows with ids and origins in 1.69 + 1.00 s (1.94 + 1.08 s), where copying the vectors'
bytes dominates.

Numeric arrays are left to numpy's own pickling (one copy of their bytes). An object array goes
the Arrow way only when every value is a ``str`` or None that UTF-8 can encode; its values come
back as equal ``str`` (a ``str`` subclass such as ``numpy.str_`` comes back as plain ``str``). Any
other column (bytes, numbers, mixed types, strings with lone surrogates) is pickled as it is.
Every rebuilt array is writable.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

__all__ = ["reduce_columns"]

_LOGGER = logging.getLogger(__name__)


class _AsIs(NamedTuple):
    value: object


class _Strings(NamedTuple):
    shape: tuple
    nulls: int
    buffers: list  # Arrow's [validity or None, int32 offsets, UTF-8 data], each as a uint8 array


def _string_buffers(values: np.ndarray) -> _Strings | None:
    """The array as Arrow string buffers if every value is a str (or None), else None."""
    import pyarrow as pa

    flat = values.reshape(-1)
    if not len(flat):
        return None
    try:
        # Inferred, not cast: str and None give ``string``; bytes give ``binary`` and anything else
        # fails, so only arrays of str (and None) go this way.
        arr = pa.array(flat, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):  # the last: lone surrogates
        return None
    if not isinstance(arr, pa.Array) or arr.type != pa.string():  # over 2 GB: a ChunkedArray
        return None
    # As uint8 arrays: numpy pickles them as one copy, and they unpickle writable.
    return _Strings(values.shape, arr.null_count,
                    [None if b is None else np.frombuffer(b, dtype=np.uint8) for b in arr.buffers()])


def reduce_columns(batch: tuple) -> tuple:
    """``__reduce__`` for a NamedTuple of arrays: string arrays travel as Arrow buffers."""
    columns = []
    for value in batch:
        strings = (_string_buffers(value)
                   if isinstance(value, np.ndarray) and value.dtype == object else None)
        columns.append(_AsIs(value) if strings is None else strings)
    return _rebuild, (type(batch), tuple(columns))


def _rebuild(cls: type, columns: tuple) -> tuple:
    import pyarrow as pa

    values = []
    for column in columns:
        if isinstance(column, _AsIs):
            values.append(column.value)
            continue
        arr = pa.Array.from_buffers(pa.string(), int(np.prod(column.shape)),
                                    [None if b is None else pa.py_buffer(b) for b in column.buffers],
                                    null_count=column.nulls)
        values.append(arr.to_numpy(zero_copy_only=False).reshape(column.shape))
    return cls(*values)
