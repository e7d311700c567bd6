"""WriteMatches and WriteDeadLetters: the job's match and dead-letter files, a fixed number of shards
with deterministic bytes (rows sorted, ties broken by id).

Writing (:class:`WriteMatches`, :class:`WriteDeadLetters`, :func:`write_match_shard`): rows are
routed to a fixed number of shards by a stable hash, sorted, encoded with fixed settings and written
through a temporary name plus rename, so the same rows always give the same bytes and readers never
see half a file. Match formats: parquet (query_id string, candidate_id string, rank int64, distance
float64), jsonl (keys in ``MATCH_COLUMNS`` order, shortest round-trip float text), csv (header line,
same float text) and tfrecord (one ``tf.Example`` per pair: bytes ``query_id`` / ``candidate_id``,
int64 ``rank``, float ``distance`` -- float32, lossy, what TF input pipelines expect -- plus bytes
``distance_exact``, the float64 as round-trip text, which
:func:`transforms.io.results.read_matches` prefers).

What it does not do: read them back (:mod:`transforms.io.results` does).
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.transforms import combiners

from transforms.common import metrics, progress
from transforms.common.artifacts import join_path, write_bytes
from transforms.common.dead_letters import DeadLetter, rows_rejected
from transforms.common.schema import OUTPUT_FORMATS, PairBatch, ScoredPairBatch
from transforms.common.sharding import assign_shards, id_sort_keys, split_by_shard, stable_hash64, str_array
from transforms.io.csv import encode_csv
from transforms.io.jsonl import encode_jsonl
from transforms.io.parquet import encode_parquet
from transforms.io.tfrecord import encode_tfrecord

__all__ = ["WriteMatches", "WriteDeadLetters", "write_match_shard", "drop_duplicate_pairs", "rank_by_weight",
           "match_shard_path", "dead_letter_shard_path", "MATCH_EXTENSIONS"]



MATCH_EXTENSIONS = {"parquet": "parquet", "jsonl": "jsonl", "csv": "csv", "tfrecord": "tfrecord"}


def match_shard_path(output_dir: str, output_format: str, shard: int, num_shards: int) -> str:
    """``DIR/matches/matches-SSSSS-of-NNNNN.<ext>``."""
    name = f"matches-{shard:05d}-of-{num_shards:05d}.{MATCH_EXTENSIONS[output_format]}"
    return join_path(output_dir, "matches", name)


def dead_letter_shard_path(output_dir: str, shard: int, num_shards: int) -> str:
    """``DIR/dead_letters/dead_letters-SSSSS-of-NNNNN.jsonl``."""
    return join_path(output_dir, "dead_letters", f"dead_letters-{shard:05d}-of-{num_shards:05d}.jsonl")


def _empty_pairs() -> PairBatch:
    return PairBatch(query_ids=np.empty(0, dtype=object), candidate_ids=np.empty(0, dtype=object),
                     ranks=np.empty(0, dtype=np.int64), distances=np.empty(0, dtype=np.float64))


def _as_columns(pairs: PairBatch | ScoredPairBatch) -> PairBatch | ScoredPairBatch:
    """Flat columns of the right dtypes; a ScoredPairBatch keeps its score columns."""
    head = (np.asarray(pairs.query_ids, dtype=object).reshape(-1),
            np.asarray(pairs.candidate_ids, dtype=object).reshape(-1),
            np.asarray(pairs.ranks, dtype=np.int64).reshape(-1),
            np.asarray(pairs.distances, dtype=np.float64).reshape(-1))
    tail = tuple(np.asarray(c, dtype=np.float64).reshape(-1) for c in pairs[len(PairBatch._fields):])
    return type(pairs)(*head, *tail)


def _concat_pairs(batches: list[PairBatch | ScoredPairBatch]) -> PairBatch | ScoredPairBatch:
    if not batches:
        return _empty_pairs()
    kinds = {type(b) for b in batches}
    if len(kinds) > 1:
        names = sorted(k.__name__ for k in kinds)
        raise ValueError(f"cannot write scored and unscored pairs together: {names}")
    columns = [_as_columns(b) for b in batches]
    cls = type(columns[0])
    return cls(*(np.concatenate([c[i] for c in columns]) for i in range(len(cls._fields))))


def _sorted_pairs(pairs: PairBatch) -> PairBatch:
    """Sorts rows by (query_id, rank, candidate_id, distance): a total order, so bytes are stable."""
    pairs = _as_columns(pairs)
    if len(pairs) == 0:
        return pairs
    # Ids sort by int keys (id_sort_keys), never as fixed-width unicode copies whose width is the
    # longest id's.
    (query_key,) = id_sort_keys(pairs.query_ids)
    order = np.lexsort((pairs.ranks, query_key))
    q, r = query_key[order], pairs.ranks[order]
    if ((q[1:] == q[:-1]) & (r[1:] == r[:-1])).any():  # (query, rank) repeats: the full order
        (candidate_key,) = id_sort_keys(pairs.candidate_ids)
        order = np.lexsort((pairs.distances, candidate_key, pairs.ranks, query_key))
    return type(pairs)(str_array(pairs.query_ids[order]), str_array(pairs.candidate_ids[order]),
                       *(column[order] for column in pairs[2:]))


def rank_by_weight(pairs: ScoredPairBatch) -> ScoredPairBatch:
    """Re-ranks each query's rows by match weight (highest first), ties by distance, then candidate id.

    All rows of a query must be in ``pairs`` (the match writer holds every row of its queries).
    """
    pairs = _as_columns(pairs)
    if len(pairs) == 0:
        return pairs
    query_key, candidate_key = id_sort_keys(pairs.query_ids, pairs.candidate_ids)
    order = np.lexsort((candidate_key, pairs.distances, -pairs.match_weights, query_key))
    q = query_key[order]
    starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
    first_of_row = np.repeat(starts, np.diff(np.r_[starts, len(q)]))
    ranks = np.empty(len(q), dtype=np.int64)
    ranks[order] = np.arange(len(q)) - first_of_row + 1
    return ScoredPairBatch(pairs.query_ids, pairs.candidate_ids, ranks, *pairs[3:])


def drop_duplicate_pairs(pairs: PairBatch) -> PairBatch:
    """Keeps one row per (query_id, candidate_id): the lowest rank, then the smallest distance.

    In dedup mode each pair is canonicalised (smaller id first) before writing, so a pair found from
    both sides appears twice with the same query_id, hence in the same output shard, where this drops
    the second copy. Row order of the result is unspecified (writers sort).
    """
    pairs = _as_columns(pairs)
    if len(pairs) == 0:
        return pairs
    query_key, candidate_key = id_sort_keys(pairs.query_ids, pairs.candidate_ids)
    order = np.lexsort((pairs.distances, pairs.ranks, candidate_key, query_key))
    q, c = query_key[order], candidate_key[order]
    first = np.r_[True, (q[1:] != q[:-1]) | (c[1:] != c[:-1])]
    keep = order[first]
    return type(pairs)(*(column[keep] for column in pairs))


_MATCH_ENCODERS = {"parquet": encode_parquet, "jsonl": encode_jsonl, "csv": encode_csv,
                   "tfrecord": encode_tfrecord}


def write_match_shard(path: str, pairs: PairBatch | ScoredPairBatch, output_format: str) -> int:
    """Writes one match file, sorted and byte-for-byte reproducible, through a temp name and rename.

    Args:
        path: the file to write (any Beam filesystem); parent directories are created as needed.
        pairs: the rows, in any order; empty gives a valid empty file (parquet: schema only, csv:
            header only, jsonl/tfrecord: zero bytes).
        output_format: one of ``OUTPUT_FORMATS``.

    Returns:
        The number of rows written.

    Raises:
        ValueError: unknown ``output_format``.
    """
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    pairs = _sorted_pairs(pairs)
    write_bytes(path, _MATCH_ENCODERS[output_format](pairs))
    return len(pairs)


class _SplitPairsByShardFn(beam.DoFn):
    """PairBatch -> ``(shard, PairBatch)`` for every shard its rows go to (by query id)."""

    def __init__(self, num_shards: int):
        self._num_shards = num_shards

    def process(self, pairs):
        if len(pairs) == 0:
            return
        pairs = _as_columns(pairs)
        shards = assign_shards(pairs.query_ids, self._num_shards)
        for shard, rows in split_by_shard(shards, self._num_shards):
            yield shard, type(pairs)(*(column[rows] for column in pairs))


class _WriteMatchShardFn(beam.DoFn):
    """``(shard, [PairBatch or None, ...])`` -> one match file -> ``(shard, rows_written)``."""

    def __init__(self, output_dir: str, output_format: str, num_shards: int, unique_pairs: bool,
                 rank_by_weight: bool = False, scored: bool = False):
        self._output_dir = output_dir
        self._output_format = output_format
        self._num_shards = num_shards
        self._unique_pairs = unique_pairs
        self._rank_by_weight = rank_by_weight
        self._scored = scored
        self._timer = metrics.StageTimer("write")

    def process(self, element):
        shard, batches = element
        with self._timer:
            pairs = _concat_pairs([b for b in batches if b is not None])
            if self._scored and not isinstance(pairs, ScoredPairBatch):  # an empty shard
                pairs = ScoredPairBatch(*pairs, np.empty(0, np.float64), np.empty(0, np.float64))
            if self._unique_pairs:
                pairs = drop_duplicate_pairs(pairs)
            if self._rank_by_weight and isinstance(pairs, ScoredPairBatch):
                pairs = rank_by_weight(pairs)
            path = match_shard_path(self._output_dir, self._output_format, shard, self._num_shards)
            written = write_match_shard(path, pairs, self._output_format)
        progress.add("written", written)
        yield shard, written


def _placeholder(shard):
    return shard, None


def _check_writer_args(output_dir: str, num_shards: int) -> None:
    if not isinstance(output_dir, str) or not output_dir.strip():
        raise ValueError(f"output_dir must be a non-empty string, got {output_dir!r}")
    if not isinstance(num_shards, int) or isinstance(num_shards, bool) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive int, got {num_shards!r}")


class WriteMatches(beam.PTransform):
    """Writes PairBatches to exactly ``num_shards`` match files, routed by a stable hash of query_id.

    Input: PCollection of PairBatch. Output: PCollection of ``(shard, rows_written)``, one per file.
    Every shard gets a file, empty or not; the bytes depend only on the multiset of rows.
    """

    def __init__(self, *, output_dir: str, output_format: str, num_shards: int,
                 unique_pairs: bool = False, rank_by_weight: bool = False, scored: bool = False):
        """Validates the arguments.

        Args:
            output_dir: the run's output directory; files go to ``DIR/matches/``.
            output_format: one of ``OUTPUT_FORMATS``.
            num_shards: number of match files, >= 1.
            unique_pairs: dedup mode: keep one row per (query_id, candidate_id), see
                :func:`drop_duplicate_pairs` (pairs must already be canonical, smaller id first).
            rank_by_weight: scored pairs (ScoredPairBatch) get their ranks re-assigned per query by
                match weight (:func:`rank_by_weight`); every row of a query meets in one file.
            scored: the pairs are ScoredPairBatches: an empty file gets the score columns too.

        Raises:
            ValueError: an argument is out of range.
        """
        super().__init__()
        _check_writer_args(output_dir, num_shards)
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
        self._output_dir = output_dir.rstrip("/")
        self._output_format = output_format
        self._num_shards = num_shards
        self._unique_pairs = bool(unique_pairs)
        self._rank_by_weight = bool(rank_by_weight)
        self._scored = bool(scored)

    def expand(self, pairs):
        keyed = pairs | "SplitByShard" >> beam.ParDo(_SplitPairsByShardFn(self._num_shards))
        placeholders = (pairs.pipeline
                        | "ListShards" >> beam.Create(list(range(self._num_shards)))
                        | "EmptyShards" >> beam.Map(_placeholder))
        return ((keyed, placeholders)
                | "FlattenWithEmptyShards" >> beam.Flatten()
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShards" >> beam.ParDo(
                    _WriteMatchShardFn(self._output_dir, self._output_format, self._num_shards,
                                       self._unique_pairs, self._rank_by_weight, self._scored)))


def _dead_letter_sort_key(letter: DeadLetter) -> tuple[str, ...]:
    return letter.stage, letter.source, letter.record_id, letter.error, letter.payload


class _KeyDeadLetterFn(beam.DoFn):
    """DeadLetter -> ``(shard, DeadLetter)``, the shard from a stable hash of its JSON text."""

    def __init__(self, num_shards: int):
        self._num_shards = num_shards

    def process(self, letter):
        letter = DeadLetter(*letter)  # a schema-aware coder may hand back a plain row
        shard = int(stable_hash64(np.array([letter.to_json()], dtype=object))[0] % self._num_shards)
        yield shard, letter


class _WriteDeadLetterShardFn(beam.DoFn):
    """``(shard, [DeadLetter or None, ...])`` -> one sorted jsonl file -> ``(shard, count)``."""

    def __init__(self, output_dir: str, num_shards: int):
        self._output_dir = output_dir
        self._num_shards = num_shards

    def process(self, element):
        shard, letters = element
        letters = sorted((DeadLetter(*d) for d in letters if d is not None), key=_dead_letter_sort_key)
        text = "".join(d.to_json() + "\n" for d in letters)
        write_bytes(dead_letter_shard_path(self._output_dir, shard, self._num_shards), text.encode("utf-8"))
        yield shard, len(letters)


def _stage_rows(letter):
    letter = DeadLetter(*letter)
    return letter.stage, rows_rejected(letter)


class WriteDeadLetters(beam.PTransform):
    """Writes dead letters to ``DIR/dead_letters/dead_letters-SSSSS-of-NNNNN.jsonl``, sorted.

    Input: PCollection of DeadLetter. Output: PCollection of one dict ``{stage: rows rejected}``
    (:func:`~transforms.common.dead_letters.rows_rejected`: a file fault counts the rows it lost; ``{}`` when
    there are none), emitted only once every shard file is written. Every shard file is written,
    even empty, so the directory always exists.
    """

    def __init__(self, *, output_dir: str, num_shards: int = 1):
        """Validates the arguments.

        Args:
            output_dir: the run's output directory.
            num_shards: number of dead-letter files, >= 1 (one is plenty while the bad-record ratio
                limit holds).

        Raises:
            ValueError: an argument is out of range.
        """
        super().__init__()
        _check_writer_args(output_dir, num_shards)
        self._output_dir = output_dir.rstrip("/")
        self._num_shards = num_shards

    def expand(self, dead_letters):
        keyed = dead_letters | "KeyByShard" >> beam.ParDo(_KeyDeadLetterFn(self._num_shards))
        placeholders = (dead_letters.pipeline
                        | "ListShards" >> beam.Create(list(range(self._num_shards)))
                        | "EmptyShards" >> beam.Map(_placeholder))
        written = ((keyed, placeholders)
                   | "FlattenWithEmptyShards" >> beam.Flatten()
                   | "GroupByShard" >> beam.GroupByKey()
                   | "WriteShards" >> beam.ParDo(_WriteDeadLetterShardFn(self._output_dir,
                                                                         self._num_shards)))
        # The counts wait for the files (a side input): what consumes them (the manifest, then
        # _SUCCESS on a runner the launcher does not wait for) comes after every file is written.
        return (dead_letters
                | "StageOf" >> beam.Map(_stage_rows)
                | "CountPerStage" >> beam.CombinePerKey(sum)
                | "ToDict" >> combiners.ToDict()
                | "AfterShardsWritten" >> beam.Map(lambda counts, shards: counts,
                                                   shards=beam.pvalue.AsList(written)))
