"""Stable shard assignment for string ids, and splitting a batch's rows by shard.

Shards come from ``hashlib.blake2b`` (8-byte digest, read little-endian), never from the built-in
``hash()``, which is salted per process: the same id lands in the same shard on every worker, in every
run and in every Python version. The hash is part of the output contract (which match file holds a
query), so it must never change; tests pin a few literal values.

This module does not decide how many shards to use; callers pass ``num_shards``.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

__all__ = ["stable_hash64", "content_hash64", "assign_shards", "split_by_shard", "id_sort_keys", "str_array"]

_LOGGER = logging.getLogger(__name__)

_DIGEST_SIZE = 8


def _id_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    # surrogatepass: a lone surrogate (validation rejects such ids, but a hash must never crash)
    # hashes as its own bytes; every other string hashes as its UTF-8, unchanged.
    return str(value).encode("utf-8", errors="surrogatepass")


def stable_hash64(ids: np.ndarray) -> np.ndarray:
    """Hashes every id to a uint64 that never changes across processes, machines or releases.

    Args:
        ids: array (or sequence) of ids, shape [n]. ``str`` ids are hashed as UTF-8, ``bytes`` as they
            are, anything else as ``str(id)``.

    Returns:
        uint64 array, shape [n]: the 8-byte blake2b digest of each id, read little-endian.
    """
    ids = np.asarray(ids, dtype=object).reshape(-1)
    if len(ids) > 1:
        # Runs of one id (a query's K match rows) are hashed once: hashing is the costly part.
        # Only str and bytes ids, of one type: 7 == 7.0 == True and 0.0 == -0.0, but their str() differ.
        types = np.fromiter(map(type, ids), dtype=object, count=len(ids))
        text = (types == str) | (types == bytes)  # noqa: E721 (elementwise on an array)
        same = (ids[1:] == ids[:-1]) & (types[1:] == types[:-1]) & text[1:]
        starts = np.flatnonzero(np.concatenate([[True], ~same]))
        if len(starts) < len(ids):
            return np.repeat(_blake2b64(ids[starts]), np.diff(np.append(starts, len(ids))))
    return _blake2b64(ids)


def _blake2b64(ids: np.ndarray) -> np.ndarray:
    # blake2b has no batch API; the per-id loop is the only Python-level work, the conversion of the
    # concatenated digests is one vectorised frombuffer.
    digests = b"".join(hashlib.blake2b(_id_bytes(v), digest_size=_DIGEST_SIZE).digest() for v in ids)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64, copy=False)


def id_sort_keys(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Dense int64 ranks of string ids, one array per input (same shapes), comparable across them.

    Equal ids get equal keys and keys order as the ids do by code point (Python's str order, and
    fixed-width numpy unicode's, which this replaces): sort, tie-break and compare ids by their keys.
    8 bytes per id, whatever the longest id: a ``.astype(str)`` copy costs 4 bytes times the longest
    id's length for every row (one 100k-character id among 500 rows: 200 MB). Ranked by Arrow's
    sort of the UTF-8 bytes (whose order is code point order); ids UTF-8 cannot encode (validation
    rejects them) or that are not strings fall back to numpy's object sort.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    flat = [np.asarray(a, dtype=object).reshape(-1) for a in arrays]
    joined = flat[0] if len(flat) == 1 else np.concatenate(flat)
    if not len(joined):
        ranks = np.zeros(0, dtype=np.int64)
    else:
        try:
            ranks = pc.rank(pa.array(joined, type=pa.string()), sort_keys="ascending",
                            tiebreaker="dense").to_numpy().astype(np.int64)
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
            ranks = np.unique(joined, return_inverse=True)[1].astype(np.int64).reshape(-1)
    out, start = [], 0
    for a, f in zip(arrays, flat, strict=True):
        out.append(ranks[start:start + len(f)].reshape(np.shape(a)))
        start += len(f)
    return tuple(out)


def str_array(ids: np.ndarray) -> np.ndarray:
    """An object array of plain ``str`` (numpy.str_ and other values converted, each as it is, not
    padded to a common width): the form ids are written in."""
    ids = np.asarray(ids, dtype=object)
    if all(type(v) is str for v in ids.reshape(-1)):
        return ids
    return np.array([str(v) for v in ids.reshape(-1)], dtype=object).reshape(ids.shape)


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_HASH_BLOCK_ROWS = 4096
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place on a uint64 array (wraps around, as uint64 arithmetic does)."""
    h ^= h >> np.uint64(30)
    h *= _MIX_1
    h ^= h >> np.uint64(27)
    h *= _MIX_2
    h ^= h >> np.uint64(31)
    return h


