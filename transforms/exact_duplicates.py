"""Exact-duplicate short-circuit: identical records enter the index once.

Candidates whose prepared vectors are byte-identical (after preprocessing and embedding, so two
records with the same normalised content) are grouped by a content hash before any index is built.
The smallest id of each group is its representative and the only member indexed; the others become
aliases. After the search, :class:`ExpandAliases` puts the aliases back:

* link mode: a query matched to a representative is matched to each of its aliases too, at the same
  distance, and the query's list is re-cut to the top K (ties broken by id), so the output equals a
  search over the whole corpus;
* dedup mode: the members of a group are reported as distance-0 pairs with each other (every pair
  of a group of up to ``_MAX_GROUP_PAIRS_SIZE`` records; a larger group, often empty or placeholder
  records, only as a star around its representative, so it cannot emit m(m-1)/2 pairs), and every
  pair found for a representative is repeated for each of its aliases (their neighbours are the same).

The alias map travels as a side input: its size is the number of duplicate records, not the corpus.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms import metrics
from transforms.schema import PairBatch, VectorBatch
from transforms.shard_records import concat_batches

__all__ = ["CollapseExactDuplicates", "ExpandAliases", "CollapseResult", "content_hashes",
           "expand_link_pairs", "expand_dedup_pairs"]

_LOGGER = logging.getLogger(__name__)
# Content-hash buckets the collapse groups by (a fixed count keeps the graph static).
_BUCKETS = 64
# Dedup mode: groups up to this size get all their pairs; larger ones a star.
_MAX_GROUP_PAIRS_SIZE = 50


class CollapseResult(NamedTuple):
    representatives: beam.PCollection  # VectorBatch: one row per distinct content
    aliases: beam.PCollection  # (representative id, np.ndarray of alias ids), one per group


def content_hashes(vectors: np.ndarray) -> np.ndarray:
    """A 64-bit hash of every row's bytes (float32, C order): equal rows, equal hashes."""
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    return np.array([int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little")
                     for r in rows], dtype=np.uint64)


class _KeyByContentFn(beam.DoFn):
    def process(self, batch: VectorBatch) -> Iterator[tuple[int, tuple[np.ndarray, VectorBatch]]]:
        h = content_hashes(batch.vectors)
        bucket = (h % np.uint64(_BUCKETS)).astype(np.int64)
        for b in np.unique(bucket):
            rows = np.flatnonzero(bucket == b)
            yield int(b), (h[rows], VectorBatch(batch.ids[rows], batch.vectors[rows], batch.origins[rows]))


class _CollapseFn(beam.DoFn):
    def __init__(self):
        self._aliases = Metrics.counter(metrics.NAMESPACE, "exact_duplicate_aliases")

    def process(self, element: tuple[int, Iterable[tuple[np.ndarray, VectorBatch]]]):
        _, parts = element
        parts = list(parts)
        hashes = np.concatenate([h for h, _ in parts])
        whole = concat_batches([b for _, b in parts])
        if whole is None:
            return
        order = np.lexsort((whole.ids.astype(str), hashes))
        hashes, whole = hashes[order], VectorBatch(whole.ids[order], whole.vectors[order],
                                                   whole.origins[order])
        # Within equal hashes, confirm equal bytes (a 64-bit collision must not merge records).
        same = np.zeros(len(hashes), dtype=bool)
        same[1:] = (hashes[1:] == hashes[:-1]) & np.all(whole.vectors[1:] == whole.vectors[:-1], axis=1)
        keep = ~same
        yield VectorBatch(whole.ids[keep], whole.vectors[keep], whole.origins[keep])
        group = np.cumsum(keep) - 1
        reps = whole.ids[keep]
        for g in np.unique(group[same]):
            members = whole.ids[same & (group == g)]
            self._aliases.inc(len(members))
            yield beam.pvalue.TaggedOutput("aliases", (reps[g], members))


class CollapseExactDuplicates(beam.PTransform):
    """Deduplicated-id VectorBatches -> one representative per identical content + the alias map."""

    def expand(self, batches):
        out = (batches
               | "KeyByContent" >> beam.ParDo(_KeyByContentFn())
               | "GroupByContent" >> beam.GroupByKey()
               | "Collapse" >> beam.ParDo(_CollapseFn()).with_outputs("aliases", main="representatives"))
        return CollapseResult(representatives=out.representatives, aliases=out.aliases)


