"""Appending to a kept index (``--index_dir``): find which new ids the kept shards hold already, merge
new rows into the kept shards' rows, and prefer a rebuilt shard to its kept one.

What it does not do: build indexes (:mod:`transforms.index.build`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np

from transforms.common.schema import ShardIndexInfo, VectorBatch
from transforms.common.sharding import id_sort_keys
from transforms.index.shard_files import read_shard_ids

__all__ = ["MergeResult", "FindKeptIds", "MergeWithKeptShards", "CombineWithKeptShards"]

_LOGGER = logging.getLogger(__name__)


class MergeResult(NamedTuple):
    shards: beam.PCollection  # (shard, VectorBatch): kept rows + new rows, sorted by id
    dead_letters: beam.PCollection


class _MergeWithKeptFn(beam.DoFn):
    def __init__(self, kept_paths: dict[int, str]):
        self._kept = kept_paths

    def process(self, element: tuple[int, VectorBatch]):
        from transforms.common.dead_letters import DEAD_LETTER_TAG, make_dead_letter
        from transforms.index.shard_cache import load_shard
        from transforms.placement.place import concat_batches

        shard, new = element
        path = self._kept.get(shard)
        if path is None:  # a shard the kept plan had room for but no vectors yet
            yield shard, new
            return
        kept = load_shard(path)
        clash = np.isin(np.asarray(new.ids, dtype=object), np.asarray(kept.ids, dtype=object))
        for i in np.flatnonzero(clash):
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, make_dead_letter(
                "validate", new.ids[i], f"id is already in the kept index ({path}); --append adds "
                "new ids only", new.vectors[i], new.origins[i]))
        keep = ~clash
        old = VectorBatch(kept.ids, np.asarray(kept.index.vectors, dtype=np.float32),
                          np.array([f"{path}#{i}" for i in range(len(kept.ids))], dtype=object))
        whole = concat_batches([old, VectorBatch(new.ids[keep], new.vectors[keep], new.origins[keep])])
        order = np.argsort(id_sort_keys(whole.ids)[0], kind="stable")
        _LOGGER.info("append: shard %d gets %d new vectors (%d kept)", shard, int(keep.sum()), len(old))
        yield shard, VectorBatch(whole.ids[order], whole.vectors[order], whole.origins[order])


def _sorted_unique_ids(id_arrays: list[np.ndarray]) -> np.ndarray:
    return (np.unique(np.concatenate([np.asarray(a, dtype=object) for a in id_arrays]))
            if id_arrays else np.empty(0, dtype=object))


def _ids_held(shard_path: tuple[int, str], new_ids: np.ndarray) -> Iterator[tuple[str, str]]:
    """(id, shard path) for the new ids that kept shard holds."""
    _, path = shard_path
    if len(new_ids):
        for rid in new_ids[np.isin(new_ids, read_shard_ids(path))]:
            yield str(rid), path


def _ids_aliased(_: Any, alias_ids: np.ndarray, new_ids: np.ndarray,
                 where: str) -> Iterator[tuple[str, str]]:
    for rid in new_ids[np.isin(new_ids, alias_ids)] if len(alias_ids) and len(new_ids) else ():
        yield str(rid), where


class FindKeptIds(beam.PTransform):
    """--append: new candidate batches -> (id, where in the kept index) for ids it already holds.

    Checks every kept shard's id map (and the ids of its collapsed exact duplicates), whichever
    shard a new record would land in: the new ids, sorted and unique once, travel as a side input
    (an append's new records are the small side); the kept ids are read shard by shard where they
    are.

    Args:
        kept_shards: the kept index's ShardIndexInfo list.
        aliases: optional PCollection of the kept AliasGroups (representative id, alias ids, norm).
        aliases_where: how dead letters name the kept alias map.
    """

    def __init__(self, *, kept_shards: list[ShardIndexInfo], aliases: beam.PCollection | None = None,
                 aliases_where: str = "the kept index's exact-duplicate aliases"):
        super().__init__()
        self._paths = sorted((s.shard, s.path) for s in kept_shards)
        self._aliases = aliases
        self._aliases_where = aliases_where

    def expand(self, batches):
        new_ids = beam.pvalue.AsSingleton(
            batches | "NewIds" >> beam.Map(lambda b: np.array([str(v) for v in b.ids], dtype=object))
            | "SortNewIds" >> beam.combiners.ToList() | "UniqueNewIds" >> beam.Map(_sorted_unique_ids))
        found = (batches.pipeline | "KeptShardPaths" >> beam.Create(self._paths)
                 | "IdsInKeptShards" >> beam.FlatMap(_ids_held, new_ids=new_ids))
        if self._aliases is None:
            return found
        alias_ids = (self._aliases | "AliasIds" >> beam.Map(
            lambda kv: np.array([str(v) for v in kv[1]], dtype=object))
                     | "AllAliasIds" >> beam.combiners.ToList()
                     | "UniqueAliasIds" >> beam.Map(_sorted_unique_ids))
        in_aliases = (batches.pipeline | "Once" >> beam.Create([None])
                      | "IdsInKeptAliases" >> beam.FlatMap(
                          _ids_aliased, alias_ids=beam.pvalue.AsSingleton(alias_ids),
                          new_ids=new_ids, where=self._aliases_where))
        return (found, in_aliases) | "FlattenKeptIds" >> beam.Flatten()


class MergeWithKeptShards(beam.PTransform):
    """--append: (shard, new VectorBatch) -> (shard, kept + new rows) for the shards to rebuild.

    New ids already in the kept shard go to dead letters (an append adds records; it does not
    update them).
    """

    def __init__(self, *, kept_shards: list[ShardIndexInfo]):
        super().__init__()
        self._fn = _MergeWithKeptFn({s.shard: s.path for s in kept_shards})

    def expand(self, placed):
        from transforms.common.dead_letters import DEAD_LETTER_TAG

        out = placed | "MergeKept" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER_TAG, main="shards")
        return MergeResult(shards=out.shards, dead_letters=out[DEAD_LETTER_TAG])


def _prefer_rebuilt(element: tuple[int, Any]) -> ShardIndexInfo:
    shard, infos = element
    infos = list(infos)
    rebuilt = [i for tag, i in infos if tag == "rebuilt"]
    return (rebuilt or [i for _, i in infos])[0]


class CombineWithKeptShards(beam.PTransform):
    """--append: the rebuilt shards' infos plus the kept shards that were not touched."""

    def __init__(self, *, kept_shards: list[ShardIndexInfo]):
        super().__init__()
        self._kept = kept_shards

    def expand(self, rebuilt):
        kept = (rebuilt.pipeline | "KeptInfos" >> beam.Create(self._kept)
                | "TagKept" >> beam.Map(lambda i: (i.shard, ("kept", i))))
        new = rebuilt | "TagRebuilt" >> beam.Map(lambda i: (i.shard, ("rebuilt", i)))
        return ((kept, new) | "FlattenInfos" >> beam.Flatten()
                | "GroupByShard" >> beam.GroupByKey()
                | "PreferRebuilt" >> beam.Map(_prefer_rebuilt))