def content_hash64(vectors: np.ndarray) -> np.ndarray:
    """A uint64 hash of every row's float32 bytes (little-endian): equal rows, equal hashes.

    Vectorised over rows (one pass per 8-byte word of a row), so hashing a million 128-dim rows takes
    a fraction of a second. Like ``stable_hash64`` it never changes across processes or machines:
    it decides which shard identical records meet in. It is not collision-free; callers that merge
    rows by it confirm equal bytes.

    Args:
        vectors: float array, shape [n, d].

    Returns:
        uint64 array, shape [n].
    """
    vectors = np.asarray(vectors)
    if vectors.shape[0] == 0:
        return np.zeros(0, dtype=np.uint64)
    rows = np.ascontiguousarray(vectors.reshape(vectors.shape[0], -1), dtype="<f4")
    n, d = rows.shape
    raw = rows.view(np.uint8).reshape(n, 4 * d)
    if raw.shape[1] % 8:
        raw = np.concatenate([raw, np.zeros((n, 8 - raw.shape[1] % 8), dtype=np.uint8)], axis=1)
    words = np.ascontiguousarray(raw).view("<u8").astype(np.uint64, copy=False)
    out = np.empty(n, dtype=np.uint64)
    shift = np.uint64(32)
    for start in range(0, n, _HASH_BLOCK_ROWS):  # row blocks keep the per-word passes in cache
        block = words[start:start + _HASH_BLOCK_ROWS]
        h = np.full(len(block), _FNV_OFFSET ^ np.uint64(d), dtype=np.uint64)
        for j in range(block.shape[1]):
            h ^= block[:, j]
            h *= _FNV_PRIME
            h ^= h >> shift
        out[start:start + len(block)] = _mix64(h)
    return out


def assign_shards(ids: np.ndarray, num_shards: int) -> np.ndarray:
    """Maps every id to a shard in ``[0, num_shards)`` by ``stable_hash64(id) % num_shards``.

    Args:
        ids: array of ids, shape [n].
        num_shards: number of shards, >= 1.

    Returns:
        int64 array of shard numbers, shape [n].

    Raises:
        ValueError: if ``num_shards`` < 1.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if num_shards == 1:  # nothing to choose: no hashing
        return np.zeros(len(ids), dtype=np.int64)
    return (stable_hash64(ids) % np.uint64(num_shards)).astype(np.int64)


def split_by_shard(shard_of_row: np.ndarray, num_shards: int) -> list[tuple[int, np.ndarray]]:
    """Groups row positions by shard.

    Args:
        shard_of_row: int array, shape [n], each row's shard in ``[0, num_shards)``.
        num_shards: number of shards.

    Returns:
        ``(shard, row_indices)`` for every shard that has at least one row, in increasing shard order;
        ``row_indices`` is an int64 array of row positions in increasing order (the split is stable).

    Raises:
        ValueError: if a shard number is outside ``[0, num_shards)``.
    """
    shard_of_row = np.asarray(shard_of_row, dtype=np.int64).reshape(-1)
    if shard_of_row.size == 0:
        return []
    if shard_of_row.min() < 0 or shard_of_row.max() >= num_shards:
        raise ValueError(f"shard numbers must lie in [0, {num_shards}), got "
                         f"[{shard_of_row.min()}, {shard_of_row.max()}]")
    order = np.argsort(shard_of_row, kind="stable")
    sorted_shards = shard_of_row[order]
    starts = np.flatnonzero(np.r_[True, sorted_shards[1:] != sorted_shards[:-1]])
    ends = np.r_[starts[1:], len(order)]
    return [(int(sorted_shards[s]), order[s:e]) for s, e in zip(starts, ends, strict=True)]