def expand_link_pairs(pairs: PairBatch, aliases: dict[str, np.ndarray], top_k: int) -> PairBatch:
    """Adds every alias of a matched representative at the same distance; re-cuts each query's
    list to ``top_k`` by (distance, candidate id) and renumbers ranks."""
    if not aliases or not len(pairs):
        return pairs
    extra_q, extra_c, extra_d = [], [], []
    for q, c, d in zip(pairs.query_ids, pairs.candidate_ids, pairs.distances, strict=True):
        members = aliases.get(c)
        if members is not None:
            extra_q += [q] * len(members)
            extra_c += list(members)
            extra_d += [d] * len(members)
    if not extra_q:
        return pairs
    q = np.concatenate([pairs.query_ids.astype(str), np.array(extra_q, dtype=str)])
    c = np.concatenate([pairs.candidate_ids.astype(str), np.array(extra_c, dtype=str)])
    d = np.concatenate([pairs.distances, np.array(extra_d, dtype=np.float64)])
    order = np.lexsort((c, d, q))
    q, c, d = q[order], c[order], d[order]
    first = np.ones(len(q), dtype=bool)
    first[1:] = q[1:] != q[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(len(q)), 0))
    rank = np.arange(len(q)) - start + 1
    keep = rank <= top_k
    return PairBatch(q[keep].astype(object), c[keep].astype(object), rank[keep].astype(np.int64),
                     d[keep])


class _ExpandFn(beam.DoFn):
    def __init__(self, top_k: int):
        self._top_k = top_k

    def process(self, pairs: PairBatch, aliases: dict[str, np.ndarray]) -> Iterator[PairBatch]:
        yield expand_link_pairs(pairs, aliases, self._top_k)


def _group_pairs(element: tuple[str, np.ndarray]) -> PairBatch:
    rep, members = element
    ids = sorted([str(rep)] + [str(m) for m in members])
    if len(ids) <= _MAX_GROUP_PAIRS_SIZE:
        pairs = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]]
    else:
        pairs = [(ids[0], b) for b in ids[1:]]
    q = np.array([a for a, _ in pairs], dtype=object)
    c = np.array([b for _, b in pairs], dtype=object)
    return PairBatch(q, c, np.ones(len(pairs), dtype=np.int64), np.zeros(len(pairs)))


def expand_dedup_pairs(pairs: PairBatch, aliases: dict[str, np.ndarray]) -> PairBatch:
    """Repeats every pair of a representative for each of its aliases (canonical: smaller id
    first). Duplicates this creates are removed where pairs are written (WriteMatches)."""
    if not aliases or not len(pairs):
        return pairs
    q, c, r, d = [], [], [], []
    for a, b, rank, dist in zip(pairs.query_ids, pairs.candidate_ids, pairs.ranks, pairs.distances,
                                strict=True):
        for x in [a, *aliases.get(a, ())]:
            for y in [b, *aliases.get(b, ())]:
                if x != y:
                    q.append(min(x, y))
                    c.append(max(x, y))
                    r.append(rank)
                    d.append(dist)
    return PairBatch(np.array(q, dtype=object), np.array(c, dtype=object),
                     np.array(r, dtype=np.int64), np.array(d, dtype=np.float64))


class _ExpandDedupFn(beam.DoFn):
    def process(self, pairs: PairBatch, aliases: dict[str, np.ndarray]) -> Iterator[PairBatch]:
        yield expand_dedup_pairs(pairs, aliases)


class ExpandAliases(beam.PTransform):
    """Puts collapsed exact duplicates back into the match pairs (see the module docstring).

    Args:
        aliases: PCollection of (representative id, alias ids) from CollapseExactDuplicates.
        mode: 'link' or 'dedup'.
        top_k: the job's K (link mode re-cuts each query's list to it).
    """

    def __init__(self, *, aliases, mode: str, top_k: int):
        super().__init__()
        if mode not in ("link", "dedup"):
            raise ValueError(f"mode must be 'link' or 'dedup', got {mode!r}")
        self._aliases = aliases
        self._mode = mode
        self._top_k = top_k

    def expand(self, pairs):
        if self._mode == "link":
            return pairs | "ExpandAliases" >> beam.ParDo(
                _ExpandFn(self._top_k), aliases=beam.pvalue.AsDict(self._aliases))
        expanded = pairs | "ExpandAliases" >> beam.ParDo(
            _ExpandDedupFn(), aliases=beam.pvalue.AsDict(self._aliases))
        within = self._aliases | "DuplicatePairs" >> beam.Map(_group_pairs)
        return (expanded, within) | "WithDuplicatePairs" >> beam.Flatten()
