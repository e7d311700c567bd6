"""``ScorePairs``: the pairwise scoring stage after the merge (``--scorer fields``).

Flow, all on batches (never one pair or one record per element):

1. **Fields.** Each corpus's validated records (``FeatureBatch``) become :class:`RecordFields` once
   (normalised text, date codes, value hashes; see ``comparisons``) and are split into
   ``num_buckets`` buckets by a stable hash of the id.
2. **Join, twice.** Pair batches are split by the bucket of their query id and grouped with that
   bucket's records (one CoGroupByKey): each pair gets its query's fields. Then the same by the
   candidate id, where the two records are compared at once (``compare_fields``): what travels on
   is the pairs and their int8 level matrix, not the strings. A repeated id keeps its first
   occurrence (by file, then row), as the index does. A pair whose record cannot be found (it should
   not happen) compares as missing on every field and is counted (``scoring_unjoined_pairs``).
3. **Fit.** The level-pattern histogram of all candidate pairs is summed in a CombineFn (the
   sufficient statistics of EM); u comes from random pairs of two deterministic record samples
   (the ``_U_SAMPLE`` records with the smallest salted id hash on each side), term frequencies from
   a count-min sketch of every record's values, summed in a CombineFn. One small step fits m, u
   and the prior by three-class EM (``fellegi_sunter.fit_with_derived``: the embedding distance
   in the EM, or, where it would define the classes, fitted after the fields) and writes
   ``DIR/scoring/model.json`` (or takes a given model: ``model_json``), and beside it the EM's
   input, ``level_patterns.npz`` (:func:`read_level_patterns`).
4. **Score.** Every pair gets ``match_weight`` and ``match_probability``; pairs below
   ``min_probability`` are dropped. Ranks are re-assigned by the match files' writer
   (``WriteMatches(rank_by_weight=True)``), where all rows of a query meet anyway.

This stage decides nothing about which pairs are candidates: it scores what the search found.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms.common import metrics, progress
from transforms.common.artifacts import join_path, read_bytes, write_bytes, write_text
from transforms.common.schema import FeatureBatch, PairBatch, ScoredPairBatch
from transforms.common.sharding import assign_shards, id_sort_keys, split_by_shard, stable_hash64, str_array
from transforms.placement.duplicate_ids import first_occurrences
from transforms.scoring.comparisons import (
    NUM_LEVELS,
    RecordFields,
    compare_fields,
    concat_fields,
    record_fields,
    take_rows,
)
from transforms.scoring.fellegi_sunter import (
    FellegiSunterModel,
    agreement_rates,
    estimate_u,
    fit_prior,
    fit_with_derived,
    merge_histograms,
    pattern_histogram,
    probability,
    term_frequencies,
    term_sketch,
    unpack_histogram,
)

__all__ = ["ScorePairs", "ScoreResult", "ComparedPairs", "SCORERS", "DISTANCE_FIELD", "model_path",
           "scoring_buckets", "distance_levels", "random_pair_levels", "sketch_path",
           "level_patterns_path", "read_level_patterns"]

_LOGGER = logging.getLogger(__name__)
SCORERS = ("none", "fields", "model")
STAGE = "score"
_U_SAMPLE = 300  # records per side: 90,000 random pairs start u (EM refits it)
_UNJOINED_METRIC = "scoring_unjoined_pairs"
_SCORED_METRIC = "scoring_pairs_scored"
_KEPT_METRIC = "scoring_pairs_kept"
# Input bytes per join bucket: a bucket's records are held by one worker while its pairs are joined,
# and several buckets let the joins run in parallel.
_BUCKET_BYTES = 16 << 20
# The embedding distance is one more compared "field": its levels cut the rank-1 distances of a
# deterministic sample of queries at these quantiles.
DISTANCE_FIELD = "embedding_distance"
DISTANCE_QUANTILES = (0.2, 0.5, 0.8, 0.95)
_DISTANCE_SAMPLE = 20_000


def model_path(output_dir: str) -> str:
    return join_path(output_dir, "scoring", "model.json")


def scoring_buckets(input_bytes: int) -> int:
    """Join buckets for this many bytes of input records: one per 16 MB, 1 to 10,000."""
    return int(min(10_000, max(1, -(-input_bytes // _BUCKET_BYTES))))


class _PairPiece(NamedTuple):
    """Pairs on their way through the joins; ``left`` is the query records' fields once joined."""

    pairs: PairBatch
    left: RecordFields | None


