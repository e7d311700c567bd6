"""The graph's last step on a runner the launcher does not wait for (Dataflow): ``DIR/_SUCCESS``.

A waiting launcher writes ``_SUCCESS`` itself after the run (``beam_jobs.summary``); this step is
for the launch that returns at once. It writes nothing else (see transforms.common.run_dir).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import apache_beam as beam

__all__ = ["MarkFinished"]


def _mark_finished(_: Any, output_dir: str, **written: Any) -> None:
    from transforms.common.run_dir import mark_finished

    mark_finished(output_dir)


class MarkFinished(beam.PTransform):
    """PBegin -> nothing: writes ``output_dir/_SUCCESS`` once ``manifest`` and every PCollection of
    ``after`` (the graph's writing steps) are complete.

    Args:
        output_dir: the run's output directory.
        manifest: the manifest WriteManifest wrote (only when the run passed its checks).
        after: the other writing steps the manifest does not wait for.
    """

    def __init__(self, *, output_dir: str, manifest: beam.PCollection, after: Sequence[beam.PCollection]):
        super().__init__()
        self._output_dir = output_dir
        self._manifest = manifest
        self._after = tuple(after)

    def expand(self, pbegin):
        waits = {f"written_{i}": beam.pvalue.AsList(pc) for i, pc in enumerate(self._after)}
        return (pbegin
                | "FinishOnce" >> beam.Create([None])
                | "MarkFinished" >> beam.Map(_mark_finished, self._output_dir,
                                             manifest=beam.pvalue.AsList(self._manifest), **waits))
