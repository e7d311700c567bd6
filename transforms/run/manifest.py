"""The run manifest: what ran, on what, with which settings, and what came out.

The launcher first writes a manifest of the static facts with ``exit_state`` ``running``
(:func:`transforms.common.run_dir.claim_output_dir`). ``WriteManifest`` then writes ``DIR/manifest.json``
from inside the pipeline (so a Dataflow run, whose launcher returns at once, still gets one) with the
flags, stack versions, counts, index params per shard and ``exit_state`` ``pipeline_completed`` or
``failed``. A local run's launcher then adds wall times per stage from Beam metrics and the final
exit state with :func:`update_manifest`; ``DIR/_SUCCESS`` comes after that (see transforms.common.run_dir).

It also enforces ``--max_bad_record_ratio`` over all dead letters of the run, after writing the
manifest, so a failed run still explains itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import apache_beam as beam

from transforms.io.results import manifest_path, read_manifest

__all__ = ["WriteManifest", "stack_versions", "update_manifest", "BadRecordRatioError",
           "RecallBelowMinimumError", "bad_record_verdict", "bad_files_verdict"]

_LOGGER = logging.getLogger(__name__)
_STACK = ("apache-beam", "tensorflow", "tensorflow-transform", "tfx-bsl", "scann", "numpy", "pyarrow",
          "pandas", "corpus-matcher")


class BadRecordRatioError(RuntimeError):
    """Too many records were rejected for the run's result to be trusted."""


class RecallBelowMinimumError(RuntimeError):
    """The audited recall of the relevant neighbours is below --min_recall."""


def stack_versions() -> dict[str, str]:
    out = {}
    for name in _STACK:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def bad_record_verdict(rows_read: int, dead_letters: int, max_ratio: float) -> tuple[bool, str]:
    """(ok, message) for the bad-record limit. An empty input is never ok."""
    if rows_read <= 0:
        return False, "no records were read (empty input)"
    ratio = dead_letters / rows_read
    msg = (f"{dead_letters} of {rows_read} records were rejected (ratio {ratio:.4f}, "
           f"--max_bad_record_ratio {max_ratio}); see dead_letters/")
    return ratio <= max_ratio, msg


def bad_files_verdict(paths: list[str], max_bad_files: int) -> tuple[bool, str]:
    """(ok, message) for files that could not be read to their end and hold an unknown number of
    rows (``DeadLetter.rows == 0``): more than ``max_bad_files`` of them fail the run, naming them."""
    if len(paths) <= max_bad_files:
        return True, ""
    shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
    return False, (f"{len(paths)} input file(s) could not be read and hold an unknown number of rows "
                   f"(--max_bad_files {max_bad_files}): {shown}; see dead_letters/")