class ComparedPairs(NamedTuple):
    """Pairs with their comparison levels int8 [m, F] and, per text field, the hash of the value
    both records share where they agree exactly (0 elsewhere), for term frequencies."""

    pairs: PairBatch
    levels: np.ndarray
    agreed: np.ndarray


class ScoreResult(NamedTuple):
    pairs: beam.PCollection  # ScoredPairBatch, match_probability >= min_probability
    model: beam.PCollection  # singleton dict: the fitted model as written to DIR/scoring/model.json


def _take_pairs(pairs: PairBatch, rows: np.ndarray) -> PairBatch:
    return PairBatch(*(np.asarray(column)[rows] for column in pairs))


# ------------------------------------------------------------------------------------------------
# Fields and joins


class _FieldsFn(beam.DoFn):
    """FeatureBatch -> (bucket, RecordFields) per bucket its ids fall in."""

    def __init__(self, text_fields: tuple[str, ...], numeric_fields: tuple[str, ...], num_buckets: int):
        self._text = text_fields
        self._numeric = numeric_fields
        self._buckets = num_buckets
        self._timer = metrics.StageTimer(STAGE)

    def process(self, batch: FeatureBatch) -> Iterator[tuple[int, RecordFields]]:
        if not len(batch):
            return
        with self._timer:
            fields = record_fields(batch.ids, batch.origins, batch.table, self._text, self._numeric)
            parts = [(b, take_rows(fields, rows)) for b, rows in
                     split_by_shard(assign_shards(fields.ids, self._buckets), self._buckets)]
        yield from parts


class _SplitPairsFn(beam.DoFn):
    """A pair piece -> (bucket of its query or candidate ids, sub-piece) per bucket."""

    def __init__(self, side: str, num_buckets: int):
        self._side = side
        self._buckets = num_buckets

    def process(self, piece: Any) -> Iterator[tuple[int, _PairPiece]]:
        if isinstance(piece, PairBatch):
            piece = _PairPiece(piece, None)
        if not len(piece.pairs):
            return
        ids = piece.pairs.query_ids if self._side == "query" else piece.pairs.candidate_ids
        for bucket, rows in split_by_shard(assign_shards(np.asarray(ids, dtype=object), self._buckets),
                                           self._buckets):
            left = None if piece.left is None else take_rows(piece.left, rows)
            yield bucket, _PairPiece(_take_pairs(piece.pairs, rows), left)


def _bucket_records(parts: Iterable[RecordFields]) -> RecordFields | None:
    """A bucket's records sorted by id, first occurrence of each id only."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return None
    fields = concat_fields(parts)
    order, keep, _ = first_occurrences(fields.ids, fields.origins)
    return take_rows(fields, order[keep])


def _lookup(records: RecordFields | None, sorted_ids: np.ndarray | None, ids: np.ndarray,
            width: tuple[int, int]) -> tuple[RecordFields, np.ndarray]:
    """The records of ``ids`` (missing fields where an id is absent) and a mask of the found ones;
    ``sorted_ids`` are the records' ids as str (computed once per bucket)."""
    n = len(ids)
    if records is None:
        t, k = width
        empty = RecordFields(np.asarray(ids, dtype=object), np.full(n, "", dtype=object),
                             np.full((n, t), None, dtype=object), np.full((n, t), -1, dtype=np.int32),
                             np.zeros((n, t), dtype=np.uint64), np.full((n, k), np.nan))
        return empty, np.zeros(n, dtype=bool)
    wanted = str_array(ids)
    pos = np.clip(np.searchsorted(sorted_ids, wanted), 0, max(len(sorted_ids) - 1, 0))
    found = sorted_ids[pos] == wanted
    out = take_rows(records, pos)
    if not found.all():
        miss = ~found
        text = out.text.copy()
        text[miss] = None
        numbers = out.numbers.copy()
        numbers[miss] = np.nan
        dates = out.dates.copy()
        dates[miss] = -1
        hashes = out.hashes.copy()
        hashes[miss] = 0
        out = RecordFields(out.ids, out.origins, text, dates, hashes, numbers)
    return out, found


