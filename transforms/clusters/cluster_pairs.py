"""Dedup clusters: connected components of the accepted match pairs, computed in Beam, and their files.

:class:`ClusterPairs` turns the pairs of a dedup run (an undirected graph whose nodes are record ids)
into one cluster per connected component, every record id exactly once (records without a pair are
singleton clusters), cluster id = the smallest member id (Python ``str`` order), so the result does
not depend on the runner, the bundle split or the number of workers.

Algorithm: the alternating Large-Star / Small-Star algorithm of Kiveris et al. 2014, "Connected
Components in MapReduce and Beyond". Nodes are ordered by ``(stable_hash64(id), id)``: a pseudo-random
order, which is what the paper's O(log^2 n) bound (and its O(log n) behaviour in practice) assumes,
and which also protects against adversarial id orders (a chain ``r1-r2-r3-...``). Each *round* is one
shuffle: edges, as numpy batches keyed by a hash bucket of their source node, are grouped and every
group is processed with numpy on local integer ranks.

- Large-Star (even rounds; each undirected edge arrives in both directions, so a node sees its whole
  neighbourhood): every node u links each neighbour v > u to m(u) = min(u, neighbours of u).
- Small-Star (odd rounds; an edge arrives only at its larger end): every node u links itself and each
  smaller neighbour to the smallest of them.

The fixed point is a forest of stars, each centred on its component's smallest node. A Large-Star
round sees full neighbourhoods, so it also checks whether its *input* is already that fixed point
(every node has at most one smaller neighbour, and a node with a larger neighbour has none): the
check is local, summed over the round, and a round that finds zero offending nodes has converged.
Beam graphs cannot loop, so ``max_rounds`` rounds are unrolled in the graph; each round first looks
at the convergence state of the round before it (a side input) and, once converged, routes its edges
straight to the output, so the remaining rounds run empty. A chain of N nodes (the worst case for
label propagation, which needs N rounds) needs about 1.7 * log2(N) + 2 rounds here, the confirming
round included: measured 11-13 for 100 nodes, 17-19 for 1 000, 21-23 for 10 000, 27 for 100 000;
the default 40 covers chains of several million.

Non-convergence: when ``max_rounds`` rounds end before the fixed point, two more shuffles separate the
components that *are* finished stars (exact local test: a centre with no smaller neighbour whose
neighbours all have it as their only neighbour) from the rest; if the rest has at most
``max_final_edges`` edges it is gathered on one worker and finished there (scipy's
``connected_components``), otherwise the run fails with :class:`ClustersDidNotConvergeError` before
anything is gathered. The result is exact either way; ``stats['converged']`` says which path ran.

Limits: one component's star ends with all its members as neighbours of its centre, so the largest
component's ids must fit one worker's memory (the same holds for the final labelling step).

:class:`WriteClusters` writes ``DIR/clusters/clusters-SSSSS-of-NNNNN.parquet`` (record_id,
cluster_id, cluster_size), rows routed by a stable hash of record_id, sorted, byte-for-byte
reproducible. This module does not decide which pairs are accepted (the match threshold does) and
does not split giant clusters: it flags those larger than ``max_cluster_size`` in the stats.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.common.artifacts import join_path, read_bytes, write_bytes
from transforms.common.flags import DEFAULTS
from transforms.common.schema import PairBatch
from transforms.common.sharding import id_sort_keys, split_by_shard, stable_hash64, str_array
from transforms.io.parquet import PARQUET_OPTIONS  # the project's pinned writer options (same bytes)

__all__ = [
    "ClusterPairs",
    "ClusterResult",
    "ClusterBatch",
    "ClustersDidNotConvergeError",
    "WriteClusters",
    "cluster_shard_path",
    "read_clusters",
    "CLUSTER_COLUMNS",
]

_LOGGER = logging.getLogger(__name__)

CLUSTER_COLUMNS = ("record_id", "cluster_id", "cluster_size")
_CLUSTER_SCHEMA = pa.schema([
    pa.field("record_id", pa.string(), nullable=False),
    pa.field("cluster_id", pa.string(), nullable=False),
    pa.field("cluster_size", pa.int64(), nullable=False),
])
_DONE_TAG = "done"
_PROGRESS_TAG = "progress"
_UNFINISHED_TAG = "unfinished"
_IDS_TAG = "ids"
# Rows per output ClusterBatch: keeps elements a few MB even when a bucket holds millions of ids.
_OUTPUT_BATCH_ROWS = 65_536
_TOP_CLUSTERS = 10
# Giant clusters listed by id in the stats (all are counted); keeps the manifest small.
_MAX_LISTED_GIANTS = 100


class ClustersDidNotConvergeError(RuntimeError):
    """Connected components were not finished within ``max_rounds`` and too much work was left."""


class ClusterBatch(NamedTuple):
    """Cluster assignments of a batch of records (rows aligned).

    Attributes:
        ids: object array of str, shape [n], each record id once across the whole PCollection.
        cluster_ids: object array of str, shape [n]: the smallest member id of the record's cluster.
        cluster_sizes: int64 array, shape [n]: number of records in that cluster (1 = singleton).
    """

    ids: np.ndarray
    cluster_ids: np.ndarray
    cluster_sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


class ClusterResult(NamedTuple):
    """Outputs of :class:`ClusterPairs`."""

    assignments: beam.PCollection  # ClusterBatch, every record id exactly once
    stats: beam.PCollection  # one dict, see ClusterPairs


class _Edges(NamedTuple):
    """Directed edges ``src -> dst`` with both ends' stable hashes (carried, never recomputed)."""

    src: np.ndarray  # object [n]
    dst: np.ndarray  # object [n]
    src_hash: np.ndarray  # uint64 [n]
    dst_hash: np.ndarray  # uint64 [n]

    def __len__(self) -> int:
        return len(self.src)