def update_manifest(output_dir: str, **fields: Any) -> dict[str, Any]:
    """Merges ``fields`` into an existing manifest (or creates one) and rewrites it."""
    from transforms.common.artifacts import write_text

    try:
        manifest = read_manifest(output_dir)
    except (OSError, ValueError):
        manifest = {}
    manifest.update(fields)
    write_text(manifest_path(output_dir), json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return manifest


class _WriteManifestFn(beam.DoFn):
    def __init__(self, output_dir: str, static: dict[str, Any], max_bad_record_ratio: float,
                 min_recall: float | None):
        self._output_dir = output_dir
        self._static = static
        self._max_ratio = max_bad_record_ratio
        self._min_recall = min_recall

    def process(self, _: Any, counts: dict[str, Any], dead_letters: dict[str, int],  # noqa: PLR0913 - one side input per fact
                shards: list, gate: Any = None, audit: dict | None = None,
                tuning: dict | None = None, plan: Any = None,
                clusters: dict | None = None,
                probe_tuning: dict | None = None,
                scoring: dict | None = None) -> Iterator[dict[str, Any]]:
        from transforms.common.artifacts import write_text

        rows_read = sum(v for k, v in counts.items() if k.endswith("_read"))
        total_dead = sum(dead_letters.values())
        ok, message = bad_record_verdict(rows_read, total_dead, self._max_ratio)
        if gate is not None and not gate.ok:  # the earlier verdict names the first cause
            ok, message = False, gate.message
        manifest = dict(self._static)
        manifest["counts"] = dict(sorted(counts.items())) | {
            "dead_letters": dict(sorted(dead_letters.items())), "dead_letters_total": total_dead}
        manifest["shards"] = [
            {"shard": s.shard, "path": s.path, "size": s.size, "kind": s.kind, "params": s.params}
            for s in sorted(shards, key=lambda s: s.shard)]
        if audit is not None:
            manifest["audit"] = audit
        if tuning is not None:
            manifest["search_tuning"] = {str(k): v for k, v in sorted(tuning.items())}
        if plan is not None:
            manifest["routing"] = plan.to_dict()
            if probe_tuning is not None and probe_tuning.get("probe") is not None:
                manifest["routing"]["probe_tuning"] = probe_tuning
        if clusters is not None:
            manifest["clusters"] = clusters
        if scoring is not None:
            manifest["scoring"] = scoring
        recall_error = None
        # --min_recall applies to the neighbours that matter (audit "target"), not to every slot of
        # the exact top-K; an audit of an older version has only recall_at_k.
        recall = (audit or {}).get("recall_relevant", (audit or {}).get("recall_at_k"))
        if ok and self._min_recall is not None and recall is not None and recall < self._min_recall:
            ok = False
            target = (audit or {}).get("target") or "every exact top-K neighbour"
            message = recall_error = (f"audited recall {recall:.4f} of the relevant neighbours "
                                      f"({target}) is below --min_recall {self._min_recall} "
                                      f"(recall@K {audit.get('recall_at_k')})")
        manifest["exit_state"] = "pipeline_completed" if ok else "failed"
        if not ok:
            manifest["error"] = message
        write_text(manifest_path(self._output_dir),
                   json.dumps(manifest, indent=2, sort_keys=True, default=str))
        _LOGGER.info("wrote %s", manifest_path(self._output_dir))
        if recall_error:
            raise RecallBelowMinimumError(recall_error)
        if not ok:
            raise BadRecordRatioError(message)
        yield manifest


class WriteManifest(beam.PTransform):
    """Writes manifest.json once every input it reports on is complete.

    Args:
        output_dir: the run's output directory.
        static: JSON-able facts known at launch (flags, versions, mode).
        counts: dict name -> singleton PCollection of int.
        dead_letter_counts: singleton PCollection of {stage: count}.
        shards: PCollection of ShardIndexInfo.
        max_bad_record_ratio: the run fails above this share of rejected records.
        gate: optional singleton GateVerdict (``transforms.run.gate``) of the check before the build.
        audit, tuning, plan, probe_tuning, scoring: optional singletons (recall audit, per-shard
            search tuning, routing plan, the probe TuneProbe chose, the pairwise scorer's fitted
            model) recorded in the manifest.
        min_recall: fail the run when the audited recall of the relevant neighbours (the audit's
            ``recall_relevant``, see ``transforms.quality.audit.recall_report``) is below this.
    """

    def __init__(self, *, output_dir: str, static: dict[str, Any], counts: dict[str, Any],  # noqa: PLR0913 - one side input per fact
                 dead_letter_counts, shards, max_bad_record_ratio: float, gate=None, audit=None,
                 tuning=None, plan=None, clusters=None, min_recall: float | None = None,
                 probe_tuning=None, scoring=None):
        super().__init__()
        self._output_dir = output_dir
        self._static = static
        self._counts = counts
        self._dead = dead_letter_counts
        self._shards = shards
        self._max_ratio = max_bad_record_ratio
        self._optional = {"gate": gate, "audit": audit, "tuning": tuning, "plan": plan,
                          "clusters": clusters, "probe_tuning": probe_tuning, "scoring": scoring}
        self._min_recall = min_recall

    def expand(self, pbegin):
        named = [pc | f"Name{name}" >> beam.Map(lambda v, n=name: (n, v))
                 for name, pc in sorted(self._counts.items())]
        counts = named | "FlattenCounts" >> beam.Flatten()
        side = {name: beam.pvalue.AsSingleton(pc) for name, pc in self._optional.items()
                if pc is not None}
        return (pbegin
                | "Once" >> beam.Create([None])
                | "WriteManifest" >> beam.ParDo(
                    _WriteManifestFn(self._output_dir, self._static, self._max_ratio,
                                     self._min_recall),
                    counts=beam.pvalue.AsDict(counts),
                    dead_letters=beam.pvalue.AsSingleton(self._dead),
                    shards=beam.pvalue.AsList(self._shards), **side))
