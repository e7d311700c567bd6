"""Exact-duplicate short-circuit: identical records enter the index once.

Candidates whose prepared vectors are byte-identical (after preprocessing and embedding, so two
records with the same normalised content) are placed in the same shard (placement is a function of
the content: a content hash, or the nearest routing centroid and a content hash), so the shard's
assembly collapses them with ``collapse_identical`` before the index is built: no extra shuffle.
The smallest id of each group is its representative and the only member indexed; the others become
aliases. After the search, :class:`ExpandAliases` puts the aliases back:

* link mode: a query matched to a representative is matched to each of its aliases too, at the same
  distance, and the query's list is re-cut to the top K (ties broken by id), so the output equals a
  search over the whole corpus;
* dedup mode: the members of a group are reported as pairs with each other at the distance of
  identical vectors (0, or ``-|v|^2`` under ``dot``; every pair
  of a group of up to ``_MAX_GROUP_PAIRS_SIZE`` records; a larger group, often empty or placeholder
  records, only as a star around its representative, so it cannot emit m(m-1)/2 pairs), and every
  pair found for a representative is repeated for each of its aliases (their neighbours are the same).

The alias map travels as a side input: its size is the number of duplicate records, not the corpus.
Its elements are :class:`AliasGroup` (representative, aliases, the vectors' squared norm).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import apache_beam as beam
import numpy as np

from transforms.common.flags import DEFAULTS
from transforms.common.schema import PairBatch, VectorBatch
from transforms.common.sharding import content_hash64, id_sort_keys, str_array

__all__ = ["AliasGroup", "ExpandAliases", "collapse_identical", "identical_distance", "expand_link_pairs",
           "expand_dedup_pairs", "WriteAliases", "ReadAliases", "aliases_glob"]

# Dedup mode: groups up to this size get all their pairs; larger ones a star.
_MAX_GROUP_PAIRS_SIZE = 50


class AliasGroup(NamedTuple):
    """Records whose vectors are identical: the one indexed (smallest id), the others, and the
    vectors' squared L2 norm (what a ``dot`` distance between two of them is, negated)."""

    representative: str
    aliases: np.ndarray
    sq_norm: float = 0.0


def identical_distance(distance: str, sq_norm: float) -> float:
    """The distance between two records with identical vectors: ``-|v|^2`` under dot, else 0."""
    return -float(sq_norm) if distance == "dot" else 0.0


def collapse_identical(batch: VectorBatch) -> tuple[VectorBatch, list[AliasGroup]]:
    """One representative (the smallest id) per distinct row content, and the alias groups.

    Returns the representatives sorted by id, and an :class:`AliasGroup` for every group with
    aliases. Rows are grouped by ``content_hash64`` and equal bytes are confirmed, so a 64-bit
    hash collision never merges two different records.
    """
    if not len(batch):
        return batch, []
    hashes = content_hash64(batch.vectors)
    by_hash = np.sort(hashes)
    if not (by_hash[1:] == by_hash[:-1]).any():  # no two rows alike: the common case, one id sort
        by_id = np.argsort(id_sort_keys(batch.ids)[0], kind="stable")
        return VectorBatch(batch.ids[by_id], batch.vectors[by_id], batch.origins[by_id]), []
    order = np.lexsort((id_sort_keys(batch.ids)[0], hashes))
    hashes = hashes[order]
    vectors = batch.vectors[order]
    same = np.zeros(len(hashes), dtype=bool)
    same[1:] = (hashes[1:] == hashes[:-1]) & np.all(vectors[1:] == vectors[:-1], axis=1)
    if not same.any():
        by_id = np.argsort(id_sort_keys(batch.ids)[0], kind="stable")
        return VectorBatch(batch.ids[by_id], batch.vectors[by_id], batch.origins[by_id]), []
    ids, origins = batch.ids[order], batch.origins[order]
    keep = ~same
    group = np.cumsum(keep) - 1
    reps = ids[keep]
    rep_vectors = vectors[keep]
    sq_norms = np.einsum("ij,ij->i", rep_vectors.astype(np.float64), rep_vectors.astype(np.float64))
    aliases = [AliasGroup(reps[g], ids[same & (group == g)], float(sq_norms[g]))
               for g in np.unique(group[same])]
    by_id = np.argsort(id_sort_keys(reps)[0], kind="stable")
    kept = VectorBatch(reps[by_id], rep_vectors[by_id], origins[keep][by_id])
    return kept, aliases


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
    q = np.concatenate([np.asarray(pairs.query_ids, dtype=object), np.array(extra_q, dtype=object)])
    c = np.concatenate([np.asarray(pairs.candidate_ids, dtype=object), np.array(extra_c, dtype=object)])
    d = np.concatenate([pairs.distances, np.array(extra_d, dtype=np.float64)])
    q_key, c_key = id_sort_keys(q), id_sort_keys(c)
    order = np.lexsort((c_key[0], d, q_key[0]))
    q, c, d, qk = q[order], c[order], d[order], q_key[0][order]
    first = np.ones(len(q), dtype=bool)
    first[1:] = qk[1:] != qk[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(len(q)), 0))
    rank = np.arange(len(q)) - start + 1
    keep = rank <= top_k
    return PairBatch(str_array(q[keep]), str_array(c[keep]), rank[keep].astype(np.int64), d[keep])


