"""Merges each query's top-K across shards, rescores, and flattens the result to pairs.

Per query batch the :class:`~transforms.search.search.PartialResult` of every searched shard are
merged as arrays into the global top-K (ties broken by candidate id) and, with
``rescore='wasserstein'``, the kept pairs are rescored and re-ranked; the top-K then becomes pair rows
(:func:`neighbors_to_pairs`), within --max_distance.

Everything moves as numpy batches; nothing here is per vector or per neighbour.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms.common import metrics, progress
from transforms.common.flags import DEFAULTS
from transforms.common.schema import NeighborBatch, PairBatch
from transforms.common.sharding import id_sort_keys
from transforms.search.search import PartialResult

__all__ = ["MergeTopK", "merge_partials", "neighbors_to_pairs", "wasserstein_1d"]

_LOGGER = logging.getLogger(__name__)


def wasserstein_1d(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """1-D Wasserstein distance between the value distributions of vectors, row-wise.

    For two samples of equal size d (every vector here has the corpus' dimension) the distance
    between their empirical distributions is the mean absolute difference of the sorted values,
    which is what ``scipy.stats.wasserstein_distance(u_row, v_row)`` computes.

    Args:
        u: [..., d] array; v: array broadcastable to u.
    Returns:
        float64 array of shape u.shape[:-1] (broadcast).
    """
    su = np.sort(np.asarray(u, dtype=np.float64), axis=-1)
    sv = np.sort(np.asarray(v, dtype=np.float64), axis=-1)
    return np.abs(su - sv).mean(axis=-1)


def _full_width(p: PartialResult) -> PartialResult:
    """Pads a partial to every row of its batch (rows not routed to the shard get empty slots)."""
    if len(p.rows) == p.batch_size:
        return p
    n, k = p.batch_size, p.candidate_ids.shape[1]
    qids = np.full(n, None, dtype=object)
    qids[p.rows] = p.query_ids
    cand = np.full((n, k), "", dtype=object)
    cand[p.rows] = p.candidate_ids
    dist = np.full((n, k), np.inf)
    dist[p.rows] = p.distances
    cv = None
    if p.candidate_vectors is not None:
        cv = np.zeros((n, *p.candidate_vectors.shape[1:]), dtype=p.candidate_vectors.dtype)
        cv[p.rows] = p.candidate_vectors
    return PartialResult(p.shard, np.arange(n), n, qids, cand, dist, None, cv)


def merge_partials(partials: list[PartialResult], top_k: int,
                   rescore: str = DEFAULTS["rescore"]) -> NeighborBatch:
    """Merges shards' top-K for one query batch into the global top-K, ties broken by candidate id."""
    raw = sorted(partials, key=lambda p: p.shard)
    partials = [_full_width(p) for p in raw]
    query_ids = partials[0].query_ids.copy()
    for p in partials[1:]:  # with routing each partial knows only its rows' ids
        missing = np.equal(query_ids, None)
        query_ids[missing] = p.query_ids[missing]
    cand = np.concatenate([p.candidate_ids for p in partials], axis=1)
    dist = np.concatenate([p.distances for p in partials], axis=1)
    (cand_key,) = id_sort_keys(cand)  # 8 bytes a slot, not the longest id's width
    order = np.lexsort((cand_key, dist), axis=-1)[:, :top_k]
    cand = np.take_along_axis(cand, order, axis=1)
    dist = np.take_along_axis(dist, order, axis=1)
    if rescore == "wasserstein":
        vecs = np.concatenate([p.candidate_vectors for p in partials], axis=1)
        vecs = np.take_along_axis(vecs, order[:, :, None], axis=1)
        qvecs = np.zeros((raw[0].batch_size, raw[0].query_vectors.shape[1]), dtype=np.float32)
        for p in raw:  # a routed partial carries only its rows' query vectors
            qvecs[p.rows] = p.query_vectors
        new = wasserstein_1d(qvecs[:, None, :], vecs)
        dist = np.where(np.isfinite(dist), new, np.inf)
        reorder = np.lexsort((id_sort_keys(cand)[0], dist), axis=-1)
        cand = np.take_along_axis(cand, reorder, axis=1)
        dist = np.take_along_axis(dist, reorder, axis=1)
    return NeighborBatch(batch_key="", query_ids=query_ids, candidate_ids=cand, distances=dist)


def neighbors_to_pairs(nb: NeighborBatch, *, max_distance: float | None,
                       canonical: bool) -> PairBatch:
    """Flattens a NeighborBatch to pair rows (rank = position in the top-K, 1 = nearest).

    Empty slots and pairs farther than ``max_distance`` are dropped. With ``canonical`` (dedup mode)
    each pair is written with the smaller id first; the same pair found from both sides is then
    removed where pairs are grouped for writing.
    """
    n, k = nb.candidate_ids.shape
    ranks = np.broadcast_to(np.arange(1, k + 1, dtype=np.int64), (n, k))
    qids = np.broadcast_to(nb.query_ids[:, None], (n, k))
    keep = np.isfinite(nb.distances) & (nb.candidate_ids != "")
    if max_distance is not None:
        keep &= nb.distances <= max_distance
    q, c, r, d = qids[keep], nb.candidate_ids[keep], ranks[keep], nb.distances[keep]
    if canonical:
        c_key, q_key = id_sort_keys(c, q)
        swap = c_key < q_key
        q, c = np.where(swap, c, q), np.where(swap, q, c)
    return PairBatch(query_ids=q.astype(object), candidate_ids=c.astype(object),
                     ranks=r.astype(np.int64), distances=d.astype(np.float64))


class _MergeFn(beam.DoFn):
    def __init__(self, *, top_k: int, rescore: str, max_distance: float | None, canonical: bool):
        self._top_k = top_k
        self._rescore = rescore
        self._max_distance = max_distance
        self._canonical = canonical
        self._merged = Metrics.counter(metrics.NAMESPACE, "queries_merged")
        self._timer = metrics.StageTimer("merge")

    def start_bundle(self) -> None:
        self._bundle_queries, self._bundle_start = 0, time.perf_counter()

    def process(self, element: tuple[str, Iterable[PartialResult]]) -> Iterator[PairBatch]:
        batch_key, partials = element
        with self._timer:
            nb = merge_partials(list(partials), self._top_k, self._rescore)
            pairs = neighbors_to_pairs(nb, max_distance=self._max_distance, canonical=self._canonical)
        self._merged.inc(len(nb.query_ids))
        progress.add("searched", len(nb.query_ids))
        self._bundle_queries += len(nb.query_ids)
        yield pairs

    def finish_bundle(self) -> None:
        elapsed = time.perf_counter() - self._bundle_start
        if self._bundle_queries:
            _LOGGER.info("merged top-%d of %d queries in %.1f s", self._top_k, self._bundle_queries,
                         elapsed)


class MergeTopK(beam.PTransform):
    """(batch_key, PartialResult) from every searched shard -> PairBatch of the global top-K."""

    def __init__(self, *, top_k: int, rescore: str = DEFAULTS["rescore"], max_distance: float | None = None,
                 canonical: bool = False):
        super().__init__()
        if rescore not in ("exact", "wasserstein"):
            raise ValueError(f"rescore must be 'exact' or 'wasserstein', got {rescore!r}")
        self._fn = _MergeFn(top_k=top_k, rescore=rescore, max_distance=max_distance,
                            canonical=canonical)

    def expand(self, partials):
        return (partials
                | "GroupByQueryBatch" >> beam.GroupByKey()
                | "MergeTopK" >> beam.ParDo(self._fn))
