"""Measures a run's recall on the audit sample: the recall verdict.

``AuditRecall`` compares the sample's exact top-K (``transforms.quality.ground_truth``) with the pairs
the job emitted and reports recall overall and per shard (also as Beam metrics): the recall of the
neighbours that matter for matching (:func:`~transforms.quality.ground_truth.relevance_cutoff`) beside
the classic recall@K of every exact top-K slot (:func:`recall_report`).

Only the emitted pairs of sample queries move (filtered where they are produced).

This module does not change what the job emits, write files or fail a run: the caller decides what a
low recall means (e.g. a ``--min_recall`` check in the manifest step). Recall measured on the sample
used for tuning is biased upwards (the effort was chosen to pass on exactly those queries); audit a
differently salted sample (``SampleQueries(salt=...)``) to get an honest estimate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms.common import metrics
from transforms.common.schema import PairBatch
from transforms.common.sharding import str_array
from transforms.index.sample_truth import SampleTruth
from transforms.quality.ground_truth import (
    Relevance,
    check_max_distance,
    check_top_k,
    relevance_cutoff,
    relevant_slots,
)

__all__ = ["AUDIT_MODES", "RECALL_PERMILLE_METRIC", "RELEVANT_RECALL_PERMILLE_METRIC", "AuditRecall",
           "recall_report"]

_LOGGER = logging.getLogger(__name__)

AUDIT_MODES = ("link", "dedup")
# Beam metrics (namespace transforms.common.metrics.NAMESPACE).
RECALL_PERMILLE_METRIC = "audit_recall_permille"
_TRUE_PAIRS_METRIC = "audit_true_pairs"
_FOUND_PAIRS_METRIC = "audit_found_pairs"
RELEVANT_RECALL_PERMILLE_METRIC = "audit_relevant_recall_permille"
# Joins two ids into one comparable key without building Python tuples per pair.
_SEP = "\x1f"


# Ids stay object arrays of str here (and sort, compare by Python's str order, which is numpy
# unicode's): a fixed-width copy would be as wide as the longest id for every row.
def _keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([f"{x}{_SEP}{y}" for x, y in zip(str_array(a).reshape(-1), str_array(b).reshape(-1),
                                                       strict=True)], dtype=object)


def _canonical(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = str_array(a), str_array(b)
    swap = (b < a).astype(bool)
    return np.where(swap, b, a), np.where(swap, a, b)


def _true_keys(truth: SampleTruth, slots: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(pair keys, shard of each) of the truth's ``slots`` (bool [n, k]); dedup: unordered, once."""
    cand, shards = truth.candidate_ids[:, :slots.shape[1]], truth.shards[:, :slots.shape[1]]
    q = np.broadcast_to(np.asarray(truth.query_ids, dtype=object)[:, None], cand.shape)[slots]
    c, s = cand[slots], shards[slots]
    if mode == "dedup":
        q, c = _canonical(q, c)
    keys = _keys(q, c)
    if mode == "dedup" and len(keys):
        order = np.lexsort((s, keys))
        keys, s = keys[order], s[order]
        first = np.r_[True, keys[1:] != keys[:-1]]
        keys, s = keys[first], s[first]
    return keys, s