# --------------------------------------------------------------------------------------------------
# Pure numpy pieces (one group of edges at a time)


def _concat_edges(batches: Iterable[_Edges]) -> _Edges:
    parts = [b for b in batches if len(b)]
    if not parts:
        empty = np.empty(0, dtype=object)
        return _Edges(empty, empty, np.empty(0, np.uint64), np.empty(0, np.uint64))
    return _Edges(*(np.concatenate([p[i] for p in parts]) for i in range(4)))


def _index_nodes(ids: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local integer ranks of nodes in ``(hash, id)`` order.

    Returns:
        ``(node_ids, node_hashes, rank_of_row)``: the distinct nodes sorted by (hash, id), and for every
        input row the rank of its node.
    """
    uniq_hash, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    node_ids = ids[first]
    if bool(np.all(node_ids[inverse] == ids)):  # no 64-bit collision in this group: hash order suffices
        return node_ids, uniq_hash, inverse.reshape(-1)
    # Two ids share a hash (about one pair in 10^19): fall back to sorting the ids themselves.
    node_ids, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    node_hashes = hashes[first]
    order = np.argsort(node_hashes, kind="stable")  # ids are sorted already: stable sort = (hash, id)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return node_ids[order], node_hashes[order], rank[inverse.reshape(-1)]


class _LocalGraph(NamedTuple):
    s: np.ndarray  # int64 ranks of sources
    d: np.ndarray  # int64 ranks of destinations
    ids: np.ndarray  # object, node id by rank
    hashes: np.ndarray  # uint64, node hash by rank


def _local_graph(edges: _Edges) -> _LocalGraph:
    """Ranks the nodes of a group of edges; drops self-loops and duplicate directed edges."""
    n_edges = len(edges)
    ids = np.concatenate([edges.src, edges.dst])
    hashes = np.concatenate([edges.src_hash, edges.dst_hash]).astype(np.uint64, copy=False)
    if n_edges == 0:
        empty = np.empty(0, dtype=np.int64)
        return _LocalGraph(empty, empty, ids, hashes)
    node_ids, node_hashes, rank = _index_nodes(ids, hashes)
    s, d = rank[:n_edges], rank[n_edges:]
    s, d = _unique_pairs(s, d, len(node_ids))
    return _LocalGraph(s, d, node_ids, node_hashes)


def _unique_pairs(a: np.ndarray, b: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    keep = a != b
    key = np.sort(a[keep].astype(np.int64) * n + b[keep])
    key = key[np.r_[True, key[1:] != key[:-1]]] if len(key) else key
    return key // n, key % n


def _min_neighbor(s: np.ndarray, d: np.ndarray, n: int) -> np.ndarray:
    """m(u) = min(u, neighbours of u) for every local node u (as ranks)."""
    m = np.arange(n, dtype=np.int64)
    np.minimum.at(m, s, d)
    return m


def _large_star(g: _LocalGraph) -> tuple[np.ndarray, np.ndarray, int]:
    """One Large-Star step on full neighbourhoods.

    Returns:
        ``(a, b, offenders)``: the output edges as rank pairs with a > b, and the number of source
        nodes whose neighbourhood is not yet that of a converged star (0 everywhere = the input is the
        fixed point, and then the output equals the input).
    """
    n = len(g.ids)
    m = _min_neighbor(g.s, g.d, n)
    smaller = np.bincount(g.s[g.d < g.s], minlength=n)
    has_larger = np.bincount(g.s[g.d > g.s], minlength=n) > 0
    offenders = int(np.count_nonzero((smaller > 1) | ((smaller > 0) & has_larger)))
    up = g.d > g.s
    a, b = _unique_pairs(g.d[up], m[g.s[up]], n)
    return a, b, offenders


def _small_star(g: _LocalGraph) -> tuple[np.ndarray, np.ndarray, int]:
    """One Small-Star step; every edge arrives at its larger end (``d < s``).

    Returns:
        ``(a, b, changed)``: output edges with a > b and the number of nodes with 2+ smaller
        neighbours (the nodes whose edges this step rewires).
    """
    n = len(g.ids)
    down = g.d < g.s  # defensive: edges from a Large-Star step are always oriented this way
    s, d = g.s[down], g.d[down]
    m = _min_neighbor(s, d, n)
    changed = int(np.count_nonzero(np.bincount(s, minlength=n) > 1))
    a, b = _unique_pairs(np.concatenate([s, d]), np.concatenate([m[s], m[s]]), n)
    return a, b, changed


def _greater(h1: np.ndarray, id1: np.ndarray, h2: np.ndarray, id2: np.ndarray) -> np.ndarray:
    """Elementwise ``(h1, id1) > (h2, id2)``."""
    return (h1 > h2) | ((h1 == h2) & (id1 > id2).astype(bool))


def _keyed(edges: _Edges, num_buckets: int) -> Iterator[tuple[int, _Edges]]:
    """Splits edges by the bucket of their source node."""
    if len(edges) == 0:
        return
    buckets = (edges.src_hash % np.uint64(num_buckets)).astype(np.int64)
    for bucket, rows in split_by_shard(buckets, num_buckets):
        yield bucket, _Edges(*(col[rows] for col in edges))


def _edges_from_ranks(a: np.ndarray, b: np.ndarray, g: _LocalGraph, both: bool) -> _Edges:
    if both:
        a, b = np.concatenate([a, b]), np.concatenate([b, a])
    return _Edges(g.ids[a], g.ids[b], g.hashes[a], g.hashes[b])


def _hashes(ids: np.ndarray) -> np.ndarray:
    return stable_hash64(ids) if len(ids) else np.empty(0, dtype=np.uint64)


# --------------------------------------------------------------------------------------------------
# DoFns


class _PairsToEdgesFn(beam.DoFn):
    """PairBatch -> edges in both directions keyed by source bucket (the first round is a Large-Star).

    Self-pairs carry no edge; their ids go to the ``ids`` output so they still get a cluster.
    """

    def __init__(self, num_buckets: int):
        self._num_buckets = num_buckets

    def process(self, pairs: PairBatch) -> Iterator[Any]:
        q = np.asarray(pairs.query_ids, dtype=object).reshape(-1)
        c = np.asarray(pairs.candidate_ids, dtype=object).reshape(-1)
        if len(q) == 0:
            return
        loop = q == c
        if loop.any():
            yield beam.pvalue.TaggedOutput(_IDS_TAG, q[loop])
            q, c = q[~loop], c[~loop]
        hq, hc = _hashes(q), _hashes(c)
        yield from _keyed(_Edges(np.concatenate([q, c]), np.concatenate([c, q]),
                                 np.concatenate([hq, hc]), np.concatenate([hc, hq])), self._num_buckets)


class _RouteFn(beam.DoFn):
    """Sends a round's input edges to the output once an earlier round has converged."""

    def process(self, element: tuple[int, _Edges], state: dict[str, Any]) -> Iterator[Any]:
        if state["converged"]:
            yield beam.pvalue.TaggedOutput(_DONE_TAG, element[1])
        else:
            yield element


class _StarStepFn(beam.DoFn):
    """``(bucket, [edges])`` -> one Large-Star or Small-Star step -> edges keyed for the next step."""

    def __init__(self, large: bool, num_buckets: int):
        self._large = large
        self._num_buckets = num_buckets

    def process(self, element: tuple[int, Iterable[_Edges]]) -> Iterator[Any]:
        g = _local_graph(_concat_edges(element[1]))
        if self._large:
            # Next is a Small-Star: send each edge to its larger end only.
            a, b, count = _large_star(g)
            out = _edges_from_ranks(a, b, g, both=False)
        else:
            # Next is a Large-Star: every node needs its whole neighbourhood.
            a, b, count = _small_star(g)
            out = _edges_from_ranks(a, b, g, both=True)
        yield from _keyed(out, self._num_buckets)
        yield beam.pvalue.TaggedOutput(_PROGRESS_TAG, (count, len(a)))


def _identity(value: Any) -> Any:
    return value


def _sum_progress(values: Iterable[tuple[int, int]]) -> tuple[int, int]:
    count = edges = 0
    for c, e in values:
        count += c
        edges += e
    return count, edges


def _next_state(prev: dict[str, Any], progress: list[tuple[int, int]], *, step: int, large: bool
                ) -> dict[str, Any]:
    if prev["converged"]:
        return prev
    count, edges = _sum_progress(progress)
    state = dict(prev, rounds=step + 1, edges_per_round=[*prev["edges_per_round"], edges])
    if large and count == 0:
        state["converged"] = True
        _LOGGER.info("clusters: converged at round %d (%d star edges)", step + 1, edges)
    else:
        _LOGGER.info("clusters: round %d (%s-Star): %d nodes %s, %d edges out", step + 1,
                     "Large" if large else "Small", count,
                     "not yet in final stars" if large else "rewired", edges)
    return state


class _NeighborhoodsFn(beam.DoFn):
    """Leftover edges (either orientation) -> both directions keyed by source bucket, once each."""

    def __init__(self, num_buckets: int):
        self._num_buckets = num_buckets

    def process(self, element: tuple[int, _Edges]) -> Iterator[tuple[int, _Edges]]:
        e = element[1]
        down = _greater(e.src_hash, e.src, e.dst_hash, e.dst)
        src, dst, sh, dh = (col[down] for col in e)
        yield from _keyed(_Edges(np.concatenate([src, dst]), np.concatenate([dst, src]),
                                 np.concatenate([sh, dh]), np.concatenate([dh, sh])), self._num_buckets)


class _StarCheckFn(beam.DoFn):
    """First half of the exact test "is this component a finished star?" (full neighbourhoods).

    Emits, keyed by the smaller end's bucket, every edge (leaf -> centre) with whether the leaf's only
    neighbour is that centre, and for every node with a larger neighbour whether it has a smaller one.
    """

    def __init__(self, num_buckets: int):
        self._num_buckets = num_buckets

    def process(self, element: tuple[int, Iterable[_Edges]]) -> Iterator[tuple[int, tuple]]:
        g = _local_graph(_concat_edges(element[1]))
        n = len(g.ids)
        down = g.d < g.s
        smaller = np.bincount(g.s[down], minlength=n)
        larger = np.bincount(g.s[~down], minlength=n)
        leaf_ok = (smaller == 1) & (larger == 0)
        leaf, centre = g.s[down], g.d[down]
        nb = np.uint64(self._num_buckets)
        for bucket, rows in split_by_shard((g.hashes[centre] % nb).astype(np.int64), self._num_buckets):
            lf, ct = leaf[rows], centre[rows]
            yield bucket, ("edges", _Edges(g.ids[lf], g.ids[ct], g.hashes[lf], g.hashes[ct]), leaf_ok[lf])
        centres = np.flatnonzero(larger > 0)
        for bucket, rows in split_by_shard((g.hashes[centres] % nb).astype(np.int64), self._num_buckets):
            yield bucket, ("flags", g.ids[centres[rows]], smaller[centres[rows]] > 0)


class _SplitFinishedFn(beam.DoFn):
    """Second half of the star test: finished stars go to the output, the rest to ``unfinished``."""

    def process(self, element: tuple[int, Iterable[tuple]]) -> Iterator[Any]:
        edges, oks, bad = [], [], []
        for item in element[1]:
            if item[0] == "edges":
                edges.append(item[1])
                oks.append(item[2])
            else:
                bad.append(item[1][item[2]])  # centres that have a smaller neighbour
        if not edges:
            return
        e = _concat_edges(edges)
        ok = np.concatenate(oks)
        bad_centres = np.concatenate([*bad, e.dst[~ok]])
        unfinished = np.isin(e.dst, bad_centres) if len(bad_centres) else np.zeros(len(e), dtype=bool)
        if (~unfinished).any():
            yield _Edges(*(col[~unfinished] for col in e))
        if unfinished.any():
            yield beam.pvalue.TaggedOutput(_UNFINISHED_TAG, _Edges(*(col[unfinished] for col in e)))


class _GatherUnfinishedFn(beam.DoFn):
    """Keys every unfinished edge to one place, or fails before moving anything if there are too many."""

    def __init__(self, max_final_edges: int, max_rounds: int):
        self._max_final_edges = max_final_edges
        self._max_rounds = max_rounds

    def process(self, edges: _Edges, total: int) -> Iterator[tuple[int, _Edges]]:
        if total > self._max_final_edges:
            raise ClustersDidNotConvergeError(
                f"connected components did not converge within max_rounds={self._max_rounds} rounds: "
                f"{total} edges remain in unfinished components, more than max_final_edges="
                f"{self._max_final_edges} that may be finished on one worker. Raise max_rounds (a "
                f"chain of N records needs about 1.7*log2(N)+2 rounds) or max_final_edges.")
        yield 0, edges


class _FinishComponentsFn(beam.DoFn):
    """All unfinished edges on one worker -> star edges (member -> component root)."""

    def process(self, element: tuple[int, Iterable[_Edges]]) -> Iterator[_Edges]:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        g = _local_graph(_concat_edges(element[1]))
        n = len(g.ids)
        if n == 0:
            return
        graph = coo_matrix((np.ones(len(g.s), dtype=np.int8), (g.s, g.d)), shape=(n, n))
        num, labels = connected_components(graph, directed=False)
        root = np.full(num, n, dtype=np.int64)
        np.minimum.at(root, labels, np.arange(n))
        members = np.flatnonzero(root[labels] != np.arange(n))
        _LOGGER.info("clusters: finished %d components (%d records) on one worker", num, n)
        yield _edges_from_ranks(members, root[labels[members]], g, both=False)


class _KeyByCentreFn(beam.DoFn):
    def __init__(self, num_buckets: int):
        self._num_buckets = num_buckets

    def process(self, star: _Edges) -> Iterator[tuple[int, _Edges]]:
        yield from _keyed(_Edges(star.dst, star.src, star.dst_hash, star.src_hash), self._num_buckets)


class _LabelClustersFn(beam.DoFn):
    """``(bucket, [centre -> member edges])`` -> ClusterBatch rows keyed by each member's bucket."""

    def __init__(self, num_buckets: int):
        self._num_buckets = num_buckets

    def process(self, element: tuple[int, Iterable[_Edges]]) -> Iterator[tuple[int, tuple]]:
        e = _concat_edges(element[1])
        if len(e) == 0:
            return
        ids = np.concatenate([e.src, e.dst])
        hashes = np.concatenate([e.src_hash, e.dst_hash])
        node_ids, node_hashes, rank = _index_nodes(ids, hashes)
        n = len(node_ids)
        centre, member = _unique_pairs(rank[:len(e)], rank[len(e):], n)
        # Every node is either a centre or the member of exactly one centre (a star forest).
        root = np.arange(n, dtype=np.int64)
        root[member] = centre
        if np.bincount(member, minlength=n).max(initial=0) > 1 or np.isin(centre, member).any():
            raise RuntimeError("internal error: clustering did not end in a star forest")
        id_order = np.argsort(id_sort_keys(node_ids)[0], kind="stable")
        id_rank = np.empty(n, dtype=np.int64)
        id_rank[id_order] = np.arange(n)
        smallest = np.full(n, n, dtype=np.int64)
        np.minimum.at(smallest, root, id_rank)
        sizes = np.bincount(root, minlength=n)
        batch = ClusterBatch(ids=node_ids, cluster_ids=node_ids[id_order[smallest[root]]],
                             cluster_sizes=sizes[root].astype(np.int64))
        buckets = (node_hashes % np.uint64(self._num_buckets)).astype(np.int64)
        for bucket, rows in split_by_shard(buckets, self._num_buckets):
            yield bucket, ("assigned", ClusterBatch(*(col[rows] for col in batch)))


class _KeyIdsFn(beam.DoFn):
    """Record ids (object array) -> keyed by bucket, so every record meets its assignment."""

    def __init__(self, num_buckets: int):
        self._num_buckets = num_buckets

    def process(self, ids: np.ndarray) -> Iterator[tuple[int, tuple]]:
        ids = np.asarray(ids, dtype=object).reshape(-1)
        if len(ids) == 0:
            return
        buckets = (_hashes(ids) % np.uint64(self._num_buckets)).astype(np.int64)
        for bucket, rows in split_by_shard(buckets, self._num_buckets):
            yield bucket, ("ids", ids[rows])


class _AssignFn(beam.DoFn):
    """``(bucket, [assignments and record ids])`` -> ClusterBatch, every id once, sorted by id."""

    def process(self, element: tuple[int, Iterable[tuple]]) -> Iterator[ClusterBatch]:
        assigned, record_ids = [], []
        for kind, value in element[1]:
            (assigned if kind == "assigned" else record_ids).append(value)
        ids = np.concatenate([b.ids for b in assigned]) if assigned else np.empty(0, dtype=object)
        cids = np.concatenate([b.cluster_ids for b in assigned]) if assigned else np.empty(0, dtype=object)
        sizes = (np.concatenate([b.cluster_sizes for b in assigned]) if assigned
                 else np.empty(0, dtype=np.int64))
        if record_ids:
            every = str_array(np.unique(np.concatenate(record_ids).astype(object)))
            single = every[~np.isin(every, str_array(ids))]
            ids = np.concatenate([ids, single])
            cids = np.concatenate([cids, single])
            sizes = np.concatenate([sizes, np.ones(len(single), dtype=np.int64)])
        if len(ids) == 0:
            return
        (key,) = id_sort_keys(ids)
        order = np.argsort(key, kind="stable")
        if (key[order][1:] == key[order][:-1]).any():
            raise RuntimeError("internal error: a record id was assigned to two clusters")
        out = ClusterBatch(str_array(ids[order]), str_array(cids[order]), sizes[order].astype(np.int64))
        for start in range(0, len(out), _OUTPUT_BATCH_ROWS):
            yield ClusterBatch(*(col[start:start + _OUTPUT_BATCH_ROWS] for col in out))


def _final_state(unfinished_edges: int, state: dict[str, Any]) -> dict[str, Any]:
    out = dict(state, unconverged_edges=int(unfinished_edges),
               finished_in_one_place=bool(not state["converged"] and unfinished_edges > 0))
    # The exact star test found nothing left: the fixed point was reached, just not confirmed in time.
    out["converged"] = bool(state["converged"] or unfinished_edges == 0)
    return out


class _ClusterStatsFn(beam.CombineFn):
    """ClusterBatch -> sizes histogram, largest clusters and giant clusters (counted on representatives)."""

    def __init__(self, max_cluster_size: int):
        self._max = max_cluster_size

    def create_accumulator(self) -> dict[str, Any]:
        return {"records": 0, "hist": Counter(), "top": [], "giants": [], "num_giants": 0}

    def add_input(self, acc: dict[str, Any], batch: ClusterBatch) -> dict[str, Any]:
        acc["records"] += len(batch)
        reps = batch.ids == batch.cluster_ids
        sizes = np.asarray(batch.cluster_sizes, dtype=np.int64)[reps]
        rep_ids = np.asarray(batch.ids, dtype=object)[reps]
        values, counts = np.unique(sizes, return_counts=True)
        acc["hist"].update({int(v): int(c) for v, c in zip(values, counts, strict=True)})
        acc["top"] = _largest(acc["top"] + _top_k(sizes, rep_ids, _TOP_CLUSTERS), _TOP_CLUSTERS)
        giant = sizes > self._max
        acc["num_giants"] += int(np.count_nonzero(giant))
        acc["giants"] = _largest(acc["giants"] + _top_k(sizes[giant], rep_ids[giant], _MAX_LISTED_GIANTS),
                                 _MAX_LISTED_GIANTS)
        return acc

    def merge_accumulators(self, accumulators: Iterable[dict[str, Any]]) -> dict[str, Any]:
        out = self.create_accumulator()
        for acc in accumulators:
            out["records"] += acc["records"]
            out["hist"].update(acc["hist"])
            out["top"] = _largest(out["top"] + acc["top"], _TOP_CLUSTERS)
            out["giants"] = _largest(out["giants"] + acc["giants"], _MAX_LISTED_GIANTS)
            out["num_giants"] += acc["num_giants"]
        return out

    def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
        hist = dict(sorted(acc["hist"].items()))
        return {
            "num_records": acc["records"],
            "num_clusters": sum(hist.values()),
            "num_singletons": hist.get(1, 0),
            "cluster_size_histogram": hist,
            "largest_clusters": [{"cluster_id": c, "size": s} for s, c in acc["top"]],
            "max_cluster_size": self._max,
            "num_giant_clusters": acc["num_giants"],
            "giant_clusters": [{"cluster_id": c, "size": s} for s, c in acc["giants"]],
        }


def _top_k(sizes: np.ndarray, ids: np.ndarray, k: int) -> list[tuple[int, str]]:
    """The k largest (size, id) of a batch, ties broken by the smaller id (numpy, no per-row Python)."""
    order = np.lexsort((id_sort_keys(ids)[0], -sizes))[:k]
    return [(int(sizes[i]), str(ids[i])) for i in order]


def _largest(items: list[tuple[int, str]], k: int) -> list[tuple[int, str]]:
    """The k largest (size, cluster_id), ties broken by the smaller id."""
    return heapq.nsmallest(k, items, key=lambda x: (-x[0], x[1]))


def _merge_stats(stats: dict[str, Any], cc: dict[str, Any], max_rounds: int) -> dict[str, Any]:
    return dict(stats, rounds=cc["rounds"], max_rounds=max_rounds, converged=cc["converged"],
                finished_in_one_place=cc["finished_in_one_place"],
                unconverged_edges=cc["unconverged_edges"], edges_per_round=cc["edges_per_round"])


# --------------------------------------------------------------------------------------------------
# Composites


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class ClusterPairs(beam.PTransform):
    """Pairs + record ids -> one cluster per connected component (Large-Star / Small-Star).

    Input: ``(pairs, record_ids)``: a PCollection of PairBatch (accepted pairs; direction and
    duplicates do not matter) and a PCollection of record-id batches (object arrays of str), so
    records without a pair get a singleton cluster. Ids may repeat across batches. Ids that appear
    only in pairs are clustered too. A bare PCollection of PairBatch clusters the paired ids only.

    Output: :class:`ClusterResult` with

    - ``assignments``: ClusterBatch elements, every id of either input exactly once, sorted by id
      within an element; cluster id = smallest member id.
    - ``stats``: one dict: ``num_records``, ``num_clusters``, ``num_singletons``,
      ``cluster_size_histogram`` {size: count}, ``largest_clusters`` (top 10 by size, then id:
      [{cluster_id, size}]), ``max_cluster_size``, ``num_giant_clusters`` and ``giant_clusters``
      (clusters larger than ``max_cluster_size``, largest 100 listed), ``rounds`` (rounds run until
      the fixed point was confirmed, or ``max_rounds``), ``max_rounds``, ``converged``,
      ``finished_in_one_place``, ``unconverged_edges`` and ``edges_per_round``.

    Raises (at run time):
        ClustersDidNotConvergeError: not converged within ``max_rounds`` and more than
            ``max_final_edges`` edges left in unfinished components.
    """

    def __init__(self, *, max_cluster_size: int = DEFAULTS["max_cluster_size"],
                 max_rounds: int = DEFAULTS["cluster_max_rounds"], num_buckets: int = 64,
                 max_final_edges: int = 1_000_000):
        """Validates the arguments.

        Args:
            max_cluster_size: clusters with more records are flagged as giant in the stats.
            max_rounds: Large-Star / Small-Star rounds unrolled in the graph (one shuffle each).
            num_buckets: hash buckets edges are grouped by in every round (the parallelism).
            max_final_edges: after ``max_rounds``, unfinished components with at most this many edges
                in total are finished on one worker; more fail the run.

        Raises:
            ValueError: an argument is out of range.
        """
        super().__init__()
        self._max_cluster_size = _positive_int("max_cluster_size", max_cluster_size)
        self._max_rounds = _positive_int("max_rounds", max_rounds)
        self._num_buckets = _positive_int("num_buckets", num_buckets)
        self._max_final_edges = _positive_int("max_final_edges", max_final_edges, minimum=0)

    def expand(self, inputs):
        pairs, record_ids = (inputs, None) if isinstance(inputs, beam.PCollection) else inputs
        p = pairs.pipeline
        nb = self._num_buckets
        start = pairs | "PairsToEdges" >> beam.ParDo(_PairsToEdgesFn(nb)).with_outputs(
            _IDS_TAG, main="edges")
        state = p | "InitialState" >> beam.Create(
            [{"converged": False, "rounds": 0, "edges_per_round": []}])
        active, done = start.edges, []
        for step in range(self._max_rounds):
            large = step % 2 == 0
            name = f"{'Large' if large else 'Small'}Star{step + 1:02d}"
            routed = active | f"Route{step + 1:02d}" >> beam.ParDo(
                _RouteFn(), state=beam.pvalue.AsSingleton(state)).with_outputs(_DONE_TAG, main="edges")
            done.append(routed[_DONE_TAG])
            stepped = (routed.edges
                       | f"Group{step + 1:02d}" >> beam.GroupByKey()
                       | name >> beam.ParDo(_StarStepFn(large, nb)).with_outputs(
                           _PROGRESS_TAG, main="edges"))
            # A Map over the one-element state with the round's few progress records (one per bucket)
            # as a side input is much cheaper to build than a CombineGlobally per round. The pass-through
            # Map is needed: BundleBasedDirectRunner reads a tagged output used directly as a side input
            # as empty (Beam 2.77).
            progress = stepped[_PROGRESS_TAG] | f"Progress{step + 1:02d}" >> beam.Map(_identity)
            state = state | f"State{step + 1:02d}" >> beam.Map(
                _next_state, progress=beam.pvalue.AsList(progress), step=step, large=large)
            active = stepped.edges

        last = active | "RouteLeftover" >> beam.ParDo(
            _RouteFn(), state=beam.pvalue.AsSingleton(state)).with_outputs(_DONE_TAG, main="edges")
        done.append(last[_DONE_TAG])
        split = (last.edges
                 | "Neighborhoods" >> beam.ParDo(_NeighborhoodsFn(nb))
                 | "GroupNeighborhoods" >> beam.GroupByKey()
                 | "CheckStars" >> beam.ParDo(_StarCheckFn(nb))
                 | "GroupByCentre" >> beam.GroupByKey()
                 | "SplitFinished" >> beam.ParDo(_SplitFinishedFn()).with_outputs(
                     _UNFINISHED_TAG, main="stars"))
        done.append(split.stars)
        unfinished_count = (split[_UNFINISHED_TAG]
                            | "CountUnfinished" >> beam.Map(len)
                            | "SumUnfinished" >> beam.CombineGlobally(sum))
        finished = (split[_UNFINISHED_TAG]
                    | "GatherUnfinished" >> beam.ParDo(
                        _GatherUnfinishedFn(self._max_final_edges, self._max_rounds),
                        total=beam.pvalue.AsSingleton(unfinished_count))
                    | "GroupUnfinished" >> beam.GroupByKey()
                    | "FinishComponents" >> beam.ParDo(_FinishComponentsFn()))
        done.append(finished)
        cc_state = unfinished_count | "FinalState" >> beam.Map(
            _final_state, state=beam.pvalue.AsSingleton(state))

        labelled = (done
                    | "FlattenStars" >> beam.Flatten()
                    | "KeyByCentre" >> beam.ParDo(_KeyByCentreFn(nb))
                    | "GroupStars" >> beam.GroupByKey()
                    | "LabelClusters" >> beam.ParDo(_LabelClustersFn(nb)))
        id_inputs = (start[_IDS_TAG],) if record_ids is None else (record_ids, start[_IDS_TAG])
        keyed_ids = (id_inputs
                     | "FlattenIds" >> beam.Flatten()
                     | "KeyIds" >> beam.ParDo(_KeyIdsFn(nb)))
        assignments = ((labelled, keyed_ids)
                       | "FlattenForAssign" >> beam.Flatten()
                       | "GroupByBucket" >> beam.GroupByKey()
                       | "Assign" >> beam.ParDo(_AssignFn()))
        stats = (assignments
                 | "ClusterStats" >> beam.CombineGlobally(_ClusterStatsFn(self._max_cluster_size))
                 | "AddRoundStats" >> beam.Map(_merge_stats, cc=beam.pvalue.AsSingleton(cc_state),
                                               max_rounds=self._max_rounds))
        return ClusterResult(assignments=assignments, stats=stats)


# --------------------------------------------------------------------------------------------------
# Writing


def cluster_shard_path(output_dir: str, shard: int, num_shards: int) -> str:
    """``DIR/clusters/clusters-SSSSS-of-NNNNN.parquet``."""
    return join_path(output_dir, "clusters", f"clusters-{shard:05d}-of-{num_shards:05d}.parquet")


def _encode_clusters(batches: list[ClusterBatch]) -> tuple[bytes, int]:
    if batches:
        ids = str_array(np.concatenate([np.asarray(b.ids, dtype=object) for b in batches]))
        cids = str_array(np.concatenate([np.asarray(b.cluster_ids, dtype=object) for b in batches]))
        sizes = np.concatenate([np.asarray(b.cluster_sizes, dtype=np.int64) for b in batches])
    else:
        ids, cids, sizes = (np.empty(0, dtype=object), np.empty(0, dtype=object),
                            np.empty(0, dtype=np.int64))
    id_key, cid_key = id_sort_keys(ids, cids)
    order = np.lexsort((sizes, cid_key, id_key))  # record ids are unique; the rest makes the order total
    table = pa.Table.from_arrays(
        [pa.array(ids[order], pa.string()), pa.array(cids[order], pa.string()),
         pa.array(sizes[order], pa.int64())], schema=_CLUSTER_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_OPTIONS)
    return sink.getvalue().to_pybytes(), len(ids)


class _SplitClustersByShardFn(beam.DoFn):
    def __init__(self, num_shards: int):
        self._num_shards = num_shards

    def process(self, batch: ClusterBatch) -> Iterator[tuple[int, ClusterBatch]]:
        if len(batch) == 0:
            return
        shards = (_hashes(batch.ids) % np.uint64(self._num_shards)).astype(np.int64)
        for shard, rows in split_by_shard(shards, self._num_shards):
            yield shard, ClusterBatch(*(np.asarray(col)[rows] for col in batch))


class _WriteClusterShardFn(beam.DoFn):
    """``(shard, [ClusterBatch or None, ...])`` -> one sorted parquet file -> ``(shard, rows)``."""

    def __init__(self, output_dir: str, num_shards: int):
        self._output_dir = output_dir
        self._num_shards = num_shards

    def process(self, element: tuple[int, Iterable[ClusterBatch | None]]) -> Iterator[tuple[int, int]]:
        shard, batches = element
        data, rows = _encode_clusters([b for b in batches if b is not None])
        write_bytes(cluster_shard_path(self._output_dir, shard, self._num_shards), data)
        yield shard, rows


def _placeholder(shard: int) -> tuple[int, None]:
    return shard, None


class WriteClusters(beam.PTransform):
    """Writes ClusterBatches to exactly ``num_shards`` parquet files under ``DIR/clusters/``.

    Input: PCollection of ClusterBatch. Output: PCollection of ``(shard, rows_written)``, one per
    file. Rows go to shard ``stable_hash64(record_id) % num_shards`` and are sorted by record_id; every
    shard gets a file, empty or not; the bytes depend only on the set of rows (and the pyarrow
    version, recorded in the file).
    """

    def __init__(self, *, output_dir: str, num_shards: int = 1):
        """Validates the arguments.

        Args:
            output_dir: the run's output directory.
            num_shards: number of cluster files, >= 1.

        Raises:
            ValueError: an argument is out of range.
        """
        super().__init__()
        if not isinstance(output_dir, str) or not output_dir.strip():
            raise ValueError(f"output_dir must be a non-empty string, got {output_dir!r}")
        self._output_dir = output_dir.rstrip("/")
        self._num_shards = _positive_int("num_shards", num_shards)

    def expand(self, assignments):
        keyed = assignments | "SplitByShard" >> beam.ParDo(_SplitClustersByShardFn(self._num_shards))
        placeholders = (assignments.pipeline
                        | "ListShards" >> beam.Create(list(range(self._num_shards)))
                        | "EmptyShards" >> beam.Map(_placeholder))
        return ((keyed, placeholders)
                | "FlattenWithEmptyShards" >> beam.Flatten()
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShards" >> beam.ParDo(_WriteClusterShardFn(self._output_dir, self._num_shards)))


def read_clusters(output_dir: str, *, allow_incomplete: bool = False) -> pd.DataFrame:
    """Reads every ``DIR/clusters/clusters-*-of-*.parquet`` (reports and tests).

    The run must have finished and the files be the whole shard set, as for
    :func:`transforms.io.results.read_matches`; ``allow_incomplete=True`` reads whatever is there.

    Returns:
        Columns ``CLUSTER_COLUMNS`` sorted by record_id with a fresh index.

    Raises:
        IncompleteRunError (a FileNotFoundError): the run did not finish, or a shard is missing.
        FileNotFoundError: there is no cluster file.
    """
    pattern = join_path(output_dir, "clusters", "clusters-*-of-*.parquet")
    paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list if ".tmp-" not in m.path)
    if not allow_incomplete:
        from transforms.common.run_dir import check_run_shards

        check_run_shards(output_dir, "clusters", paths, what="its clusters")
    if not paths:
        raise FileNotFoundError(f"no cluster files under {join_path(output_dir, 'clusters')}")
    frames = [pq.read_table(pa.BufferReader(read_bytes(path))).to_pandas() for path in paths]
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values("record_id", kind="stable").reset_index(drop=True)
