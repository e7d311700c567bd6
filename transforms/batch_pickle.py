"""Pickling of the batch types with their string arrays as Arrow buffers, not string by string.

Beam encodes the batch NamedTuples (``VectorBatch``, ``PairBatch``, ``NeighborBatch``) with its
pickle fallback whenever they cross a stage boundary or a shuffle. Pickle writes an object array of
strings one string at a time; here such an array travels as Arrow's offsets and UTF-8 data instead.
Measured through Beam's ``FastPrimitivesCoder`` on this machine: 1M match pairs encoded in 0.28 s
(0.97 s pickled as they are) and decoded in 0.33 s (0.41 s); 1M 128-dim rows with ids and origins in
1.69 + 1.00 s (1.94 + 1.08 s), where copying the vectors' bytes dominates.

Numeric arrays are left to numpy's own pickling (one copy of their bytes). A column that is not an
array of ``str`` (and None) is pickled as it is, so every value round-trips unchanged, and every
rebuilt array is writable.
"""

from __future__ import annotations

import numpy as np

__all__ = ["reduce_columns"]

# Column kinds.
_AS_IS, _STRINGS = 0, 1


def _string_buffers(values: np.ndarray) -> tuple[int, list] | None:
    """(null count, [validity, offsets, data] buffers) if every value is a str or None, else None."""
    import pyarrow as pa

    flat = values.reshape(-1)
    if not len(flat):
        return None
    try:
        # Inferred, not cast: str and None give ``string``; bytes give ``binary`` and anything else
        # fails, so only arrays of str (and None) go this way and every value round-trips.
        arr = pa.array(flat, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if not isinstance(arr, pa.Array) or arr.type != pa.string():  # over 2 GB: a ChunkedArray
        return None
    return arr.null_count, arr.buffers()


def reduce_columns(batch: tuple) -> tuple:
    """``__reduce__`` for a NamedTuple of arrays: string arrays travel as Arrow buffers."""
    columns: list[tuple] = []
    for value in batch:
        strings = (_string_buffers(value)
                   if isinstance(value, np.ndarray) and value.dtype == object else None)
        if strings is None:  # numeric arrays pickle as one copy of their bytes already
            columns.append((_AS_IS, value))
            continue
        nulls, buffers = strings
        # As uint8 arrays: numpy pickles them as one copy, and they unpickle writable.
        columns.append((_STRINGS, value.shape, nulls,
                        [None if b is None else np.frombuffer(b, dtype=np.uint8) for b in buffers]))
    return _rebuild, (type(batch), tuple(columns))


def _rebuild(cls: type, columns: tuple) -> tuple:
    import pyarrow as pa

    values = []
    for column in columns:
        if column[0] == _AS_IS:
            values.append(column[1])
            continue
        _, shape, nulls, buffers = column
        arr = pa.Array.from_buffers(pa.string(), int(np.prod(shape)),
                                    [None if b is None else pa.py_buffer(b) for b in buffers],
                                    null_count=nulls)
        values.append(arr.to_numpy(zero_copy_only=False).reshape(shape))
    return cls(*values)