def recall_report(truth: SampleTruth, query_ids: np.ndarray, candidate_ids: np.ndarray, *, top_k: int,
                  mode: str, max_distance: float | None = None,
                  relevance: Relevance | None = None) -> dict[str, Any]:
    """Recall of the sample's true pairs among emitted pairs: the relevant ones, and all top-K.

    Two recalls of the same emitted pairs. ``recall_relevant`` counts the pairs that matter for
    matching (:func:`relevance_cutoff` of this truth: within ``max_distance`` when given, else rank 1
    and pairs within a distance derived from the sample); ``--min_recall`` applies to it.
    ``recall_at_k`` is the classic recall@K: every non-empty slot of the truth's first ``top_k``
    columns within ``max_distance``, as the job keeps them. In ``dedup`` mode pairs are unordered:
    true and emitted pairs become (min, max), a true pair is found when emitted in either direction,
    and a pair that is in the truth of both its ids counts once (attributed to the smaller shard of the
    two sides; relevant when relevant from either side).

    Args:
        truth: exact top-K of the sample (:class:`ExactSampleTopK`).
        query_ids, candidate_ids: emitted pairs, object or str arrays [m]; pairs of other queries
            may be included, they never match.
        top_k: the job's K.
        mode: 'link' or 'dedup'.
        max_distance: the job's --max_distance, or None.
        relevance: which slots are relevant; default :func:`relevance_cutoff` of ``truth``.

    Returns:
        ``{"sample_size", "recall_at_k", "per_shard": {shard: recall}, "true_pairs", "found_pairs",
        "target", "relevance_cutoff", "recall_relevant", "per_shard_relevant", "relevant_pairs",
        "found_relevant_pairs"}``: ``target`` says which pairs ``recall_relevant`` counts and
        ``relevance_cutoff`` is their distance limit (None when every slot counts). A recall is None
        when there is nothing to find (no true pair within max_distance); a ``per_shard`` dict lists
        the shards holding at least one such pair.
    """
    if mode not in AUDIT_MODES:
        raise ValueError(f"mode must be one of {', '.join(AUDIT_MODES)}, got {mode!r}")
    if relevance is None:
        relevance = relevance_cutoff(truth, top_k, max_distance)
    cand, dist = truth.candidate_ids[:, :top_k], truth.distances[:, :top_k]
    valid = (cand != "") & np.isfinite(dist)
    if max_distance is not None:
        valid &= dist <= max_distance
    if mode == "dedup":
        query_ids, candidate_ids = _canonical(query_ids, candidate_ids)
    # A set, not np.isin: on object arrays isin sorts Python strings (1.1 s for 10k pairs at 200k).
    emitted = set(_keys(query_ids, candidate_ids).tolist()) if len(query_ids) else set()

    def recall_of(slots: np.ndarray) -> tuple[float | None, dict[int, float], int, int]:
        keys, shards = _true_keys(truth, slots, mode)
        found = np.fromiter((k in emitted for k in keys.tolist()), dtype=bool, count=len(keys))
        per_shard = {int(shard): float(found[shards == shard].mean()) for shard in np.unique(shards)}
        n_true, n_found = int(len(keys)), int(found.sum())
        return (n_found / n_true if n_true else None), per_shard, n_true, n_found

    recall, per_shard, true_pairs, found_pairs = recall_of(valid)
    relevant, per_shard_relevant, relevant_pairs, found_relevant = recall_of(
        relevant_slots(truth, top_k, relevance) & valid)
    return {"sample_size": int(len(truth.query_ids)),
            "recall_at_k": recall,
            "per_shard": per_shard,
            "true_pairs": true_pairs,
            "found_pairs": found_pairs,
            "target": relevance.target,
            "relevance_cutoff": relevance.cutoff,
            "recall_relevant": relevant,
            "per_shard_relevant": per_shard_relevant,
            "relevant_pairs": relevant_pairs,
            "found_relevant_pairs": found_relevant}


def _sorted_ids(truth: SampleTruth) -> np.ndarray:
    return np.sort(str_array(truth.query_ids))