def distance_levels(distances: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Levels 0..4 of embedding distances against the four cut points (smaller is closer)."""
    return np.searchsorted(np.asarray(cuts, dtype=np.float64), np.asarray(distances, dtype=np.float64),
                           side="left").astype(np.int8)


def _first_of_each_pair(piece: _PairPiece) -> _PairPiece:
    """One row per (query, candidate): the lowest rank, then the smallest distance (in dedup mode a
    canonical pair found from both of its records comes twice; both copies share a candidate id,
    so they meet here, and EM must count the pair once). The writer drops the same copies."""
    pairs = piece.pairs
    if len(pairs) < 2:
        return piece
    q, c = id_sort_keys(pairs.query_ids, pairs.candidate_ids)
    order = np.lexsort((pairs.distances, pairs.ranks, c, q))
    first = np.r_[True, (q[order][1:] != q[order][:-1]) | (c[order][1:] != c[order][:-1])]
    if first.all():
        return piece
    keep = np.sort(order[first])
    return _PairPiece(_take_pairs(pairs, keep), take_rows(piece.left, keep))


class _JoinFn(beam.DoFn):
    """(bucket, {"pairs": [...], "records": [...]}) -> pieces with query fields (side 'query'), or
    ComparedPairs (side 'candidate': the second join compares at once, the embedding distance's
    level last)."""

    def __init__(self, side: str, width: tuple[int, int]):
        self._side = side
        self._width = width
        self._timer = metrics.StageTimer(STAGE)
        self._unjoined = Metrics.counter(metrics.NAMESPACE, _UNJOINED_METRIC)

    def process(self, element: tuple[int, dict[str, list]], cuts: np.ndarray | None = None) -> Iterator[Any]:
        _, grouped = element
        pieces = list(grouped["pairs"])
        if not pieces:
            return
        if self._side == "candidate" and len(pieces) > 1:  # copies of one pair may sit in two pieces
            pieces = [_PairPiece(PairBatch(*(np.concatenate([np.asarray(p.pairs[i]) for p in pieces])
                                             for i in range(len(PairBatch._fields)))),
                                 concat_fields([p.left for p in pieces]))]
        with self._timer:
            records = _bucket_records(grouped["records"])
            sorted_ids = None if records is None else str_array(records.ids)
            out = []
            for piece in pieces:
                if self._side == "query":
                    fields, found = _lookup(records, sorted_ids, piece.pairs.query_ids, self._width)
                    out.append(_PairPiece(piece.pairs, fields))
                else:
                    piece = _first_of_each_pair(piece)
                    fields, found = _lookup(records, sorted_ids, piece.pairs.candidate_ids, self._width)
                    levels = np.concatenate(
                        [compare_fields(piece.left, fields),
                         distance_levels(piece.pairs.distances, cuts)[:, None]], axis=1)
                    t = fields.text.shape[1]
                    agreed = np.where(levels[:, :t] == 0, piece.left.hashes, np.uint64(0))
                    out.append(ComparedPairs(piece.pairs, levels, agreed))
                missing = int((~found).sum())
                if missing:
                    self._unjoined.inc(missing)
        yield from out


# ------------------------------------------------------------------------------------------------
# Sufficient statistics


class _HistogramFn(beam.CombineFn):
    """ComparedPairs -> the level-pattern histograms (EM's sufficient statistics) of the rank-1
    pairs and of all pairs."""

    def create_accumulator(self) -> tuple[dict[bytes, int], dict[bytes, int]]:
        return {}, {}

    def add_input(self, acc, compared: ComparedPairs):
        first = np.asarray(compared.pairs.ranks) == 1
        for hist, part in ((acc[0], pattern_histogram(compared.levels[first])),
                           (acc[1], pattern_histogram(compared.levels))):
            for key, n in part.items():  # in place: the accumulator is ours
                hist[key] = hist.get(key, 0) + n
        return acc

    def merge_accumulators(self, accs):
        accs = list(accs)
        return merge_histograms([a[0] for a in accs]), merge_histograms([a[1] for a in accs])

    def extract_output(self, acc):
        return acc


class _DistanceCutsFn(beam.CombineFn):
    """PairBatch -> the distance level cut points: quantiles of the distances of the
    ``_DISTANCE_SAMPLE`` rank-1 rows with the smallest query-id hashes (ties by id, then distance)."""

    def create_accumulator(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.zeros(0, np.uint64), np.zeros(0, object), np.zeros(0, np.float64)

    def _smallest(self, hashes, ids, distances):
        if len(hashes) > _DISTANCE_SAMPLE:
            order = np.lexsort((distances, id_sort_keys(ids)[0], hashes))[:_DISTANCE_SAMPLE]
            hashes, ids, distances = hashes[order], ids[order], distances[order]
        return hashes, ids, distances

    def add_input(self, acc, pairs: PairBatch):
        first = (np.asarray(pairs.ranks) == 1) & np.isfinite(pairs.distances)
        ids = np.asarray(pairs.query_ids, dtype=object)[first]
        part = (stable_hash64(ids), ids, np.asarray(pairs.distances, dtype=np.float64)[first])
        return self.merge_accumulators([acc, part])

    def merge_accumulators(self, accs):
        accs = list(accs)
        return self._smallest(*(np.concatenate([a[i] for a in accs]) for i in range(3)))

    def extract_output(self, acc) -> np.ndarray:
        if not len(acc[2]):
            return np.full(len(DISTANCE_QUANTILES), np.inf)
        return np.quantile(np.sort(acc[2]), DISTANCE_QUANTILES)


class _SketchFn(beam.CombineFn):
    """RecordFields -> (count-min sketch of every text value's hash, records counted)."""

    def create_accumulator(self) -> tuple[np.ndarray | None, int]:
        return None, 0

    def add_input(self, acc, fields: RecordFields):
        sketch, n = acc
        return term_sketch(fields.hashes, into=sketch), n + len(fields)

    def merge_accumulators(self, accs):
        sketch, n = None, 0
        for s, k in accs:
            if s is not None:
                sketch = s if sketch is None else sketch + s
            n += k
        return sketch, n

    def extract_output(self, acc):
        return acc


class _SampleFieldsFn(beam.CombineFn):
    """RecordFields -> the ``size`` records with the smallest salted id hashes (ties by id)."""

    def __init__(self, size: int, salt: str):
        self._size = size
        self._salt = salt

    def _smallest(self, fields: RecordFields | None) -> RecordFields | None:
        if fields is None:
            return fields
        order, keep, _ = first_occurrences(fields.ids, fields.origins)  # a repeated id counts once
        if not keep.all():
            fields = take_rows(fields, np.sort(order[keep]))
        if len(fields) <= self._size:
            return fields
        keys = stable_hash64(np.array([self._salt + str(i) for i in fields.ids], dtype=object))
        order = np.lexsort((id_sort_keys(fields.ids)[0], keys))[: self._size]
        return take_rows(fields, np.sort(order))

    def create_accumulator(self) -> RecordFields | None:
        return None

    def add_input(self, acc, fields: RecordFields):
        return self.merge_accumulators([acc, fields])

    def merge_accumulators(self, accs):
        parts = [a for a in accs if a is not None and len(a)]
        if not parts:
            return None
        return self._smallest(concat_fields(parts))

    def extract_output(self, acc):
        if acc is None:
            return None
        order = np.argsort(id_sort_keys(acc.ids)[0], kind="stable")  # independent of merge order
        return take_rows(acc, order)


def random_pair_levels(left: RecordFields | None, right: RecordFields | None) -> np.ndarray:
    """Levels of every (left, right) record pair with different ids: the u sample."""
    if left is None or right is None or not len(left) or not len(right):
        return np.zeros((0, 0), dtype=np.int8)
    li, ri = np.meshgrid(np.arange(len(left)), np.arange(len(right)), indexing="ij")
    li, ri = li.reshape(-1), ri.reshape(-1)
    keep = str_array(left.ids)[li] != str_array(right.ids)[ri]
    return compare_fields(take_rows(left, li[keep]), take_rows(right, ri[keep]))


def _distance_shares(histogram: dict[bytes, int], width: int) -> np.ndarray:
    """The embedding distance's level shares over all candidate pairs (add-half smoothed)."""
    counts = np.zeros(NUM_LEVELS)
    for key, n in histogram.items():
        counts[np.frombuffer(key, np.int8)[width - 1]] += n
    return (counts + 0.5) / (counts.sum() + 0.5 * NUM_LEVELS)


def _fit_model(histograms, left_sample, right_sample, sketch, cuts, *, fields: tuple[str, ...],
               kinds: tuple[str, ...]) -> FellegiSunterModel:
    """EM (m, u and the prior; ``fit_with_derived``) over every candidate pair's level pattern; u starts
    from random pairs.

    u is refitted because candidate non-matches (near neighbours) agree on far more than random
    pairs do. The embedding distance's u starts from its level shares over all candidate pairs.
    (EM on the rank-1 pairs alone was tried and rejected: where every rank-1 pair is a match, as in
    FEBRL4, there is no non-match class there and EM splits the matches by distance instead.)
    """
    start = time.perf_counter()
    rank1, everything = histograms
    random_levels = random_pair_levels(left_sample, right_sample)
    num_fields = len(fields) - 1  # the last is the embedding distance
    if random_levels.shape[1] != num_fields:
        random_levels = np.zeros((0, num_fields), dtype=np.int8)
    u = estimate_u(random_levels)
    tf_base = None
    if sketch is not None and sketch[0] is not None and len(sketch[0]):
        tf_base = agreement_rates(sketch[0])
    u = np.vstack([u, _distance_shares(everything, num_fields + 1)])
    m, u, prior, iterations, converged, how = fit_with_derived(everything, u, derived=(num_fields,))
    pairs = int(sum(everything.values()))
    records = int(sketch[1]) if sketch is not None else 0
    rank1_prior = fit_prior(rank1, m, u, start=prior) if rank1 else None
    model = FellegiSunterModel(fields, kinds, m, u, prior, records, {
        "method": "EM with three latent classes (matches, near and far non-matches) over the candidate "
                  "pairs' level patterns, folded into m/u; u started from random pairs",
        "candidate_pairs": pairs, "rank1_pairs": int(sum(rank1.values())), "patterns": len(everything),
        "random_pairs": int(len(random_levels)), "em_iterations": iterations, "converged": converged,
        "rank1_match_share": None if rank1_prior is None else round(rank1_prior, 6),
        "tf_records": records, **how,
        "distance_cuts": [float(c) for c in cuts]},  # no timings here: the file is deterministic
        tf_base=tf_base)
    weights = model.level_weights
    _LOGGER.info("scoring model in %.1f s: EM %s after %d iterations on %d candidate pairs (%d "
                 "patterns), u started from %d random pairs; prior %.4f (share of matches at rank 1: "
                 "%s); exact-agreement weights %s", time.perf_counter() - start,
                 "converged" if converged else "stopped", iterations, pairs, len(everything),
                 len(random_levels), prior, "-" if rank1_prior is None else f"{rank1_prior:.4f}",
                 {f: round(float(w), 2) for f, w in zip(fields, weights[:, 0], strict=True)})
    if not converged:
        _LOGGER.warning("scoring model: EM did not converge in %d iterations", iterations)
    return _as_written(model)


def _as_written(model: FellegiSunterModel) -> FellegiSunterModel:
    """The model as ``model.json`` holds it (rounded values): the pairs are scored with exactly
    what is written, so ``explain`` and a later ``--scoring_model`` run reproduce each weight."""
    return FellegiSunterModel.from_json(model.to_json())


def _given_model(_: Any, given: FellegiSunterModel, sketch) -> FellegiSunterModel:
    """A fitted model with this run's term frequencies (the values' rates are this data's)."""
    import dataclasses

    tf_base = given.tf_base
    records = given.records
    if sketch is not None and sketch[0] is not None and len(sketch[0]):
        tf_base, records = agreement_rates(sketch[0]), int(sketch[1])
    fit = dict(given.fit, reused=True)
    _LOGGER.info("scoring with a given model (prior %.4f, fields %s); term frequencies of this run",
                 given.prior, list(given.fields))
    return _as_written(dataclasses.replace(given, tf_base=tf_base, records=records, fit=fit))


class _ScoreFn(beam.DoFn):
    """ComparedPairs -> ScoredPairBatch of the pairs at or above min_probability."""

    def __init__(self, min_probability: float | None):
        self._min = min_probability
        self._timer = metrics.StageTimer(STAGE)
        self._scored = Metrics.counter(metrics.NAMESPACE, _SCORED_METRIC)
        self._kept = Metrics.counter(metrics.NAMESPACE, _KEPT_METRIC)

    def process(self, compared: ComparedPairs, model: FellegiSunterModel,
                sketch) -> Iterator[ScoredPairBatch]:
        with self._timer:
            freq = None
            if sketch is not None and sketch[0] is not None and compared.agreed.shape[1]:
                freq = term_frequencies(sketch[0], compared.agreed)
            weights = model.weights(compared.levels, freq)
            probs = probability(weights)
            keep = np.ones(len(weights), dtype=bool) if self._min is None else probs >= self._min
            p = compared.pairs
            out = ScoredPairBatch(*(np.asarray(c)[keep] for c in p), weights[keep], probs[keep])
        self._scored.inc(len(weights))
        progress.add("scored", len(weights))
        self._kept.inc(int(keep.sum()))
        if len(out):
            yield out


def _write_model(model: FellegiSunterModel, output_dir: str, sketch, histograms=None) -> dict[str, Any]:
    """Writes DIR/scoring/model.json, the term-frequency sketch beside it (for ``explain``) and, for
    a fitted model, the level-pattern histograms it was fitted on (:func:`read_level_patterns`)."""
    import io
    import json

    write_text(model_path(output_dir), model.to_json() + "\n")
    table = sketch[0] if sketch is not None and sketch[0] is not None else np.zeros((0, 3, 1), np.int64)
    buf = io.BytesIO()
    np.savez_compressed(buf, sketch=table)
    write_bytes(sketch_path(output_dir), buf.getvalue())
    if histograms is not None:
        rank1, everything = histograms
        patterns, counts = unpack_histogram(everything, len(model.fields))
        buf = io.BytesIO()
        np.savez_compressed(buf, patterns=patterns, counts=counts.astype(np.int64),
                            rank1_counts=np.array([rank1.get(p.tobytes(), 0) for p in patterns], np.int64),
                            fields=np.array(model.fields))
        write_bytes(level_patterns_path(output_dir), buf.getvalue())
    return json.loads(model.to_json())


# ------------------------------------------------------------------------------------------------
# The composite


class ScorePairs(beam.PTransform):
    """PairBatch merged pairs -> :class:`ScoreResult`: scored pairs and the fitted model.

    Args:
        records: ``{"queries": PCollection of FeatureBatch, "candidates": ...}`` in link mode, or
            ``{"input": ...}`` in dedup mode (both sides are that corpus).
        text_fields, numeric_fields: the fields to compare (those the job embeds).
        min_probability: drop pairs below this match probability, or None to keep all.
        num_buckets: join buckets (:func:`scoring_buckets`).
        output_dir: the run's output directory (the model goes to ``DIR/scoring/model.json``).
        model_json: a fitted model (``model.json`` text of an earlier run) to score with instead
            of fitting one by EM: its m, u, prior and distance cut points are kept, so scheduled
            runs score alike; the term frequencies are this run's.
    """

    def __init__(self, *, records: dict[str, beam.PCollection], text_fields: tuple[str, ...],
                 numeric_fields: tuple[str, ...] = (), min_probability: float | None = None,
                 num_buckets: int = 1, output_dir: str, model_json: str | None = None):
        super().__init__()
        self._given = None
        if not isinstance(output_dir, str) or not output_dir:
            raise ValueError(f"output_dir must be a non-empty string, got {output_dir!r}")
        if model_json is not None:
            self._given = FellegiSunterModel.from_json(model_json)
            want = tuple(text_fields) + tuple(numeric_fields) + (DISTANCE_FIELD,)
            if self._given.fields != want:
                raise ValueError(f"the scoring model compares {list(self._given.fields)}, this job "
                                 f"{list(want)}")
            if len(self._given.fit.get("distance_cuts") or ()) != len(DISTANCE_QUANTILES):
                raise ValueError("the scoring model has no distance_cuts in its fit")
        if set(records) not in ({"queries", "candidates"}, {"input"}):
            raise ValueError(f"records must have queries and candidates, or input; got {sorted(records)}")
        if not text_fields and not numeric_fields:
            raise ValueError("give at least one text or numeric field to compare")
        if min_probability is not None and not 0.0 <= min_probability <= 1.0:
            raise ValueError(f"min_probability must be in [0, 1], got {min_probability!r}")
        if isinstance(num_buckets, bool) or not isinstance(num_buckets, int) or num_buckets < 1:
            raise ValueError(f"num_buckets must be an integer >= 1, got {num_buckets!r}")
        self._records = records
        self._text = tuple(text_fields)
        self._numeric = tuple(numeric_fields)
        self._min = min_probability
        self._buckets = num_buckets
        self._output_dir = output_dir

    def expand(self, pairs):
        width = (len(self._text), len(self._numeric))
        fields = {}
        for role, batches in sorted(self._records.items()):
            label = role.capitalize()
            fields[role] = batches | f"FieldsOf{label}" >> beam.ParDo(
                _FieldsFn(self._text, self._numeric, self._buckets))
        query_fields = fields.get("queries", fields.get("input"))
        cand_fields = fields.get("candidates", fields.get("input"))

        with_query = (
            {"pairs": pairs | "SplitByQuery" >> beam.ParDo(_SplitPairsFn("query", self._buckets)),
             "records": query_fields}
            | "JoinQueryFields" >> beam.CoGroupByKey()
            | "AttachQueryFields" >> beam.ParDo(_JoinFn("query", width)))
        if self._given is not None:  # the fitted model's cut points: its levels mean the same here
            cuts = pairs.pipeline | "GivenDistanceLevels" >> beam.Create(
                [np.asarray(self._given.fit["distance_cuts"], dtype=np.float64)])
        else:
            cuts = pairs | "DistanceLevels" >> beam.CombineGlobally(_DistanceCutsFn())
        compared = (
            {"pairs": with_query | "SplitByCandidate" >> beam.ParDo(_SplitPairsFn("candidate",
                                                                                 self._buckets)),
             "records": cand_fields}
            | "JoinCandidateFields" >> beam.CoGroupByKey()
            | "CompareFields" >> beam.ParDo(_JoinFn("candidate", width),
                                            cuts=beam.pvalue.AsSingleton(cuts)))

        all_fields = tuple(fields.values())
        record_values = (all_fields | "AllRecordFields" >> beam.Flatten()) if len(all_fields) > 1 \
            else all_fields[0]
        values = record_values | "DropBucket" >> beam.Values()
        sketch = values | "TermFrequencies" >> beam.CombineGlobally(_SketchFn())
        if self._given is not None:
            model = (pairs.pipeline | "GivenModel" >> beam.Create([None])
                     | "WithTermFrequencies" >> beam.Map(_given_model, self._given,
                                                         sketch=beam.pvalue.AsSingleton(sketch)))
        else:  # fit: u starts from random pairs of two record samples
            left_sample = (query_fields | "QueryValues" >> beam.Values()
                           | "SampleQueryRecords" >> beam.CombineGlobally(
                               _SampleFieldsFn(_U_SAMPLE, "u-left")))
            right_sample = (cand_fields | "CandidateValues" >> beam.Values()
                            | "SampleCandidateRecords" >> beam.CombineGlobally(
                                _SampleFieldsFn(_U_SAMPLE, "u-right")))
            histogram = compared | "LevelPatterns" >> beam.CombineGlobally(_HistogramFn())
            names = self._text + self._numeric + (DISTANCE_FIELD,)
            kinds = ("text",) * len(self._text) + ("numeric",) * len(self._numeric) + ("distance",)
            model = histogram | "FitModel" >> beam.Map(
                _fit_model, left_sample=beam.pvalue.AsSingleton(left_sample),
                right_sample=beam.pvalue.AsSingleton(right_sample),
                sketch=beam.pvalue.AsSingleton(sketch), cuts=beam.pvalue.AsSingleton(cuts),
                fields=names, kinds=kinds)
        fitted = {} if self._given is not None else {"histograms": beam.pvalue.AsSingleton(histogram)}
        written = model | "WriteModel" >> beam.Map(_write_model, self._output_dir,
                                                   sketch=beam.pvalue.AsSingleton(sketch), **fitted)
        scored = compared | "ScorePairs" >> beam.ParDo(
            _ScoreFn(self._min), model=beam.pvalue.AsSingleton(model),
            sketch=beam.pvalue.AsSingleton(sketch))
        return ScoreResult(scored, written)


def sketch_path(output_dir: str) -> str:
    return join_path(output_dir, "scoring", "term_frequencies.npz")


def level_patterns_path(output_dir: str) -> str:
    """Where a scored run keeps its EM input: ``DIR/scoring/level_patterns.npz``."""
    return join_path(output_dir, "scoring", "level_patterns.npz")


def read_level_patterns(output_dir: str) -> tuple[tuple[str, ...], dict[bytes, int], dict[bytes, int]]:
    """A scored run's EM input (``DIR/scoring/level_patterns.npz``): (fields, histogram of the
    rank-1 pairs, histogram of all candidate pairs), each ``{int8 pattern bytes: pairs}`` as
    ``fellegi_sunter`` takes them, to refit or inspect the model offline."""
    import io

    data = np.load(io.BytesIO(read_bytes(level_patterns_path(output_dir))))
    keys = [row.tobytes() for row in data["patterns"]]
    everything = dict(zip(keys, (int(n) for n in data["counts"]), strict=True))
    rank1 = {k: int(n) for k, n in zip(keys, data["rank1_counts"], strict=True) if n}
    return tuple(str(f) for f in data["fields"]), rank1, everything
