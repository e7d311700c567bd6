"""The gate before the index build: too many rejected records (or bad files, or an empty corpus, or
shards too large for a worker) stop the run before hours go into building indexes.

:class:`GateIndexBuild` weighs the dead letters of the stages before the build (read, validate,
embed, dims check, placement) against the rows read, once, and gives a singleton
:class:`GateVerdict`. It does not raise: a failed verdict makes the build skip every shard, the dead
letters are still written, and ``WriteManifest`` fails the run after writing the manifest that says
why. It does not count the dead letters of later stages (the manifest weighs all of them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam

from transforms.common.dead_letters import is_bad_file, rows_rejected
from transforms.placement.sizing import ShardSizing
from transforms.run.manifest import bad_files_verdict, bad_record_verdict

__all__ = ["GateIndexBuild", "GateResult", "GateVerdict"]

_LOGGER = logging.getLogger(__name__)


class GateVerdict(NamedTuple):
    """Whether the run may build its indexes; ``message`` names the first reason it may not."""

    ok: bool
    message: str
    rows_read: int
    rejected: int


class GateResult(NamedTuple):
    verdict: beam.PCollection  # singleton GateVerdict
    bad_files: beam.PCollection  # path of each file that could not be read (repeats possible)


class _GateFn(beam.DoFn):
    def __init__(self, max_ratio: float, max_bad_files: int = 0):
        self._max_ratio = max_ratio
        self._max_bad_files = max_bad_files

    def process(self, _: Any, rows_read: list[int], dead: int, candidates: int,
                sizing: ShardSizing, bad_files: Sequence[str] = (),
                queries: int | None = None) -> Iterator[GateVerdict]:
        read = sum(rows_read)
        ok, message = bad_files_verdict(sorted(set(bad_files)), self._max_bad_files)
        if ok:
            ok, message = bad_record_verdict(read, dead, self._max_ratio)
        if ok and candidates == 0:
            ok, message = False, "no valid candidate records: nothing to match against"
        if ok and queries == 0:
            ok, message = False, "no valid query records: nothing to match"
        if ok and not sizing.ok:
            ok, message = False, sizing.message
        if ok:
            _LOGGER.info("validated: %d records read, %d rejected so far", read, dead)
        else:
            _LOGGER.error("stopping before the index build: %s", message)
        yield GateVerdict(ok=ok, message=message, rows_read=read, rejected=dead)


class GateIndexBuild(beam.PTransform):
    """PBegin -> GateResult: the verdict on the records seen before the build, and the bad files.

    Args:
        dead_letters: the DeadLetter PCollections of the stages before the build.
        rows_read: singleton row counts, one per corpus read.
        num_candidates: singleton count of valid candidates.
        num_queries: singleton count of valid queries (link mode; dedup has only candidates).
        sizing: singleton ShardSizing of the candidates.
        max_bad_record_ratio, max_bad_files: the run's limits (see ``transforms.run.manifest``).
    """

    def __init__(self, *, dead_letters: Sequence[beam.PCollection], rows_read: Sequence[beam.PCollection],
                 num_candidates: beam.PCollection, num_queries: beam.PCollection | None,
                 sizing: beam.PCollection, max_bad_record_ratio: float, max_bad_files: int):
        super().__init__()
        if not dead_letters or not rows_read:
            raise ValueError("the gate needs the dead letters and row counts of at least one read")
        self._dead = tuple(dead_letters)
        self._rows_read = tuple(rows_read)
        self._num_candidates = num_candidates
        self._num_queries = num_queries
        self._sizing = sizing
        self._fn = _GateFn(max_bad_record_ratio, max_bad_files)

    def expand(self, pbegin):
        early = self._dead | "FlattenEarlyDeadLetters" >> beam.Flatten()
        # A file fault weighs the rows it lost; one whose row count is unknown is a bad file.
        rejected = (early | "EarlyRowsRejected" >> beam.Map(rows_rejected)
                    | "CountEarlyDeadLetters" >> beam.CombineGlobally(sum))
        bad_files = (early | "BadFiles" >> beam.Filter(is_bad_file)
                     | "BadFilePaths" >> beam.Map(lambda letter: letter.source))
        queries = ({"queries": beam.pvalue.AsSingleton(self._num_queries)}
                   if self._num_queries is not None else {})
        rows_read = self._rows_read | "FlattenRowsRead" >> beam.Flatten()
        verdict = (pbegin
                   | "GateOnce" >> beam.Create([None])
                   | "CheckBadRecords" >> beam.ParDo(
                       self._fn, bad_files=beam.pvalue.AsList(bad_files), **queries,
                       rows_read=beam.pvalue.AsList(rows_read),
                       dead=beam.pvalue.AsSingleton(rejected),
                       candidates=beam.pvalue.AsSingleton(self._num_candidates),
                       sizing=beam.pvalue.AsSingleton(self._sizing)))
        return GateResult(verdict=verdict, bad_files=bad_files)
