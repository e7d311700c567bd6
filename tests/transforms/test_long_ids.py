"""Memory per row never depends on the longest id (issue #18): one 100,000-character id among 500
rows must not make any step allocate 500 x 100,000 x 4 bytes (200 MB) of fixed-width unicode.

Structural, not timed: each step runs under ``tracemalloc`` (numpy reports its buffers to it) on
the same rows with short ids and with one long id; the peaks may differ by a few copies of the
long id itself, never by a multiple of the row count.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from transforms.common.schema import PairBatch, ScoredPairBatch, VectorBatch
from transforms.common.sharding import id_sort_keys
from transforms.index.shard_files import load_ids, save_ids
from transforms.io.write_matches import _sorted_pairs, drop_duplicate_pairs, rank_by_weight
from transforms.placement.duplicate_ids import first_occurrences
from transforms.placement.exact_duplicates import collapse_identical, expand_link_pairs
from transforms.search.merge import merge_partials, neighbors_to_pairs
from transforms.search.search import PartialResult

N = 500
LONG = 100_000
# A few copies of the long id (a str, its UTF-8, an Arrow buffer) are fine; a row-count multiple
# of it (N * LONG * 4 bytes = 200 MB) is the bug.
SLACK = 3_000_000


def _ids(long: bool) -> np.ndarray:
    ids = np.array([f"id-{i:04d}" for i in range(N)], dtype=object)
    if long:
        ids[7] = "L" * LONG
    return ids


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _pairs(ids: np.ndarray, scored: bool = False):
    rng = np.random.default_rng(0)
    q = np.repeat(ids, 3)
    c = ids[rng.integers(0, N, size=len(q))]
    ranks = np.tile(np.arange(1, 4, dtype=np.int64), N)
    dist = rng.random(len(q))
    if scored:
        return ScoredPairBatch(q, c, ranks, dist, rng.random(len(q)), rng.random(len(q)))
    return PairBatch(q, c, ranks, dist)


def _partials(ids: np.ndarray) -> list[PartialResult]:
    rng = np.random.default_rng(1)
    out = []
    for shard in range(2):
        cand = ids[rng.integers(0, N, size=(N, 4))]
        out.append(PartialResult(shard, np.arange(N), N, ids, cand, rng.random((N, 4)), None, None))
    return out


def _batch(ids: np.ndarray) -> VectorBatch:
    vectors = np.repeat(np.eye(4, dtype=np.float32), N // 4 + 1, axis=0)[:N]  # many identical rows
    return VectorBatch(ids, vectors, np.array([f"f#{i}" for i in range(N)], dtype=object))


STEPS = {
    "sorted_pairs": lambda ids: _sorted_pairs(_pairs(ids)),
    "drop_duplicate_pairs": lambda ids: drop_duplicate_pairs(_pairs(ids)),
    "rank_by_weight": lambda ids: rank_by_weight(_pairs(ids, scored=True)),
    "merge_and_canonical_pairs": lambda ids: neighbors_to_pairs(
        merge_partials(_partials(ids), 5), max_distance=None, canonical=True),
    "first_occurrences": lambda ids: first_occurrences(ids, np.array([f"f#{i}" for i in range(N)],
                                                                     dtype=object)),
    "collapse_identical": lambda ids: collapse_identical(_batch(ids)),
    "expand_link_pairs": lambda ids: expand_link_pairs(_pairs(ids), {ids[7]: ids[:50]}, 10),
}


@pytest.mark.parametrize("step", sorted(STEPS))
def test_no_step_allocates_per_row_for_the_longest_id(step):
    short, long = _ids(False), _ids(True)
    STEPS[step](short)  # warm up imports and caches outside the measurement
    base = _peak(lambda: STEPS[step](short))
    peak = _peak(lambda: STEPS[step](long))
    assert peak - base < SLACK, f"{step}: {peak - base} more bytes with one {LONG}-character id"


def test_sort_keys_are_eight_bytes_per_id_and_order_as_str_does():
    ids = _ids(True)
    (keys,) = id_sort_keys(ids)
    assert keys.dtype == np.int64 and keys.nbytes == 8 * N
    assert np.argsort(keys, kind="stable").tolist() == sorted(range(N), key=lambda i: ids[i])
    tricky = np.array(["a", "a\x00", "", "é", "z", "a"], dtype=object)  # numpy unicode drops "\x00"
    (k,) = id_sort_keys(tricky)
    assert k[0] == k[5] and k[0] != k[1]
    assert np.argsort(k, kind="stable").tolist() == sorted(range(6), key=lambda i: tricky[i])


def test_a_shard_id_map_costs_each_row_its_own_bytes(tmp_path):
    ids = _ids(True)
    save_ids(str(tmp_path), ids)
    files = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    assert "ids.npy" not in files
    total = sum(len(i.encode()) for i in ids)
    assert files["ids_utf8.npy"] < total + 1000  # not N x the longest id
    assert files["ids_offsets.npy"] < 8 * (N + 1) + 1000

    def read(name):
        path = tmp_path / name
        return path.read_bytes() if path.exists() else None

    back = load_ids(read)
    assert back.dtype == object and back.tolist() == ids.tolist()
    # An index written before (ids.npy, fixed-width unicode) still loads.
    old = tmp_path / "old"
    old.mkdir()
    np.save(old / "ids.npy", np.array(["a", "bb"]), allow_pickle=False)
    assert load_ids(lambda n: (old / n).read_bytes() if (old / n).exists() else None).tolist() == ["a", "bb"]