class _ExpandFn(beam.DoFn):
    def __init__(self, top_k: int):
        self._top_k = top_k

    def process(self, pairs: PairBatch, aliases: dict[str, np.ndarray]) -> Iterator[PairBatch]:
        yield expand_link_pairs(pairs, aliases, self._top_k)


def _group_pairs(element: AliasGroup, distance: str) -> PairBatch:
    rep, members, sq_norm = element
    ids = sorted([str(rep)] + [str(m) for m in members])
    if len(ids) <= _MAX_GROUP_PAIRS_SIZE:
        pairs = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]]
    else:
        pairs = [(ids[0], b) for b in ids[1:]]
    q = np.array([a for a, _ in pairs], dtype=object)
    c = np.array([b for _, b in pairs], dtype=object)
    return PairBatch(q, c, np.ones(len(pairs), dtype=np.int64),
                     np.full(len(pairs), identical_distance(distance, sq_norm)))


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
        aliases: PCollection of :class:`AliasGroup` from the candidates' placement.
        mode: 'link' or 'dedup'.
        top_k: the job's K (link mode re-cuts each query's list to it).
        distance: the job's --distance (the distance of two identical vectors, dedup mode).
    """

    def __init__(self, *, aliases, mode: str, top_k: int, distance: str = DEFAULTS["distance"]):
        super().__init__()
        if mode not in ("link", "dedup"):
            raise ValueError(f"mode must be 'link' or 'dedup', got {mode!r}")
        self._aliases = aliases
        self._mode = mode
        self._top_k = top_k
        self._distance = distance

    def expand(self, pairs):
        by_rep = beam.pvalue.AsDict(self._aliases | "ByRepresentative" >> beam.Map(lambda g: (g[0], g[1])))
        if self._mode == "link":
            return pairs | "ExpandAliases" >> beam.ParDo(_ExpandFn(self._top_k), aliases=by_rep)
        expanded = pairs | "ExpandAliases" >> beam.ParDo(_ExpandDedupFn(), aliases=by_rep)
        within = self._aliases | "DuplicatePairs" >> beam.Map(_group_pairs, self._distance)
        return (expanded, within) | "WithDuplicatePairs" >> beam.Flatten()


# ------------------------------------------------------------------------------------------------
# Keeping the alias map with an index (--index_dir reuse)

_ALIASES_PREFIX = "aliases/aliases"
_ALIASES_SUFFIX = ".jsonl"


def aliases_glob(index_root: str) -> str:
    """Where :class:`WriteAliases` puts an index's alias map (one JSON object a line)."""
    return f"{index_root.rstrip('/')}/{_ALIASES_PREFIX}-*{_ALIASES_SUFFIX}"


def _alias_line(element: AliasGroup) -> str:
    import json

    rep, members, sq_norm = element
    return json.dumps({"representative": str(rep), "aliases": sorted(str(m) for m in members),
                       "sq_norm": float(sq_norm)})


def _parse_alias_line(line: str) -> AliasGroup:
    import json

    row = json.loads(line)
    # An index kept before the norm was recorded: 0 (what its run reported for every distance).
    return AliasGroup(row["representative"], np.array(row["aliases"], dtype=object),
                      float(row.get("sq_norm", 0.0)))


class WriteAliases(beam.PTransform):
    """(representative id, alias ids) -> ``<index_root>/aliases/aliases-SSSSS-of-NNNNN.jsonl``.

    The collapsed duplicates are not in the index, so a run that reuses it (``--index_dir``) needs
    this map to match queries to them as a fresh run would. An empty map still writes one empty file.
    """

    def __init__(self, index_root: str):
        super().__init__()
        self._prefix = f"{index_root.rstrip('/')}/{_ALIASES_PREFIX}"

    def expand(self, aliases):
        return (aliases
                | "ToJson" >> beam.Map(_alias_line)
                | "Write" >> beam.io.WriteToText(self._prefix, file_name_suffix=_ALIASES_SUFFIX,
                                                 shard_name_template="-SSSSS-of-NNNNN"))


class ReadAliases(beam.PTransform):
    """The alias map a kept index was written with (see :class:`WriteAliases`)."""

    def __init__(self, glob: str):
        super().__init__()
        self._glob = glob

    def expand(self, pbegin):
        return (pbegin
                | "Read" >> beam.io.ReadFromText(self._glob)
                | "Parse" >> beam.Map(_parse_alias_line))
