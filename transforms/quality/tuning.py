"""Tunes ScaNN search effort per shard, and the routing probe, on the audit's ground truth.

``TuneSearch`` searches the tuning sample in every ScaNN shard with growing effort (the rungs of
:func:`tuning_ladder`) and picks the cheapest (leaves_to_search, reorder) whose per-shard recall of
the relevant neighbours (``transforms.quality.ground_truth.relevance_cutoff``) reaches a target,
which ``transforms.search.search.search_kwargs`` turns into ``NeighborIndex.search`` arguments;
``TuneProbe`` picks the routing probe (partitions searched per query) the same way
(:func:`choose_probe`).

This module does not change what the job emits or measure the run's recall (``transforms.quality.audit``
does). Recall measured on the sample used for tuning is biased upwards (the effort was chosen to pass
on exactly those queries); audit a differently salted sample (``SampleQueries(salt=...)``) to get an
honest estimate.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms.common import metrics
from transforms.common.schema import ShardIndexInfo, VectorBatch
from transforms.index.sample_truth import SampleTruth, drop_self
from transforms.quality.ground_truth import (
    Relevance,
    check_max_distance,
    check_top_k,
    relevance_cutoff,
    relevant_slots,
)

__all__ = ["TuneSearch", "TuneProbe", "choose_probe", "routing_target", "tuning_ladder"]

_LOGGER = logging.getLogger(__name__)

# Beam metrics (namespace transforms.common.metrics.NAMESPACE).
_TUNED_SHARDS_METRIC = "tuned_shards"
_UNREACHED_SHARDS_METRIC = "tuned_shards_below_target"

# Leaves searched grow by this factor per rung; reorder doubles this many times from the built value.
_LEAVES_GROWTH = 1.5
_REORDER_STEPS = 3
# Rough cost of one exact float re-score in units of one AH (4-bit LUT) score: it only orders rungs.
_REORDER_COST = 4.0
_ABSENT = -3


def tuning_ladder(params: dict[str, Any], size: int) -> list[tuple[int | None, int | None]]:
    """The (leaves_to_search, reorder) rungs tried for a ScaNN shard, cheapest first.

    Leaves grow from the built ``num_leaves_to_search`` by x1.5 up to all ``num_leaves``; reorder
    doubles twice from the built ``reorder`` (100 -> 200 -> 400) and always offers 100, 200 and 400
    when they are deeper than the built one, capped at the shard size. Rungs are
    ordered by an estimated per-query cost (AH scores of the searched leaves plus ~4x that per
    re-scored vector); the first is the built setting, the last the most effort. A knob the index does
    not have (no tree: ``num_leaves <= 1``; no reorder stage) is None.

    Args:
        params: the shard's ``ShardIndexInfo.params`` (ScaNN build params).
        size: vectors in the shard.
    """
    num_leaves = int(params.get("num_leaves") or 1)
    leaves: list[int | None] = [None]
    if num_leaves > 1:
        step = max(1, min(int(params["num_leaves_to_search"]), num_leaves))
        leaves = [step]
        while step < num_leaves:
            step = min(num_leaves, max(step + 1, math.ceil(step * _LEAVES_GROWTH)))
            leaves.append(step)
    reorders: list[int | None] = [None]
    built_reorder = int(params.get("reorder") or 0)
    if params.get("quantization") == "ah" and built_reorder > 0:
        # Doubling from the built depth, and at least up to the depths that serve top-10 well
        # (FACTS.md: 100; 200 bought little) in case the run was built with a very shallow reorder.
        depths = [built_reorder * 2 ** i for i in range(_REORDER_STEPS)] + [100, 200, 400]
        reorders = sorted({min(r, max(size, built_reorder)) for r in depths if r >= built_reorder})

    def cost(rung: tuple[int | None, int | None]) -> tuple[float, int, int]:
        leaves_, reorder_ = rung
        searched = size * (leaves_ or num_leaves) / num_leaves
        return searched + _REORDER_COST * (reorder_ or 0), leaves_ or 0, reorder_ or 0

    return sorted(((lv, r) for lv in leaves for r in reorders), key=cost)


class _TuneShardFn(beam.DoFn):
    """ShardIndexInfo -> (shard, chosen rung) for ScaNN shards; nothing for exact ones."""

    def __init__(self, *, target_recall: float, top_k: int, exclude_self: bool):
        self._target = target_recall
        self._top_k = top_k
        self._exclude_self = exclude_self
        self._tuned = Metrics.counter(metrics.NAMESPACE, _TUNED_SHARDS_METRIC)
        self._unreached = Metrics.counter(metrics.NAMESPACE, _UNREACHED_SHARDS_METRIC)

    def _recall(self, index: Any, shard_ids: np.ndarray, queries: VectorBatch, want: np.ndarray,
                relevant: np.ndarray, rung: tuple[int | None, int | None]) -> tuple[float, float]:
        """(recall of the relevant neighbours, recall of all true neighbours) at one rung."""
        leaves, reorder = rung
        positions, distances = index.search(
            queries.vectors, min(self._top_k + int(self._exclude_self), max(1, index.size)),
            leaves_to_search=leaves, reorder=reorder)
        positions, _, _ = drop_self(positions, distances, shard_ids, queries.ids, self._top_k,
                                     self._exclude_self)
        found = (want[:, :, None] == positions[:, None, :]).any(axis=2)
        return (float(found[relevant].sum()) / int(relevant.sum()),
                float(found.sum()) / int((want != _ABSENT).sum()))

    def process(self, info: ShardIndexInfo, sample: VectorBatch, truth: SampleTruth,
                relevance: Relevance) -> Iterator[tuple[int, dict[str, Any]]]:
        from transforms.index.shard_cache import load_shard

        if info.kind != "scann":
            # Brute force has no knobs.
            return
        if not np.array_equal(np.asarray(truth.query_ids, dtype=object), sample.ids):
            raise ValueError("TuneSearch needs the exact top-K of the same sample (ExactSampleTopK)")
        ladder = tuning_ladder(info.params, info.size)
        mine = truth.shards[:, :self._top_k] == info.shard
        relevant = mine & relevant_slots(truth, self._top_k, relevance)
        n_true, n_relevant = int(mine.sum()), int(relevant.sum())
        self._tuned.inc()
        about = {"target": relevance.target, "relevance_cutoff": relevance.cutoff,
                 "relevant_neighbors": n_relevant, "true_neighbors": n_true}
        if n_relevant == 0:
            # No relevant neighbour of the sample lives here: nothing to measure, keep the built setting.
            leaves, reorder = ladder[0]
            yield info.shard, {"leaves_to_search": leaves, "reorder": reorder, "recall": None,
                               "recall_at_k": None, "reached": True, "rungs_tried": 0} | about
            return
        start = time.perf_counter()
        rows = mine.any(axis=1)
        queries = VectorBatch(sample.ids[rows], sample.vectors[rows], sample.origins[rows])
        want = np.where(mine[rows], truth.positions[rows, :self._top_k], _ABSENT)
        loaded = load_shard(info.path, info.build)
        recall_of = functools.partial(self._recall, loaded.index, loaded.ids, queries, want,
                                      relevant[rows])
        # The most effort first: if even that misses the target, the other rungs need not be tried.
        tried = {ladder[-1]: recall_of(ladder[-1])}
        chosen = ladder[-1]
        if tried[chosen][0] >= self._target:
            for rung in ladder[:-1]:
                tried[rung] = recall_of(rung)
                if tried[rung][0] >= self._target:
                    chosen = rung
                    break
        recall, recall_at_k = tried[chosen]
        reached = recall >= self._target
        if not reached:
            self._unreached.inc()
            _LOGGER.warning("shard %d: recall %.4f of the relevant neighbours at the most effort tried "
                            "(leaves_to_search=%s, reorder=%s) is below the target %.4f", info.shard,
                            recall, *chosen, self._target)
        _LOGGER.info("shard %d: leaves_to_search=%s reorder=%s -> recall %.4f of %d relevant "
                     "neighbours (%s), %.4f of all %d true neighbours (%d rungs tried in %.1f s)",
                     info.shard, *chosen, recall, n_relevant, relevance.target, recall_at_k, n_true,
                     len(tried), time.perf_counter() - start)
        yield info.shard, {"leaves_to_search": chosen[0], "reorder": chosen[1], "recall": recall,
                           "recall_at_k": recall_at_k, "reached": reached,
                           "rungs_tried": len(tried)} | about


class TuneSearch(beam.PTransform):
    """ShardIndexInfo shards -> singleton dict: the cheapest search effort per ScaNN shard.

    The dict is ``{shard: {"leaves_to_search": L, "reorder": R, "recall": r, "recall_at_k": a,
    "reached": bool, "relevant_neighbors": n, "true_neighbors": t, "target": text,
    "relevance_cutoff": c, "rungs_tried": m}}`` (L or R None for a knob the index lacks).

    The tuner aims at the neighbours that matter, not at every slot of the exact top-K (whose far
    ranks are mostly unrelated records at near-random distance, costly to find and of no use to
    matching): the relevant neighbours of :func:`relevance_cutoff`, derived once from the whole
    tuning truth (so every shard, and :class:`TuneProbe` on the same truth, aims at the same ones;
    ``target`` and ``relevance_cutoff`` say which). One shard per element (spread over workers). A
    shard's ``recall`` is the share of the sample's relevant neighbours living in that shard that its
    ANN top-K finds (what the merge can keep); ``recall_at_k`` is the same over all the true top-K
    neighbours there, for comparison. Rungs come from :func:`tuning_ladder`, cheapest first; the first
    whose ``recall`` reaches ``target_recall`` wins. If none does, the most effort is kept with
    ``reached: False`` (logged, and counted in the ``tuned_shards_below_target`` counter). A shard
    holding none of the sample's relevant neighbours keeps its built setting (``recall: None``).
    Exact shards have no knobs and are absent. Feed the dict to :func:`search_kwargs`.

    Args:
        sample: singleton PCollection of VectorBatch (:class:`SampleQueries`).
        truth: singleton PCollection of SampleTruth of that sample (:class:`ExactSampleTopK`, same
            top_k and exclude_self).
        target_recall: in (0, 1].
        top_k: the job's K.
        exclude_self: dedup mode.
        max_distance: the job's --max_distance, or None (see :func:`relevance_cutoff`).
    """

    def __init__(self, *, sample: beam.PCollection, truth: beam.PCollection, target_recall: float,
                 top_k: int, exclude_self: bool = False, max_distance: float | None = None):
        super().__init__()
        check_top_k(top_k)
        if not (isinstance(target_recall, int | float) and 0.0 < target_recall <= 1.0):
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall!r}")
        check_max_distance(max_distance)
        self._sample = sample
        self._truth = truth
        self._top_k = top_k
        self._max_distance = max_distance
        self._fn = _TuneShardFn(target_recall=float(target_recall), top_k=top_k,
                                exclude_self=bool(exclude_self))

    def expand(self, infos):
        relevance = self._truth | "RelevanceCutoff" >> beam.Map(
            relevance_cutoff, top_k=self._top_k, max_distance=self._max_distance)
        return (infos
                | "SpreadShards" >> beam.Reshuffle()
                | "TuneShard" >> beam.ParDo(self._fn, sample=beam.pvalue.AsSingleton(self._sample),
                                            truth=beam.pvalue.AsSingleton(self._truth),
                                            relevance=beam.pvalue.AsSingleton(relevance))
                | "ToDict" >> beam.combiners.ToDict())


# Probe counts tried, cheapest first (then every partition).
_PROBE_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def routing_target(target_recall: float) -> float:
    """The share of true neighbours routing must reach: half the recall budget (1 - target) goes to
    routing, half to the search inside the shards."""
    return 1.0 - (1.0 - target_recall) / 2.0


def choose_probe(plan: Any, sample: VectorBatch, truth: SampleTruth, *, top_k: int,
                 target_recall: float, start: int = 1, max_distance: float | None = None,
                 relevance: Relevance | None = None) -> dict[str, Any]:
    """The smallest probe (partitions per query) whose routes reach ``routing_target`` of the sample's
    relevant neighbours, with the routing recall of every probe tried.

    The relevant neighbours are those of :func:`relevance_cutoff` (``relevance``, default derived from
    ``truth`` with ``max_distance``), as :class:`TuneSearch` counts them; the result's
    ``target_neighbors`` and ``relevance_cutoff`` say which. A relevant neighbour counts as reachable
    when its shard is among those the query is routed to. A hash plan has nothing to tune (every
    query searches every shard).
    """
    from transforms.placement.routing import route_rows

    if plan is None or plan.kind == "hash" or not len(sample):
        return {"probe": None, "routing_recall": None, "tried": {}}
    if relevance is None:
        relevance = relevance_cutoff(truth, top_k, max_distance)
    shards = truth.shards[:, :top_k]
    valid = (shards >= 0) & relevant_slots(truth, top_k, relevance)
    n_true = int(valid.sum())
    partitions = len(plan.pieces)
    ladder = sorted({p for p in _PROBE_LADDER if start <= p < partitions} | {partitions})
    want = routing_target(target_recall)
    tried: dict[int, float] = {}
    for probe in ladder:
        reach = np.zeros(shards.shape, dtype=bool)
        for shard, rows in route_rows(sample.vectors, plan, probe).items():
            reach[rows] |= shards[rows] == shard
        tried[probe] = float((reach & valid).sum()) / n_true if n_true else 1.0
        if tried[probe] >= want:
            break
    probe = next((p for p in ladder if tried.get(p, -1.0) >= want), ladder[-1])
    return {"probe": probe, "routing_recall": tried[probe], "target": want,
            "tried": {str(p): round(r, 4) for p, r in tried.items()},
            "target_neighbors": relevance.target, "relevance_cutoff": relevance.cutoff,
            "relevant_neighbors": n_true}


class TuneProbe(beam.PTransform):
    """Singleton RoutingPlan -> singleton dict: the ``--probe_shards`` chosen on the tuning sample.

    See :func:`choose_probe`. Runs before the main search, on the same sample and exact truth as
    ``TuneSearch`` (and so the same relevant neighbours); the search reads the chosen probe as a side
    input.
    """

    def __init__(self, *, sample: beam.PCollection, truth: beam.PCollection, target_recall: float,
                 top_k: int, start: int = 1, max_distance: float | None = None):
        super().__init__()
        check_top_k(top_k)
        check_max_distance(max_distance)
        self._max_distance = max_distance
        self._sample = sample
        self._truth = truth
        self._target = float(target_recall)
        self._top_k = top_k
        self._start = start

    def _choose(self, plan, sample, truth):
        if plan is not None and len(sample) and not np.array_equal(
                np.asarray(truth.query_ids, dtype=object), sample.ids):
            raise ValueError("TuneProbe needs the exact top-K of the same sample (ExactSampleTopK)")
        choice = choose_probe(plan, sample, truth, top_k=self._top_k, target_recall=self._target,
                              start=self._start, max_distance=self._max_distance)
        if choice["probe"] is not None:
            _LOGGER.info("routing: probe %d partitions -> %.4f of the sample's relevant neighbours "
                         "(%s) reachable (target %.4f; tried %s)", choice["probe"],
                         choice["routing_recall"], choice["target_neighbors"], choice["target"],
                         choice["tried"])
        return choice

    def expand(self, plan):
        return plan | "ChooseProbe" >> beam.Map(
            self._choose, sample=beam.pvalue.AsSingleton(self._sample),
            truth=beam.pvalue.AsSingleton(self._truth))