def _is_member(values: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    if len(sorted_ids) == 0 or len(values) == 0:
        return np.zeros(len(values), dtype=bool)
    values = str_array(values)
    at = np.minimum(np.searchsorted(sorted_ids, values), len(sorted_ids) - 1)
    return sorted_ids[at] == values


class _KeepSamplePairsFn(beam.DoFn):
    """PairBatch -> its rows about sample queries (either side in dedup mode), or nothing."""

    def __init__(self, *, dedup: bool):
        self._dedup = dedup

    def process(self, pairs: PairBatch, sample_ids: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        keep = _is_member(pairs.query_ids, sample_ids)
        if self._dedup:
            keep |= _is_member(pairs.candidate_ids, sample_ids)
        if keep.any():
            yield str_array(pairs.query_ids[keep]), str_array(pairs.candidate_ids[keep])


class _ConcatPairsFn(beam.CombineFn):
    """(query_ids, candidate_ids) chunks -> one pair of str arrays (empty when there are none)."""

    def create_accumulator(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return []

    def add_input(self, acc, chunk):
        acc.append(chunk)
        return acc

    def merge_accumulators(self, accs):
        return [chunk for acc in accs for chunk in acc]

    def extract_output(self, acc) -> tuple[np.ndarray, np.ndarray]:
        if not acc:
            return np.empty(0, dtype=object), np.empty(0, dtype=object)
        return (np.concatenate([q for q, _ in acc]), np.concatenate([c for _, c in acc]))


class _ScoreRecallFn(beam.DoFn):
    def __init__(self, *, top_k: int, mode: str, max_distance: float | None):
        self._top_k = top_k
        self._mode = mode
        self._max_distance = max_distance
        self._permille = Metrics.distribution(metrics.NAMESPACE, RECALL_PERMILLE_METRIC)
        self._relevant_permille = Metrics.distribution(metrics.NAMESPACE, RELEVANT_RECALL_PERMILLE_METRIC)
        self._true = Metrics.counter(metrics.NAMESPACE, _TRUE_PAIRS_METRIC)
        self._found = Metrics.counter(metrics.NAMESPACE, _FOUND_PAIRS_METRIC)

    def process(self, emitted: tuple[np.ndarray, np.ndarray], truth: SampleTruth) -> Iterator[dict]:
        # The relevance cutoff is derived once, here, from the audit sample's own truth.
        report = recall_report(truth, *emitted, top_k=self._top_k, mode=self._mode,
                               max_distance=self._max_distance)
        self._true.inc(report["true_pairs"])
        self._found.inc(report["found_pairs"])
        if report["recall_at_k"] is not None:
            self._permille.update(round(1000 * report["recall_at_k"]))
        if report["recall_relevant"] is not None:
            self._relevant_permille.update(round(1000 * report["recall_relevant"]))
        worst = min(report["per_shard_relevant"].items(), key=lambda kv: (kv[1], kv[0]), default=None)
        _LOGGER.info("audit: recall %s of %s (%d of %d pairs found), recall@%d %s (%d of %d) on %d "
                     "sample queries; worst shard %s", report["recall_relevant"], report["target"],
                     report["found_relevant_pairs"], report["relevant_pairs"], self._top_k,
                     report["recall_at_k"], report["found_pairs"], report["true_pairs"],
                     report["sample_size"], worst)
        yield report


class AuditRecall(beam.PTransform):
    """PairBatch emitted pairs -> singleton dict: recall of the sample's true pairs.

    Two recalls (see :func:`recall_report`): ``recall_relevant``, of the pairs that matter (within
    ``max_distance`` when given, else rank 1 and pairs within a distance derived once from this
    truth by :func:`relevance_cutoff`; the report says which in ``target`` and
    ``relevance_cutoff``), and the classic ``recall_at_k`` of every true top-K pair.
    Emitted pairs are cut down to those of sample queries where they are produced (a sorted-id side
    input; in dedup mode a pair is kept when either id is a sample query), so only about
    ``sample_size * top_k`` pairs are ever gathered. The report is also published as the Beam
    distributions ``audit_relevant_recall_permille`` and ``audit_recall_permille`` and the counters
    ``audit_true_pairs`` / ``audit_found_pairs`` in ``transforms.common.metrics.NAMESPACE``.

    Args:
        truth: singleton PCollection of SampleTruth (:class:`ExactSampleTopK`).
        top_k: the job's K.
        mode: 'link' or 'dedup' (pairs compared as unordered (min, max)).
        max_distance: the job's --max_distance (applied to the truth as the job applies it), or None.
    """

    def __init__(self, *, truth: beam.PCollection, top_k: int, mode: str,
                 max_distance: float | None = None):
        super().__init__()
        check_top_k(top_k)
        if mode not in AUDIT_MODES:
            raise ValueError(f"mode must be one of {', '.join(AUDIT_MODES)}, got {mode!r}")
        check_max_distance(max_distance)
        self._truth = truth
        self._keep = _KeepSamplePairsFn(dedup=mode == "dedup")
        self._score = _ScoreRecallFn(top_k=top_k, mode=mode, max_distance=max_distance)

    def expand(self, pairs):
        sample_ids = self._truth | "SampleIds" >> beam.Map(_sorted_ids)
        return (pairs
                | "KeepSamplePairs" >> beam.ParDo(self._keep,
                                                  sample_ids=beam.pvalue.AsSingleton(sample_ids))
                | "GatherSamplePairs" >> beam.CombineGlobally(_ConcatPairsFn())
                | "ScoreRecall" >> beam.ParDo(self._score, truth=beam.pvalue.AsSingleton(self._truth)))
